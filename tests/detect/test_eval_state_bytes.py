"""`detect eval --sensors` states the stream state the device holds (the exported C
struct), not the first extractor's float32 formula (30,112 B at 8 channels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyward.detect.evaluate import sensor_state_bytes
from tinyward.detect.sensorfeatures import SKAB_CHANNELS, SensorFeatureExtractor, read_sensor_csv


def test_sensor_state_is_the_exported_c_struct(skab: Path) -> None:
    table = read_sensor_csv(skab / "anomaly-free" / "anomaly-free.csv", SKAB_CHANNELS)
    extractor = SensorFeatureExtractor(SKAB_CHANNELS)
    extractor.fit([np.asarray(table.values)[:3000]])
    # 8 c (history + window + 37) + 56 + zrough's 8 c + 8: the Cortex-M4 bss of docs/detect-c.md
    assert sensor_state_bytes(extractor) == 61_944
    assert sensor_state_bytes(extractor) != 30_112
