"""Benchmark: exported C detectors vs the numpy int8 reference and the float models.

    .venv/bin/python benchmarks/detect_c_speed.py [--repeats 200]

Data: SKAB's anomaly-free run with 16 simple features (8 sensors + first differences),
plus a synthetic 24-feature set, so the figures do not depend on the packet features.
Also prints what int8 quantisation costs in ROC AUC on SKAB (per-run protocol), and,
unless --no-arm, the Cortex-M4 sizes (arm-none-eabi-size) and QEMU instruction counts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.bench.detect_c import bench_c, format_bench
from tinyward.detect.cortex_m import arm_sizes, qemu_instructions
from tinyward.detect.cost import KITNET_100_OPS
from tinyward.detect.export_c import export_c
from tinyward.detect.quant_eval import skab_compare, skab_simple_features

ROOT = Path(__file__).resolve().parents[1]
SKAB = ROOT / ".." / "shared" / "data" / "skab"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-arm", action="store_true", help="skip Cortex-M4 build and QEMU")
    args = parser.parse_args()
    X, _ = skab_simple_features(SKAB / "anomaly-free" / "anomaly-free.csv")
    rng = np.random.default_rng(0)
    X24 = rng.normal(size=(10000, 6)) @ rng.normal(size=(6, 24)) + 0.1 * rng.normal(size=(10000, 24))
    results = []
    arm_lines = []
    arm = not args.no_arm and shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")
    for data in (X, X24):
        for detector in (Int8AutoencoderDetector(), Int8MahalanobisDetector()):
            detector.fit(data, target_fpr=0.001, seed=0)
            results.append(bench_c(detector, data, repeats=args.repeats))
            if arm:
                arm_lines.append(_arm_line(detector, data))
    print("Scoring speed, one core (vectors per second; KitNET ops on 100 features = "
          f"{KITNET_100_OPS}):")
    print(format_bench(results))
    if arm_lines:
        print("\nCortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os; text/data/bss of the "
              "exported .o; instructions per inference on QEMU mps2-an386):")
        print("\n".join(arm_lines))
    print("\nint8 quantisation cost on SKAB (fit on each run's first 400 rows, mean ROC AUC):")
    for model, row in skab_compare(SKAB).items():
        print(f"  {model:<12} float {row['auc_float']:.4f}  int8 {row['auc_int8']:.4f}  "
              f"({int(row['runs'])} runs)")
    return 0


def _arm_line(detector: Int8AutoencoderDetector | Int8MahalanobisDetector,
              data: np.ndarray) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        files = export_c(detector, Path(tmp), prefix="tw_model")
        soft = arm_sizes(files.source, Path(tmp) / "arm")
        no_float = arm_sizes(files.source, Path(tmp) / "arm", ("-DTW_MODEL_NO_FLOAT",))
        Xq = detector.quantize_features(data[:: max(1, len(data) // 64)][:64])
        count = qemu_instructions(files.source, files.prefix, Xq, detector.score_q(Xq),
                                  Path(tmp) / "qemu", runs=2)
        count_o2 = qemu_instructions(files.source, files.prefix, Xq, detector.score_q(Xq),
                                     Path(tmp) / "qemu-o2", runs=2, model_flags=("-O2",))
    return (f"  {detector.name:<18} d={data.shape[1]:<3} soft-float {soft.text}/{soft.data}/"
            f"{soft.bss}  int-only {no_float.text}/{no_float.data}/{no_float.bss}  "
            f"{count.instructions_per_inference:.0f} instructions/inference "
            f"(-O2: {count_o2.instructions_per_inference:.0f}; checksums "
            f"{'match' if count.checksum_ok and count_o2.checksum_ok else 'DIFFER from'} Python)")


if __name__ == "__main__":
    sys.exit(main())
