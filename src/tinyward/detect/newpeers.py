"""Calibration rows for *new peers*: the later training stretch as a device sees a new flow.

Per-pair feature state (:mod:`tinyward.detect.netfeatures` keys hosts, conversations and
sockets by both endpoints) starts empty for a peer the device has never talked to, and
the first packets of such a flow score higher than the same traffic from a known peer.
The later, contiguous calibration stretch of the training stream
(:func:`tinyward.detect.threshold.split_calibration`) holds almost no such starts, so a
threshold calibrated on it alone is optimistic for new flows (issue 13: on MQTTset's
benign test, whose clients are all new, nearly every false alarm is in the first
seconds of the stream).

The rule (chosen on training data only, checked by leave-one-flow-group-out inside the
training capture, see docs/detect.md): the calibration stretch is scored twice from
the state after the fit stretch,

1. as it is (known peers continuing), the rows of the usual split, and
2. with every address renamed (:func:`rename_peers`), so every pair, conversation and
   socket is new: the warm-up of new peers (:func:`new_peer_rows`);

each is calibrated apart (peaks over threshold) and the detector keeps the higher of
the two thresholds, so that both situations keep the rate
(:func:`tinyward.detect._common.calibrate_threshold`).

Renaming keeps sizes, times, protocols and ports; features never see addresses, so only
the keys (and therefore which state a packet meets) change.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.netfeatures import NetFeatureConfig, NetFeatureExtractor
from tinyward.detect.pcap import Packet
from tinyward.detect.threshold import RealisedRate, clopper_pearson, split_calibration

__all__ = ["flow_groups", "leave_flow_group_out", "new_peer_rows", "rename_peers"]

#: XORed into every address byte: a fixed bijection, so distinct peers stay distinct and
#: no renamed address equals its original (each byte changes).
_RENAME = 0xA5


def rename_peers(packets: Sequence[Packet]) -> list[Packet]:
    """``packets`` with every address replaced by a fresh one (a fixed byte-wise XOR)."""
    def fresh(address: bytes) -> bytes:
        return bytes(b ^ _RENAME for b in address)

    return [dataclasses.replace(p, src=fresh(p.src), dst=fresh(p.dst)) for p in packets]


def new_peer_rows(packets: Sequence[Packet], fraction: float = 0.25,
                  config: NetFeatureConfig | None = None) -> np.ndarray:
    """Feature rows of the later ``fraction`` of ``packets`` (the detectors' calibration
    stretch, same split) with renamed peers, extracted from the state after the earlier
    part: one row per packet of the stretch.

    Raises:
        DetectMisuse: too few packets for the split.
    """
    fit, stretch = split_calibration(np.arange(len(packets)), fraction)
    extractor = NetFeatureExtractor(config)
    extractor.transform([packets[i] for i in fit])
    return extractor.transform(rename_peers([packets[i] for i in stretch]))


# --------------------------------------------------------------------- the check
def flow_groups(packets: Sequence[Packet], groups: int = 3) -> np.ndarray:
    """Group index per packet: flows (unordered 5-tuples) sorted by packet count, largest
    first (ties: first seen first), dealt round-robin into ``groups`` groups.

    Raises:
        DetectMisuse: fewer flows than groups.
    """
    keys = [_flow_key(p) for p in packets]
    count: dict[bytes, int] = {}
    for k in keys:
        count[k] = count.get(k, 0) + 1
    if len(count) < groups:
        raise DetectMisuse(f"{len(count)} flows cannot make {groups} groups")
    order = sorted(count, key=lambda k: -count[k])  # stable: first seen first on ties
    group = {k: i % groups for i, k in enumerate(order)}
    return np.fromiter((group[k] for k in keys), dtype=np.int64, count=len(keys))


def _flow_key(p: Packet) -> bytes:
    a = p.src + p.sport.to_bytes(2, "big")
    b = p.dst + p.dport.to_bytes(2, "big")
    return (a + b if a <= b else b + a) + bytes((p.proto,))


def leave_flow_group_out(
    packets: Sequence[Packet],
    make: Callable[[], Any],
    rates: tuple[float, ...] = (0.01, 0.001),
    *,
    groups: int = 3,
    new_peers: bool = True,
    config: NetFeatureConfig | None = None,
) -> dict[float, RealisedRate]:
    """Check the threshold rule inside the training data, as the benign test is scored:
    for each flow group, fit features and ``make()``'s detector on the other flows
    (calibrated with the new-peer rule, or on the later stretch alone with
    ``new_peers=False``) and score the held-out flows as a new stream continuing from
    the trained state. Returns the realised FPR per rate, false alarms pooled over folds.

    Raises:
        DetectMisuse: too few flows or packets.
    """
    group = flow_groups(packets, groups)
    alarms = dict.fromkeys(rates, 0)
    total = 0
    for g in range(groups):
        fit = [p for p, h in zip(packets, group, strict=True) if h != g]
        held = [p for p, h in zip(packets, group, strict=True) if h == g]
        extractor = NetFeatureExtractor(config)
        X = extractor.transform(fit)
        extra = {"new_peers": new_peer_rows(fit, 0.25, config)} if new_peers else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fold may be short: the counts say it
            detector = make()
            detector.fit(X, **extra)
            scores = np.asarray(detector.score(extractor.continue_with(held)[1]))
            for rate in rates:
                cal = detector.threshold_at(rate)
                alarms[rate] += int(np.sum(scores > cal.threshold))
        total += len(scores)
    out = {}
    for rate in rates:
        k = alarms[rate]
        low, high = clopper_pearson(k, total)
        out[rate] = RealisedRate(rate, math.nan, k, total, k / total, low, high, 0.95,
                                 rate / 2 <= k / total <= 2 * rate)
    return out
