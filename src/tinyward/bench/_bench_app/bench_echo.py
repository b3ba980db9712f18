"""A trivial application for `tinyward bench sandbox`."""

from pathlib import Path

import numpy as np


class Echo:
    def __init__(self, model_paths: list[Path]) -> None:
        self.n = 0

    def process(self, frame: np.ndarray) -> dict[str, object]:
        self.n += 1
        return {"count": int(frame[0, 0]) % 1000, "state": "normal" if self.n % 2 else "anomaly"}
