"""Tiny anomaly detectors learned from benign data only, and their C99 export.

Detectors follow scikit-learn's outlier conventions (``fit`` returns the detector,
``predict`` is -1 for an anomaly, ``decision_function`` is negative for one) and add
``score`` (higher = more anomalous) and ``threshold`` (alarm: ``score > threshold``).
The pipeline turns captures or sensor CSVs into one model file and scores new inputs::

    from tinyward.detect import load_model, save_model, score_file, train

    model = train([Path("benign.pcap")], kind="mahalanobis-int8")
    save_model(model, Path("model.json"))
    scored = score_file(load_model(Path("model.json")), Path("new.pcap"))

On feature vectors directly: ``make_detector(kind).fit(X)``; an ``-int8`` detector
exports to C with :func:`export_detector_c`. Names are imported on first use (NumPy loads with the
first; scikit-learn only with the baselines of :mod:`tinyward.detect.baselines`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.detect.errors import (
        CsvError,
        DetectError,
        DetectMisuse,
        ModelFileError,
        NotFittedError,
        PcapError,
    )
    from tinyward.detect.models import (
        KINDS,
        AutoencoderDetector,
        Detector,
        Int8AutoencoderDetector,
        Int8MahalanobisDetector,
        MahalanobisDetector,
        load_detector,
        make_detector,
    )
    from tinyward.detect.netfeatures import N_FEATURES, NetFeatureConfig, NetFeatureExtractor
    from tinyward.detect.pcap import Packet, read_packets
    from tinyward.detect.pipeline import (
        Model,
        Scored,
        export_detector_c,
        export_features_c,
        load_model,
        save_model,
        score_file,
        train,
    )
    from tinyward.detect.sensorfeatures import SensorFeatureExtractor, read_sensor_csv

_EXPORTS: dict[str, tuple[str, ...]] = {
    "models": (
        "KINDS", "Detector", "make_detector", "load_detector", "AutoencoderDetector",
        "MahalanobisDetector", "Int8AutoencoderDetector", "Int8MahalanobisDetector",
    ),
    "pipeline": (
        "Model", "Scored", "train", "save_model", "load_model", "score_file", "export_detector_c",
        "export_features_c",
    ),
    "netfeatures": ("NetFeatureExtractor", "NetFeatureConfig", "N_FEATURES"),
    "sensorfeatures": ("SensorFeatureExtractor", "read_sensor_csv"),
    "pcap": ("Packet", "read_packets"),
    "errors": (
        "DetectError", "DetectMisuse", "ModelFileError", "NotFittedError", "PcapError", "CsvError",
    ),
}

__all__ = [
    "KINDS",
    "N_FEATURES",
    "AutoencoderDetector",
    "CsvError",
    "DetectError",
    "DetectMisuse",
    "Detector",
    "Int8AutoencoderDetector",
    "Int8MahalanobisDetector",
    "MahalanobisDetector",
    "Model",
    "ModelFileError",
    "NetFeatureConfig",
    "NetFeatureExtractor",
    "NotFittedError",
    "Packet",
    "PcapError",
    "Scored",
    "SensorFeatureExtractor",
    "export_detector_c",
    "export_features_c",
    "load_detector",
    "load_model",
    "make_detector",
    "read_packets",
    "read_sensor_csv",
    "save_model",
    "score_file",
    "train",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
