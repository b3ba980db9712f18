"""What an update target says about itself, and whether a device may install it.

A target is one updatable component of an ML sensor, published in the fleet's TUF
repository (``tinyward.fleet.update_repo``). TUF signs and checks its length and hashes;
tinyward's own facts about it travel in the target's ``custom`` metadata, signed with
it, as this module's :class:`TargetMeta`::

    {"component": "app", "version": "1.4.0", "product_class": "pump-sensor",
     "min_tinyward": "0.1.0", "devices": [], "cohorts": []}

``devices`` (device IDs) and ``cohorts`` (names) are optional; empty means every device of
the product class. The device enforces component, version, product class, minimum
tinyward version and ``devices`` (:meth:`TargetMeta.check_installable`); cohorts are the
fleet's rollout business (the fleet offers a target only to devices in its cohorts).

Pure: no I/O. Shared by the fleet (which writes it) and the device (which checks it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyward.update.errors import (
    BadTargetMeta,
    NeedsNewerTinyward,
    NotForThisDevice,
    Rollback,
    WrongProduct,
)

#: The updatable components of an ML sensor.
COMPONENTS: tuple[str, ...] = ("app", "model", "detector", "config")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE_ID = re.compile(r"^[0-9a-f]{64}$")
_KEYS = frozenset({"component", "version", "product_class", "min_tinyward", "devices", "cohorts"})
MAX_LISTED = 10_000


@dataclass(frozen=True, order=True)
class Version:
    """``MAJOR.MINOR.PATCH``, each 0..999999, compared as a tuple."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: object) -> Version:
        if not isinstance(text, str) or not _VERSION.fullmatch(text):  # $ lets "\n" in
            raise BadTargetMeta(f"version {text!r} is not MAJOR.MINOR.PATCH (numbers 0..999999, "
                                "no leading zeros)")
        major, minor, patch = (int(p) for p in text.split("."))
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def as_counter(self) -> int:
        """A monotonic integer for an anti-rollback counter: higher version, higher number."""
        return (self.major * 1_000_000 + self.minor) * 1_000_000 + self.patch

    @classmethod
    def from_counter(cls, value: int) -> Version:
        rest, patch = divmod(value, 1_000_000)
        major, minor = divmod(rest, 1_000_000)
        return cls(major, minor, patch)


@dataclass(frozen=True)
class TargetMeta:
    """The signed custom metadata of one target."""

    component: str
    version: Version
    product_class: str
    min_tinyward: Version
    devices: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()

    def to_custom(self) -> dict[str, Any]:
        return {"component": self.component, "version": str(self.version),
                "product_class": self.product_class, "min_tinyward": str(self.min_tinyward),
                "devices": list(self.devices), "cohorts": list(self.cohorts)}

    @classmethod
    def from_custom(cls, custom: object) -> TargetMeta:
        """Parse a target's ``custom`` object; :class:`BadTargetMeta` names what is wrong."""
        if not isinstance(custom, Mapping):
            raise BadTargetMeta("the target has no custom metadata object")
        unknown = set(custom) - _KEYS
        if unknown:
            names = ", ".join(sorted(map(str, unknown)))
            raise BadTargetMeta(f"unknown custom metadata keys: {names}")
        component = custom.get("component")
        if component not in COMPONENTS:
            raise BadTargetMeta(f"component {component!r} is not one of {', '.join(COMPONENTS)}")
        product = custom.get("product_class")
        if not isinstance(product, str) or not _NAME.fullmatch(product):
            raise BadTargetMeta(f"product_class {product!r} is not a name (letters, digits, _.-)")
        devices = _names(custom.get("devices", []), "devices", _DEVICE_ID)
        cohorts = _names(custom.get("cohorts", []), "cohorts", _NAME)
        return cls(component, Version.parse(custom.get("version")), product,
                   Version.parse(custom.get("min_tinyward")), devices, cohorts)

    def check_installable(self, *, product_class: str, device_id: str,
                          installed: Version | None, tinyward_version: Version) -> None:
        """Raise an :class:`~tinyward.update.errors.UpdateRefused` unless this device may
        install the target over ``installed`` (None: nothing installed yet)."""
        if self.product_class != product_class:
            raise WrongProduct(f"target is for product class {self.product_class!r}, "
                               f"this device is {product_class!r}")
        if self.devices and device_id not in self.devices:
            raise NotForThisDevice("target names its devices and this device is not one of them")
        if installed is not None and self.version <= installed:
            raise Rollback(f"{self.component} {self.version} is not newer than the installed "
                           f"{installed}")
        if tinyward_version < self.min_tinyward:
            raise NeedsNewerTinyward(f"target needs tinyward {self.min_tinyward} or newer, "
                                     f"this device runs {tinyward_version}")


@dataclass(frozen=True)
class Offer:
    """The fleet's suggestion to one device: install this target. Unsigned (it comes over
    the mutually authenticated link); the device still takes the target only through TUF
    and :meth:`TargetMeta.check_installable`, so an offer can only choose among signed,
    newer targets for this device (Uptane's director/image split, in small)."""

    component: str
    target_path: str
    version: Version


def is_product_class(text: object) -> bool:
    """``text`` is a valid product class name (what ``product_class`` must be)."""
    # fullmatch: ``$`` alone would let a trailing newline through.
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def _names(value: object, what: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_LISTED:
        raise BadTargetMeta(f"{what} must be a list of at most {MAX_LISTED} names")
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise BadTargetMeta(f"{what} holds {item!r}, which is not a valid name")
    return tuple(value)
