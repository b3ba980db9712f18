"""Inject sensor tampering into a real benign signal (for evaluation only).

SKAB contains physical faults, not attacks, so tinyward's sensor-attack figures come
from tampering *injected* by this module into SKAB's real anomaly-free recordings, with
a fixed seed. Every result built on it must say so (:data:`INJECTED_NOTE`).

Kinds: ``freeze`` (one channel stuck at its current value), ``replay`` (every channel
replays an earlier stretch of the same stream, as a spoofer would), ``bias`` (a constant
offset on one channel), ``drift`` (a slowly growing offset on one channel), ``spikes``
(a few large single-sample spikes on one channel) and ``noise`` (a raised noise floor
on one channel). Sizes are in units of the channel's own standard deviation in the
clean segment, so no kind is trivially huge.

Which windows count as tampered (:func:`window_kind`): at least half of the window's
samples lie in a tampered segment AND at least one of its samples was actually altered.
The second condition matters only for ``spikes``: a segment holds ``length // 30``
single-sample spikes, so a 30-sample window inside it can hold none and is then exactly
the clean signal. Such windows were once labelled "spikes" (about a third of them on the
training streams' dev split), which capped any memoryless detector's AUC; now they are
left out of both classes, as partly covered windows already are. The attack itself is
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyward.detect.errors import DetectMisuse

TAMPER_KINDS: tuple[str, ...] = ("freeze", "replay", "bias", "drift", "spikes", "noise")
INJECTED_NOTE = (
    "sensor attacks were INJECTED by tinyward.detect.tamper into SKAB's real "
    "anomaly-free signals (fixed seed); SKAB itself contains physical faults, not attacks"
)


@dataclass(frozen=True)
class Injection:
    kind: str
    start: int
    length: int
    channel: int  # -1 for all channels


def inject(values: np.ndarray, injection: Injection, rng: np.random.Generator) -> np.ndarray:
    """Return a copy of ``values`` (n, channels) with one tampering applied in place of
    ``values[start : start + length]``.

    Raises:
        DetectMisuse: unknown kind, or a segment outside the signal (or, for replay,
            no earlier stretch to copy from).
    """
    out = np.array(values, dtype=np.float64, copy=True)
    start, length, ch = injection.start, injection.length, injection.channel
    end = start + length
    if injection.kind not in TAMPER_KINDS:
        raise DetectMisuse(f"unknown tamper kind {injection.kind!r}; one of {TAMPER_KINDS}")
    if start < 1 or end > len(out) or length < 2:
        raise DetectMisuse(f"segment {start}:{end} outside the signal of {len(out)} samples")
    segment = out[start:end]
    scale = max(float(out[max(0, start - 300) : start, ch].std()) if ch >= 0 else 1.0, 1e-9)
    if injection.kind == "freeze":
        segment[:, ch] = out[start - 1, ch]
    elif injection.kind == "replay":
        if start < length + 60:
            raise DetectMisuse("replay needs an earlier stretch: start the segment later")
        lag = int(rng.integers(length + 60, min(length + 600, start) + 1))
        segment[:] = out[start - lag : end - lag]
    elif injection.kind == "bias":
        segment[:, ch] += rng.choice([-1.0, 1.0]) * 3.0 * scale
    elif injection.kind == "drift":
        segment[:, ch] += rng.choice([-1.0, 1.0]) * np.linspace(0.0, 4.0 * scale, length)
    elif injection.kind == "spikes":
        count = max(2, length // 30)
        where = rng.choice(length, size=count, replace=False)
        segment[where, ch] += rng.choice([-1.0, 1.0], size=count) * 6.0 * scale
    elif injection.kind == "noise":
        diffs = np.diff(out[max(0, start - 300) : start, ch])
        floor = max(float(np.median(np.abs(diffs))), 1e-6 * scale)
        segment[:, ch] += rng.normal(0.0, 3.0 * floor, size=length)
    return out


@dataclass
class TamperedStream:
    values: np.ndarray  # (n, channels)
    labels: np.ndarray  # (n,) 1 where tampered
    kinds: np.ndarray  # (n,) index into TAMPER_KINDS, -1 where clean
    injections: list[Injection]
    note: str = INJECTED_NOTE
    # (n,) True where a sample was changed (the whole segment, except for spikes: only
    # the spiked samples); None for streams built before it existed.
    altered: np.ndarray | None = None


def window_kind(stream: TamperedStream, begin: int, end: int) -> str | None:
    """The tamper kind of window ``[begin, end)``, or None when it does not count as
    tampered: fewer than half its samples in a tampered segment, or none of them altered
    (see the module docstring)."""
    labels = stream.labels[begin:end]
    if not len(labels) or labels.mean() < 0.5:
        return None
    if stream.altered is not None and not stream.altered[begin:end].any():
        return None
    kinds = stream.kinds[begin:end]
    return TAMPER_KINDS[int(np.bincount(kinds[kinds >= 0]).argmax())]


def tamper_stream(
    clean: np.ndarray,
    *,
    kinds: tuple[str, ...] = TAMPER_KINDS,
    length: int = 120,
    gap: int = 240,
    lead: int = 700,
    seed: int = 0,
    first_kind: int = 0,
) -> TamperedStream:
    """Inject ``kinds`` in turn (round robin from ``first_kind``, random channel) into a
    clean stream, segments of ``length`` samples separated by ``gap`` clean ones, after
    a clean ``lead`` (which also gives replay something to copy).

    Raises:
        DetectMisuse: the stream is too short for one injection.
    """
    rng = np.random.default_rng(seed)
    values = np.array(clean, dtype=np.float64, copy=True)
    n, channels = values.shape
    labels = np.zeros(n, dtype=np.int8)
    kind_of = np.full(n, -1, dtype=np.int16)
    injections: list[Injection] = []
    altered = np.zeros(n, dtype=bool)
    start, turn = lead, first_kind
    while start + length <= n:
        kind = kinds[turn % len(kinds)]
        channel = -1 if kind == "replay" else int(rng.integers(channels))
        injection = Injection(kind, start, length, channel)
        before = values
        values = inject(values, injection, rng)
        if kind == "spikes":
            altered[start : start + length] = values[start : start + length, channel] != before[
                start : start + length, channel]
        else:
            altered[start : start + length] = True
        labels[start : start + length] = 1
        kind_of[start : start + length] = TAMPER_KINDS.index(kind)
        injections.append(injection)
        start += length + gap
        turn += 1
    if not injections:
        raise DetectMisuse(f"a stream of {n} samples is too short for one injection")
    return TamperedStream(values, labels, kind_of, injections, altered=altered)
