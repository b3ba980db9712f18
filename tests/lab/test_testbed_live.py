"""The lab for real (root, iproute2, the Debian tools): up/down leaves nothing; a quick run
yields captures and labels that `tinyward detect eval` reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.lab.testbed import net
from tinyward.lab.testbed.tools import ATTACK_CLASSES, missing_tools

ROOT = os.geteuid() == 0 and shutil.which("ip") is not None
pytestmark = [needs(ROOT, "the lab needs root and iproute2 (network namespaces)"),
              needs(not missing_tools(), f"the lab's tools: {', '.join(missing_tools())} "
                    "(scripts/install-system-deps.sh)")]


def tinyward(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyward", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def namespace_inodes(prefix: str) -> set[int]:
    return {os.stat(f"/run/netns/{name}").st_ino for name in net.lab_namespaces(prefix)}


def processes_in(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of ``inodes`` (alive even when the
    namespace's name is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            target = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if int(target.split("[")[1].rstrip("]")) in inodes:
            found.append(int(entry))
    return found


def lab_traces_on_the_host(prefix: str) -> list[str]:
    """Links of the host's namespace named by the lab, or addresses or routes in the
    lab's range (other tests may add links of their own meanwhile: only the lab's count)."""
    found = []
    for args in (["-o", "link"], ["-o", "addr"], ["route"]):
        out = subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout
        found += [line for line in out.splitlines() if prefix in line or "10.203." in line]
    return found


def test_up_then_down_leaves_no_namespace_link_process_or_folder() -> None:
    prefix = "twtud"
    up = tinyward("lab", "up", "--prefix", prefix, "--no-detect")
    try:
        assert up.returncode == 0, up.stderr
        inodes = namespace_inodes(prefix)
        assert len(inodes) == 6  # switch, router, fleet, two attackers, one device
        assert processes_in(inodes)  # fleet server, device, resolver, NTP, login, chatter
        folder = Path(json.loads(Path(f"/run/tinyward-lab/{prefix}.json").read_text())["folder"])
        assert folder.is_dir()
        # The host's own namespace got no link at all.
        assert lab_traces_on_the_host(prefix) == []
        again = tinyward("lab", "up", "--prefix", prefix, "--no-detect")
        assert again.returncode == 4 and "up already" in again.stderr
    finally:
        down = tinyward("lab", "down", "--prefix", prefix)
    assert down.returncode == 0, down.stderr
    assert "nothing of the lab is left" in down.stdout
    assert net.lab_namespaces(prefix) == []
    assert processes_in(inodes) == []
    assert lab_traces_on_the_host(prefix) == []
    assert not folder.exists()
    assert not Path(f"/run/tinyward-lab/{prefix}.json").exists()


def test_cli_refuses_a_bad_prefix() -> None:
    done = tinyward("lab", "down", "--prefix", "../x")
    assert done.returncode == 2 and done.stderr.startswith("error: lab prefix")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("lab") / "run"
    done = tinyward("lab", "run", "--quick", "--prefix", "twtqr", "--out", str(out), timeout=400)
    return out, done


def test_quick_run_makes_labelled_captures_detect_eval_reads(
        quick_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    out, done = quick_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert net.lab_namespaces("twtqr") == []
    figures = json.loads((out / "figures.json").read_text())
    assert [w["attack"] for w in figures["windows"]] == list(ATTACK_CLASSES)
    lan_labels = set((out / "lan.labels").read_text().split())
    up_labels = set((out / "upstream.labels").read_text().split())
    # The device's LAN sees the attacks aimed at the device; upstream those at the fleet.
    assert {"benign", "nmap-syn", "nmap-connect", "syn-flood", "arp-mitm",
            "replay", "hydra"} <= lan_labels
    assert {"benign", "nmap-syn", "syn-flood", "slowloris", "slowread",
            "tls-flood"} <= up_labels
    model = tmp_path / "model.json"
    train = tinyward("detect", "train", str(out / "device-1-benign.pcap"), "--target-fpr",
                     "0.05", "--out", str(model))
    assert train.returncode == 0, train.stderr
    device_labels = set((out / "device-1.labels").read_text().split())
    assert {"benign", "nmap-syn", "syn-flood", "replay", "arp-mitm"} <= device_labels
    assert not {"slowloris", "slowread", "tls-flood"} & device_labels  # never on its wire
    for name in ("lan", "upstream", "device-1"):
        evaluated = tinyward("detect", "eval", "--model", str(model), "--capture",
                             str(out / f"{name}.pcap"), "--labels", str(out / f"{name}.labels"),
                             "--out", str(tmp_path / name))
        assert evaluated.returncode == 0, evaluated.stderr
        result = json.loads((tmp_path / name / "eval.json").read_text())
        assert "replay" in json.dumps(result) or name == "upstream"


def test_quick_run_prints_figures_or_says_there_is_no_detection(
        quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, done = quick_run
    figures = json.loads((out / "figures.json").read_text())["figures"]
    assert figures["visible"]["nmap-syn"] and figures["visible"]["replay"]
    assert not figures["visible"]["slowloris"] and not figures["visible"]["tls-flood"]
    if figures["detection"] is None:
        assert "no on-device detection in this build" in done.stdout
    else:
        assert "detection delay per attack class" in done.stdout
        assert "false alarms:" in done.stdout
        assert set(figures["delays"]) == set(ATTACK_CLASSES)
        # The quick profile's 1 s gaps are shorter than the device's incident rate limit
        # (then 1 per 10 s), so not every class can get its own incident; but attacks
        # aimed at the device must reach the fleet as incidents. How fast is a figure.
        aimed = [a for a, seen in figures["visible"].items() if seen]
        assert any(figures["delays"][a] is not None for a in aimed), done.stdout[-1500:]
