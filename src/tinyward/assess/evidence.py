"""Evidence per requirement, and the tier it adds up to (pure: no I/O).

A verdict is ``pass``, ``fail`` or ``not-tested``. A requirement for which no probe
produced evidence is ``not-tested`` with the reason; only ``pass`` counts towards a tier,
so a requirement nobody tested can never be passed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tinyward.assess.model import EVIDENCE_KINDS, Model, Requirement
from tinyward.errors import Misuse

VERDICTS = ("pass", "fail", "not-tested")
MAX_TEXT = 4000  # a device's banner or header can be 64 KiB: the report needs a sentence
MAX_WHERE = 400
# Control (a newline, ESC), format (bidi overrides, zero-width) and surrogate characters:
# a device controls much of what evidence quotes, and these would let it start a forged
# line in the datasheet, drive the terminal, reorder text, or break the UTF-8 writers.
_HIDDEN = frozenset({"Cc", "Cf", "Cs"})


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every control, format and surrogate character shown as an escape
    (``\\x1b``, ``\\u202e``), cut to ``limit`` characters (pure)."""
    shown = "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text)
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown


@dataclass(frozen=True)
class Evidence:
    """What one probe established about one requirement.

    ``text``: what was observed (for a pass or a fail) or why nothing was (not-tested).
    ``kind``: ``live``, ``static`` or ``declaration``. ``where``: the service or file the
    evidence is about (``tcp://127.0.0.1:8080``, a path), if any.
    """

    requirement: str
    verdict: str
    kind: str
    probe: str
    text: str
    where: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise Misuse(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.kind not in EVIDENCE_KINDS:
            raise Misuse(f"evidence kind {self.kind!r} is not one of {EVIDENCE_KINDS}")
        # Every probe's text passes here: device-supplied characters are made visible
        # once, for all four reports and the terminal.
        object.__setattr__(self, "text", printable(self.text))
        object.__setattr__(self, "where", printable(self.where, MAX_WHERE))
        if not self.text.strip():
            raise Misuse("evidence without text: say what was seen, or why not")


def not_tested(requirement: Requirement, why: str) -> Evidence:
    return Evidence(requirement.id, "not-tested", requirement.evidence, requirement.probe, why)


@dataclass(frozen=True)
class TierResult:
    """The highest tier all of whose requirements pass (0: not even tier 1), and the
    requirements of the next tier that stand in the way (failed or not tested)."""

    level: int
    name: str
    blocking: tuple[Evidence, ...]


def complete(model: Model, found: Iterable[Evidence]) -> dict[str, Evidence]:
    """One verdict per requirement of the model: the evidence found, or not-tested.

    Where two pieces of evidence concern one requirement, the worst wins (a fail beats a
    pass; a not-tested beats a pass: one untested part means the whole is untested).
    """
    rank = {"fail": 0, "not-tested": 1, "pass": 2}
    known = {r.id for r in model.requirements}
    verdicts: dict[str, Evidence] = {}
    for evidence in found:
        if evidence.requirement not in known:
            raise Misuse(f"evidence for unknown requirement {evidence.requirement}")
        held = verdicts.get(evidence.requirement)
        if held is None or rank[evidence.verdict] < rank[held.verdict]:
            verdicts[evidence.requirement] = evidence
    for requirement in model.requirements:
        if requirement.id not in verdicts:
            verdicts[requirement.id] = not_tested(
                requirement, f"no {requirement.probe} probe ran (not built yet, or nothing "
                             "to run it against)")
    return {r.id: verdicts[r.id] for r in model.requirements}


def evaluate(model: Model, verdicts: Mapping[str, Evidence]) -> TierResult:
    """The tier reached: every requirement of tiers 1..level passes (tiers are cumulative)."""
    level = 0
    for tier in sorted(model.tiers, key=lambda t: t.level):
        blocking = tuple(verdicts[r.id] if r.id in verdicts else not_tested(r, "no evidence")
                         for r in model.for_tier(tier.level)
                         if r.id not in verdicts or verdicts[r.id].verdict != "pass")
        if blocking:
            return TierResult(level, _name(model, level), blocking)
        level = tier.level
    return TierResult(level, _name(model, level), ())


def _name(model: Model, level: int) -> str:
    if level == 0:
        return "not even the basics"
    return next(t.name for t in model.tiers if t.level == level)


__all__ = ["MAX_TEXT", "VERDICTS", "Evidence", "TierResult", "complete", "evaluate", "not_tested",
           "printable"]
