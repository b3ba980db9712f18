"""Speed of the exported C next to the Python float model and the numpy int8 reference.

:func:`bench_c` exports a fitted int8 detector, compiles it with the host gcc at -O2
(strict warnings), scores the same vectors ``repeats`` times in one process on one core
(the harness is single-threaded), and times, in the same run:

* the C ``<prefix>_score`` (int8 vectors already quantised, as firmware would hold them);
* the numpy int8 reference, batched (all vectors in one call) and one vector per call;
* the Python float model, batched and one vector per call.

"One vector per call" is what a packet-by-packet stream costs in Python; "batched" is
numpy's best case. Figures are printed by :func:`format_bench`, never asserted.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.detect._c_harness import build_host_harness
from tinyward.detect.cost import KITNET_100_OPS
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.export_c import export_c
from tinyward.detect.models import Int8AutoencoderDetector, Int8MahalanobisDetector


@dataclass(frozen=True)
class BenchResult:
    model: str
    n_features: int
    vectors: int
    c_vectors_per_s: float
    numpy_int8_batch_vectors_per_s: float
    numpy_int8_single_vectors_per_s: float
    float_batch_vectors_per_s: float
    float_single_vectors_per_s: float
    model_bytes: int
    ops_per_inference: int
    kitnet_ops_per_inference: int
    c_scores_match_reference: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(count: int, fn: Any, min_seconds: float = 0.3, max_rounds: int = 50) -> float:
    """Vectors per second of ``fn`` (which scores ``count`` vectors), bounded in rounds."""
    rounds, start = 0, time.perf_counter()
    while True:
        fn()
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or rounds >= max_rounds:
            return count * rounds / elapsed


def bench_c(
    detector: Int8AutoencoderDetector | Int8MahalanobisDetector,
    X: np.ndarray,
    *,
    repeats: int = 200,
    single_vectors: int = 2000,
    work_dir: Path | None = None,
) -> BenchResult:
    """Measure scoring speed of ``detector`` on float features ``X`` (see module docstring).

    Raises:
        DetectMisuse: no compiler, the export does not compile, or an unfitted detector.
    """
    with tempfile.TemporaryDirectory(prefix="tinyward-bench-c-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        files = export_c(detector, root / "export", prefix="tw_bench")
        exe = build_host_harness(files.source, files.prefix, root / "build")
        Xq = detector.quantize_features(X)
        reference = detector.score_q(Xq)
        check = subprocess.run(
            [str(exe), "score"], input=Xq.tobytes(), capture_output=True, check=False, timeout=120
        )
        matches = check.returncode == 0 and np.array_equal(
            np.frombuffer(check.stdout, dtype=np.int32), reference)
        done = subprocess.run([str(exe), "bench", str(repeats)], input=Xq.tobytes(),
                              capture_output=True, timeout=600, check=True)
        c_rate = float(done.stdout.split()[0])

    few_q = Xq[:single_vectors]
    few = X[:single_vectors]
    f = detector.float_model
    return BenchResult(
        model=detector.name,
        n_features=int(X.shape[1]),
        vectors=len(X) * repeats,
        c_vectors_per_s=c_rate,
        numpy_int8_batch_vectors_per_s=_rate(len(Xq), lambda: detector.score_q(Xq)),
        numpy_int8_single_vectors_per_s=_rate(
            len(few_q), lambda: [detector.score_q(few_q[i : i + 1]) for i in range(len(few_q))],
            max_rounds=3),
        float_batch_vectors_per_s=_rate(len(X), lambda: f.score(X)),
        float_single_vectors_per_s=_rate(
            len(few), lambda: [f.score(few[i : i + 1]) for i in range(len(few))], max_rounds=3),
        model_bytes=detector.model_bytes(),
        ops_per_inference=detector.ops_per_inference(),
        kitnet_ops_per_inference=KITNET_100_OPS,
        c_scores_match_reference=bool(matches),
    )


def format_bench(results: list[BenchResult]) -> str:
    """A plain-text table of bench results, with KitNET's ops as the baseline."""
    lines = [
        (
            f"{'model':<18}{'d':>4}{'C vec/s':>14}{'np int8 batch':>15}{'np int8 1-by-1':>16}"
            f"{'float batch':>13}{'float 1-by-1':>14}{'bytes':>7}{'ops':>6}{'KitNET ops':>11}"
            f"{'C==ref':>8}"
        )
    ]
    for r in results:
        lines.append(
            f"{r.model:<18}{r.n_features:>4}{r.c_vectors_per_s:>14,.0f}"
            f"{r.numpy_int8_batch_vectors_per_s:>15,.0f}{r.numpy_int8_single_vectors_per_s:>16,.0f}"
            f"{r.float_batch_vectors_per_s:>13,.0f}{r.float_single_vectors_per_s:>14,.0f}"
            f"{r.model_bytes:>7}{r.ops_per_inference:>6}{r.kitnet_ops_per_inference:>11}"
            f"{r.c_scores_match_reference!s:>8}"
        )
    return "\n".join(lines)


def c_feature_rate(data_dir: Path, strip: bool) -> tuple[float | None, str | None]:
    """Packets per second of the C feature port (tinyward.detect.netfeatures_c) on the
    benign test capture, double precision, gcc -O2, one core; (None, why) without gcc."""
    from tinyward.detect import evaluate as ev
    from tinyward.detect.netfeatures_c import build_netfeatures_harness, pack_packets
    from tinyward.detect.pcap import read_packets

    packets = read_packets(ev.packet_files(data_dir)["benign"][0], strip_tcp_options=strip)
    with tempfile.TemporaryDirectory(prefix="tinyward-nf-") as tmp:
        try:
            exe = build_netfeatures_harness(Path(tmp))
        except DetectMisuse as error:
            return None, f"C features not measured: {error}"
        done = subprocess.run(
            [str(exe), "bench", "10"],
            input=pack_packets(packets),
            capture_output=True,
            timeout=300,
            check=True,
        )
    return float(done.stdout.split()[0]), None


def c_scores(
    detector: Any, streams: Any, python: dict[str, Any], feature_rate: float | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Export ``detector`` as C, check the C scores equal the Python integer reference on
    every benign and attack vector of ``streams``
    (:class:`~tinyward.detect.evaluate.PacketStreams`), and time C scoring; (None, why) without gcc
    or when the scores differ."""
    vectors = np.vstack([streams.benign, *[x for x in streams.attacks.values() if len(x)]])
    try:
        measured = bench_c(detector, vectors, repeats=5)
    except (DetectMisuse, OSError) as error:
        return None, f"(C export of {detector.name} not measured: {error})"
    if not measured.c_scores_match_reference:
        return None, f"C scores of {detector.name} DIFFER from the Python reference"
    # Bit-exact scores give the same detection figures as the Python int8 rows.
    result = {k: v for k, v in python.items() if not k.startswith("_")}
    per_packet = 1.0 / measured.c_vectors_per_s
    if feature_rate:
        per_packet += 1.0 / feature_rate  # C features + C scoring, timed separately
    result.update(
        detector=f"{detector.name} (C)",
        c_vectors_per_s=measured.c_vectors_per_s,
        c_feature_packets_per_s=feature_rate,
        c_packets_per_s=1.0 / per_packet,
        c_scores_match_reference=True,
        us_per_packet=1e6 * per_packet,
        c_vectors_checked=len(vectors),
    )
    return result, None
