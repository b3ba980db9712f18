"""The device's update lifecycle as one state table (sans-IO, like ``app/supervisor.py``).

The rules:

- An update is always in exactly one :class:`State`. The only way to change it is
  :meth:`UpdateMachine.fire` with an :class:`Event`; the pair must be in
  :data:`TRANSITIONS`, or :class:`IllegalUpdateTransition` is raised (a bug in the
  caller, never an attack) and the machine lands in ``FAILED`` with why ``bug``.
- Each transition names the :class:`Action` s the I/O layer (:mod:`tinyward.update.agent`)
  must carry out, in order. This module does no I/O at all.
- The happy path: ``idle --offer--> downloading --downloaded--> staged
  --slot-verified--> trial --health-ok--> accepted``. ``downloaded`` means TUF verified
  the target and :meth:`~tinyward.update.meta.TargetMeta.check_installable` passed;
  ``staged`` means it is being (or was) written into the *inactive* slot;
  ``slot-verified`` means its length and hashes were checked again *from the slot*, and
  the switch to it is the same atomic write that records ``trial``.
- Refusals of the target (``refused``, ``verify-failed``) end in ``rejected``: the running
  version was never touched. A local failure (``io-error``) ends in ``failed``.
- A trial that does not pass its health check (``health-failed``, ``crashed``,
  ``deadline-passed``) ends in ``reverted``: the previous slot is active again.
- The anti-rollback counter is raised only by ``health-ok`` (action ``raise-counter``
  after ``confirm``): never on a trial that may still revert (MCUboot's rule).
- ``power-cut-recovery`` is fired once at start with the state the device last recorded:
  an update cut short before its switch ``failed`` (its slot is discarded); a trial cut
  short is ``reverted`` (MCUboot: an unconfirmed image does not survive a reboot); an
  acceptance cut short between the confirm and the counter raises the counter again
  (idempotent). The end states are kept as they are.
- The end states (accepted, rejected, reverted, failed) and idle take a new ``offer``; an
  ``offer`` during an update is refused as illegal (the agent raises ``UpdateBusy``
  before it gets here).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyward.errors import BadInput, Misuse
from tinyward.update.meta import COMPONENTS, Version


class State(enum.Enum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    STAGED = "staged"
    TRIAL = "trial"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVERTED = "reverted"
    FAILED = "failed"


class Event(enum.Enum):
    OFFER = "offer"
    REFUSED = "refused"
    DOWNLOADED = "downloaded"
    VERIFY_FAILED = "verify-failed"
    SLOT_VERIFIED = "slot-verified"
    HEALTH_OK = "health-ok"
    HEALTH_FAILED = "health-failed"
    CRASHED = "crashed"
    DEADLINE_PASSED = "deadline-passed"
    IO_ERROR = "io-error"
    POWER_CUT_RECOVERY = "power-cut-recovery"


class Action(enum.Enum):
    #: write the target into the inactive slot (never the active one)
    WRITE_SLOT = "write-slot"
    #: make the verified slot active and record the trial, in one atomic write
    SWITCH = "switch"
    #: run the health check of the new version
    START_TRIAL = "start-trial"
    #: record the trial version as accepted (it survives the next start)
    CONFIRM = "confirm"
    #: raise the component's anti-rollback counter to the active version
    RAISE_COUNTER = "raise-counter"
    #: make the previous slot active again
    REVERT = "revert"
    #: empty the inactive slot (half-written or refused content)
    DISCARD_SLOT = "discard-slot"
    #: the next report carries the new state (``upd``)
    REPORT = "report"


S, E, A = State, Event, Action
#: States in which no update is in progress: a new offer may start one.
RESTING: tuple[State, ...] = (S.IDLE, S.ACCEPTED, S.REJECTED, S.REVERTED, S.FAILED)

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[Action, ...]]] = {
    **{(s, E.OFFER): (S.DOWNLOADING, ()) for s in RESTING},
    (S.DOWNLOADING, E.REFUSED): (S.REJECTED, (A.REPORT,)),
    (S.DOWNLOADING, E.IO_ERROR): (S.FAILED, (A.REPORT,)),
    (S.DOWNLOADING, E.DOWNLOADED): (S.STAGED, (A.WRITE_SLOT,)),
    (S.STAGED, E.VERIFY_FAILED): (S.REJECTED, (A.DISCARD_SLOT, A.REPORT)),
    (S.STAGED, E.IO_ERROR): (S.FAILED, (A.DISCARD_SLOT, A.REPORT)),
    (S.STAGED, E.SLOT_VERIFIED): (S.TRIAL, (A.SWITCH, A.START_TRIAL)),
    (S.TRIAL, E.HEALTH_OK): (S.ACCEPTED, (A.CONFIRM, A.RAISE_COUNTER, A.REPORT)),
    (S.TRIAL, E.HEALTH_FAILED): (S.REVERTED, (A.REVERT, A.REPORT)),
    (S.TRIAL, E.CRASHED): (S.REVERTED, (A.REVERT, A.REPORT)),
    (S.TRIAL, E.DEADLINE_PASSED): (S.REVERTED, (A.REVERT, A.REPORT)),
    # recovery at start, from the state last recorded
    (S.IDLE, E.POWER_CUT_RECOVERY): (S.IDLE, ()),
    (S.DOWNLOADING, E.POWER_CUT_RECOVERY): (S.FAILED, (A.DISCARD_SLOT, A.REPORT)),
    (S.STAGED, E.POWER_CUT_RECOVERY): (S.FAILED, (A.DISCARD_SLOT, A.REPORT)),
    (S.TRIAL, E.POWER_CUT_RECOVERY): (S.REVERTED, (A.REVERT, A.REPORT)),
    (S.ACCEPTED, E.POWER_CUT_RECOVERY): (S.ACCEPTED, (A.RAISE_COUNTER,)),
    (S.REJECTED, E.POWER_CUT_RECOVERY): (S.REJECTED, ()),
    (S.REVERTED, E.POWER_CUT_RECOVERY): (S.REVERTED, ()),
    (S.FAILED, E.POWER_CUT_RECOVERY): (S.FAILED, ()),
}

#: The ``why`` a recovery records for an update that a power cut interrupted.
INTERRUPTED = "interrupted"
#: The ``why`` of an illegal transition (a bug in the caller).
BUG = "bug"


class IllegalUpdateTransition(Misuse):
    """An event was fired in a state that does not take it (a caller bug)."""


@dataclass(frozen=True)
class Step:
    """The result of one transition: the new state, and what the I/O layer must do."""

    state: State
    actions: tuple[Action, ...]


class UpdateMachine:
    """The table in action, with what the device's report says about it: the component
    and version being (or last) updated, and the reason code of the last failure."""

    def __init__(self, state: State = State.IDLE, component: str | None = None,
                 version: Version | None = None, why: str | None = None) -> None:
        self.state = state
        self.component = component
        self.version = version
        self.why = why

    def fire(self, event: Event, *, why: str | None = None) -> Step:
        """Apply ``event``; ``why`` (a short reason code) is kept for the report.

        Raises:
            IllegalUpdateTransition: ``(state, event)`` is not in the table; the machine
                is then FAILED with why ``bug``.
        """
        entry = TRANSITIONS.get((self.state, event))
        if entry is None:
            old, self.state, self.why = self.state, State.FAILED, BUG
            raise IllegalUpdateTransition(
                f"update event {event.value!r} is not allowed in state {old.value!r}")
        self.state, actions = entry
        if event is Event.OFFER:
            self.why = None
        elif why is not None:
            self.why = why
        return Step(self.state, actions)

    def offer(self, component: str, version: Version) -> Step:
        """``offer`` for ``component`` at ``version`` (recorded for the report)."""
        if component not in COMPONENTS:
            raise Misuse(f"component {component!r} is not one of {', '.join(COMPONENTS)}")
        step = self.fire(Event.OFFER)
        self.component, self.version = component, version
        return step

    # ---- persistence (pure: a JSON-ready dict) -----------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {"state": self.state.value, "component": self.component,
                "version": None if self.version is None else str(self.version),
                "why": self.why}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UpdateMachine:
        """The machine a :meth:`to_record` dict describes. Raises ValueError if malformed."""
        try:
            state = State(record["state"])
            component = record.get("component")
            if component is not None and component not in COMPONENTS:
                raise ValueError(f"unknown component {component!r}")
            raw = record.get("version")
            version = None if raw is None else Version.parse(raw)
            why = record.get("why")
            if why is not None and not isinstance(why, str):
                raise ValueError("why is not text")
        except (KeyError, TypeError, BadInput) as error:  # BadInput: a bad version
            raise ValueError(f"not an update state record: {error}") from None
        return cls(state, component, version, why)
