"""The assessment against a device that fights back.

The device under test chooses its banners, headers, forms, file names, timing and what
it claims: each test here is one such attack on the assessor, and what keeps the report
honest. A crash must not end the assessment or pass anything; device text must stay
text in every report and on the terminal; a slow device must not hold a probe past its
bound; a timed-out scan or a login locked for everyone must not pass; a report must not
be written through a symlink.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyward.assess import evidence as evidence_module
from tinyward.assess import report
from tinyward.assess.evidence import MAX_TEXT, Evidence
from tinyward.assess.model import load_model
from tinyward.assess.probes import (
    attest,
    credentials,
    lockout,
    pinmitm,
    portscan,
    replay,
    tlsconfig,
)
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.probes.lockout import LockoutRestart, LoginSpec, guess
from tinyward.assess.probes.static import FolderFacts, scan_file, update_verdict
from tinyward.assess.run import assess
from tinyward.assess.target import BadDescription, load_description, make_target
from tinyward.cli.main import cli

from ..conftest import needs
from .hostiledevice import FORM, hostile, http
from .tlsservice import self_signed

MODEL = load_model()
SLOW = 0.05  # seconds between two bytes of a slow device's answer
SLOW_BYTES = 400  # 20 s of them: far past the 1 s the probes are given below


def _ctx() -> Context:
    return Context(MODEL)


class _Says:
    """A stand-in probe whose evidence is whatever the device made it say."""

    def __init__(self, name: str, verdict: str, text: str) -> None:
        self.name, self.kind, self.verdict, self.text = name, "live", verdict, text

    def run(self, target: object, context: Context, budget: Budget) -> list[Evidence]:
        return for_all(context, self.name, self.verdict, "live", self.text,
                       "tcp://127.0.0.1:1")


class _Trips:
    """A probe that a device's answer made raise."""

    name, kind = "lockout-restart", "live"

    def run(self, target: object, context: Context, budget: Budget) -> list[Evidence]:
        raise RuntimeError("an answer no one expected")


# -- a crash is not-tested, never an end to the assessment, never a pass ----------------

def test_a_probe_that_crashes_leaves_its_requirement_not_tested_never_passed() -> None:
    passed = _Says("lockout-restart", "pass", "locked out, still locked after restart")
    result = assess(make_target(address="127.0.0.1"), probes=[passed, _Trips()])
    evidence = result.verdicts["I-AUTH-1"]
    assert evidence.verdict == "not-tested"
    assert "RuntimeError: an answer no one expected" in evidence.text
    assert result.probes_run == ("lockout-restart", "lockout-restart")


def test_a_form_action_that_is_no_url_does_not_crash_the_lockout_probe() -> None:
    def answer(head: bytes, send) -> None:  # type: ignore[no-untyped-def]
        send(http(200, FORM.format(action="http://[::1")) if head.startswith(b"GET")
             else http(401))

    with hostile(answer) as device:
        target = make_target(address="127.0.0.1",
                             login=LoginSpec(device.port, "/login", tls=False))
        (evidence,) = LockoutRestart().run(target, _ctx(), Budget(30, 20))
    assert evidence.verdict == "not-tested" and "not a URL" in evidence.text


def test_a_tuf_root_of_the_wrong_shape_does_not_crash_the_static_check() -> None:
    facts = FolderFacts()
    scan_file("a/root.json", b'{"signed": {"_type": "root", "keys": {"k": {}}, "roles": []}}',
              facts)
    scan_file("b/root.json", b'{"signed": {"_type": "root", "keys": {"k": {}}, '
                             b'"roles": {"root": {"threshold": true}}}}', facts)
    assert [t for _, _, t in facts.tuf_roots] == [0, 0]  # neither is a threshold
    (evidence,) = update_verdict(facts, _ctx())
    assert evidence.verdict == "fail" and "no keys or no threshold" in evidence.text


# -- verdicts a device did not earn -------------------------------------------------------

def test_a_login_locked_for_everyone_from_the_start_is_not_passed() -> None:
    def answer(head: bytes, send) -> None:  # type: ignore[no-untyped-def]
        send(http(200, FORM.format(action="/login")) if head.startswith(b"GET")
             else http(429, "locked", (("Retry-After", "60"),)))

    with hostile(answer) as device:
        target = make_target(address="127.0.0.1",
                             login=LoginSpec(device.port, "/login", tls=False),
                             restart_command=(sys.executable, "-c", "pass"))
        (evidence,) = LockoutRestart().run(target, _ctx(), Budget(60, 20))
    assert evidence.verdict == "not-tested", evidence.text
    assert "already answered as locked out" in evidence.text


@needs(portscan.shutil.which("nmap") is not None, "needs nmap (scripts/install-system-deps.sh)")
def test_a_scan_that_ran_out_of_time_is_not_a_scan_with_nothing_open() -> None:
    # A device that answers slowly, or drops the probes to its closed ports, runs nmap
    # out of its host timeout; nmap then lists no port at all and still counts 65,535 in
    # its scaninfo. Here the timeout is 1 ms, so any machine runs out.
    command = portscan.nmap_command("127.0.0.1", None, 1)
    command[command.index("--host-timeout") + 1] = "1ms"
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    scan = portscan.parse_nmap_xml(done.stdout)
    assert scan.timed_out and scan.host_up and not scan.open_ports
    assert scan.scanned == portscan.ALL_PORTS
    (evidence,) = portscan.verdict(scan, "127.0.0.1", _ctx())
    assert evidence.verdict == "not-tested" and "ran out of time" in evidence.text


def _hidden_login(kind: str):  # type: ignore[no-untyped-def]
    """A web login with admin/admin that the first page does not show as Basic or a form."""
    def answer(head: bytes, send) -> None:  # type: ignore[no-untyped-def]
        if b"Authorization: Basic YWRtaW46YWRtaW4=" in head:  # admin:admin
            send(http(200, "welcome, admin"))
        elif kind == "redirect":  # what most web interfaces do with "/"
            send(http(302, "", (("Location", "/login"),)))
        elif kind == "digest":
            send(http(401, "", (("WWW-Authenticate", 'Digest realm="cam", nonce="1"'),)))
        elif kind == "padded":  # the form after 5,000 bytes of page
            send(http(200, " " * 5000 + FORM.format(action="/login")))
        else:  # "endless": the page starts, then never ends
            send(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>")
            send(b" " * 20, pace=0.5)
    return answer


@pytest.mark.parametrize("kind", ["redirect", "digest", "padded", "endless"])
def test_a_login_the_first_page_does_not_show_is_not_passed_as_none(kind: str) -> None:
    with hostile(_hidden_login(kind)) as device:
        target = make_target(address="127.0.0.1")  # as after a scan of every port
        context = _ctx()
        context.open_ports = (device.port,)
        (evidence,) = credentials.Credentials().run(target, context, Budget(30, 40))
    assert evidence.verdict == "not-tested", evidence.text


@needs(portscan.shutil.which("nmap") is not None, "needs nmap (scripts/install-system-deps.sh)")
def test_a_scan_that_ran_out_of_time_lets_no_later_probe_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The scan's empty port list would read as "every port scanned, none open": the
    # credentials probe would then pass "no login on any open port".
    real = portscan.nmap_command

    def out_of_time(address: str, ports: object, seconds: float) -> list[str]:
        command = real(address, ports, seconds)  # type: ignore[arg-type]
        command[command.index("--host-timeout") + 1] = "1ms"
        return command

    monkeypatch.setattr(portscan, "nmap_command", out_of_time)
    result = assess(make_target(address="127.0.0.1"),
                    probes=[portscan.PortScan(), credentials.Credentials()])
    assert result.verdicts["C-SURF-1"].verdict == "not-tested"
    assert result.verdicts["I-CRED-1"].verdict == "not-tested", result.verdicts["I-CRED-1"]


def test_a_default_login_that_mentions_failed_attempts_is_still_found() -> None:
    # Not even hostile: after the probe's earlier wrong guesses, a Linux login greets
    # with "Last failed login" before the shell prompt; "failed" read as a refusal, and a
    # device with root/root passed I-CRED-1.
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the probe's first look hangs up
            conn.settimeout(5)
            reader = conn.makefile("rb")
            conn.sendall(b"cam login: ")
            user = reader.readline(100).strip()
            conn.sendall(b"Password: ")
            password = reader.readline(100).strip()
            if (user, password) == (b"root", b"root"):
                conn.sendall(b"\r\nLast failed login: Wed Dec  2 13:50 UTC on pts/0\r\n"
                             b"There were 3 failed login attempts since the last successful"
                             b" login.\r\n# ")
            else:
                conn.sendall(b"\r\nLogin incorrect\r\n")

    def serve() -> None:
        for _ in range(200):
            if stop.is_set():
                return
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        finding = credentials.probe_port("127.0.0.1", server.getsockname()[1], False,
                                         Budget(60, 40), credentials.default_credentials())
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert finding.accepted == ("root", "root"), finding


# -- a slow device: every exchange ends by its bound ---------------------------------------

def _slow_answer(head: bytes, send) -> None:  # type: ignore[no-untyped-def]
    send(b"HTTP/1.0 200 X\r\nX-Slow: ")
    send(b"a" * SLOW_BYTES, pace=SLOW)
    send(b"\r\n\r\n" + FORM.format(action="/login").encode())


@pytest.mark.parametrize("tls", [False, True])
def test_a_login_that_answers_a_byte_at_a_time_is_cut_off(tls: bool, tmp_path: Path) -> None:
    # Each byte comes well within the socket timeout, so only a bound on the whole
    # exchange ends it; without one this guess would take 40 s and succeed.
    with hostile(_slow_answer, self_signed(tmp_path) if tls else None) as device:
        answer = guess("127.0.0.1", LoginSpec(device.port, "/login", tls=tls), 1.0)
    assert answer.status is None and "cut off" in answer.note, answer


def test_a_replay_target_that_answers_a_byte_at_a_time_is_cut_off() -> None:
    with hostile(_slow_answer) as device:
        status = replay.post("127.0.0.1", replay.ReplaySpec(b"capture", device.port,
                                                            tls=False), None, 1.0)
    assert status is None


def test_a_tls_port_that_answers_slowly_is_stopped_at_the_budget(tmp_path: Path) -> None:
    # sslyze makes a few hundred handshakes per port, each with its own timeout: at 1 s a
    # handshake this strong TLS 1.3 service took 107 s to enumerate (and passed) with a
    # 5 s budget; just inside the 5 s timeout it would take most of an hour per port.
    def answer(head: bytes, send) -> None:  # type: ignore[no-untyped-def]
        send(http(200, "ok"))

    with hostile(answer, self_signed(tmp_path), handshake_delay=1.0) as device:
        target = make_target(address="127.0.0.1", ports=(device.port,))
        (evidence,) = tlsconfig.TlsConfig().run(target, _ctx(), Budget(5, 100))
    assert evidence.verdict == "not-tested", evidence.text
    assert "had not finished" in evidence.text


def test_a_device_program_cannot_fill_the_assessors_memory(tmp_path: Path) -> None:
    # The device command, the attest command and the restart command are the device's
    # own software: what they print is never read, so it must not be collected (a pipe
    # read into memory without a bound). Each records what its stdout is.
    record = ("import os, stat, sys; open(sys.argv[1], 'a').write("
              "'pipe ' if stat.S_ISFIFO(os.fstat(1).st_mode) else 'not a pipe ')")
    marker = tmp_path / "stdout"
    argv = (sys.executable, "-c", record, str(marker))
    pinmitm.PinMitm().run(make_target(device_command=(*argv, "{server}")), _ctx(),
                          Budget(30, 10))
    attest.challenge((*argv, "{nonce}", "{out}"), None, 30)
    with hostile(lambda head, send: None) as device:
        assert lockout.restart(argv, "127.0.0.1", device.port, 30) == ""
    assert marker.read_text().split(" ")[:-1] == ["not", "a", "pipe"] * 3


# -- device text stays text ---------------------------------------------------------------

FORGED = ("x\n- **Assessed tier:** 3 (private by design)\r\n| I-CRED-1 | pass |"
          "\x1b]0;pwned\x07\x1b[2J\u202egnp.exe <img src=x onerror=alert(1)>")


def _forged_assessment():  # type: ignore[no-untyped-def]
    return assess(make_target(address="127.0.0.1"),
                  probes=[_Says("credentials", "fail", FORGED)])


def _lines_claiming_a_tier(datasheet: str) -> list[str]:
    return [line for line in datasheet.splitlines() if line.startswith("- **Assessed tier:**")]


def test_device_text_cannot_forge_a_datasheet_line_or_drive_a_terminal() -> None:
    result = _forged_assessment()
    datasheet, page = report.to_datasheet(result), report.to_html(result)
    assert len(_lines_claiming_a_tier(datasheet)) == 1
    for text in (datasheet, page, report.to_json(result), report.to_sarif(result)):
        assert "\x1b" not in text and "\u202e" not in text and "\\u001b" not in text
    assert "<img" not in page and "&lt;img" in page  # HTML: escaped
    assert "<img" not in datasheet.replace("\\<img", "")  # markdown: escaped
    assert "\\x1b]0;pwned" in result.verdicts["I-CRED-1"].text  # shown, not obeyed
    json.loads(report.to_sarif(result))


def test_control_unsafe_evidence_text_forges_a_datasheet_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The same attack with the two protections switched off succeeds: the control
    # that shows the test above can fail.
    monkeypatch.setattr(evidence_module, "printable", lambda text, limit=0: text)
    monkeypatch.setattr(report, "_md", lambda text: text)
    datasheet = report.to_datasheet(_forged_assessment())
    assert len(_lines_claiming_a_tier(datasheet)) == 2 and "\x1b" in datasheet


def test_evidence_text_is_bounded() -> None:
    evidence = Evidence("I-CRED-1", "fail", "live", "credentials", "Retry-After: " + "9" * 70000)
    assert len(evidence.text) < MAX_TEXT + 40 and "more characters" in evidence.text


def test_a_description_with_control_characters_is_refused() -> None:
    for name in ("Acme\\u001b[2J", "Acme\\u202e", "Acme\\nvendor"):
        with pytest.raises(BadDescription, match="control characters"):
            load_description(f'format = "tinyward-target/1"\nname = "{name}"\n')


def test_a_file_name_in_a_sarif_location_is_a_uri_reference() -> None:
    result = assess(make_target(address="127.0.0.1"),
                    probes=[_Says("identity", "fail", "a key in the clear")])
    result.verdicts["I-ID-1"] = Evidence("I-ID-1", "fail", "static", "identity", "key",
                                         "keys/dev key%.pem")
    sarif = json.loads(report.to_sarif(result))
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in sarif["runs"][0]["results"] if r["ruleId"] == "I-ID-1"]
    assert uris == ["keys/dev%20key%25.pem"]


# -- paths on disk ------------------------------------------------------------------------

def test_a_report_replaces_a_symlink_in_out_never_writes_through_it(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the owner's file\n")
    out = device / "report"  # a report written into the device's own folder
    out.mkdir()
    (out / "report.html").symlink_to(victim)
    result = CliRunner().invoke(cli, ["assess", "run", str(device), "--out", str(out),
                                      "--seconds-per-probe", "10"])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "the owner's file\n"
    assert not (out / "report.html").is_symlink()
    assert "Security assessment" in (out / "report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["datasheet.md", "report.html",
                                                      "report.json", "report.sarif"]


def test_a_file_name_that_is_not_utf8_does_not_stop_the_report(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    (device / "target.toml").write_text('format = "tinyward-target/1"\nname = "odd"\n')
    # A Linux file name is bytes; Python carries an undecodable one as a lone surrogate,
    # which no UTF-8 writer accepts.
    with open(bytes(device) + b"/\xff-key.pem", "wb") as handle:
        handle.write(b"-----BEGIN PRIVATE KEY-----\n")
    result = CliRunner().invoke(cli, ["assess", "run", str(device), "--out",
                                      str(tmp_path / "out"), "--seconds-per-probe", "10"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_bytes().decode("utf-8")
    assert "\\udcff-key.pem" in page
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["id"]: r["verdict"] for r in document["requirements"]}["I-ID-1"] == "fail"


def test_a_device_folders_description_is_not_read_through_a_symlink(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    elsewhere = tmp_path / "assessors-own.toml"
    elsewhere.write_text('format = "tinyward-target/1"\nname = "read from outside"\n')
    (device / "target.toml").symlink_to(elsewhere)
    result = CliRunner().invoke(cli, ["assess", "run", str(device), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code != 0 and "is a symlink" in result.output
    assert not (tmp_path / "out").exists()
