"""A device or fleet install without the detect extra (scikit-learn, matplotlib): the CLI
works, the device and fleet commands never import them, and a command that needs them
says what to install instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKER = '''
import os, sys
_blocked = {n for n in os.environ.get("TW_BLOCK", "").split(",") if n}
class _Blocker:  # pretend these packages are not installed
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
'''


def _tinyward(tmp_path: Path, block: str, *args: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, TW_BLOCK=block,
               PYTHONPATH=os.pathsep.join([str(site), *sys.path]))
    return subprocess.run([sys.executable, "-m", "tinyward", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_blocker_does_block(tmp_path: Path) -> None:
    """A control: without this, the tests below would pass on any install."""
    out = _tinyward(tmp_path, "click", "--help")
    assert out.returncode != 0 and "No module named 'click'" in out.stderr


DETECT = "sklearn,matplotlib"


@pytest.mark.parametrize("command", [("--help",), ("device", "--help"), ("fleet", "--help"),
                                     ("fleet", "serve", "--help"), ("report", "--help"),
                                     ("device", "init", "--help")])
def test_cli_works_without_the_detect_extra(tmp_path: Path, command: tuple[str, ...]) -> None:
    out = _tinyward(tmp_path, DETECT, *command)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_device_and_fleet_commands_do_not_import_the_detect_extra() -> None:
    code = ("import sys\nimport tinyward.cli.main\n"
            "from tinyward.cli.main import cli\n"
            "import tinyward.fleet.runner, tinyward.link.runner, tinyward.trust.device\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sklearn', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_device_install_makes_a_device_without_the_detect_extra(tmp_path: Path) -> None:
    out = _tinyward(tmp_path, DETECT, "device", "init", str(tmp_path / "dev"))
    assert out.returncode == 0, out.stderr


def test_a_command_that_needs_the_extra_says_what_to_install(tmp_path: Path) -> None:
    columns = ("Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
               "Thermocouple;Voltage;Volume Flow RateRMS")  # SKAB's, as the reader expects
    rows = [f"datetime;{columns}"] + [
        f"2020-02-08 13:{i // 60 % 60:02d}:{i % 60:02d};" + ";".join(
            str(0.1 * ((i * (k + 3)) % (7 + k))) for k in range(8)) for i in range(600)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    out = _tinyward(tmp_path, DETECT, "detect", "train", "--sensors", "s.csv",
                    "--kind", "mahalanobis", "--out", "m.json")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert "pip install 'tinyward[detect]'" in out.stderr and "scikit-learn" in out.stderr


def test_an_area_whose_extra_is_missing_still_lists_its_commands(tmp_path: Path) -> None:
    out = _tinyward(tmp_path, "dpkt", "--help")
    assert out.returncode == 0, out.stderr
    assert "tinyward[detect]" in out.stdout
    out = _tinyward(tmp_path, "dpkt", "detect", "train", "x.pcap", "--out", "m.json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and "tinyward[detect]" in out.stderr


def test_every_cli_area_is_registered() -> None:
    """A new cli module with commands must be named in main._AREAS, or it never shows."""
    import importlib
    import pkgutil

    import tinyward.cli
    from tinyward.cli.main import _AREAS, bench, cli

    named = {area for area, *_ in _AREAS}
    for info in pkgutil.iter_modules(tinyward.cli.__path__):
        module = importlib.import_module(f"tinyward.cli.{info.name}")
        if getattr(module, "COMMANDS", None) or getattr(module, "BENCH_COMMANDS", None):
            assert info.name in named, f"add tinyward.cli.{info.name} to main._AREAS"
    for area, _extra, names, bench_names in _AREAS:
        module = importlib.import_module(f"tinyward.cli.{area}")
        assert [c.name for c in getattr(module, "COMMANDS", ())] == list(names), area
        assert [c.name for c in getattr(module, "BENCH_COMMANDS", ())] == list(bench_names)
        assert all(name in cli.commands for name in names)
        assert all(name in bench.commands for name in bench_names)
