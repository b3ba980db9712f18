"""Alert sinks against real receivers: a loopback HTTP server, a local syslog UDP socket, a
real command; deduplication, bounded queues, retries, and what an alert never holds."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tinyward.fleet.alerts import (
    Alert,
    AlertSender,
    BadAlertSink,
    CommandSink,
    SyslogSink,
    WebhookSink,
    parse_sink,
)

DEVICE = "ab" * 32


class Receiver:
    """A loopback HTTP server that keeps what it is posted; ``fail`` answers 500."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail:
                    outer.fail -= 1
                    self.send_response(500)
                else:
                    outer.bodies.append(json.loads(body))
                    outer.got.set()
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alert(kind: str = "net.anomaly", count: int = 1, device: str = DEVICE) -> Alert:
    return Alert(device, kind, count, 1_700_000_000.0, 1_699_999_999, 42, "report seq 42")


def test_webhook_posts_json(receiver: Receiver) -> None:
    sender = AlertSender([parse_sink(f"webhook:{receiver.url}")])
    try:
        sender.send(alert())
        assert sender.drain()
    finally:
        sender.close()
    assert receiver.bodies == [{"source": "tinyward", "type": "incident", "device_id": DEVICE,
                                "kind": "net.anomaly", "count": 1, "at": 1_700_000_000.0,
                                "device_time": 1_699_999_999, "seq": 42,
                                "evidence": "report seq 42", "repeats": 0}]


def test_dedup_same_device_and_kind_one_alert_with_count(receiver: Receiver) -> None:
    clock = Clock()
    outcomes: list[str] = []
    sender = AlertSender([WebhookSink(receiver.url)], window=60, clock=clock,
                         on_outcome=outcomes.append)
    try:
        for _ in range(50):
            sender.send(alert())
        sender.send(alert(kind="sensor.tamper"))  # another kind: its own alert
        sender.send(alert(device="cd" * 32))  # another device: its own alert
        assert sender.drain()
        assert len(receiver.bodies) == 3
        clock.now += 61  # the window ends: one more alert says how many were folded
        sender.flush()
        assert sender.drain()
    finally:
        sender.close()
    assert len(receiver.bodies) == 4
    assert receiver.bodies[-1]["repeats"] == 49 and receiver.bodies[-1]["kind"] == "net.anomaly"
    assert outcomes.count("deduplicated") == 49 and outcomes.count("sent") == 4


def test_failing_webhook_retried_with_backoff_then_delivered(receiver: Receiver) -> None:
    receiver.fail = 2
    outcomes: list[str] = []
    sender = AlertSender([WebhookSink(receiver.url)], retry_delays=(0.01, 0.01, 0.01),
                         on_outcome=outcomes.append)
    try:
        sender.send(alert())
        assert sender.drain()
    finally:
        sender.close()
    assert len(receiver.bodies) == 1 and outcomes == ["failed", "failed", "sent"]


def test_dead_sink_given_up_never_raises() -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    outcomes: list[str] = []
    sender = AlertSender([WebhookSink(f"http://127.0.0.1:{port}/", timeout=2)],
                         retry_delays=(0.01,), on_outcome=outcomes.append)
    try:
        sender.send(alert())
        assert sender.drain()
    finally:
        sender.close()
    assert outcomes == ["failed", "failed"]


def test_queue_full_drops_without_blocking() -> None:
    """A sink that hangs must not hold up send(): the queue is bounded and send() returns."""
    release = threading.Event()

    class Hung:
        name = "hung"

        def deliver(self, payload: dict[str, Any]) -> None:
            release.wait(30)

    outcomes: list[str] = []
    sender = AlertSender([Hung()], queue_size=3, on_outcome=outcomes.append)
    try:
        for i in range(20):
            sender.send(alert(kind=f"k{i}"))  # distinct kinds: no deduplication
        assert outcomes.count("dropped") >= 20 - 3 - 1  # one may be in the sink's hands
    finally:
        release.set()
        sender.close()


def test_syslog_udp_receives_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(10)
        port = collector.getsockname()[1]
        sink = parse_sink(f"syslog:127.0.0.1:{port}")
        assert isinstance(sink, SyslogSink)
        sender = AlertSender([sink])
        try:
            sender.send(alert())
            data, _ = collector.recvfrom(4096)
        finally:
            sender.close()
    line = data.decode()
    # <PRI>: facility daemon (3) * 8 + warning (4) = 28
    assert line.startswith("<28>tinyward: incident kind=net.anomaly device=" + DEVICE)
    assert "\n" not in line.rstrip("\x00\n")


def test_command_gets_json_on_stdin_and_no_secrets(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    script = tmp_path / "hook"
    script.write_text(f"#!/bin/sh\ncat > {out}.json\nenv > {out}.env\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("TINYWARD_SERVER_PASSPHRASE", "do-not-leak-this")
    sender = AlertSender([parse_sink(f"command:{script}")])
    try:
        sender.send(alert(kind="sensor.tamper; rm -rf /"))  # no shell: just text
        assert sender.drain()
    finally:
        sender.close()
    assert json.loads(Path(f"{out}.json").read_text())["kind"] == "sensor.tamper; rm -rf /"
    environment = Path(f"{out}.env").read_text()
    assert "do-not-leak-this" not in environment and "TINYWARD" not in environment


def test_command_timeout_is_a_failure(tmp_path: Path) -> None:
    script = tmp_path / "slow"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o700)
    outcomes: list[str] = []
    sender = AlertSender([CommandSink(str(script), timeout=0.2)], retry_delays=(),
                         on_outcome=outcomes.append)
    try:
        sender.send(alert())
        assert sender.drain(timeout=20)  # killed at the timeout, not waited for (30 s)
    finally:
        sender.close()
    assert outcomes == ["failed"]


def test_alert_never_holds_results() -> None:
    payload = alert().payload()
    assert set(payload) == {"source", "type", "device_id", "kind", "count", "at",
                            "device_time", "seq", "evidence", "repeats"}


@pytest.mark.parametrize("spec", ["webhook:http://example.com/hook", "webhook:ftp://x/",
                                  "command:relative/path", "command:/nonexistent/hook",
                                  "syslog:host", "syslog:host:99999", "email:x", ""])
def test_bad_alert_specs_refused(spec: str) -> None:
    with pytest.raises(BadAlertSink):
        parse_sink(spec)


def test_webhook_name_hides_the_path() -> None:
    """A webhook URL's path often holds a token (Slack, …): log lines name only the host."""
    assert WebhookSink("https://hooks.example/services/T0/SECRET").name == \
        "webhook:https://hooks.example"
    assert os.sep not in WebhookSink("http://127.0.0.1:9/x/y").name.split("//")[1]
