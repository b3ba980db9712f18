"""Red team of the trusted core's per-frame path: decode → features → score → gates.

Every byte of a watched frame is the attacker's and the path runs in the trusted core, so
it must never raise (anything but its own refusal), never loop or allocate without
bound, and its packet budget must hold whatever the frames do. Sans I/O where possible:
frames go straight to :class:`NetScorer`, and :class:`NetWatcher` reads a fake capture.
"""

from __future__ import annotations

import socket
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.detect.test_pcap_attack import ETH4, ETH6, _mutated
from tests.link.test_watch import _benign, _pcap
from tinyward.detect.pipeline import Model, train
from tinyward.link.watch import INCIDENT_KINDS, Incidents, NetScorer
from tinyward.link.watch_capture import CaptureConfig, NetWatcher


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The device's model kind (int8 Mahalanobis, novelty set, per-class thresholds)."""
    base = tmp_path_factory.mktemp("attack")
    benign = _pcap(base / "benign.pcap", _benign(1_000_000.0, 400, np.random.default_rng(5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train([benign], kind="mahalanobis-int8", novelty="pair", per_class=True)


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _frame(ip: bytes, vlan: int) -> bytes:
    eth = ETH6 if ip and ip[0] >> 4 == 6 else ETH4
    return eth[:12] + b"\x81\x00\x00\x07" * vlan + eth[12:] + ip


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300),
                          st.builds(_frame, _mutated(), st.integers(0, 3))),
                min_size=1, max_size=80))
def test_attack_fuzzed_frames_through_decode_features_score_and_gates(model, frames) -> None:
    """Arbitrary bytes and mutated real frames (lying lengths, extension chains, VLAN
    stacks, fragments, cut anywhere), cut to the core's snap as the socket would: the
    whole path only counts, scores and gates; it never raises."""
    scorer, incidents = NetScorer(model), Incidents()
    snap = CaptureConfig().snap
    for n, frame in enumerate(frames):
        scorer.feed(frame[:snap], 2_000_000.0 + n * 0.001)
    alarms = scorer.flush()
    for kind, ts in alarms:
        assert kind in INCIDENT_KINDS and np.isfinite(ts)
        incidents.alarm(kind, ts)
    stats = scorer.stats
    assert stats.frames == len(frames)
    assert stats.packets + stats.decode.skipped() == len(frames)
    assert stats.alarms == len(alarms) <= stats.packets
    assert scorer.flush() == []  # nothing left pending


def _flow_frame(i: int) -> bytes:
    """A SYN from a distinct peer (10.x.y.z) and source port to a distinct device port."""
    src = bytes([10, (i >> 16) & 0xFF | 64, (i >> 8) & 0xFF, i & 0xFF])
    tcp = struct.pack(">HHIIBBHHH", 1024 + i % 60000, 1 + i % 65535, i, 0, 5 << 4, 2, 512, 0, 0)
    ip = (b"\x45\x00" + struct.pack(">H", 40) + b"\x00\x01\x00\x00\x40\x06\x00\x00" + src
          + bytes([10, 9, 0, 1]) + tcp)
    return ETH4 + ip


def test_attack_100000_distinct_flows_leave_the_detector_state_bounded(model) -> None:
    """A flood of 100,000 distinct peers and ports, fed and scored as the capture thread
    does (batches of 64): the feature tables keep their fixed slots (evicting), the
    novelty set and class table do not grow, nothing stays pending, and the gates hold
    at most k alarm times."""
    scorer, incidents = NetScorer(model), Incidents()
    ex = scorer._extractor
    tables = (ex.hosts, ex.convs, ex.sockets)
    sizes = [(len(t.tags), len(t.data)) for t in tables]
    novelty = len(model.fusion.novelty) if model.fusion and model.fusion.novelty else 0
    inserts = [t.inserts for t in tables]
    n, batch = 100_000, 64
    for start in range(0, n, batch):
        for i in range(start, min(start + batch, n)):
            scorer.feed(_flow_frame(i), 3_000_000.0 + i * 1e-4)
        for kind, ts in scorer.flush():
            incidents.alarm(kind, ts)
        assert len(scorer._rows) == len(scorer._packets) == 0
    assert scorer.stats.packets == n
    assert [(len(t.tags), len(t.data)) for t in tables] == sizes  # fixed, whatever came
    c = ex.config
    assert [t.occupied() for t in tables] <= [c.host_slots, c.conv_slots, c.socket_slots]
    assert all(t.occupied() <= len(t.tags) for t in tables)
    # the flood was new to every table (so the bound was tested, not just unused) …
    assert all(t.inserts - before >= n - len(t.tags) for t, before in zip(tables, inserts,
                                                                          strict=True))
    assert ex.sockets.evictions >= n - len(ex.sockets.tags)
    assert (len(model.fusion.novelty) if model.fusion and model.fusion.novelty else 0) == novelty
    assert scorer.stats.novel > 0.99 * n  # … and was seen as new
    assert all(len(g.times) < incidents.limits.k for g in incidents._gates.values())
    # incidents: 3 at once per kind, then 1 per 10 s of packet time (10 s of flood here)
    assert sum(incidents.totals().values()) <= len(INCIDENT_KINDS) * (3 + 1 + 1)


class _FakeCapture:
    """A capture socket that always has ``frames`` waiting (sans I/O)."""

    def __init__(self, frames: list[bytes]) -> None:
        self.config = CaptureConfig(max_packets_per_second=100, batch=64)
        self.frames = list(frames)
        self._pair = socket.socketpair()
        self.kernel_drops = 0

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def read(self) -> tuple[bytes, float] | None:
        return (self.frames.pop(0), 1.0) if self.frames else None

    def update_kernel_stats(self) -> None:
        pass

    def close(self) -> None:
        for s in self._pair:
            s.close()


class _ExplodingScorer(NetScorer):
    """A scorer that raises on every frame (what any decoder bug would do)."""

    def feed(self, frame: bytes, ts: float) -> None:
        raise RuntimeError("a decoder bug")


def test_attack_frames_that_make_the_scorer_raise_still_count_against_the_budget(model):
    """Found here: the watcher counted a frame against the packet budget only after the
    scorer took it, and one raising frame ended the batch. A stream of frames that make
    the scorer raise was therefore never counted: the thread read and retried without
    bound (an unbounded share of the core) while the budget said 0. Now every frame read
    counts, a raising frame is an error of its own, and the batch goes on."""
    frames = [b"x" * 60] * 200
    capture = _FakeCapture(frames)
    watcher = NetWatcher(capture, _ExplodingScorer(model), Incidents())  # type: ignore[arg-type]
    try:
        assert watcher.process(64) == 64  # read, counted, failed: the budget sees them
        assert watcher.stats.frames == 64 and watcher.stats.errors == 64
        assert watcher.stats.last_error == "RuntimeError: a decoder bug"
        assert len(capture.frames) == 200 - 64
    finally:
        capture.close()


def test_one_raising_frame_does_not_cost_the_rest_of_its_batch(model):
    """Good frames in the same batch as a bad one are still scored."""

    class OneBad(NetScorer):
        def feed(self, frame: bytes, ts: float) -> None:
            if frame == b"bad":
                raise RuntimeError("one bad frame")
            super().feed(frame, ts)

    frames = [_flow_frame(i) for i in range(10)]
    frames.insert(3, b"bad")
    capture = _FakeCapture(frames)
    scorer = OneBad(model)
    watcher = NetWatcher(capture, scorer, Incidents())
    try:
        assert watcher.process(64) == 11
        assert scorer.stats.packets == 10 and watcher.stats.errors == 1
    finally:
        capture.close()


def test_the_default_snap_keeps_every_header_the_features_read(model) -> None:
    """The socket reads 256 bytes of each frame: an Ethernet frame with two VLAN tags,
    a 60-byte IPv4 header and a 60-byte TCP header is scored the same cut or whole."""
    ip = (b"\x4f\x00" + struct.pack(">H", 1400) + b"\x00\x01\x00\x00\x40\x06\x00\x00"
          + bytes([10, 9, 0, 99, 10, 9, 0, 1]) + b"\x01" * 40
          + struct.pack(">HHIIBBHHH", 50000, 22, 1, 0, 15 << 4, 2, 512, 0, 0) + b"\x01" * 40)
    frame = _frame(ip + bytes(1400 - len(ip)), 2)
    whole, cut = NetScorer(model), NetScorer(model)
    whole.feed(frame, 2_000_000.0)
    cut.feed(frame[:CaptureConfig().snap], 2_000_000.0)
    assert whole._packets == cut._packets and whole._rows == cut._rows
    assert whole.flush() == cut.flush()


def test_fixtures_build_what_the_attack_tests_assume(tmp_path: Path, model) -> None:
    """The flood's frames really are distinct flows of one device, decoded as TCP SYNs."""
    scorer = NetScorer(model)
    for i in (0, 1, 70_000):
        scorer.feed(_flow_frame(i), 1.0)
    got = {(p.src, p.sport, p.dport, p.tcp_flags) for p in scorer._packets}
    assert len(got) == 3 and all(flags == 2 for *_, flags in got)


def _v6_syn(i: int, pad: int) -> bytes:
    """An IPv6 SYN from the LAN to the device's port ``22 + i``, behind ``8 * (pad + 1)``
    bytes of destination options (PadN, which Linux skips)."""
    from tests.detect.test_pcap_attack import _dest_opts

    tcp = struct.pack(">HHIIBBHHH", 50000, 22 + i, 1, 0, 5 << 4, 2, 512, 0, 0)
    payload = _dest_opts(6, pad) + tcp
    ip = (b"\x60\x00\x00\x00" + struct.pack(">HBB", len(payload), 60, 64)
          + b"\xfe\x80" + bytes(13) + b"\x63" + b"\xfe\x80" + bytes(13) + b"\x01" + payload)
    return ETH6 + ip


def test_attack_ipv6_scan_padded_with_options_alarms_in_the_core(model) -> None:
    """A burst of IPv6 SYNs behind 512 bytes of options, cut to the socket's snap: before
    the decoder kept such packets, every frame was counted as malformed and nothing was
    scored (no alarm, no incident); now each is a packet the novelty set never saw."""
    scorer, incidents = NetScorer(model, warmup=0), Incidents()  # the decoder, not the warm-up
    snap = CaptureConfig().snap
    for i in range(6):
        scorer.feed(_v6_syn(i, 63)[:snap], 2_000_000.0 + i * 0.01)
    alarms = scorer.flush()
    for kind, ts in alarms:
        incidents.alarm(kind, ts)
    assert scorer.stats.decode.malformed_ip == 0 and scorer.stats.packets == 6
    assert scorer.stats.decode.ipv6_header_only == 6
    assert [kind for kind, _ in alarms] == ["net.novel"] * 6
    assert incidents.totals() == {"net.novel": 2}


def test_limit_a_scan_slower_than_the_alarm_gate_raises_no_incident(model) -> None:
    """An evasion by design, documented (docs/threat-model.md): every SYN of a slow scan
    alarms (a tuple never seen), but the gate wants 3 alarms within 2 s, so one SYN every
    2.5 s is never an incident. The alarms stay on the device (``NetStats.alarms``)."""
    scorer, incidents = NetScorer(model, warmup=0), Incidents()  # the gate, not the warm-up
    for i in range(40):
        scorer.feed(_flow_frame(i), 2_000_000.0 + i * 2.5)
        for kind, ts in scorer.flush():
            incidents.alarm(kind, ts)
    assert scorer.stats.alarms == 40
    assert incidents.totals() == {}


class _Endless(_FakeCapture):
    """A capture whose queue never empties (a flood), counting what was read."""

    def __init__(self, budget: int) -> None:
        super().__init__([])
        self.config = CaptureConfig(max_packets_per_second=budget, batch=64)
        self._pair[1].send(b"!")  # the fake socket stays readable
        self.reads = 0

    def read(self) -> tuple[bytes, float] | None:
        self.reads += 1
        return b"\x00" * 60, 1.0


class _FakeTime:
    """The watcher's clock and stop event: waiting advances the clock, each clock read
    adds 1 ms, and the run stops after ``end`` seconds (the loop runs in this thread)."""

    def __init__(self, end: float) -> None:
        self.now, self.end = 0.0, end

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def is_set(self) -> bool:
        return self.now >= self.end

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return self.is_set()


@pytest.mark.parametrize("scorer_kind", ["raising", "real"])
def test_attack_flood_is_held_to_the_packet_budget_each_second(model, scorer_kind) -> None:
    """The capture loop itself under an endless flood, on a fake clock (no timing): in
    every second at most the budget of frames is read, whether the scorer takes them or
    raises on each (before the fix, raising frames were read ~64,000 times a second)."""
    budget, seconds = 100, 10
    capture = _Endless(budget)
    fake = _FakeTime(seconds)
    scorer = _ExplodingScorer(model) if scorer_kind == "raising" else NetScorer(model)
    watcher = NetWatcher(capture, scorer, Incidents(), clock=fake)
    watcher._stop = fake  # type: ignore[assignment]
    per_second: dict[int, int] = {}
    process = watcher.process

    def counted(limit: int) -> int:
        second = int(fake.now)
        before = capture.reads
        n = process(limit)
        per_second[second] = per_second.get(second, 0) + capture.reads - before
        return n

    watcher.process = counted  # type: ignore[method-assign]
    try:
        watcher._run()
    finally:
        capture.close()
    assert max(per_second.values()) <= budget, per_second
    assert sum(per_second.values()) >= budget * (seconds - 1)  # it did work each second
    assert watcher.stats.shed_seconds >= seconds - 1
