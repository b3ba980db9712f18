"""Supervise one sandboxed application: its lifecycle as a state table, and its incidents.

The rules, in the manner of h11's ``_state.py``:

- The application is always in exactly one state of :class:`State`. The only way to
  change state is :meth:`Lifecycle.fire` with an :class:`Event`; the pair must be in
  :data:`TRANSITIONS` or :class:`~tinyward.app.errors.IllegalTransition` is raised (a bug
  in the caller, never an attack) and the lifecycle moves to ``ERROR``.
- ``STOPPED --start--> STARTING --ready--> READY --frame--> BUSY --result--> READY``.
- Anything the application does wrong (crash, hang past the per-frame deadline, a result
  off the contract, an oversize or malformed message, results too frequent, failing to
  start) is a ``fault``: the result is dropped, the child is killed, the incident is
  counted by kind, and the state becomes ``RESTARTING`` with an exponential backoff
  (``backoff_initial_s`` doubling up to ``backoff_max_s``). After ``max_failed_starts``
  consecutive failed starts the state is ``FAILED`` and no restart is tried again.
- Frames that arrive while RESTARTING (before the backoff elapsed) or FAILED are not
  processed; they are counted in ``frames_dropped``.
- ``healthy`` is true only in READY and BUSY: a device reports itself unhealthy while
  its application restarts.
- Time comes from an injected ``clock`` (monotonic seconds) for the backoff and the rate
  limit; the per-frame deadline is real time, since it bounds a real process.
"""

from __future__ import annotations

import enum
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np

from tinyward._backoff import Backoff
from tinyward.app.contract import RateLimiter, check_result
from tinyward.app.errors import (
    ContractViolation,
    IllegalTransition,
    ProtocolError,
    SandboxError,
)
from tinyward.app.manifest import Manifest
from tinyward.app.protocol import decode_result
from tinyward.app.sandbox import Protection, Sandbox, SandboxConfig


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    RESTARTING = "restarting"
    FAILED = "failed"
    CLOSED = "closed"
    ERROR = "error"


class Event(enum.Enum):
    START = "start"
    READY = "ready"
    FRAME = "frame"
    RESULT = "result"
    FAULT = "fault"
    GIVE_UP = "give_up"
    CLOSE = "close"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STARTING, E.READY): S.READY,
    (S.STARTING, E.FAULT): S.RESTARTING,
    (S.READY, E.FRAME): S.BUSY,
    (S.READY, E.FAULT): S.RESTARTING,
    (S.BUSY, E.RESULT): S.READY,
    (S.BUSY, E.FAULT): S.RESTARTING,
    (S.RESTARTING, E.START): S.STARTING,
    (S.RESTARTING, E.GIVE_UP): S.FAILED,
    **{(state, E.CLOSE): S.CLOSED for state in State if state is not S.CLOSED},
}


class Lifecycle:
    """The state table in action: ``fire(event)`` or raise."""

    def __init__(self) -> None:
        self.state = State.STOPPED

    def fire(self, event: Event) -> State:
        """Apply ``event``.

        Raises:
            IllegalTransition: ``(state, event)`` is not in the table; the state is ERROR.
        """
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            old, self.state = self.state, State.ERROR
            raise IllegalTransition(f"event {event.value!r} is not allowed in state {old.value!r}")
        self.state = new
        return new


@dataclass(frozen=True)
class SupervisorConfig:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    max_failed_starts: int = 8
    #: consecutive good frames after which the backoff starts again from its initial value
    recovered_after_frames: int = 100


@dataclass(frozen=True)
class Outcome:
    """What became of one frame: an accepted result, nothing, or an incident."""

    result: dict[str, object] | None = None
    incident: str | None = None
    detail: str = ""
    processed: bool = True


class Supervisor:
    """Runs an application in a :class:`Sandbox`, checks its results, restarts it."""

    def __init__(
        self,
        manifest: Manifest,
        sandbox_config: SandboxConfig | None = None,
        config: SupervisorConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifest = manifest
        self.sandbox_config = sandbox_config or SandboxConfig()
        self.config = config or SupervisorConfig()
        self.clock = clock
        self.lifecycle = Lifecycle()
        self.protections: list[Protection] = []
        self.frames_dropped = 0
        self.restarts = 0
        self._incidents: Counter[str] = Counter()
        self._limiter = RateLimiter(manifest.contract.max_results_per_minute)
        self._sandbox: Sandbox | None = None
        self._seq = 0
        self._failed_starts = 0
        # No jitter: restart times are a function of the faults alone (see the leakage bound).
        self._backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s,
                                jitter=False)
        self._retry_at = 0.0
        self._good_frames = 0
        #: (kind, detail) of the most recent incident, for people (never sent off the device)
        self.last_incident: tuple[str, str] | None = None

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def healthy(self) -> bool:
        """True while the app is running normally (READY or BUSY)."""
        return self.state in (State.READY, State.BUSY)

    def incidents(self) -> dict[str, int]:
        """Incidents so far, by kind (``crash``, ``hang``, ``wrong_type``, ``oversize`` …)."""
        return dict(self._incidents)

    @property
    def pid(self) -> int | None:
        return self._sandbox.pid if self._sandbox else None

    def start(self) -> bool:
        """Start (or restart) the app; True if it is READY.

        Raises:
            IllegalTransition: not in STOPPED or RESTARTING.
        """
        self.lifecycle.fire(Event.START)
        sandbox = Sandbox(self.manifest, self.sandbox_config)
        try:
            self.protections = sandbox.start()
        except SandboxError as error:
            self._failed_starts += 1
            self._fault("start_failed", str(error))
            if self._failed_starts >= self.config.max_failed_starts:
                self.lifecycle.fire(Event.GIVE_UP)
            return False
        self._sandbox = sandbox
        self._failed_starts = 0
        self.lifecycle.fire(Event.READY)
        return True

    def process(self, frame: np.ndarray) -> Outcome:
        """Give one frame to the app; return the accepted result or what went wrong.

        Restarts the app first if its backoff has elapsed. Never raises for anything the
        app does; raises only for caller bugs.

        Raises:
            IllegalTransition: the supervisor was closed.
            ValueError: ``frame`` does not have the manifest's dtype and shape.
        """
        spec = self.manifest.input
        if frame.dtype != np.dtype(spec.dtype) or frame.shape != spec.frame_shape:
            raise ValueError(f"frame must be {spec.dtype} {spec.frame_shape}")
        if self.state is State.CLOSED:
            raise IllegalTransition("the supervisor is closed")
        if self.state is State.RESTARTING and self.clock() >= self._retry_at:
            self.start()
        if self.state is not State.READY or self._sandbox is None:
            self.frames_dropped += 1
            return Outcome(processed=False, detail=f"app is {self.state.value}")
        self._seq += 1
        seq = self._seq
        self.lifecycle.fire(Event.FRAME)
        sandbox = self._sandbox
        deadline = time.monotonic() + self.sandbox_config.frame_deadline_s
        try:
            sandbox.send_frame(seq, frame)
            msg = sandbox.receive(deadline)
            got_seq, result = decode_result(msg)
            if got_seq != seq:
                raise ProtocolError("unsolicited", f"result for frame {got_seq}, expected {seq}")
            if sandbox.pending_output:
                raise ProtocolError("unsolicited", "the app wrote more than one message")
            if result is not None:
                check_result(self.manifest.contract, result)
                self._limiter.admit(self.clock())
        except TimeoutError:
            return self._fault("hang", f"no answer within {self.sandbox_config.frame_deadline_s:g} s")
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return self._fault("crash", "the app exited")
        except (ProtocolError, ContractViolation) as error:
            return self._fault(error.kind, error.detail)
        self.lifecycle.fire(Event.RESULT)
        self._good_frames += 1
        if self._good_frames == self.config.recovered_after_frames:
            self._backoff.reset()
        return Outcome(result=result)

    def _fault(self, kind: str, detail: str) -> Outcome:
        self._good_frames = 0
        if self._sandbox is not None:
            code = self._sandbox.kill()
            if kind == "crash" and code is not None:
                detail += f" (exit status {code})"
                if code == -signal.SIGXCPU:  # RLIMIT_CPU ran out
                    kind = "cpu_limit"
            self._sandbox = None
        self._incidents[kind] += 1
        self.last_incident = (kind, detail)
        if self.state is not State.RESTARTING:
            self.lifecycle.fire(Event.FAULT)
        self.restarts += 1
        self._retry_at = self.clock() + self._backoff.next_delay()
        return Outcome(incident=kind, detail=detail)

    @property
    def retry_at(self) -> float:
        """Clock time of the next restart attempt (meaningful in RESTARTING)."""
        return self._retry_at

    def close(self) -> None:
        """Stop the app for good."""
        if self._sandbox is not None:
            self._sandbox.kill()
            self._sandbox = None
        if self.state is not State.CLOSED:
            self.lifecycle.fire(Event.CLOSE)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
