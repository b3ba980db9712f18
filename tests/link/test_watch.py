"""Detection on the device, without I/O: gates, rate limits, the scorers (tinyward.link.watch)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import dpkt
import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect.pipeline import load_model, save_model, score_file, train
from tinyward.errors import Misuse
from tinyward.link.watch import (
    INCIDENT_KINDS,
    AlarmGate,
    IncidentLimits,
    Incidents,
    NetScorer,
    SensorScorer,
    TappedFrames,
    TokenBucket,
    WatchError,
)

A, B, C = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2]), bytes([10, 9, 0, 99])


def _eth(src: bytes, dst: bytes, l4: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, data=l4, ttl=64)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800,
                                        data=ip))


def _benign(t0: float, n: int, rng: np.random.Generator) -> list[tuple[float, bytes]]:
    """A sensor's telemetry: UDP to port 5683 every 50 ms, with replies."""
    out = []
    for i in range(n):
        t = t0 + i * 0.05 + float(rng.uniform(0, 0.004))
        size = int(rng.integers(60, 90))
        out.append((t, _eth(A, B, dpkt.udp.UDP(sport=40000, dport=5683, data=b"t" * size), 17)))
        out.append((t + 0.001, _eth(B, A, dpkt.udp.UDP(sport=5683, dport=40000, data=b"k" * 8),
                                    17)))
    return out


def _sweep(t0: float, ports: range) -> list[tuple[float, bytes]]:
    """An attacker C sends SYNs to many ports of the device A."""
    return [(t0 + k * 0.0005, _eth(C, A, dpkt.tcp.TCP(sport=50000, dport=p, flags=2), 6))
            for k, p in enumerate(ports)]


def _pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=1)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, bytes]]]:
    """A model trained on benign telemetry, and a test stream: benign, sweep, benign."""
    base = tmp_path_factory.mktemp("net")
    rng = np.random.default_rng(3)
    benign = _pcap(base / "benign.pcap", _benign(1_000_000.0, 1500, rng))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train([benign], kind="mahalanobis-int8", novelty="pair", per_class=True)
    save_model(model, base / "model.json")
    test = (_benign(2_000_000.0, 100, rng) + _sweep(2_000_005.2, range(1, 101))
            + _benign(2_000_006.0, 40, rng))
    test.sort()
    _pcap(base / "test.pcap", test)
    return base, test


# ---- gates ------------------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(per_second=0.1, burst=3)
    assert [bucket.take(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert not bucket.take(9.0)
    assert bucket.take(10.0)  # one token back after 10 s
    assert not bucket.take(10.5)


def test_token_bucket_refuses_bad_limits():
    with pytest.raises(Misuse):
        TokenBucket(per_second=-1, burst=3)
    with pytest.raises(Misuse):
        IncidentLimits(k=0)


def test_alarm_gate_needs_k_alarms_within_the_window():
    gate = AlarmGate(k=3, window=2.0)
    assert not gate.alarm(0.0) and not gate.alarm(1.0)
    assert not gate.alarm(3.5)  # the first two are older than 2 s
    assert not gate.alarm(4.0)
    assert gate.alarm(4.5)
    assert not gate.alarm(4.6)  # counting starts again


def test_attack_alarm_flood_becomes_a_bounded_number_of_incidents():
    incidents = Incidents()
    for k in range(100_000):  # 1,000 alarms a second for 100 s
        incidents.alarm("net.anomaly", k * 0.001)
    lim = incidents.limits
    most = lim.burst + 100 * lim.per_second  # the burst, then the refill over 100 s
    assert most - 1 <= incidents.totals()["net.anomaly"] <= most
    assert incidents.alarms["net.anomaly"] == 100_000
    assert incidents.suppressed["net.anomaly"] > 30_000


def test_a_lone_alarm_is_no_incident_and_unknown_kinds_are_refused():
    incidents = Incidents()
    for t in (0.0, 10.0, 20.0):
        incidents.alarm("net.novel", t)
    assert incidents.totals() == {}
    with pytest.raises(Misuse):
        incidents.alarm("net.other", 0.0)


def test_kinds_are_report_incident_names():
    from tinyward.trust.report import _NAME

    assert all(_NAME.fullmatch(k) for k in INCIDENT_KINDS)
    assert len(set(INCIDENT_KINDS)) == 3


# ---- the network scorer ------------------------------------------------------------------


def test_watch_verdicts_equal_detect_score_on_the_same_frames(net):
    base, test = net
    model = load_model(base / "model.json")
    scored = score_file(model, base / "test.pcap")
    # warmup=0: the stream is 7 s long. The sweep fills sets: the core's eviction rule is
    # the one `detect score` (and the C export) uses, so the verdicts agree under eviction
    scorer = NetScorer(model, warmup=0)
    assert "int8 integer reference" in scorer.arithmetic
    kinds: list[tuple[str, float]] = []
    for i, (ts, frame) in enumerate(test):
        scorer.feed(frame, ts)
        if i % 7 == 0:  # batches of any size give the same verdicts
            kinds += scorer.flush()
    kinds += scorer.flush()
    assert scored.novel is not None
    expected = [("net.novel" if n else "net.anomaly") for a, n in
                zip(scored.alarms, scored.novel, strict=True) if a or n]
    assert [k for k, _ in kinds] == expected
    assert sum(k == "net.novel" for k, _ in kinds) >= 100
    assert scorer.stats.packets == len(test)
    assert scorer.protected


def test_attack_sweep_in_a_stream_becomes_incidents_only_after_it_starts(net):
    base, test = net
    scorer = NetScorer(load_model(base / "model.json"), warmup=0)
    incidents = Incidents()
    raised_before_sweep = None
    for ts, frame in test:
        if raised_before_sweep is None and ts >= 2_000_005.2:
            raised_before_sweep = incidents.totals()
        scorer.feed(frame, ts)
        for kind, t in scorer.flush():
            incidents.alarm(kind, t)
    assert raised_before_sweep == {}
    assert incidents.totals().get("net.novel", 0) >= 1


def test_non_ip_and_garbage_frames_are_counted_not_fatal(net):
    base, _ = net
    scorer = NetScorer(load_model(base / "model.json"))
    scorer.feed(b"\xff" * 6 + b"\x00" * 6 + b"\x08\x06" + b"\x00" * 28, 1.0)  # ARP
    scorer.feed(b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 5, 1.0)  # cut IPv4
    scorer.feed(b"", 1.0)
    assert scorer.flush() == []
    assert scorer.stats.frames == 3 and scorer.stats.packets == 0
    assert scorer.stats.decode.skipped() == 3


def test_a_sensor_model_is_refused_as_the_net_model(sensor_model):
    with pytest.raises(WatchError, match="packet model"):
        NetScorer(load_model(sensor_model))


# ---- the sensor scorer on the application's frames ----------------------------------------


@pytest.fixture(scope="module")
def sensor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sensor")
    rng = np.random.default_rng(5)
    t = np.arange(3000)
    # whole millimetres, as the application's int16 frames carry them
    a = np.rint(1000 + 50 * np.sin(t / 40) + rng.normal(0, 5, len(t)))
    csv = base / "benign.csv"
    csv.write_text("distance_mm;other\n" + "".join(
        f"{x:.0f};{y:.2f}\n" for x, y in zip(a, rng.normal(0, 1, len(t)), strict=True)))
    path = base / "sensor.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tinyward.detect.pipeline import SensorOptions

        model = train([csv], packets=False, kind="mahalanobis",
                      sensor=SensorOptions(delimiter=";", channels=("distance_mm",)))
    save_model(model, path)
    return path


def _frames(values: np.ndarray, n: int = 20) -> list[np.ndarray]:
    return [values[k:k + n].reshape(-1, 1).astype(np.int16) for k in range(0, len(values), n)]


def test_attack_stuck_sensor_frames_raise_sensor_tamper(sensor_model):
    model = load_model(sensor_model)
    rng = np.random.default_rng(9)
    t = np.arange(3000, 4200)
    benign = 1000 + 50 * np.sin(t / 40) + rng.normal(0, 5, len(t))
    stuck = np.full(1200, 1037.0)  # the value froze (a tampered or failed sensor)
    incidents = Incidents()
    clock = iter(np.arange(0, 1e6, 1.0))
    frames = _frames(benign) + _frames(stuck)
    tapped = TappedFrames(iter(frames), SensorScorer(model, ("distance_mm",)), incidents,
                          lambda: float(next(clock)))
    seen = []
    quiet = None
    for i, frame in enumerate(tapped):
        seen.append(frame)
        if i == len(frames) // 2 - 1:
            quiet = incidents.totals()
    # the app gets exactly its frames, in order, unchanged
    assert len(seen) == len(frames) and all(a is b for a, b in zip(seen, frames, strict=True))
    assert quiet == {}
    assert incidents.totals().get("sensor.tamper", 0) >= 1


def test_sensor_model_needs_the_apps_channels(sensor_model):
    with pytest.raises(WatchError, match="lack"):
        SensorScorer(load_model(sensor_model), ("temperature",))


def test_a_frame_the_model_cannot_score_still_reaches_the_app(sensor_model):
    odd = np.zeros((4, 5, 2))  # not (samples, channels)
    tapped = TappedFrames(iter([odd]),
                          SensorScorer(load_model(sensor_model), ("distance_mm",)),
                          Incidents(), lambda: 0.0)
    assert next(tapped) is odd
    assert tapped.errors == 1


# ---- the capture socket's refusals ----------------------------------------------------------


@needs(os.geteuid() == 0, "dropping to another uid needs root")
def test_capture_without_cap_net_raw_is_refused_clearly():
    code = ("from tinyward.link.watch_capture import CaptureSocket, CaptureRefused\n"
            "try:\n    CaptureSocket('lo')\nexcept CaptureRefused as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], user=65534, group=65534,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                          cwd="/")
    assert "needs CAP_NET_RAW" in done.stdout, done.stdout + done.stderr


def test_cli_refuses_watch_options_that_do_not_go_together(tmp_path, sensor_model):
    from click.testing import CliRunner

    from tinyward.cli.main import cli

    runner = CliRunner()
    for args, says in (
        (["--watch", "lo"], "--watch and --net-model go together"),
        (["--sensor-model", str(sensor_model)], "it needs --app"),
        (["--air-gapped", "--watch", "lo", "--net-model", str(sensor_model)],
         "not with --air-gapped"),
    ):
        done = runner.invoke(cli, ["device", "run", str(tmp_path), *args])
        assert done.exit_code == 2, done.output
        assert says in done.output, done.output


def test_device_watch_refuses_a_packet_model_as_the_sensor_model(net):
    from tinyward.link.watch_device import DeviceWatch

    base, _ = net
    with pytest.raises(WatchError, match="sensor model"):
        DeviceWatch.start(None, None, base / "model.json")


def test_device_watch_taps_the_apps_frames_and_sums_its_incidents(sensor_model):
    from tinyward.link.watch_device import DeviceWatch

    watch = DeviceWatch.start(None, None, sensor_model)
    frames = _frames(np.full(2000, 1037.0))  # frozen from the start
    tapped = watch.tap(iter(frames), ("distance_mm",))
    assert sum(1 for _ in tapped) == len(frames)
    assert watch.totals().get("sensor.tamper", 0) >= 1
    assert any("application frames scored" in line for line in watch.summary())
    watch.close()
    # without a sensor model the frames are not touched at all
    plain = iter(frames)
    assert DeviceWatch.start(None, None, None).tap(plain, ("distance_mm",)) is plain


def test_bench_cost_rows_and_bounded_memory(tmp_path):
    from tinyward.bench.watch import cost

    result = cost(tmp_path, seconds=12, repeats=1)
    assert [r.name.split(" (")[0] for r in result.rows] == [
        "parse only", "parse + features", "watch, batch 1", "watch, batch 64"]
    assert all(r.packets == result.rows[0].packets > 0 for r in result.rows)
    assert "int8 integer reference" in result.arithmetic
    assert result.state_bytes > 16_648  # the float build's feature tables, and the rest
    assert result.retained_bytes_per_packet < 50  # bounded state: nothing kept per packet
    assert result.alarms >= 100  # the sweeps are in the stream


@needs(os.geteuid() == 0, "a capture socket needs root")
def test_attack_packet_flood_costs_a_bounded_number_of_scored_packets(net):
    import math
    import socket
    import time

    from tinyward.link.watch_capture import CaptureConfig, NetWatcher

    base, _ = net
    budget = 50
    watcher = NetWatcher.open("lo", NetScorer(load_model(base / "model.json")), Incidents(),
                              CaptureConfig(max_packets_per_second=budget, rcvbuf=8192))
    started = time.monotonic()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5000):  # far more than the budget, in well under a second
                s.sendto(b"f" * 100, ("127.0.0.1", 9))
        time.sleep(1.5)
    finally:
        watcher.close()
    elapsed = time.monotonic() - started
    stats = watcher.status()
    # never more than the budget in any wall-clock second the watcher ran
    assert 0 < stats.frames <= budget * (math.ceil(elapsed) + 1)
    assert stats.shed_seconds >= 1
    assert stats.kernel_drops > 0  # the bounded kernel queue dropped the rest, counted
    assert stats.errors == 0


# ---- state under floods and the warm-up (issue 15: the lab run) ---------------------------


def _own_rows(model, frames, protect: bool) -> list[list[float]]:
    """Feature rows of the device's own packets (A <-> B) in ``frames``, from the trained
    state, with the eviction rule of every build (``protect``) or the older LRU rule."""
    from tinyward.detect.pcap import decode_frame
    from tinyward.link.watch import set_unsafe_lru_eviction

    extractor = model.features.extractor.copy()
    assert set_unsafe_lru_eviction(extractor, not protect)
    rows = []
    for ts, frame in frames:
        packet = decode_frame(ts, 1, frame)
        row = extractor.update(packet)
        if {packet.src, packet.dst} == {A, B}:
            rows.append(row)
    return rows


def test_attack_flood_of_new_sockets_no_longer_evicts_the_devices_own_flows(net):
    """A SYN flood (2,000 new sockets in 0.2 s) fills the socket table. With the older
    least-recently-updated rule (the unsafe baseline here) it evicts the device's own
    telemetry socket, whose packets then carry features of a flow with no history (in the
    lab: minutes of net.anomaly after every sweep). With the least-established rule (the
    core's, training's and the C export's: detect/netfeatures.py) the flood churns
    its own one-packet slots: the device's packets after the flood have exactly the
    features they have in the same stream without the flood."""
    base, _ = net
    model = load_model(base / "model.json")
    rng = np.random.default_rng(11)
    before, after = _benign(3_000_000.0, 200, rng), _benign(3_000_010.2, 200, rng)
    flood = [(3_000_010.0 + k * 0.0001, _eth(C, A, dpkt.tcp.TCP(sport=1024 + k, dport=443,
                                                                flags=2), 6))
             for k in range(2000)]
    quiet = _own_rows(model, before + after, protect=True)
    flooded = _own_rows(model, sorted(before + flood + after), protect=True)
    assert flooded == quiet
    unsafe = _own_rows(model, sorted(before + flood + after), protect=False)
    assert len(unsafe) == len(quiet) == 800
    assert unsafe[:400] == quiet[:400] and unsafe[400:] != quiet[400:]  # history lost


def test_protected_tables_change_nothing_until_a_set_is_full(net):
    """Without eviction the two rules give the same features bit for bit (so models
    trained without eviction keep their features)."""
    base, _ = net
    model = load_model(base / "model.json")
    frames = _benign(4_000_000.0, 300, np.random.default_rng(5))
    assert _own_rows(model, frames, protect=True) == _own_rows(model, frames, protect=False)


def test_network_alarms_in_the_warm_up_are_dropped_and_counted(net):
    base, test = net
    model = load_model(base / "model.json")
    sweep_at = 2_000_005.2  # the stream's sweep starts 5.2 s after its first packet
    for warmup, alarmed in ((10.0, False), (3.0, True)):
        scorer = NetScorer(model, warmup=warmup)
        kinds = []
        for ts, frame in test:
            scorer.feed(frame, ts)
            kinds += scorer.flush()
        assert bool(kinds) is alarmed
        assert all(t >= test[0][0] + warmup for _, t in kinds)
        assert (scorer.stats.warmup > 0) is (not alarmed)
        assert sweep_at > test[0][0] + 3.0
    with pytest.raises(Misuse):
        NetScorer(model, warmup=-1)
