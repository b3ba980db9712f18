"""Where an application's sensor frames come from: a CSV log, or a seeded simulation.

Both yield arrays of exactly the manifest's dtype and frame shape. Real hardware plugs in
as another iterator of frames (e.g. a serial-port reader, see the people-counter example).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tinyward.app.errors import ManifestError
from tinyward.app.manifest import Manifest


def csv_frames(path: Path, manifest: Manifest) -> list[np.ndarray]:
    """Frames cut from a CSV with one column per input channel.

    Raises :class:`ManifestError` naming the file and line for a missing column or a
    non-numeric cell.
    """
    spec = manifest.input
    rows: list[list[float]] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in spec.channels if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(str(path), 1, f"CSV lacks the channel column(s) {missing}")
        for number, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[c]) for c in spec.channels])
            except (TypeError, ValueError):
                raise ManifestError(str(path), number, "not a number in a channel column") from None
    n = spec.frame_shape[0]
    data = np.array(rows, dtype=np.float64).reshape(-1, len(spec.channels))
    return [data[k : k + n].astype(spec.dtype) for k in range(0, len(data) - n + 1, n)]


def simulated_frames(manifest: Manifest, seed: int = 0) -> Iterator[np.ndarray]:
    """An endless stream of random frames of the right dtype and shape (fixed seed)."""
    spec = manifest.input
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    while True:
        data = rng.normal(1000.0, 300.0, size=spec.frame_shape)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            data = np.clip(np.rint(data), info.min, info.max)
        yield data.astype(dtype)
