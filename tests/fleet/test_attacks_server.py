"""The attacks of issue 12 on the fleet server (items 5, 6 and the server part of 9).

Each test is an attack that worked against the server before: real TLS on loopback, real
devices, real SQLite. Every wait is bounded (``BOUND``) and says how long the test is
prepared to wait; none asserts how fast anything is.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tinyward.fleet.server import CATCH_UP_REPORTS, ServerConfig
from tinyward.fleet.store import OTHER_KIND, SQLiteStore

from .serverkit import Running, start_running

BOUND = 30.0  # seconds: the most any step waits (a generous bound, not a speed claim)
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 7)]  # five loopback addresses


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Running]:
    # Few device slots, so that a flood the size of the (1,100 for 1,024 slots)
    # stays small here: 5 addresses x 20 connections against 64 slots.
    state = start_running(tmp_path, ("a", "b"), ServerConfig(
        max_connections=64, max_connections_per_ip=64, idle_timeout=BOUND))
    yield state
    state.server.stop()


def _post_until_stored(running: Running, name: str) -> int:
    """Post one report of ``name`` until it is acknowledged or BOUND has passed."""
    report = running.report(name)
    deadline = time.monotonic() + BOUND
    while True:
        try:
            status, body = running.post(name, report)
            if status == 200:
                return int(body["stored_seq"])
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the report of {name} was not stored within {BOUND} s")
        time.sleep(0.2)


def _half_request_without_certificate(running: Running, source: str) -> socket.socket | None:
    """A TLS client without a certificate that sends half a request head and waits."""
    raw = socket.create_connection(("127.0.0.1", running.server.port), timeout=5,
                                   source_address=(source, 0))
    try:
        tls = running.anonymous_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.send(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\n")
        return tls
    except (OSError, ssl.SSLError):
        raw.close()
        return None


def _silent(running: Running, source: str) -> socket.socket | None:
    """A TCP client that never starts its TLS handshake."""
    try:
        return socket.create_connection(("127.0.0.1", running.server.port), timeout=5,
                                        source_address=(source, 0))
    except OSError:
        return None


def test_attack_unauthenticated_flood_does_not_starve_a_device(small: Running) -> None:
    with contextlib.ExitStack() as stack:
        for source in ATTACKERS:
            for _ in range(20):
                for opened in (_half_request_without_certificate(small, source),
                               _silent(small, source)):
                    if opened is not None:
                        stack.callback(opened.close)
        # The flood is still connected (it held every slot until it let go, before).
        assert _post_until_stored(small, "a") >= 1
        assert small.store.last_seq(small.devices["a"].device_id) >= 1


@pytest.fixture
def few_handshakes(tmp_path: Path) -> Iterator[Running]:
    # A long handshake deadline, so that only making room lets the device in in time.
    state = start_running(tmp_path, ("a",), ServerConfig(
        max_handshakes=8, max_handshakes_per_ip=4, handshake_timeout=3 * BOUND))
    yield state
    state.server.stop()


def test_attack_a_full_handshake_budget_does_not_keep_a_device_out(
        few_handshakes: Running) -> None:
    # Silent TCP clients from two addresses fill the budget of handshakes in progress.
    # Refusing newcomers would keep the device out until the attackers' handshakes time
    # out (or, reconnecting, for as long as the flood lasts); the oldest makes room.
    with contextlib.ExitStack() as stack:
        for source in ATTACKERS[:2]:
            for _ in range(4):
                sock = _silent(few_handshakes, source)
                assert sock is not None
                stack.callback(sock.close)
        assert _post_until_stored(few_handshakes, "a") >= 1


def test_attack_no_certificate_gets_no_http_answer(small: Running) -> None:
    tls = _half_request_without_certificate(small, ATTACKERS[0])
    if tls is None:
        return  # refused during the handshake: what the attack should meet
    with tls:
        tls.settimeout(BOUND)
        answer = b""
        with contextlib.suppress(OSError, ssl.SSLError):  # the server hangs up: fine
            tls.send(b"\r\n")
            answer = tls.recv(4096)
        assert b"HTTP/1." not in answer


def _still_open(sock: ssl.SSLSocket) -> bool:
    """True if the server keeps the connection (nothing to read within a second)."""
    sock.settimeout(1.0)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except (OSError, ssl.SSLError):
        return False


def test_attack_one_device_cannot_take_every_device_slot(small: Running) -> None:
    # One enrolled device (or a stolen certificate) opening connections until every slot
    # of the worker is taken: at most max_connections_per_device are kept.
    limit = ServerConfig().max_connections_per_device
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(2 * limit):
            raw = socket.create_connection(("127.0.0.1", small.server.port), timeout=BOUND)
            tls = small.context("a").wrap_socket(raw, server_hostname="127.0.0.1")
            stack.callback(tls.close)
            held.append(tls)
        kept = sum(_still_open(tls) for tls in held)
        assert 1 <= kept <= limit, kept
        assert _post_until_stored(small, "b") >= 1


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Running]:
    state = start_running(tmp_path, ("a", "b"), ServerConfig(rate_per_second=0.01, burst=5))
    yield state
    state.server.stop()


def test_attack_malformed_batches_are_rate_limited(strict: Running) -> None:
    # 700 malformed batches got 700 x 400 and never 429: they were decoded first.
    statuses = [strict.post("a", b"\xff" * 3000, content_type="application/cbor",
                            path="/v1/reports/batch")[0] for _ in range(8)]
    assert statuses[0] == 400 and 429 in statuses, statuses
    assert strict.post("b", strict.report("b"))[0] == 200  # another device is not affected


def test_attack_malformed_reports_are_rate_limited(strict: Running) -> None:
    statuses = [strict.post("a", b"\xff" * 1024)[0] for _ in range(8)]
    assert statuses[0] == 400 and 429 in statuses, statuses


def test_attack_a_huge_decimal_batch_is_refused_without_decoding(strict: Running) -> None:
    # A batch-sized tag-4 number (0.8 s to decode per body before): the batch is sliced at
    # known offsets and never decoded, so this is refused as not a batch of reports.
    body = cbor2.dumps(cbor2.CBORTag(4, [-2, cbor2.CBORTag(2, b"\xff" * 60_000)]))
    status, answer = strict.post("b", body, content_type="application/cbor",
                                 path="/v1/reports/batch")
    assert (status, answer["error"]) in ((400, "malformed"), (429, "rate_limited"))


@pytest.fixture
def kinds(tmp_path: Path) -> Iterator[Running]:
    state = start_running(tmp_path, ("a",), ServerConfig(rate_per_second=1000, burst=1000))
    yield state
    state.server.stop()


def test_attack_incident_kind_flood_is_capped(kinds: Running) -> None:
    # 32 fresh kind names per report: 144,000 kinds and a 36 MB database before.
    device = kinds.devices["a"]
    for n in range(8):
        incidents = {f"k{n}x{i:02d}": 1 for i in range(32)}
        status, _ = kinds.post("a", kinds.report("a", incidents=incidents))
        assert status == 200
    status = kinds.store.device_status(device.device_id)
    assert status is not None
    assert len(status.incidents) <= kinds.store.max_incident_kinds
    assert sum(status.incidents.values()) == 8 * 32  # nothing counted is lost
    assert status.incidents[OTHER_KIND] == 8 * 32 - (kinds.store.max_incident_kinds - 1)


def test_attack_admin_queries_never_hold_up_an_acknowledgement(kinds: Running) -> None:
    # GET /v1/fleet shared the store thread with the ingest: a 1.8 s query delayed
    # another device's acknowledgement from 9 ms to 1.25 s. Here the admin query is
    # held until the device's report has been acknowledged; it must not hold that up.
    release = threading.Event()
    # (Admin reads have a connection of their own; the old server used the store's.)
    reader = getattr(kinds.fleet_server, "_reader", kinds.store)
    original = reader.fleet_status

    def slow() -> object:
        release.wait(2 * BOUND)  # longer than the device is prepared to wait
        return original()

    reader.fleet_status = slow  # type: ignore[method-assign]
    auth = {"Authorization": f"Bearer {kinds.admin_token}"}
    answers: list[int] = []
    admin = threading.Thread(target=lambda: answers.append(
        kinds.request("GET", "/v1/fleet", headers=auth)[0]))
    admin.start()
    try:
        assert _post_until_stored(kinds, "a") >= 1
    finally:
        release.set()
        admin.join(BOUND)
        reader.fleet_status = original  # type: ignore[method-assign]
    assert answers == [200]


def test_device_list_is_paginated(kinds: Running) -> None:
    auth = {"Authorization": f"Bearer {kinds.admin_token}"}
    status, page = kinds.request("GET", "/v1/devices?limit=1", headers=auth)
    assert status == 200 and len(page["devices"]) == 1 and page["next"] is None
    assert kinds.request("GET", "/v1/devices?limit=100000", headers=auth)[0] == 400


def test_rate_follows_the_declared_schedule() -> None:
    # 50 reports/s was 500 times a device's own schedule (one report per 10 s).
    assert ServerConfig().rate == pytest.approx(2 / 10)
    assert ServerConfig(report_interval=60).rate == pytest.approx(2 / 60)
    assert ServerConfig(rate_per_second=5).rate == 5


class _DrivenClock:
    """The rate limit's clock, moved by the test: "one report per second" is exact and
    the test never sleeps (no timing on a shared machine)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ten_times_a_schedule(tmp_path: Path, schedule_of_a: float) -> tuple[list[int], list[int]]:
    """Device a sends one report per (driven) second, device b one per second too, for
    30 s; b is enrolled at 1 s, a at ``schedule_of_a``. Returns both lists of statuses."""
    clock = _DrivenClock()
    state = start_running(tmp_path, ("a", "b"), ServerConfig(burst=10),
                          schedules={"a": schedule_of_a, "b": 1.0}, monotonic=clock)
    try:
        a, b = [], []
        for _ in range(30):
            a.append(state.post("a", state.report("a"))[0])
            b.append(state.post("b", state.report("b"))[0])
            clock.now += 1.0
        status, answer = state.post("a", state.report("a"))
        if schedule_of_a == 10.0:
            assert (status, answer["error"]) == (429, "rate_limited")
    finally:
        state.server.stop()
    return a, b


def test_attack_a_device_at_ten_times_its_schedule_is_refused_past_its_burst(
        tmp_path: Path) -> None:
    # Device a declared one report per 10 s at enrolment and sends one per second; device
    # b declared one per second and sends exactly that. One fleet-wide rate (before)
    # either let a through at ten times its schedule or refused b.
    a, b = _ten_times_a_schedule(tmp_path, 10.0)
    assert a[:10] == [200] * 10  # its burst: 10 reports
    assert 429 in a, a
    # After the burst, a gets its own rate: 2 / 10 s, i.e. ≤ 10 + 0.2 x 30 = 16 of 30.
    assert a.count(200) <= 10 + 0.2 * 30 + 1, a
    assert b == [200] * 30  # served at its own 1 s schedule all along


def test_attack_ten_times_the_schedule_passes_when_declared(tmp_path: Path) -> None:
    # The control: the same traffic from a device that declared 1 s is all served, so
    # the refusal above comes from a's declared schedule, nothing else.
    a, b = _ten_times_a_schedule(tmp_path, 1.0)
    assert a == [200] * 30 and b == [200] * 30


def test_a_device_catches_up_a_full_queue_then_meets_its_schedule(tmp_path: Path) -> None:
    # The stated burst: after an outage a device (at 10 s) sends its whole link queue
    # (256 reports) at once in batches, and a batch sent again after a lost ack (409s,
    # which take tokens too); then its bucket is empty and it waits for its schedule.
    from tinyward.link.queue import QueueConfig

    assert QueueConfig().capacity == CATCH_UP_REPORTS
    clock = _DrivenClock()
    state = start_running(tmp_path, ("a",), schedules={"a": 10.0}, monotonic=clock)
    try:
        reports = [state.report("a") for _ in range(CATCH_UP_REPORTS)]
        batches = [reports[i:i + 50] for i in range(0, len(reports), 50)] + [reports[-50:]]
        answers = [state.post("a", cbor2.dumps(batch), content_type="application/cbor",
                              path="/v1/reports/batch") for batch in batches]
        assert [status for status, _ in answers] == [200] * len(batches)
        codes = [r["code"] for _, answer in answers[:-1] for r in answer["results"]]
        assert codes == ["stored"] * CATCH_UP_REPORTS
        assert {r["code"] for r in answers[-1][1]["results"]} == {"replay"}
        assert state.post("a", state.report("a"))[0] == 429  # 306 taken: the burst
        clock.now += 5.0  # half an interval: one token back (twice the schedule)
        assert state.post("a", state.report("a"))[0] == 200
    finally:
        state.server.stop()
    assert ServerConfig().device_burst == CATCH_UP_REPORTS + ServerConfig().max_batch


def test_a_new_schedule_applies_at_once_without_reading_per_report(tmp_path: Path) -> None:
    # `fleet set-schedule` on a running server: the device's next request meets the new
    # rate (its status file changed), and no report reads the device's files again.
    clock = _DrivenClock()
    state = start_running(tmp_path, ("a",), ServerConfig(burst=3), schedules={"a": 1.0},
                          monotonic=clock)
    reads: list[str] = []
    original = state.fleet.device

    def counted(device_id: str) -> object:
        reads.append(device_id)
        return original(device_id)

    try:
        for _ in range(5):  # at its schedule: served
            assert state.post("a", state.report("a"))[0] == 200
            clock.now += 1.0
        state.fleet.device = counted  # type: ignore[method-assign]
        for _ in range(3):
            assert state.post("a", state.report("a"))[0] == 200
            clock.now += 1.0
        assert reads == []  # the schedule came from the cache
        state.fleet.device = original  # type: ignore[method-assign]
        state.fleet.set_schedule(state.devices["a"].device_id, 60.0)
        statuses = []
        for _ in range(6):
            statuses.append(state.post("a", state.report("a"))[0])
            clock.now += 1.0
        # The 2 tokens left in its bucket, then one per 30 s: refused (at 1 s it was not).
        assert statuses == [200, 200, 429, 429, 429, 429], statuses
    finally:
        state.server.stop()


def test_a_damaged_schedule_record_is_refused_not_a_crash(tmp_path: Path) -> None:
    # A status file edited to 0.001 s (2,000 reports/s) does not lift the device's limit:
    # the record is refused as damaged, with a reason (not a 500 and a traceback).
    import json

    state = start_running(tmp_path, ("a",), schedules={"a": 10.0})
    try:
        path = state.fleet.devices_path / state.devices["a"].device_id / "status.json"
        record = json.loads(path.read_text())
        record["report_interval"] = 0.001
        path.write_text(json.dumps(record))
        status, answer = state.post("a", state.report("a"))
        assert (status, answer["error"]) == (503, "device_record_damaged")
    finally:
        state.server.stop()


def test_database_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = SQLiteStore(tmp_path / "reports.db")
        store.last_seq("x")
        names = ("reports.db", "reports.db-wal", "reports.db-shm")
        modes = {n: stat.S_IMODE((tmp_path / n).stat().st_mode) for n in names}
        store.close()
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(names, 0o600)


def test_server_header_names_no_software(kinds: Running) -> None:
    for port, context in ((kinds.server.port, kinds.context("a")),
                          (kinds.admin_port, kinds.anonymous_context())):
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                 timeout=BOUND)
        connection.request("GET", "/v1/health")
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.getheader("Server") == "tinyward"
    # An answer aiohttp's HTTP parser makes before any application sees the request.
    with socket.create_connection(("127.0.0.1", kinds.admin_port), timeout=BOUND) as raw, \
            kinds.anonymous_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GARBAGE\r\n\r\n")
        answer = tls.recv(4096)
    assert b" 400 " in answer and b"Python" not in answer and b"aiohttp" not in answer


def test_admin_calls_and_bad_tokens_are_audited_without_secrets(kinds: Running) -> None:
    log = kinds.fleet.directory / "audit.log"
    wrong = "not-the-token-" + "x" * 20
    assert kinds.request("GET", "/v1/fleet",
                         headers={"Authorization": f"Bearer {kinds.admin_token}"})[0] == 200
    assert kinds.request("GET", "/v1/devices",
                         headers={"Authorization": f"Bearer {wrong}"})[0] == 401
    text = log.read_text()
    assert '"path": "/v1/fleet", "status": 200, "outcome": "ok"' in text
    assert '"path": "/v1/devices", "status": 401, "outcome": "bad_admin_token"' in text
    assert kinds.admin_token not in text and wrong not in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_fleet_totals_list_at_most_the_largest_incident_kinds(make_store: Any) -> None:
    from tinyward.fleet.store import FLEET_INCIDENT_KINDS
    from tinyward.trust.report import Report

    store = make_store(max_incident_kinds=1000)  # SQLite and PostgreSQL
    device = "ab" * 32
    for seq in range(1, 9):  # 8 x 32 = 256 kinds, one device
        incidents = {f"k{seq}x{i:02d}": seq for i in range(32)}
        store.append(device, [(Report(device, seq, 1, incidents=incidents), b"x")], 1)
    totals = store.fleet_status().incidents
    store.close()
    assert len(totals) == FLEET_INCIDENT_KINDS
    assert min(totals.values()) >= 5  # the largest ones (counts 8, 7, 6, then some 5)


def test_a_port_in_use_is_a_clear_error() -> None:
    from tinyward.fleet.errors import CannotListen
    from tinyward.fleet.runner import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(CannotListen, match="--admin-port"):  # two listeners: two ports
            bind("127.0.0.1", taken.getsockname()[1])
