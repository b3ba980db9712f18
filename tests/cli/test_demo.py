"""`tinyward demo` as a person sees it: an 80 x 24 terminal (tmux), every attack in order
with its reason in plain words, and the last screen holding every row and the result."""

from __future__ import annotations

import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import needs
from tinyward.assess.attacks.outcome import tls_refusal_in_words
from tinyward.cli.demo import state_from_json
from tinyward.cli.main import cli
from tinyward.lab.demo import DemoState

RECORDED = Path(__file__).parent / "data" / "demo-state.json"
needs_tmux = needs(shutil.which("tmux") is not None, "needs tmux (scripts/install-system-deps.sh)")


def _in_tmux(command: list[str], tmp_path: Path, timeout: float,
             last_line: str = "attacks refused:") -> str:
    """Run ``command`` in a fresh 80 x 24 tmux pane; the pane's visible text when it ends.

    A private tmux server (-L) that only this test uses, killed afterwards.
    """
    server = f"tinyward-test-{os.getpid()}-{time.monotonic_ns()}"
    done = tmp_path / "exit-code"
    shell = f"{shlex.join(command)}; echo $? > {shlex.quote(str(done))}; sleep 600"
    tmux = ["tmux", "-L", server]
    subprocess.run([*tmux, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24",
                    shell], check=True, timeout=30, env=dict(os.environ, TERM="xterm-256color"))
    try:
        deadline = time.monotonic() + timeout
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert done.exists(), "the command did not finish in time"
        # tmux draws what the command wrote on its own schedule: read until the last line
        # the command prints is there (bounded).
        for _ in range(100):
            pane = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True,
                                  text=True, timeout=30, check=True).stdout
            if last_line in pane:
                break
            time.sleep(0.2)
        size = subprocess.run([*tmux, "display-message", "-p", "#{pane_width}x#{pane_height}"],
                              capture_output=True, text=True, timeout=30, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30, check=False)
    assert size.strip() == "80x24"
    assert done.read_text().strip() == "0", pane
    return pane


def _every_row_visible(pane: str, state: DemoState) -> None:
    lines = pane.splitlines()
    assert len(lines) <= 24
    missing = [o.attack for o in state.attacks
               if not any(o.attack in line and o.reason in line for line in lines)]
    assert not missing, f"rows not visible at 80 x 24: {missing}\n{pane}"
    assert "_ssl.c" not in pane and "EOF occurred" not in pane


def test_the_recorded_run_has_a_plain_reason_for_every_attack() -> None:
    state = state_from_json(RECORDED.read_text())
    assert len(state.attacks) == 16
    for outcome in state.attacks:
        assert outcome.reason and len(outcome.attack) <= 36, outcome
        assert "_ssl.c" not in outcome.reason + outcome.detail


@needs_tmux
def test_the_last_screen_shows_every_attack_and_its_reason_at_80x24(tmp_path: Path) -> None:
    state = state_from_json(RECORDED.read_text())
    pane = _in_tmux([sys.executable, "-c", "from tinyward.cli.demo import replay; "
                     f"raise SystemExit(0 if replay({str(RECORDED)!r}) else 1)"],
                    tmp_path, timeout=120)
    _every_row_visible(pane, state)
    assert "attacks refused: 12 of 12; checks verified: 4 of 4" in pane


def test_the_row_check_sees_a_missing_row(tmp_path: Path) -> None:
    """A control: a screen without one row fails the check above."""
    state = state_from_json(RECORDED.read_text())
    pane = "\n".join(f"✓ {o.attack}  {o.reason}" for o in state.attacks[1:])
    with pytest.raises(AssertionError, match="rows not visible"):
        _every_row_visible(pane, state)


def test_tls_refusals_are_said_in_plain_words() -> None:
    import http.client

    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2393)")
    assert tls_refusal_in_words(eof) == "server hung up in the TLS handshake"
    assert "hung up" in tls_refusal_in_words(http.client.RemoteDisconnected("x"))
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert tls_refusal_in_words(alert) == "certificate's CA not trusted by peer"
    assert tls_refusal_in_words(ConnectionRefusedError()) == "nothing listens there"


@pytest.mark.slow
@needs_tmux
@needs(os.geteuid() == 0, "the demo's network namespace needs root")
def test_demo_at_80x24_shows_every_attack_refused_with_its_reason(tmp_path: Path) -> None:
    record, keep = tmp_path / "state.json", tmp_path / "d"
    pane = _in_tmux([sys.executable, "-m", "tinyward", "demo", "--devices", "2",
                     "--duration", "12", "--interval", "0.5", "--keep", str(keep),
                     "--record", str(record)], tmp_path, timeout=400)
    state = state_from_json(record.read_text())
    assert len(state.attacks) == 16 and all(o.refused for o in state.attacks), state.attacks
    _every_row_visible(pane, state)
    assert "attacks refused: 12 of 12; checks verified: 4 of 4" in pane
    assert (keep / "fleet" / "fleet.json").exists()
    assert (keep / "fleet" / "reports.db").exists()


def test_demo_refuses_a_non_empty_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = CliRunner().invoke(cli, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output


def test_the_demo_says_which_sandbox_layers_this_host_really_has() -> None:
    """Not root: the sandbox reports no separate uid, and the demo must not claim one."""
    from tinyward.lab.demo import sandbox_sentence

    as_root = [("seccomp", True, "allowlist"), ("landlock", True, "ABI 7"),
               ("separate uid", True, "uid 65534"), ("output contract", True, "checked")]
    not_root = [row if row[0] != "separate uid" else ("separate uid", False, "not running as root")
                for row in as_root]
    assert sandbox_sentence(as_root) == "in its sandbox: seccomp, landlock, separate uid"
    sentence = sandbox_sentence(not_root)
    assert sentence.startswith("in its sandbox: seccomp, landlock;")
    assert "not available here: separate uid (not running as root)" in sentence
    assert "own uid" not in sentence
    assert "could not be read" in sandbox_sentence(None)
