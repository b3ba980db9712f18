"""Every exception class tinyward defines derives from TinywardError.

So the CLI's one ``except TinywardError`` turns any refusal into one ``error: …`` line with a
documented exit code, and ``except TinywardError`` in an embedding program catches the lot.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import tinyward
from tinyward.errors import TinywardError

# Modules that cannot be imported on every machine are skipped by name, never silently.
_OPTIONAL_IMPORTS: frozenset[str] = frozenset()

# Exceptions allowed outside the family, each with its reason. Keep it short.
ALLOWED_OUTSIDE: dict[str, str] = {
    "tinyward.detect.threshold.ThresholdWarning":
        "a warnings.warn category (UserWarning), never raised; the refusal is CalibrationRefused",
    "tinyward.detect.sensorfeatures.SensorChannelWarning":
        "a warnings.warn category (UserWarning) naming a dropped channel, never raised",
}


def _tinyward_modules() -> list[str]:
    names = [tinyward.__name__]
    for info in pkgutil.walk_packages(tinyward.__path__, prefix="tinyward."):
        if "._bench_app" in info.name or info.name.endswith(".__main__"):
            continue  # an untrusted example app's files; a module that runs the CLI
        names.append(info.name)
    return sorted(names)


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _tinyward_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            if name in _OPTIONAL_IMPORTS:
                continue
            raise
        for _attr, value in inspect.getmembers(module, inspect.isclass):
            if (issubclass(value, BaseException) and value.__module__ == name):
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_walk_finds_the_known_families() -> None:
    found = _exception_classes()
    # The walk really reaches the subpackages (a walk that finds nothing would pass below).
    for name in ("tinyward.trust.report.MalformedReport", "tinyward.fleet.guards.Refused",
                 "tinyward.link.netns.NamespaceUnavailable", "tinyward.trust.cose.MalformedCose"):
        assert name in found


def test_every_tinyward_exception_derives_from_tinyward_error() -> None:
    outside = sorted(name for name, cls in _exception_classes().items()
                     if not issubclass(cls, TinywardError) and name not in ALLOWED_OUTSIDE)
    assert outside == []


def test_every_trust_exception_derives_from_trust_error() -> None:
    from tinyward.trust.errors import TrustError

    outside = sorted(name for name, cls in _exception_classes().items()
                     if name.startswith("tinyward.trust.") and not issubclass(cls, TrustError))
    assert outside == []
