"""Coverage-guided fuzzing with atheris: every harness ``tests/fuzz/fuzz_*.py`` runs in a
subprocess (atheris must own the process) for a bounded number of inputs.

Passing means the fuzzer found no input that makes the parser raise anything but its
documented errors (or return something the harness's checks refuse). The runs are short
(``RUNS`` inputs, at most ``MAX_SECONDS`` each) so the suite stays fast. The mutator's
seed is fixed (``-seed=1``) and the seeds are made the same way each time, so a run
repeats closely; on a loaded machine it may reach the time limit first. For a longer hunt:
``scripts/fuzz.sh TARGET SECONDS`` (see docs/testing.md).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
    # pyproject.toml installs atheris only there (its only wheels); the hypothesis fuzz
    # tests beside each module still run everywhere.
    pytest.skip("atheris wheels exist for x86-64 Linux only", allow_module_level=True)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNS = 10000
MAX_SECONDS = 12
TARGETS = sorted(path.stem.removeprefix("fuzz_") for path in HERE.glob("fuzz_*.py"))
# What issue 2 asks to be fuzzed; a harness deleted by mistake fails here, not silently.
REQUIRED = {"attestation", "bundle", "cose", "enrolment", "manifest", "offline", "pcap", "protocol",
            "report", "storage"}


def run_harness(module: str, out: Path, runs: int = RUNS) -> tuple[int, str]:
    """Run ``tests.fuzz.<module>``; return its exit code and its output (stdout + stderr)."""
    # Harness files (a store, a fleet) go to RAM where there is one: the storage harness
    # writes a file per input, and fsync on a shared disk would make it crawl.
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="tinyward-fuzz-", dir=shm) as work:
        env = {**os.environ, "TINYWARD_FUZZ_WORKDIR": work}
        command = [
            sys.executable, "-m", f"tests.fuzz.{module}", str(out / "corpus"),
            f"-runs={runs}", f"-max_total_time={MAX_SECONDS}", "-seed=1", "-len_control=0",
            "-timeout=10", "-rss_limit_mb=1024", f"-artifact_prefix={out}/",
            "-print_final_stats=1",
        ]
        done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=MAX_SECONDS + 90)
    return done.returncode, done.stdout + done.stderr


def test_atheris_is_installed() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is missing: `pip install -e '.[dev]'` installs it on x86-64 Linux")


def test_every_required_target_has_a_harness() -> None:
    assert set(TARGETS) >= REQUIRED, f"missing harnesses: {sorted(REQUIRED - set(TARGETS))}"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_no_crash(target: str, tmp_path: Path) -> None:
    code, output = run_harness(f"fuzz_{target}", tmp_path)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-",
                                                                            "timeout-", "leak-")))
    assert code == 0 and not crashes, (
        f"atheris found a failing input for {target} (exit {code}, saved: {crashes}); "
        f"reproduce with: python -m tests.fuzz.fuzz_{target} {tmp_path}/<file>\n"
        + output[-4000:]
    )
    executed = re.search(r"stat::number_of_executed_units: (\d+)", output)
    assert executed is not None, output[-2000:]
    # The seeds alone are a few dozen inputs; more means the fuzzer really mutated.
    assert int(executed.group(1)) > 200, output[-2000:]
    print(f"{target}: {executed.group(1)} inputs, no crash")


def test_a_crashing_harness_is_reported(tmp_path: Path) -> None:
    """The check above can fail: an undocumented exception is a crash with its input."""
    code, output = run_harness("canary", tmp_path, runs=10)
    assert code != 0
    assert "Uncaught Python exception" in output and "canary: an exception" in output
    assert any(p.name.startswith("crash-") for p in tmp_path.iterdir())
