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
from collections.abc import Sequence

import numpy as np

from tinyward.detect.netfeatures import NetFeatureConfig, NetFeatureExtractor
from tinyward.detect.pcap import Packet
from tinyward.detect.threshold import split_calibration

__all__ = ["rename_peers", "new_peer_rows"]

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
