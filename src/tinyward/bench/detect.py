"""Fused network detectors for ``tinyward bench detect``: novelty and per-class thresholds.

For each of tinyward's detectors (fitted once on the benign training features), the
same scores are fused three ways (:class:`tinyward.detect.fusion.FusedNetDetector`):
``+classes`` (per-class thresholds only), ``+novelty(pair)+classes`` and
``+novelty(service)+classes``. Each row gives TPR at 0.1 % and 1 % FPR per attack (on
the fused continuous score), the realised FPR of the fused alarm rule on benign test
traffic, and how much of each attack is novel — the part of the gain that comes from
"attack hosts differ", which the data README warns about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyward.detect.evaluate import ATTACKS, FPRS, PacketStreams, packet_files, summarise
from tinyward.detect.fusion import FusedNetDetector
from tinyward.detect.pcap import Packet, read_packets
from tinyward.detect.threshold import realised_fpr

VARIANTS = (
    {"novelty": False, "per_class": True},
    {"novelty": True, "per_class": True, "granularity": "pair"},
    {"novelty": True, "per_class": True, "granularity": "service"},
)


def stream_packets(data_dir: Path, strip_tcp_options: bool) -> dict[str, list[Packet]]:
    """The packets behind :func:`tinyward.detect.evaluate.packet_streams`' rows, in order."""
    files = packet_files(data_dir)
    out: dict[str, list[Packet]] = {}
    for name in ("train", "benign", *ATTACKS):
        out[name] = [p for path in files[name]
                     for p in read_packets(path, strip_tcp_options=strip_tcp_options)]
    return out


def fused_results(base: Any, streams: PacketStreams, packets: dict[str, list[Packet]],
                  *, target_fpr: float = 0.001, key: bytes | None = None) -> dict[str, Any]:
    """Fuse the FITTED ``base`` detector every way of :data:`VARIANTS`; figures per name."""
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        fused = FusedNetDetector(base, key=key, **variant)
        fused.fit(streams.train, packets["train"], target_fpr=target_fpr, fit_base=False)
        benign = fused.score(streams.benign, packets["benign"])
        attacks = {name: fused.score(streams.attacks[name], packets[name])
                   if len(packets[name]) else np.zeros(0) for name in streams.attacks}
        result = summarise(benign, attacks, threshold=fused.threshold,
                           benign_hours=streams.benign_hours)
        result["thresholds"] = _fused_thresholds(fused, streams, packets)
        if fused.novelty is not None:
            result["novel_fraction"] = {
                name: float(fused.novelty.novel(packets[name]).mean()) if packets[name] else None
                for name in ("benign", *streams.attacks)}
            result["novelty_set"] = {"hashes": len(fused.novelty),
                                     "bytes": fused.novelty.nbytes(),
                                     "dropped": vars(fused.novelty.dropped)}
        result.update(
            detector=fused.name,
            model_bytes=int(base.model_bytes()) + fused.extra_bytes(),
            novelty_bytes=fused.novelty.nbytes() if fused.novelty is not None else 0,
            ops_per_inference=int(base.ops_per_inference()) + fused.extra_ops(),
            state_bytes=streams.state_bytes,
            class_counts=fused.scale.count.tolist() if fused.scale is not None else [],
        )
        results[fused.name] = result
    return results


def _fused_thresholds(fused: FusedNetDetector, streams: PacketStreams,
                      packets: dict[str, list[Packet]]) -> dict[str, Any]:
    """For each rate of :data:`FPRS`: the fused alarm rule refitted at that rate (its
    class thresholds; the base is not refitted), its realised FPR on the benign test with
    the interval, and the TPR per attack and overall, as ``own_thresholds`` gives for a
    detector's own threshold."""
    out: dict[str, Any] = {}
    for rate in FPRS:
        at = FusedNetDetector(fused.base, novelty=fused.use_novelty, per_class=fused.per_class,
                              capacity=fused.capacity, key=fused.key,
                              granularity=fused.granularity)
        at.fit(streams.train, packets["train"], target_fpr=rate, fit_base=False)
        alarms = {name: at.alarms(streams.attacks[name], packets[name])
                  for name in streams.attacks if packets[name]}
        benign = at.alarms(streams.benign, packets["benign"])
        tpr: dict[str, float] = {name: float(a.mean()) for name, a in alarms.items()}
        everything = np.concatenate(list(alarms.values())) if alarms else np.zeros(0, bool)
        tpr["overall"] = float(everything.mean()) if len(everything) else float("nan")
        out[f"{rate:g}"] = {"realised": realised_fpr(benign.astype(np.float64), 0.5,
                                                     rate).to_json(), "tpr": tpr}
    return out
