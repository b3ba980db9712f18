"""Firmware's whole packet path in C — features (netfeatures_c), quantisation and the
exported int8 detector — gives the same scores as Python, bit for bit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs
from tinyward.detect.export_c import export_c
from tinyward.detect.models import make_detector
from tinyward.detect.netfeatures import NetFeatureExtractor
from tinyward.detect.netfeatures_c import HOST_CFLAGS, export_netfeatures_c, pack_packets
from tinyward.detect.pcap import read_packets

pytestmark = needs(shutil.which("gcc") is not None, "needs gcc")

MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "tw_nf.h"
#include "det.h"

int main(void)
{
    static tw_nf_state st;
    unsigned char buf[50];
    uint8_t src[16], dst[16];
    tw_nf_init(&st);
    while (fread(buf, 1, sizeof buf, stdin) == sizeof buf) {
        tw_nf_packet p;
        memcpy(&p.ts, buf, 8);
        p.addr_len = buf[8];
        p.proto = buf[9];
        memcpy(&p.sport, buf + 10, 2);
        memcpy(&p.dport, buf + 12, 2);
        memcpy(&p.size, buf + 14, 4);
        memcpy(src, buf + 18, 16);
        memcpy(dst, buf + 34, 16);
        p.src = src;
        p.dst = dst;
        double f[TW_NF_N_FEATURES];
        float ff[TW_NF_N_FEATURES];
        int8_t q[TW_NF_N_FEATURES];
        int32_t score = 0;
        if (tw_nf_update(&st, &p, f) != TW_NF_OK) return 2;
        for (size_t i = 0; i < TW_NF_N_FEATURES; i++) ff[i] = (float)f[i];
        if (det_quantize(ff, TW_NF_N_FEATURES, q) != DET_OK) return 3;
        if (det_score(q, &score) != DET_OK) return 4;
        fwrite(&score, sizeof score, 1, stdout);
    }
    return 0;
}
"""


def _c_scores(tmp_path: Path, extractor: NetFeatureExtractor, detector: object,
              stream: list, shift: float) -> np.ndarray:
    """The C packet path's scores of ``stream``, starting from ``extractor``'s state."""
    features = export_netfeatures_c(tmp_path, state=extractor)
    model = export_c(detector, tmp_path, prefix="det")
    (tmp_path / "main.c").write_text(MAIN)
    exe = tmp_path / "pipeline"
    subprocess.run(
        [
            "gcc",
            *HOST_CFLAGS,
            "-I",
            str(tmp_path),
            str(features.source),
            str(model.source),
            str(tmp_path / "main.c"),
            "-o",
            str(exe),
            "-lm",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = subprocess.run(
        [str(exe)], input=pack_packets(stream, shift), capture_output=True, check=True,
        timeout=120
    ).stdout
    return np.frombuffer(out, dtype=np.int32).astype(np.int64)


@pytest.mark.parametrize("kind", ["autoencoder-int8", "mahalanobis-int8"])
def test_c_packet_path_scores_equal_python(mqtt: Path, tmp_path: Path, kind: str) -> None:
    train = read_packets(mqtt / "benign/benign-train.pcap", strip_tcp_options=True)
    extractor = NetFeatureExtractor()
    detector = make_detector(kind)
    detector.fit(extractor.transform(train), seed=0)
    # the device starts from the trained state and sees benign test traffic, then a
    # brute-force attack, one second after training ended
    stream = read_packets(mqtt / "benign/benign-test.pcap", strip_tcp_options=True)
    stream += read_packets(mqtt / "bruteforce/bruteforce-test.pcapng", strip_tcp_options=True)
    shift = extractor.last_ts + 1.0 - stream[0].ts
    python = detector.score(extractor.continue_with(stream)[1]).astype(np.int64)

    c = _c_scores(tmp_path, extractor, detector, stream, shift)
    assert len(c) == len(stream) == 4521 + 3859
    np.testing.assert_array_equal(c, python)
    # and the path detects: many brute-force packets are above the threshold. The
    # autoencoder trained on the small benign split varies with the seed (0.47-0.88 on
    # seeds 0-2 here; 0.25-0.96 with the features before issue 13), so the bound is low.
    assert np.mean(c[4521:] > detector.threshold) > 0.4


def test_c_packet_path_scores_equal_python_under_a_burst_beside_established_flows(
    mqtt: Path, tmp_path: Path
) -> None:
    """Eviction pressure on the whole path: from the trained state, established clients
    and a SlowITe-like burst of 2,755 one-packet sockets; the C scores equal Python's (the
    same victims in every table), and the benign clients' scores after the burst are the
    ones they have without it."""
    from tests.detect.test_netfeatures import established_and_burst

    train = read_packets(mqtt / "benign/benign-train.pcap", strip_tcp_options=True)
    extractor = NetFeatureExtractor()
    detector = make_detector("mahalanobis-int8")
    detector.fit(extractor.transform(train), seed=0)
    benign, burst = established_and_burst()
    stream = sorted(benign + burst, key=lambda p: p.ts)
    shift = extractor.last_ts + 1.0 - stream[0].ts
    clone, rows = extractor.continue_with(stream)
    assert clone.sockets.evictions > 2000
    python = detector.score(rows).astype(np.int64)
    c = _c_scores(tmp_path, extractor, detector, stream, shift)
    assert len(c) == len(stream)
    np.testing.assert_array_equal(c, python)
    is_benign = np.array([p in set(benign) for p in stream])
    quiet = detector.score(extractor.continue_with(benign, gap=1.0)[1]).astype(np.int64)
    np.testing.assert_array_equal(c[is_benign], quiet)
