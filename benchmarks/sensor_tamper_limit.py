"""Ceilings of bias and drift AUC on the injected-tamper protocol (issue 13, item 6).

    PYTHONPATH=src .venv/bin/python benchmarks/sensor_tamper_limit.py [../shared/data/skab]

Prints :func:`tinyward.detect.tamperlimit.ceilings` on the dev split (SKAB's training
streams, seeds 100+) and on the eval's test streams (seeds 0+). Nothing is chosen by
it: it measures how far an oracle that is told the tampered channel gets with lagz's
lagged-reference statistic, and where in a drift ramp the separable windows begin.
Test-stream figures are a measurement of the protocol, not a tuning signal. ~10 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyward.detect import evaluate, sensordev
from tinyward.detect.sensorfeatures import SKAB_CHANNELS
from tinyward.detect.tamperlimit import ceilings, ramp_matched_filter_auc


def show(label: str, c) -> None:  # type: ignore[no-untyped-def]
    print(f"== {label}: {c.benign_windows} benign windows with a reference, "
          f"bias {c.counts['bias']}, drift {c.counts['drift']} windows")
    for kind in ("bias", "drift"):
        per = ", ".join(f"{SKAB_CHANNELS[ch]} {a:.2f}" for ch, a in c.own_by_channel[kind].items())
        print(f"{kind:5s} own-channel oracle {c.own[kind]:.3f}  max over channels "
              f"{c.max_plain[kind]:.3f}, tail-matched {c.max_tail[kind]:.3f}  ({per})")
    print("drift by window end into the ramp: s, windows, mean offset (sigma), own-channel "
          "oracle, ideal observer on white noise (known baseline)")
    for end, n, off, auc in c.ramp:
        print(f"  {end:4d} {n:4d} {off:5.2f} {auc:.3f} {ramp_matched_filter_auc(end):.3f}")
    for x, share, ceiling in c.ramp_ceiling:
        print(f"  windows with offset < {x} sigma: {100 * share:.1f} %; ceiling if every other "
              f"drift window were perfect: {ceiling:.3f}")


def main(skab: Path) -> None:
    fit, dev = sensordev.dev_split(skab)
    show("dev split", ceilings(fit, dev, seed=100))
    train, test = evaluate.sensor_files(skab)
    show("eval test streams", ceilings([v for _, v in train], [v for _, v in test], seed=0))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/skab"))
