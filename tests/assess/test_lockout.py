"""lockout-restart: wrong passwords must lock a login out, and a restart must not undo it.

Controls: a deliberately weak form login (tests/assess/formlogin.py) without a lockout,
and with one kept only in memory, fails; the same login keeping its count in a file
passes. The real thing: the tinyward fleet dashboard's login (`tinyward fleet serve` as a
process, restarted by the probe through tests/assess/restarter.py) passes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.lockout import Answer, LockoutRestart, LoginSpec, Observed, verdict
from tinyward.assess.target import make_target

HERE = Path(__file__).parent
RESTARTER = str(HERE / "restarter.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def context() -> Context:
    return Context(load_model())


def the(evidence: list) -> tuple[str, str]:  # type: ignore[type-arg]
    assert [e.requirement for e in evidence] == ["I-AUTH-1"]
    return evidence[0].verdict, evidence[0].text


class Service:
    """A server process started (and restarted) by restarter.py; stopped at the end."""

    def __init__(self, tmp: Path, port: int, argv: list[str]) -> None:
        self.pidfile = tmp / "service.pid"
        self.restart = (sys.executable, RESTARTER, str(self.pidfile), str(port), "--", *argv)

    def start(self) -> None:
        import subprocess
        assert subprocess.run(self.restart, timeout=90, check=False).returncode == 0

    def stop(self) -> None:
        if self.pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.pidfile.read_text()), signal.SIGTERM)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop()


def weak_login(tmp_path: Path, service: list[Service], mode: str) -> tuple[int, Service]:
    port = free_port()
    s = Service(tmp_path, port, [sys.executable, str(HERE / "formlogin.py"), str(port), mode,
                                 str(tmp_path / "failures")])
    service.append(s)
    s.start()
    return port, s


def probe(port: int, s: Service, *, tls: bool, path: str) -> tuple[str, str]:
    target = make_target(address="127.0.0.1", login=LoginSpec(port, path, tls=tls),
                         restart_command=s.restart)
    return the(LockoutRestart().run(target, context(), Budget(120, 50)))


def test_lockout_verdicts() -> None:
    c, w = context(), "http://127.0.0.1:1/login"
    ok, locked = Answer(401), Answer(429, "60")
    assert the(verdict(w, Observed((ok,) * 12), c))[0] == "fail"
    assert the(verdict(w, Observed((ok, ok, locked)), c))[0] == "not-tested"  # no restart
    assert the(verdict(w, Observed((ok, locked), "", Answer(429)), c))[0] == "pass"
    assert the(verdict(w, Observed((ok, locked), "", Answer(401)), c))[0] == "fail"
    assert the(verdict(w, Observed((ok, locked), "did not come back"), c))[0] == "not-tested"
    assert the(verdict(w, Observed((Answer(None, note="refused"),)), c))[0] == "not-tested"
    assert the(verdict(w, Observed((ok, Answer(None, note="reset"))), c))[0] == "not-tested"
    assert Answer(200, "30").locked and Answer(503).locked and not Answer(403).locked


def test_control_a_login_without_lockout_fails(tmp_path: Path,
                                              service: list[Service]) -> None:
    port, s = weak_login(tmp_path, service, "none")
    verdict_, text = probe(port, s, tls=False, path="/login")
    assert verdict_ == "fail" and "12 wrong passwords in a row were all checked" in text


def test_control_a_lockout_kept_in_memory_is_reset_by_a_restart(
        tmp_path: Path, service: list[Service]) -> None:
    port, s = weak_login(tmp_path, service, "memory")
    verdict_, text = probe(port, s, tls=False, path="/login")
    assert verdict_ == "fail" and "locked out after 3 wrong password(s)" in text
    assert "the restart reset the wait" in text


def test_a_lockout_kept_on_disk_survives_the_restart(tmp_path: Path,
                                                     service: list[Service]) -> None:
    port, s = weak_login(tmp_path, service, "file")
    verdict_, text = probe(port, s, tls=False, path="/login")
    assert verdict_ == "pass", text


def test_without_a_restart_command_a_lockout_is_not_tested(
        tmp_path: Path, service: list[Service]) -> None:
    port, _ = weak_login(tmp_path, service, "file")
    target = make_target(address="127.0.0.1", login=LoginSpec(port, "/login", tls=False))
    verdict_, text = the(LockoutRestart().run(target, context(), Budget(60, 50)))
    assert verdict_ == "not-tested" and "no --restart-command" in text


def test_tinyward_dashboard_lockout_survives_a_restart_of_the_server(
        tmp_path: Path, service: list[Service]) -> None:
    from tinyward.fleet.dashboard.auth import LoginGate
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.init(tmp_path / "fleet", b"assessment test passphrase")
    LoginGate(fleet.directory).set_password("the owner's long dashboard password")
    device_port, admin_port = free_port(), free_port()
    s = Service(tmp_path, admin_port, [
        sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory),
        "--port", str(device_port), "--admin-port", str(admin_port)])
    service.append(s)
    s.start()
    before = s.pidfile.read_text()
    verdict_, text = probe(admin_port, s, tls=True, path="/dashboard/login")
    assert verdict_ == "pass", text
    assert "locked out after 5 wrong password(s) (HTTP 429" in text
    assert s.pidfile.read_text() != before  # a new server process answered the last guess


def test_cli_runs_lockout_restart_against_a_named_login(tmp_path: Path,
                                                        service: list[Service]) -> None:
    import json
    import shlex

    from click.testing import CliRunner

    from tinyward.cli.main import cli

    port, s = weak_login(tmp_path, service, "memory")
    result = CliRunner().invoke(cli, [
        "assess", "run", "127.0.0.1", "--ports", str(port), "--login-port", str(port),
        "--login-plain", "--restart-command", shlex.join(s.restart),
        "--out", str(tmp_path / "out"), "--seconds-per-probe", "60"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    found = {r["id"]: r for r in document["requirements"]}["I-AUTH-1"]
    assert found["verdict"] == "fail" and "the restart reset the wait" in found["evidence"]
