"""The requirements model: assets, requirements, tiers and EN 303 645 provisions (pure).

The model is data in the package (``assess/data/requirements.toml`` and
``assess/data/en303645.toml``), read and checked here, never written: a requirement, its
mappings to the standards and the probe that gathers its evidence change in a reviewed
commit of those files. Everything here is a pure function of their text, so every rule is
a unit test.

Evidence kinds, strongest first (:data:`EVIDENCE_KINDS`):

- ``live``: a probe attacks or measures the device under test, and its verdict decides;
- ``static``: a check reads the device folder or manifest (nothing runs);
- ``declaration``: only the manufacturer's word (a field of the target description).

:meth:`Model.coverage` says, per EN 303 645 provision, the strongest evidence tinyward
can gather for it *today*, given which probes exist: a requirement whose probe is not
built yet counts as ``planned``, never as covered.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tinyward.errors import BadInput

REQUIREMENTS_FORMAT = "tinyward-requirements/1"
PROVISIONS_FORMAT = "tinyward-provisions/1"
EVIDENCE_KINDS = ("live", "static", "declaration")
PROPERTIES = ("confidentiality", "integrity", "availability")
#: What :meth:`Model.coverage` can say of a provision, strongest first.
COVERAGE_KINDS = ("live", "static", "declaration", "planned", "none")
_ID = re.compile(r"[A-Z]+-[A-Z]+-[0-9]+")
_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
_PROVISION = re.compile(r"(5\.[0-9]{1,2}|6)-[0-9]{1,2}[A-Z]?")
_ISVS = re.compile(r"V[1-5]")
_EN18031 = frozenset({"ACM", "AUM", "SUM", "SSM", "SCM", "RLM", "NMM", "TCM", "CCK", "GEC",
                      "CRY"})
NISTIR8425_OUTCOMES = frozenset({
    "Asset Identification", "Product Configuration", "Data Protection",
    "Interface Access Control", "Software Update", "Cybersecurity State Awareness",
    "Documentation", "Information and Query Reception", "Information Dissemination",
    "Product Education and Awareness"})
_PSTI = frozenset({"Sch.1 para 1", "Sch.1 para 2", "Sch.1 para 3"})


class BadRequirements(BadInput):
    """The requirements model's data is malformed or inconsistent (a packaging bug, or an
    edited file): the message names the entry and what is wrong with it."""


@dataclass(frozen=True)
class Asset:
    id: str
    name: str
    why: str


@dataclass(frozen=True)
class Requirement:
    """One requirement, the evidence that decides it, and where the standards ask for it."""

    id: str
    tier: int
    asset: str
    property: str
    title: str
    statement: str
    threats: tuple[str, ...]
    controls: tuple[str, ...]
    evidence: str
    probe: str
    fix: str
    en303645: tuple[str, ...]
    nistir8425: tuple[str, ...]
    psti: tuple[str, ...]
    en18031: tuple[str, ...]
    isvs: tuple[str, ...]
    cwe: tuple[int, ...]


@dataclass(frozen=True)
class Tier:
    level: int
    name: str
    summary: str


@dataclass(frozen=True)
class Provision:
    id: str
    summary: str


@dataclass(frozen=True)
class ProvisionCoverage:
    """The strongest evidence available for one provision (:data:`COVERAGE_KINDS`) and
    the requirements that map to it."""

    provision: Provision
    kind: str
    requirements: tuple[str, ...]


@dataclass(frozen=True)
class Model:
    version: str
    standard: str
    assets: tuple[Asset, ...]
    requirements: tuple[Requirement, ...]
    tiers: tuple[Tier, ...]
    provisions: tuple[Provision, ...]

    def requirement(self, requirement_id: str) -> Requirement:
        for requirement in self.requirements:
            if requirement.id == requirement_id:
                return requirement
        raise KeyError(requirement_id)

    def for_tier(self, level: int) -> tuple[Requirement, ...]:
        """The requirements a device must meet to reach tier ``level`` (tiers are
        cumulative: tier 2 asks for tier 1's too)."""
        return tuple(r for r in self.requirements if r.tier <= level)

    def coverage(self, probes: Mapping[str, str]) -> tuple[ProvisionCoverage, ...]:
        """Per provision, the strongest evidence kind available; ``probes`` maps each
        probe or check that exists to its kind (``live`` or ``static``). A declaration
        is always available (it is read from the target description)."""
        rank = {kind: index for index, kind in enumerate(COVERAGE_KINDS)}
        found = []
        for provision in self.provisions:
            mapped = [r for r in self.requirements if provision.id in r.en303645]
            best = "none"
            for requirement in mapped:
                kind = _available(requirement, probes)
                if rank[kind] < rank[best]:
                    best = kind
            found.append(ProvisionCoverage(provision, best, tuple(r.id for r in mapped)))
        return tuple(found)


def _available(requirement: Requirement, probes: Mapping[str, str]) -> str:
    if requirement.evidence == "declaration":
        return "declaration"
    kind = probes.get(requirement.probe)
    if kind is None:
        return "planned"
    # A static check cannot stand in for a live probe, nor the other way round.
    return kind if kind in ("live", "static") else "planned"


def load_model(requirements_text: str | None = None,
               provisions_text: str | None = None) -> Model:
    """The model from the packaged data (or from the given TOML texts, for tests).

    Raises:
        BadRequirements: malformed TOML, a missing or wrong field, a duplicate ID, a
            reference to an unknown asset or provision, or a tier without requirements.
    """
    data = resources.files("tinyward.assess") / "data"
    if requirements_text is None:
        requirements_text = (data / "requirements.toml").read_text(encoding="utf-8")
    if provisions_text is None:
        provisions_text = (data / "en303645.toml").read_text(encoding="utf-8")
    requirements_doc = _toml(requirements_text, "requirements")
    provisions_doc = _toml(provisions_text, "provisions")
    if requirements_doc.get("format") != REQUIREMENTS_FORMAT:
        raise BadRequirements(f"requirements: format is not {REQUIREMENTS_FORMAT!r}")
    if provisions_doc.get("format") != PROVISIONS_FORMAT:
        raise BadRequirements(f"provisions: format is not {PROVISIONS_FORMAT!r}")
    provisions = _provisions(provisions_doc)
    assets = tuple(_asset(entry) for entry in _list(requirements_doc, "asset"))
    tiers = tuple(_tier(entry) for entry in _list(requirements_doc, "tier"))
    requirements = tuple(_requirement(entry) for entry in _list(requirements_doc, "requirement"))
    model = Model(_text(requirements_doc, "version", "requirements"),
                  _text(provisions_doc, "standard", "provisions"),
                  assets, requirements, tiers, provisions)
    _check_references(model)
    return model


def _toml(text: str, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadRequirements(f"{what}: not valid TOML ({error})") from None


def _list(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list) or not value or \
            not all(isinstance(entry, dict) for entry in value):
        raise BadRequirements(f"requirements: [[{key}]] entries are missing")
    return value


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequirements(f"{where}: {key!r} must be non-empty text")
    return value


def _texts(entry: Mapping[str, Any], key: str, where: str, *, allowed: Any = None,
           pattern: re.Pattern[str] | None = None, empty: bool = True) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequirements(f"{where}: {key!r} must be a list of text")
    if not empty and not value:
        raise BadRequirements(f"{where}: {key!r} must not be empty")
    if len(set(value)) != len(value):
        raise BadRequirements(f"{where}: {key!r} names an item twice")
    for item in value:
        if allowed is not None and item not in allowed:
            raise BadRequirements(f"{where}: {key!r} has unknown {item!r}")
        if pattern is not None and not pattern.fullmatch(item):
            raise BadRequirements(f"{where}: {key!r} has malformed {item!r}")
    return tuple(value)


def _asset(entry: Mapping[str, Any]) -> Asset:
    asset_id = _text(entry, "id", "asset")
    if not _NAME.fullmatch(asset_id):
        raise BadRequirements(f"asset {asset_id!r}: an ID is lowercase letters, digits, '-'")
    return Asset(asset_id, _text(entry, "name", asset_id), _text(entry, "why", asset_id))


def _tier(entry: Mapping[str, Any]) -> Tier:
    level = entry.get("level")
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 9:
        raise BadRequirements("tier: 'level' must be an integer 1..9")
    where = f"tier {level}"
    return Tier(level, _text(entry, "name", where), _text(entry, "summary", where))


def _requirement(entry: Mapping[str, Any]) -> Requirement:
    requirement_id = _text(entry, "id", "requirement")
    where = f"requirement {requirement_id}"
    if not _ID.fullmatch(requirement_id):
        raise BadRequirements(f"{where}: an ID looks like C-LEAK-1")
    tier = entry.get("tier")
    if not isinstance(tier, int) or isinstance(tier, bool):
        raise BadRequirements(f"{where}: 'tier' must be an integer")
    prop = _text(entry, "property", where)
    if prop not in PROPERTIES:
        raise BadRequirements(f"{where}: property must be one of {', '.join(PROPERTIES)}")
    evidence = _text(entry, "evidence", where)
    if evidence not in EVIDENCE_KINDS:
        raise BadRequirements(f"{where}: evidence must be one of {', '.join(EVIDENCE_KINDS)}")
    probe = _text(entry, "probe", where)
    if not _NAME.fullmatch(probe):
        raise BadRequirements(f"{where}: a probe name is lowercase letters, digits, '-'")
    cwe = entry.get("cwe", [])
    if not isinstance(cwe, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 < c < 10_000 for c in cwe):
        raise BadRequirements(f"{where}: 'cwe' must be a list of CWE numbers")
    return Requirement(
        requirement_id, tier, _text(entry, "asset", where), prop,
        _text(entry, "title", where), _text(entry, "statement", where),
        _texts(entry, "threats", where, empty=False), _texts(entry, "controls", where,
                                                             empty=False),
        evidence, probe, _text(entry, "fix", where),
        _texts(entry, "en303645", where, pattern=_PROVISION),
        _texts(entry, "nistir8425", where, allowed=NISTIR8425_OUTCOMES),
        _texts(entry, "psti", where, allowed=_PSTI),
        _texts(entry, "en18031", where, allowed=_EN18031),
        _texts(entry, "isvs", where, pattern=_ISVS),
        tuple(cwe))


def _provisions(doc: Mapping[str, Any]) -> tuple[Provision, ...]:
    rows = doc.get("provisions")
    if not isinstance(rows, list) or not rows:
        raise BadRequirements("provisions: the 'provisions' list is missing")
    found = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2
                and all(isinstance(v, str) and v for v in row)):
            raise BadRequirements(f"provisions: {row!r} is not [id, summary]")
        if not _PROVISION.fullmatch(row[0]):
            raise BadRequirements(f"provisions: malformed provision ID {row[0]!r}")
        found.append(Provision(row[0], row[1]))
    _unique([p.id for p in found], "provision")
    return tuple(found)


def _unique(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise BadRequirements(f"{what} {item!r} is defined twice")
        seen.add(item)


def _check_references(model: Model) -> None:
    _unique([a.id for a in model.assets], "asset")
    _unique([r.id for r in model.requirements], "requirement")
    _unique([str(t.level) for t in model.tiers], "tier")
    assets = {a.id for a in model.assets}
    provisions = {p.id for p in model.provisions}
    levels = {t.level for t in model.tiers}
    for requirement in model.requirements:
        where = f"requirement {requirement.id}"
        if requirement.asset not in assets:
            raise BadRequirements(f"{where}: unknown asset {requirement.asset!r}")
        if requirement.tier not in levels:
            raise BadRequirements(f"{where}: unknown tier {requirement.tier}")
        for provision in requirement.en303645:
            if provision not in provisions:
                raise BadRequirements(f"{where}: {provision} is not an EN 303 645 provision")
    if sorted(levels) != list(range(1, len(levels) + 1)):
        raise BadRequirements("tiers must be numbered 1, 2, 3 … without gaps")
    for level in levels:
        if not any(r.tier == level for r in model.requirements):
            raise BadRequirements(f"tier {level} has no requirement of its own")


__all__ = ["COVERAGE_KINDS", "EVIDENCE_KINDS", "Asset", "BadRequirements", "Model",
           "Provision", "ProvisionCoverage", "Requirement", "Tier", "load_model"]
