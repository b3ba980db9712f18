"""Staged rollouts of one update target, with an automatic halt (pure, no I/O).

A rollout offers one signed target (component, version, target path in the fleet's TUF
repository) to a share of the fleet, widened in stages, and stops offering it by itself
when too many of the devices that tried it report a failure. Uptane's director, in small:
the fleet only *chooses* among signed targets; the device still verifies everything
through TUF and :meth:`tinyward.update.meta.TargetMeta.check_installable`.

**Membership.** A device is in a rollout when it is not revoked, its cohort is one of the
rollout's cohorts (no cohorts: any device), and its bucket is below the rollout's
percentage. The bucket is ``SHA-256("tinyward-rollout" ‖ rollout ID ‖ device ID)`` read
as a number modulo 10,000, so it is stable (a device is in or out for the life of the
rollout), independent between rollouts (the same devices are not always first), and
widening from 10 % to 50 % keeps every device of the first 10 % (buckets below 1,000 are
below 5,000 too).

**Outcomes.** Each member's latest reports put it in one outcome: ``updated`` (it runs
the target's version or newer), ``failed`` (it reported ``failed`` or ``reverted`` for
this target since the rollout started or was last resumed, and does not run it),
``in-progress`` (downloading, staged, trial) or ``waiting`` (nothing yet).

**The halt rule.** With *F* failed and *U* updated members (*D* = *F* + *U* decided):
the rollout halts as soon as *D* ≥ ``min_reports`` and *F* / *D* ≥ ``halt_at``, compared
exactly (fractions, so 1 failure in 10 at ``halt_at`` 0.1 halts: reaching the threshold
is enough). Waiting and in-progress devices do not dilute the share: a bad image shows in
the first few devices that try it, whatever the size of the stage. A halted rollout
offers nothing, to anyone, until an operator resumes it; resuming starts a new window
(failures reported before it no longer count, so the same failures do not halt it again
at once).

Failures can only come from an enrolled, non-revoked device's signed report (the fleet
refuses every other report before it is stored), so a forged state from outside, or from
a revoked device, never counts. An enrolled member that lies counts once, like any
member: claiming failures makes the rollout halt sooner (the safe direction), but claiming
to run the target's version counts as ``updated`` and so dilutes the failure share; each
such member offsets up to (1 - ``halt_at``) / ``halt_at`` real failures (9 at 0.1).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from tinyward.errors import BadInput
from tinyward.fleet.errors import BadRollout, RolloutConflict, UnknownRollout
from tinyward.update.errors import BadTargetMeta
from tinyward.update.meta import COMPONENTS, Offer, Version

ROLLOUT_FORMAT = "tinyward-rollouts/1"
BUCKETS = 10_000  # percentages to 0.01 %
OUTCOMES = ("updated", "failed", "in-progress", "waiting")
FAILED_STATES = frozenset({"failed", "reverted"})
IN_PROGRESS_STATES = frozenset({"downloading", "staged", "trial"})
DEFAULT_HALT_AT = 0.1
DEFAULT_MIN_REPORTS = 5
_ID = re.compile(r"[0-9a-f]{16}")
_COHORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PATH_PART = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}"
_TARGET_PATH = re.compile(rf"{_PATH_PART}(/{_PATH_PART}){{0,7}}")
_BUCKET_CONTEXT = b"tinyward-rollout\0"
MAX_COHORTS = 64
MAX_STAGES = 100


def check_cohort(name: object) -> str:
    """A cohort name: 1-64 letters, digits, ``_ . -``, starting with a letter or digit.

    Raises:
        BadRollout: anything else.
    """
    if not isinstance(name, str) or not _COHORT.fullmatch(name):
        raise BadRollout(f"cohort {str(name)[:70]!r} is not a name (1-64 letters, digits, _ . -, "
                         "starting with a letter or digit)")
    return name


def _check_percent(percent: object) -> float:
    if isinstance(percent, bool) or not isinstance(percent, int | float) \
            or not 0 < percent <= 100:  # NaN fails too
        raise BadRollout(f"a rollout's percentage is more than 0 and at most 100, not {percent!r}")
    if round(float(percent) * 100) == 0:
        raise BadRollout("a rollout's percentage is at least 0.01")
    return float(percent)


def _check_halt_at(halt_at: object) -> float:
    if isinstance(halt_at, bool) or not isinstance(halt_at, int | float) \
            or not 0 < halt_at <= 1:
        raise BadRollout(f"the halt threshold is a share more than 0 and at most 1 (0.1 is "
                         f"10 %), not {halt_at!r}")
    return float(halt_at)


@functools.lru_cache(maxsize=1 << 17)  # the halt rule asks again for every device
def bucket(rollout_id: str, device_id: str) -> int:
    """The device's place in the rollout, 0 to :data:`BUCKETS` - 1 (stable, see module)."""
    digest = hashlib.sha256(_BUCKET_CONTEXT + rollout_id.encode("ascii") + b"\0"
                            + device_id.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Rollout:
    """One rollout: its target, its stage, its rule, and whether it is halted."""

    rollout_id: str
    component: str
    version: Version
    target_path: str
    percent: float
    cohorts: tuple[str, ...] = ()
    halt_at: float = DEFAULT_HALT_AT
    min_reports: int = DEFAULT_MIN_REPORTS
    started_at: int = 0
    #: Failures reported (received by the fleet) before this time do not count: the start,
    #: or the last resume.
    window_from: int = 0
    halted: bool = False
    halted_at: int | None = None
    why: str | None = None
    #: (time, percent) of each stage, the first one included.
    stages: tuple[tuple[int, float], ...] = ()

    @classmethod
    def start(cls, component: str, version: Version | str, target_path: str, *, now: int,
              percent: float | None = None, cohorts: Iterable[str] = (),
              halt_at: float = DEFAULT_HALT_AT, min_reports: int = DEFAULT_MIN_REPORTS,
              rollout_id: str | None = None) -> Rollout:
        """A new rollout (not halted). ``percent`` defaults to 100 when ``cohorts`` are
        given (every device of those cohorts) and is required otherwise.

        Raises:
            BadRollout: an unknown component, a bad version, target path, cohort,
                percentage, threshold or minimum.
        """
        if component not in COMPONENTS:
            raise BadRollout(f"component {component!r} is not one of {', '.join(COMPONENTS)}")
        try:
            parsed = version if isinstance(version, Version) else Version.parse(version)
        except BadTargetMeta as error:
            raise BadRollout(str(error)) from None
        if not isinstance(target_path, str) or not _TARGET_PATH.fullmatch(target_path) \
                or ".." in target_path.split("/"):
            raise BadRollout(f"target path {str(target_path)[:80]!r} is not a repository path")
        names = tuple(dict.fromkeys(check_cohort(c) for c in cohorts))
        if len(names) > MAX_COHORTS:
            raise BadRollout(f"at most {MAX_COHORTS} cohorts per rollout")
        if percent is None:
            if not names:
                raise BadRollout("give a percentage, cohorts, or both")
            percent = 100.0
        share = _check_percent(percent)
        if isinstance(min_reports, bool) or not isinstance(min_reports, int) \
                or not 1 <= min_reports <= 1_000_000:
            raise BadRollout("the minimum number of outcomes before a halt is 1 to 1,000,000")
        rollout_id = rollout_id or secrets.token_hex(8)
        if not _ID.fullmatch(rollout_id):
            raise BadRollout("a rollout ID is 16 lowercase hex characters")
        return cls(rollout_id, component, parsed, target_path, share, names,
                   _check_halt_at(halt_at), min_reports, now, now, stages=((now, share),))

    # -- membership and offers ------------------------------------------------------------

    def is_member(self, device_id: str, cohort: str | None) -> bool:
        """Whether the device is in the rollout's current stage (revocation aside)."""
        if self.cohorts and cohort not in self.cohorts:
            return False
        return bucket(self.rollout_id, device_id) < round(self.percent * 100)

    def offer_for(self, device_id: str, cohort: str | None,
                  installed_versions: Mapping[str, str | Version]) -> Offer | None:
        """The offer for this device, or None: halted, not a member, or it already runs
        the version (or a newer one). A version it reports that does not parse counts as
        none (the device's own TUF check refuses a rollback anyway)."""
        if self.halted or not self.is_member(device_id, cohort):
            return None
        installed = _version(installed_versions.get(self.component))
        if installed is not None and installed >= self.version:
            return None
        return Offer(self.component, self.target_path, self.version)

    # -- changes --------------------------------------------------------------------------

    def widen(self, percent: float, now: int) -> Rollout:
        """The next stage: a larger share (every current member stays a member).

        Raises:
            BadRollout: not larger than the current percentage, or out of bounds.
            RolloutConflict: the rollout is halted (resume it first).
        """
        share = _check_percent(percent)
        if self.halted:
            raise RolloutConflict(f"rollout {self.rollout_id} is halted; resume it before "
                                  "widening it")
        if round(share * 100) <= round(self.percent * 100):
            raise BadRollout(f"widening goes up from {self.percent:g} %, not to {share:g} %")
        if len(self.stages) >= MAX_STAGES:
            raise BadRollout(f"a rollout has at most {MAX_STAGES} stages")
        return replace(self, percent=share, stages=(*self.stages, (now, share)))

    def halt(self, why: str, now: int) -> Rollout:
        """Stop offering (halting a halted rollout keeps its first reason)."""
        if self.halted:
            return self
        return replace(self, halted=True, halted_at=now, why=printable(why[:200]))

    def resume(self, now: int) -> Rollout:
        """Offer again; failures reported before ``now`` no longer count.

        Raises:
            RolloutConflict: the rollout is not halted.
        """
        if not self.halted:
            raise RolloutConflict(f"rollout {self.rollout_id} is not halted")
        return replace(self, halted=False, halted_at=None, why=None, window_from=now)

    # -- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rollout_id, "component": self.component,
                "version": str(self.version), "target_path": self.target_path,
                "percent": self.percent, "cohorts": list(self.cohorts),
                "halt_at": self.halt_at, "min_reports": self.min_reports,
                "started_at": self.started_at, "window_from": self.window_from,
                "halted": self.halted, "halted_at": self.halted_at, "why": self.why,
                "stages": [list(stage) for stage in self.stages]}

    @classmethod
    def from_json(cls, document: object) -> Rollout:
        """Raises BadRollout: not a rollout this module wrote."""
        try:
            if not isinstance(document, dict):
                raise TypeError("not an object")
            if not isinstance(document["cohorts"], list):  # a string would be its letters
                raise TypeError("cohorts is not a list")
            made = cls.start(document["component"], document["version"],
                             document["target_path"], now=_int(document["started_at"]),
                             percent=document["percent"], cohorts=document["cohorts"],
                             halt_at=document["halt_at"], min_reports=document["min_reports"],
                             rollout_id=document["id"])
            halted = document["halted"]
            why = document["why"]
            if not isinstance(halted, bool) or not (why is None or isinstance(why, str)):
                raise TypeError("halted, why")
            halted_at = document["halted_at"]
            stages = tuple((_int(t), _check_percent(p)) for t, p in document["stages"])
            if not stages or len(stages) > MAX_STAGES:
                raise ValueError("stages")
            return replace(made, window_from=_int(document["window_from"]), halted=halted,
                           halted_at=None if halted_at is None else _int(halted_at),
                           why=None if why is None else printable(why[:200]), stages=stages)
        except (KeyError, TypeError, ValueError) as error:
            raise BadRollout(f"a rollout record is damaged ({error})") from None


def printable(text: str) -> str:
    """``text`` with every character that is not printable (escape sequences, line breaks,
    bidirectional controls) shown as ``?``: a halt reason is shown in terminals."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**40:
        raise ValueError(f"{value!r} is not a time")
    return value


def _version(value: object) -> Version | None:
    if isinstance(value, Version):
        return value
    try:
        return Version.parse(value)
    except BadInput:
        return None


@dataclass(frozen=True)
class Observation:
    """What the fleet knows about one device, for one rollout (gathered by the I/O side).

    ``installed``: the device's reported version of the rollout's component (None: none
    reported); ``state``: its latest reported update state (None: never reported one);
    ``failed_at``: when the fleet received its latest ``failed``/``reverted`` report for
    the rollout's target (or for an unnamed target), None if never.
    """

    device_id: str
    cohort: str | None = None
    revoked: bool = False
    installed: Version | None = None
    state: str | None = None
    failed_at: int | None = None


def outcome(rollout: Rollout, seen: Observation) -> str | None:
    """The device's outcome (one of :data:`OUTCOMES`), None if it is not in the rollout."""
    if seen.revoked or not rollout.is_member(seen.device_id, seen.cohort):
        return None
    if seen.installed is not None and seen.installed >= rollout.version:
        return "updated"
    if seen.failed_at is not None and seen.failed_at >= rollout.window_from:
        return "failed"
    if seen.state in IN_PROGRESS_STATES:
        return "in-progress"
    return "waiting"


@dataclass(frozen=True)
class Tally:
    """Outcomes of a rollout's members, and their latest reported update states."""

    members: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    states: dict[str, int] = field(default_factory=dict)  # "none": no state reported yet

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]

    @property
    def decided(self) -> int:
        return self.outcomes["failed"] + self.outcomes["updated"]

    @property
    def failure_share(self) -> float:
        return self.failed / self.decided if self.decided else 0.0


def tally(rollout: Rollout, observations: Iterable[Observation]) -> Tally:
    """Count the members' outcomes (devices outside the rollout are not counted)."""
    outcomes = dict.fromkeys(OUTCOMES, 0)
    states: dict[str, int] = {}
    members = 0
    for seen in observations:
        found = outcome(rollout, seen)
        if found is None:
            continue
        members += 1
        outcomes[found] += 1
        states[seen.state or "none"] = states.get(seen.state or "none", 0) + 1
    return Tally(members, outcomes, dict(sorted(states.items())))


def should_halt(rollout: Rollout, counted: Tally) -> str | None:
    """Why the rollout must halt now (the rule in the module docstring), or None."""
    if rollout.halted or counted.decided < rollout.min_reports:
        return None
    threshold = Fraction(repr(rollout.halt_at))  # 0.1 is exactly 1/10 here
    if Fraction(counted.failed, counted.decided) >= threshold:
        return (f"{counted.failed} of {counted.decided} devices that tried "
                f"{rollout.component} {rollout.version} reported failed or reverted "
                f"({counted.failure_share:.0%}, threshold {rollout.halt_at:.0%})")
    return None


def evaluate(rollout: Rollout, observations: Iterable[Observation], now: int
             ) -> tuple[Rollout, Tally]:
    """The rollout after applying the halt rule to these observations, and the tally."""
    counted = tally(rollout, observations)
    why = should_halt(rollout, counted)
    return (rollout.halt(why, now) if why else rollout), counted


def is_complete(rollout: Rollout, counted: Tally) -> bool:
    """Every member has an outcome other than waiting or in progress, at 100 %, not halted."""
    return (not rollout.halted and rollout.percent >= 100 and counted.members > 0
            and counted.decided == counted.members)


def offer_for(rollouts: Iterable[Rollout], device_id: str, cohort: str | None,
              installed_versions: Mapping[str, str | Version]) -> Offer | None:
    """The first offer any of ``rollouts`` (oldest first) makes to this device, or None."""
    for rollout in sorted(rollouts, key=lambda r: (r.started_at, r.rollout_id)):
        offer = rollout.offer_for(device_id, cohort, installed_versions)
        if offer is not None:
            return offer
    return None


def check_no_conflict(rollouts: Iterable[Rollout], new: Rollout) -> None:
    """One rollout that is not halted per component at a time.

    Raises:
        RolloutConflict: another rollout of the component is running.
    """
    for other in rollouts:
        if other.component == new.component and not other.halted:
            raise RolloutConflict(
                f"rollout {other.rollout_id} of {other.component} {other.version} is still "
                "running; halt it first")


def find(rollouts: Iterable[Rollout], rollout_id: str) -> Rollout:
    """Raises UnknownRollout."""
    for rollout in rollouts:
        if rollout.rollout_id == rollout_id:
            return rollout
    raise UnknownRollout(f"no rollout {str(rollout_id)[:40]!r} in this fleet "
                         "(`tinyward rollout status FLEET` lists them)")
