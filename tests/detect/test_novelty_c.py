"""The C export of novelty, classes and the fused alarm equals Python bit for bit."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tests.detect._synthetic_net import TCP, UDP, packet, plant
from tinyward.detect.fusion import FusedNetDetector, packet_classes
from tinyward.detect.models import make_detector
from tinyward.detect.netfeatures import NetFeatureExtractor
from tinyward.detect.novelty_c import RAW, RECORD, build_novelty_harness, export_novelty_c

pytestmark = needs(shutil.which("gcc") is not None, "needs gcc")
KEY = bytes(range(100, 116))


def _random_packets(n: int, seed: int) -> list:
    rng = random.Random(seed)
    v4 = [bytes([10, 0, 0, i]) for i in range(1, 9)] + [b"\xff" * 4, bytes([224, 0, 0, 251]),
                                                      bytes([192, 168, 1, 255])]
    v6 = [bytes(rng.getrandbits(8) for _ in range(16)) for _ in range(6)]
    v6.append(b"\xff\x02" + bytes(13) + b"\x02")
    out = []
    for i in range(n):
        hosts = v4 if rng.random() < 0.7 else v6
        a, b = rng.sample(hosts, 2)
        proto = rng.choice((TCP, TCP, UDP, UDP, 1, 58, 47, 132))
        ports = proto in (TCP, UDP, 132)
        sport = rng.choice((1883, 137, 138, 5353, rng.randrange(65536))) if ports else 0
        dport = rng.choice((1883, 138, sport, rng.randrange(65536))) if ports else 0
        out.append(packet(float(i), a, b, proto, sport, dport, 60))
    return out


def _run(exe: Path, packets: list, scores: np.ndarray) -> np.ndarray:
    data = b"".join(RECORD.pack(float(s), len(p.src), p.proto, p.sport, p.dport,
                                p.src.ljust(16, b"\0"), p.dst.ljust(16, b"\0"))
                    for p, s in zip(packets, scores, strict=True))
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True,
                         timeout=120).stdout
    return np.frombuffer(out, dtype=np.dtype([("h", "<u8"), ("novel", "u1"), ("cls", "u1"),
                                               ("alarm", "u1")]))


@pytest.mark.parametrize("granularity", ["pair", "service"])
def test_c_novelty_classes_and_alarms_equal_python(tmp_path: Path, granularity: str) -> None:
    train = plant(3000, seed=1, broadcasts=20) + _random_packets(600, seed=2)
    train.sort(key=lambda p: p.ts)
    extractor = NetFeatureExtractor()
    X = extractor.transform(train)
    fused = FusedNetDetector(make_detector("mahalanobis"), key=KEY, granularity=granularity)
    fused.fit(X, train, target_fpr=0.01)
    test = plant(1500, seed=3, start=1_700_100_000.0, broadcasts=20) + _random_packets(
        3000, seed=4)  # half of these tuples are new
    _, Y = extractor.continue_with(test)
    scores = fused.base.score(Y)
    c = _run(build_novelty_harness(tmp_path, fused), test, scores)
    novel = fused.novelty.novel(test)
    assert 0.1 < novel.mean() < 0.9  # both outcomes are exercised
    assert c["h"].tolist() == [fused.novelty.hash_of(p) for p in test]
    assert np.array_equal(c["novel"].astype(bool), novel)
    assert np.array_equal(c["cls"], packet_classes(test))
    alarms = fused.alarms(Y, test)
    assert 0 < alarms.mean() < 1 and np.array_equal(c["alarm"].astype(bool), alarms)


def test_c_blake2s_equals_hashlib_on_thousands_of_inputs(tmp_path: Path) -> None:
    fused = FusedNetDetector(make_detector("mahalanobis"), key=KEY)
    packets = plant(300, seed=6)
    fused.fit(NetFeatureExtractor().transform(packets), packets, target_fpr=0.01)
    exe = build_novelty_harness(tmp_path, fused)
    rng = random.Random(7)
    messages = [rng.randbytes(rng.randint(1, 64)) for _ in range(5000)]
    data = b"".join(bytes([len(m)]) + m.ljust(RAW - 1, b"\0") for m in messages)
    out = subprocess.run([str(exe), "raw"], input=data, capture_output=True, check=True,
                         timeout=120).stdout
    got = np.frombuffer(out, dtype="<u8").tolist()
    want = [int.from_bytes(hashlib.blake2s(m, key=KEY, digest_size=8).digest(), "little")
            for m in messages]
    assert got == want


@needs(shutil.which("arm-none-eabi-gcc") is not None, "needs gcc-arm-none-eabi")
def test_novelty_builds_for_cortex_m4(tmp_path: Path) -> None:
    from tinyward.detect.cortex_m import arm_sizes

    packets = plant(300, seed=6)
    fused = FusedNetDetector(make_detector("mahalanobis"), key=KEY)
    fused.fit(NetFeatureExtractor().transform(packets), packets, target_fpr=0.01)
    files = export_novelty_c(tmp_path, fused)
    sizes = arm_sizes(files.source, tmp_path / "m4", ("-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"))
    assert sizes.ram == 0 and 0 < sizes.flash < 4096
    print(f"novelty on Cortex-M4F -Os: {sizes.flash} B flash with {len(fused.novelty)} hashes")
