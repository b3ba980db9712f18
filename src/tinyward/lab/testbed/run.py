"""``tinyward lab run``: benign traffic, then every attack class in turn, captured on both
bridges and labelled; then the figures: per attack class the detection delay (attack start
to the first incident a device reported to the fleet) and false alarms per hour during the
benign period.

Time line (profile ``quick`` / ``default``, :data:`~.tools.PROFILES`)::

    up → devices reporting → captures start → benign period (false alarms counted)
       → attack 1 → gap → attack 2 → … → settle (late reports) → captures stop → figures

Delays are read from the fleet's store (``reports.received_at``, whole seconds): a delay
is ``received_at - start`` of the first report carrying an incident, received after the
attack started and before the next one started (the last attack: before the end of the
settle time); resolution one second.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyward.lab.testbed import labels as lab_labels
from tinyward.lab.testbed.lab import Lab
from tinyward.lab.testbed.tools import (
    ATTACK_CLASSES,
    Profile,
    Step,
    attack_steps,
    wordlist,
)

__all__ = ["Figures", "RunResult", "detection_figures", "run_lab"]

NO_DETECTION = "no on-device detection in this build"


@dataclass
class Figures:
    """The run's figures (JSON in ``figures.json``)."""

    detection: str | None  # the device flag used, or None
    benign_seconds: float
    benign_incidents: int
    false_alarms_per_hour: float | None
    delays: dict[str, float | None]  # attack class -> seconds, None: not detected
    #: attack class -> the device was still reporting incidents in the ``carry`` seconds
    #: before it started (its delay may be the previous attack's late incidents)
    carried: dict[str, bool] = field(default_factory=dict)
    #: attack class -> some step aimed at a device (else it never crosses a device's wire)
    visible: dict[str, bool] = field(default_factory=dict)
    #: exact (Poisson) 95 % interval of the false alarms per hour
    false_alarms_interval: tuple[float, float] | None = None
    #: attack class aimed only at the fleet/router -> the fleet's refusals by reason
    #: during its window (``/metrics`` deltas from its start to the next one's start)
    fleet_refusals: dict[str, dict[str, float]] = field(default_factory=dict)
    #: attack class -> detector incidents the devices reported during its window
    window_incidents: dict[str, int] = field(default_factory=dict)
    #: attack class -> the kinds of the first incident that gave its delay
    delay_kinds: dict[str, list[str]] = field(default_factory=dict)


def poisson_rate_interval(events: int, seconds: float,
                          confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of an event rate per hour from ``events`` in ``seconds``
    (Garwood: chi-square quantiles; 0 events gives [0, 3.69/T] at 95 %)."""
    from scipy.stats import chi2

    if seconds <= 0 or events < 0:
        raise ValueError("needs seconds > 0 and events >= 0")
    alpha = 1.0 - confidence
    lo = 0.0 if events == 0 else float(chi2.ppf(alpha / 2, 2 * events)) / 2
    hi = float(chi2.ppf(1 - alpha / 2, 2 * events + 2)) / 2
    return lo * 3600 / seconds, hi * 3600 / seconds


@dataclass
class RunResult:
    out: Path
    captures: dict[str, Path]
    labels: dict[str, Path]
    windows: list[lab_labels.Window]
    figures: Figures
    steps: list[dict[str, object]] = field(default_factory=list)


def detection_figures(incidents: list[tuple[int, dict[str, int]]],
                      benign: tuple[float, float], windows: list[lab_labels.Window],
                      settle_end: float, detection: str | None, carry: float = 12.0,
                      visible: dict[str, bool] | None = None,
                      refusals: list[dict[str, float]] | None = None) -> Figures:
    """The figures from the incidents a device reported (pure; see the module doc).
    ``carry``: how far back an incident marks an attack's delay as possibly carried over
    from the attack before (the device's incident rate limit lets a long alarm trickle
    in, one per 10 s). ``refusals``: the fleet's refusal counters by reason read at each
    window's start and once at the end (``len(windows) + 1`` readings, in time order)."""
    b0, b1 = benign
    in_benign = sum(sum(kinds.values()) for at, kinds in incidents if b0 <= at <= b1)
    seconds = b1 - b0
    delays: dict[str, float | None] = {}
    delay_kinds: dict[str, list[str]] = {}
    carried: dict[str, bool] = {}
    ordered = sorted(windows, key=lambda w: w.start)
    for index, window in enumerate(ordered):
        until = ordered[index + 1].start if index + 1 < len(ordered) else settle_end
        # received_at is whole seconds: an incident received in the start's second counts.
        hits = [(at, kinds) for at, kinds in incidents
                if math.floor(window.start) <= at < until]
        delays[window.attack] = max(0.0, hits[0][0] - window.start) if hits else None
        if hits:
            delay_kinds[window.attack] = sorted({k for at, kinds in hits if at == hits[0][0]
                                                 for k in kinds})
        carried[window.attack] = any(window.start - carry <= at < math.floor(window.start)
                                     for at, _ in incidents)
    window_incidents: dict[str, int] = {}
    for index, window in enumerate(ordered):
        until = ordered[index + 1].start if index + 1 < len(ordered) else settle_end
        window_incidents[window.attack] = sum(
            sum(kinds.values()) for at, kinds in incidents
            if math.floor(window.start) <= at < until)
    fleet_refusals: dict[str, dict[str, float]] = {}
    if refusals is not None and len(refusals) == len(ordered) + 1:
        for index, window in enumerate(ordered):
            if (visible or {}).get(window.attack, True):
                continue
            before, after = refusals[index], refusals[index + 1]
            if before is not None and after:
                fleet_refusals[window.attack] = {
                    reason: after[reason] - before.get(reason, 0.0) for reason in sorted(after)
                    if after[reason] - before.get(reason, 0.0) > 0}
    rate = in_benign * 3600 / seconds if detection and seconds > 0 else None
    interval = poisson_rate_interval(in_benign, seconds) if rate is not None else None
    return Figures(detection, seconds, in_benign, rate, delays, carried, dict(visible or {}),
                   interval, fleet_refusals, window_incidents, delay_kinds)


def _run_steps(lab: Lab, steps: list[Step], log: Callable[[str], None]) -> list[dict[str, object]]:
    """Run the steps of one attack class at once; enforce each one's bounds."""
    running = []
    for step in steps:
        proc = lab.start(step.vantage, list(step.argv), f"attack-{step.attack}-{step.vantage}")
        running.append((step, proc, time.monotonic()))
    done = []
    for step, proc, began in running:
        limit = step.stop_after if step.stop_after is not None else step.timeout
        try:
            proc.wait(timeout=max(0.0, began + limit - time.monotonic()))
            how = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # arpspoof restores the caches it poisoned
            try:
                proc.wait(timeout=max(1.0, step.timeout - limit))
                how = "stopped" if step.stop_after is not None else "timed out"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                how = "killed"
        took = time.monotonic() - began
        log(f"  {step.attack}: {step.argv[0]} from {step.vantage} at {step.target}: {how} "
            f"after {took:.1f} s")
        done.append({"attack": step.attack, "vantage": step.vantage, "target": step.target,
                     "argv": list(step.argv), "outcome": how, "seconds": round(took, 2)})
    return done


def _capture(lab: Lab, where: str, interface: str, path: Path) -> subprocess.Popen[bytes]:
    # -U: each packet written as it arrives (nothing lost when stopped); -n: no lookups.
    return lab.start(where, ["tcpdump", "-i", interface, "-n", "-U", "-w", str(path)],
                     f"tcpdump-{path.stem}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # tcpdump flushes and closes the file
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _replay_file(lab: Lab, source: Path, out: Path) -> None:
    """The frames the device received (from the fleet, via the router), sent again by
    the LAN attacker with its own MAC as the source."""
    device = lab.plan.host("device-1")
    attacker = lab.plan.host("attacker-lan")
    to_device = out.with_name("replay-source.pcap")
    subprocess.run(["tcpdump", "-r", str(source), "-w", str(to_device), "-n",
                    f"ip dst host {device.address}"], capture_output=True, timeout=60,
                   check=True)
    # Frames captured on a veth can be larger than the MTU (offloads join segments):
    # cut them to 1500 so they can be sent again.
    subprocess.run(["tcprewrite", f"--enet-smac={attacker.mac}", "--mtu=1500",
                    "--mtu-trunc", "--fixcsum",
                    f"--infile={to_device}", f"--outfile={out}"], capture_output=True,
                   timeout=60, check=True)


def run_lab(lab: Lab, profile: Profile, out: Path, attacks: tuple[str, ...] = ATTACK_CLASSES,
            log: Callable[[str], None] = print) -> RunResult:
    """Run ``profile`` on a lab that is up; write captures, labels and figures to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plan = lab.plan
    lab.wait_reporting(2)
    log(f"devices reporting to {lab.server_url}; detection: {lab.detection or NO_DETECTION}")
    # Both bridges (everything on each segment), and device-1's own eth0: what its
    # watching core sees (the capture to evaluate an on-device model on).
    captures = {"lan": out / "lan.pcap", "upstream": out / "upstream.pcap",
                "device-1": out / "device-1.pcap"}
    tcpdumps = [_capture(lab, plan.switch, plan.bridge("lan"), captures["lan"]),
                _capture(lab, plan.switch, plan.bridge("up"), captures["upstream"]),
                _capture(lab, "device-1", "eth0", captures["device-1"])]
    device_capture = None
    if lab.train_capture is None:  # no training phase: the replay's source is made here
        device_capture = _capture(lab, "device-1", "eth0", out / "device-1-benign.pcap")
    else:
        shutil.copyfile(lab.train_capture, out / "device-1-benign.pcap")
        if lab.net_model is not None:  # the model the devices watch with, for detect eval
            shutil.copyfile(lab.net_model, out / "device-net.json")
    time.sleep(1.0)  # tcpdump opens its interface
    if lab.watching_since is not None:
        # The benign period starts after the watcher's warm-up (its alarms dropped there
        # would hide false alarms): DEFAULT_NET_WARMUP from the restart, plus 1 s.
        from tinyward.link.watch import DEFAULT_NET_WARMUP

        time.sleep(max(0.0, lab.watching_since + DEFAULT_NET_WARMUP + 1.0 - time.time()))
    benign_start = time.time()
    log(f"benign period: {profile.benign:g} s (reports, DNS, NTP, mDNS, ARP)")
    time.sleep(profile.benign)
    benign_end = time.time()
    if device_capture is not None:
        _stop(device_capture)
    workdir = out / "work"
    workdir.mkdir(exist_ok=True)
    password = (lab.folder / "router-password").read_text().strip()
    (workdir / "words.txt").write_text("\n".join(wordlist(profile.words, password)) + "\n")
    _replay_file(lab, out / "device-1-benign.pcap", workdir / "replay.pcap")
    windows: list[lab_labels.Window] = []
    steps: list[dict[str, object]] = []
    devices = {h.address for h in plan.devices}
    visible: dict[str, bool] = {}
    readings: list[dict[str, float]] = []
    for attack in attacks:
        planned = attack_steps(plan, profile, attack, workdir, dashboard=lab.dashboard)
        visible[attack] = any(step.target in devices for step in planned)
        readings.append(lab.refusals())  # the fleet's refusals so far (for fleet-side)
        log(f"attack {attack}")
        start = time.time()
        steps += _run_steps(lab, planned, log)
        attackers = {plan.host(step.vantage) for step in planned}
        windows.append(lab_labels.Window(attack, start, time.time(), tuple(sorted(
            {h.mac for h in attackers} | {h.address for h in attackers}))))
        time.sleep(profile.gap)
    settle = max(3.0, 3 * lab.interval)
    time.sleep(settle)  # reports made during the last attack reach the fleet
    settle_end = time.time()
    readings.append(lab.refusals())
    for proc in tcpdumps:
        _stop(proc)
    label_paths = {}
    for name, path in captures.items():
        frames = lab_labels.read_frames(path)
        tags = lab_labels.label_frames(frames, windows)
        label_paths[name] = path.with_suffix(".labels")
        lab_labels.write_labels(label_paths[name], tags)
    incidents = [i for role in lab.device_ids for i in lab.incidents(role)]
    incidents.sort(key=lambda item: item[0])
    figures = detection_figures(incidents, (benign_start, benign_end), windows, settle_end,
                                lab.detection, visible=visible, refusals=readings)
    (out / "windows.csv").write_text("attack,start,end\n" + "".join(
        f"{w.attack},{w.start:.6f},{w.end:.6f}\n" for w in windows))
    (out / "figures.json").write_text(json.dumps(
        {"profile": asdict(profile), "benign": [benign_start, benign_end],
         "windows": [asdict(w) for w in windows], "figures": asdict(figures),
         "incidents": [[at, kinds] for at, kinds in incidents],
         "refusals": readings,
         "steps": steps}, indent=1))
    return RunResult(out, captures, label_paths, windows, figures, steps)
