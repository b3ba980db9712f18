"""``tinyward bench detect --train BENIGN --capture X --labels L``: every detector, and
KitNET, HalfSpaceTrees and IsolationForest, on any capture with per-frame labels.

Issue 13's check runs every detector unchanged on public captures the project has never
seen and compares them at 0.1 % FPR with KitNET and IsolationForest. The MQTTset bench is
wired to MQTTset's folders; this builds the same :class:`PacketStreams` from a benign
training capture and one labelled capture, so the bench table, the own-threshold figures
and the fused rows come out the same way for any data.

Protocol: features of ``train`` from an empty state (each detector fits on its earlier
75 %, calibrates on the last 25 % as it is and as new peers); the labelled capture is
scored as **one stream continuing from the trained state**, in frame order, as a device
would see it; its rows are then split by label (``0``/``benign``/``normal`` benign,
every other label an attack of its own). Frames the reader skips (non-IP, malformed,
truncated) are counted and printed; they are in no row, so an attack's TPR is over its
scored frames (the count of skipped attack frames is given). Frames are numbered as in
:mod:`tinyward.detect.labelled`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.detect.errors import LabelFileError
from tinyward.detect.evaluate import PacketStreams
from tinyward.detect.labelled import is_benign, read_labels
from tinyward.detect.netfeatures import NetFeatureExtractor
from tinyward.detect.newpeers import new_peer_rows
from tinyward.detect.pcap import Packet, ReadStats, read_packets

__all__ = ["labelled_streams"]


def labelled_streams(train: Path, capture: Path, labels_path: Path, *,
                     strip_tcp_options: bool) -> tuple[PacketStreams, dict[str, list[Packet]],
                                                       dict[str, Any]]:
    """(streams, packets by row name, notes) for the bench on a labelled capture.

    ``packets`` has ``train``, ``benign`` and one entry per attack label, in the order of
    the rows of ``streams`` (novelty and per-class thresholds need the packets).

    Raises:
        PcapError: a capture is unreadable.
        LabelFileError: the labels do not cover the capture's frames, or no benign frame.
    """
    labels = read_labels(labels_path)
    extractor = NetFeatureExtractor()
    train_packets = read_packets(train, strip_tcp_options=strip_tcp_options)
    started = time.perf_counter()
    X_train = extractor.transform(train_packets)
    elapsed = time.perf_counter() - started
    stats = ReadStats(frame_numbers=[], skipped_frames=[])
    packets = read_packets(capture, strip_tcp_options=strip_tcp_options, stats=stats)
    if len(labels) != stats.frames:
        raise LabelFileError(labels_path, f"labels {len(labels)} frames, but {capture} has "
                             f"{stats.frames} frames; label every frame (numbered from 1)")
    X = extractor.continue_with(packets)[1] if packets else np.zeros((0, X_train.shape[1]))
    row_labels = [labels[n - 1] for n in stats.frame_numbers or []]
    names = sorted({lab for lab in row_labels if not is_benign(lab)})
    benign_mask = np.array([is_benign(lab) for lab in row_labels], dtype=bool)
    if not benign_mask.any():
        raise LabelFileError(labels_path, "no benign frame is scored: FPR cannot be measured")
    by_name: dict[str, list[Packet]] = {"train": train_packets,
                                        "benign": [p for p, b in zip(packets, benign_mask,
                                                                     strict=True) if b]}
    attacks = {}
    for name in names:
        mask = np.array([lab == name for lab in row_labels], dtype=bool)
        attacks[name] = X[mask]
        by_name[name] = [p for p, m in zip(packets, mask, strict=True) if m]
    benign_ts = [p.ts for p in by_name["benign"]]
    hours = (max(benign_ts) - min(benign_ts)) / 3600 if len(benign_ts) > 1 else 0.0
    skipped_attack = {name: sum(1 for n, _ in stats.skipped_frames or []
                                if labels[n - 1] == name) for name in names}
    notes = {"frames": stats.frames, "scored": len(packets),
             "skipped": {"non-IP": stats.non_ip, "malformed IP": stats.malformed_ip,
                         "truncated IP": stats.truncated_ip},
             "skipped_attack_frames": skipped_attack}
    streams = PacketStreams(
        strip_tcp_options, X_train, X[benign_mask], attacks, hours,
        1e6 * elapsed / max(len(train_packets), 1), extractor.state_bytes(), extractor,
        {"train": [str(train)], "capture": [str(capture)], "labels": [str(labels_path)]},
        new_peer_rows(train_packets, 0.25, None))
    return streams, by_name, notes
