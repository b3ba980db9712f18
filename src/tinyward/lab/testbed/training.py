"""How long the lab trains the device's network model, and what the training said.

The model's thresholds are calibrated on the later part of device-1's training capture
(docs/detect.md, "Thresholds"). Too short a capture gives too few calibration scores for
the requested false-positive rate; the threshold code then warns (``ThresholdWarning``)
and records the warning in the model file's ``calibration.warnings``. The lab reads it
from there (never from a run's attack labels) and prints it loudly, with the training
length the same traffic rate would need (:func:`seconds_needed`).
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["calibration_warnings", "seconds_needed"]

# The threshold code's own words (detect/threshold.py, calibrate's insufficiency text).
_COUNTS = re.compile(r"needs at least ([\d,]+) calibration scores, you have ([\d,]+)")


def calibration_warnings(model: Any) -> list[str]:
    """Every calibration warning a saved network model records (``model`` is its JSON)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cal = node.get("calibration")
            if isinstance(cal, dict):
                for note in cal.get("warnings") or ():
                    if isinstance(note, str) and note not in found:
                        found.append(note)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(model)
    return found


def seconds_needed(warnings: list[str], train_seconds: float) -> float | None:
    """Training seconds that would give every warned calibration its required scores at
    the capture's own rate (scores grow in proportion to the capture); ``None`` when no
    warning states its counts."""
    need = 0.0
    for note in warnings:
        match = _COUNTS.search(note)
        if match is None:
            continue
        required, have = (int(g.replace(",", "")) for g in match.groups())
        if have <= 0:
            continue
        need = max(need, train_seconds * required / have)
    return math.ceil(need) if need else None
