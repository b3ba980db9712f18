"""Per-frame labels for the lab's captures, from the attack windows and the attackers'
addresses (the format ``tinyward detect eval --labels`` reads: one label per line, line i
for frame i; see :mod:`tinyward.detect.labelled`).

Rule (:func:`label_frames`, pure): a frame that has one of an attack's attackers at either
end (its MAC or IP address as source or destination, or, for ARP, as sender or target) is
labelled with the latest attack *by that attacker* that started before the frame; every
other frame is ``benign``. So replayed frames (sent with the attacker's MAC), the man in
the middle's forwarded frames (also after it stopped, while caches stay poisoned), and the
answers a victim sends to a scanner are the attack's; the devices' reports during an
attack, and an attacker host's own frames before its first attack, are ``benign``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Frame", "Window", "label_frames", "read_frames", "write_labels"]

BENIGN = "benign"


@dataclass(frozen=True)
class Frame:
    ts: float
    src_mac: str
    dst_mac: str
    addresses: tuple[str, ...]  # IP source and destination, or ARP sender and target


@dataclass(frozen=True)
class Window:
    """One attack's time span and its attackers' MACs and IP addresses (``sources``)."""

    attack: str
    start: float
    end: float
    sources: tuple[str, ...] = ()


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def read_frames(path: Path, max_frames: int = 5_000_000) -> list[Frame]:
    """Every frame of an Ethernet pcap the lab wrote (tcpdump -w), in file order."""
    import dpkt

    frames: list[Frame] = []
    with open(path, "rb") as handle:
        for ts, buf in dpkt.pcap.Reader(handle):
            if len(frames) >= max_frames:
                raise ValueError(f"{path}: more than {max_frames} frames")
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.UnpackError, ValueError):
                frames.append(Frame(float(ts), "", "", ()))
                continue
            data = eth.data
            addresses: tuple[str, ...] = ()
            if isinstance(data, dpkt.ip.IP):
                addresses = (socket.inet_ntoa(data.src), socket.inet_ntoa(data.dst))
            elif isinstance(data, dpkt.arp.ARP) and len(data.spa) == 4 and len(data.tpa) == 4:
                addresses = (socket.inet_ntoa(data.spa), socket.inet_ntoa(data.tpa))
            frames.append(Frame(float(ts), _mac(eth.src), _mac(eth.dst), addresses))
    return frames


def label_frames(frames: Sequence[Frame], windows: Sequence[Window]) -> list[str]:
    """One label per frame (see the module doc)."""
    ordered = sorted(windows, key=lambda w: w.start)
    sources = [({x.lower() for x in w.sources}) for w in ordered]
    labels = []
    for frame in frames:
        ends = {frame.src_mac, frame.dst_mac, *frame.addresses}
        label = BENIGN
        for window, theirs in zip(ordered, sources, strict=True):
            if window.start > frame.ts:
                break
            if theirs & ends:
                label = window.attack
        labels.append(label)
    return labels


def write_labels(path: Path, labels: Sequence[str]) -> None:
    """One label per line (frame 1 first)."""
    Path(path).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
