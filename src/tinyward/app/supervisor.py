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
- Time comes from an injected ``clock`` (monotonic seconds) for the backoff, the rate
  limit and the fault windows; the per-frame deadline and the CPU budget are real time,
  since they bound a real process.
- Limits set by the core, not the manifest: the caller's per-frame deadline
  (``process(frame, deadline_s)``, missed: ``slow``), a CPU budget per wall-clock second
  (``over_budget``), and a fault window: at most one fault per window, no restart before
  the next one, and :meth:`Supervisor.published` — the only view that leaves the device —
  tells a window's faults, by class of a 3-symbol alphabet, once the window is over
  (issue 12: what an app says by failing is bounded, and when it failed is not told).
- Nothing the application sends raises out of :meth:`Supervisor.process`: every exception
  while decoding or checking a message is a fault.
"""

from __future__ import annotations

import enum
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np

from tinyward._backoff import Backoff
from tinyward.app.budget import CpuBudget, fault_class, process_cpu_seconds
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
    #: At most one fault per window of this many seconds (on a grid from the supervisor's
    #: start): after a fault the app is not restarted before the next window begins, and
    #: :meth:`Supervisor.published` shows a window's faults only once it is over. An app
    #: choosing when and how to fail then has log2(1 + len(ALPHABET)) bits per window
    #: (issue 12, item 3). 0 turns this off (tests of the lifecycle, ``app run``).
    fault_window_s: float = 60.0
    #: CPU seconds the app may use per wall-clock second (all its threads), and the burst;
    #: more is an ``over_budget`` fault. None: no budget (``app run`` replays logs as fast
    #: as it can, so wall time means nothing there).
    cpu_share: float | None = 0.5
    cpu_burst_s: float = 1.0
    #: Tests only: results cross unchecked — no contract, no rate limit, the app's own
    #: map forwarded. The leakage probe's control (tests/assess/test_leakage_probe.py)
    #: shows what an application then gets out.
    unsafe_no_contract: bool = False


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
        # Fault windows lie on the clock's own grid (multiples of the width): their phase
        # is nobody's choice, and known to everyone (a stronger adversary, not a weaker one).
        self._epoch = 0.0
        # (window index, kind) of every fault, and whether it gave up; read by another
        # thread (the report clock) through published(), hence the lock.
        self._lock = threading.Lock()
        # faults of windows not yet over: (window, class, window its restart is due in)
        self._pending: list[tuple[int, str, int]] = []
        self._published: Counter[str] = Counter()  # by class, windows that are over
        self._last_published: tuple[int, int] | None = None
        self._gave_up_window: int | None = None
        self._budget = (CpuBudget(self.config.cpu_share, self.config.cpu_burst_s)
                        if self.config.cpu_share is not None else None)
        self._starting: Sandbox | None = None

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
        self._starting = sandbox
        try:
            self.protections = sandbox.start()
        except SandboxError as error:
            self._starting = None
            self._failed_starts += 1
            self._fault("start_failed", str(error))
            if self._failed_starts >= self.config.max_failed_starts:
                self.lifecycle.fire(Event.GIVE_UP)
                with self._lock:
                    self._gave_up_window = self._window(self.clock())
            return False
        self._starting = None
        self._sandbox = sandbox
        if self._budget is not None and sandbox.pid is not None:
            self._budget.restart(time.monotonic(), process_cpu_seconds(sandbox.pid) or 0.0)
        self._failed_starts = 0
        self.lifecycle.fire(Event.READY)
        return True

    def process(self, frame: np.ndarray, deadline_s: float | None = None) -> Outcome:
        """Give one frame to the app; return the accepted result or what went wrong.

        Restarts the app first if its backoff has elapsed. Never raises for anything the
        app does; raises only for caller bugs. ``deadline_s`` (e.g. the frame period set
        by the core) shortens the sandbox's per-frame deadline; missing it is ``slow``.

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
        limit = self.sandbox_config.frame_deadline_s
        slow = deadline_s is not None and deadline_s < limit
        if slow:
            limit = deadline_s  # type: ignore[assignment]
        deadline = time.monotonic() + limit
        try:
            sandbox.send_frame(seq, frame)
            msg = sandbox.receive(deadline)
            got_seq, result = decode_result(msg)
            if got_seq != seq:
                raise ProtocolError("unsolicited", f"result for frame {got_seq}, expected {seq}")
            if sandbox.pending_output:
                raise ProtocolError("unsolicited", "the app wrote more than one message")
            if result is not None and not self.config.unsafe_no_contract:
                # forward the core's canonical copy, never the app's own map (its field
                # order and float bits would be a channel the leakage bound does not count)
                result = check_result(self.manifest.contract, result)
                self._limiter.admit(self.clock())
        except TimeoutError:
            return self._fault("slow" if slow else "hang", f"no answer within {limit:g} s")
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return self._fault("crash", "the app exited")
        except (ProtocolError, ContractViolation) as error:
            return self._fault(error.kind, error.detail)
        except OSError as error:  # the pipe broke in another way: the app is gone
            return self._fault("crash", f"the pipe to the app failed ({error.strerror})")
        except Exception as error:  # noqa: BLE001 (nothing the app sends may raise out of here)
            return self._fault("malformed", f"refused: {type(error).__name__}")
        if self._budget is not None and sandbox.pid is not None:
            cpu = process_cpu_seconds(sandbox.pid)
            if cpu is not None and not self._budget.charge(time.monotonic(), cpu):
                return self._fault("over_budget", f"more than {self._budget.share:g} CPU-seconds"
                                   f" per second (burst {self._budget.burst:g} s)")
        self.lifecycle.fire(Event.RESULT)
        self._good_frames += 1
        if self._good_frames == self.config.recovered_after_frames:
            self._backoff.reset()
        return Outcome(result=result)

    def _window(self, now: float) -> int:
        width = self.config.fault_window_s
        return math.floor((now - self._epoch) / width) if width > 0 else 0

    def _fault(self, kind: str, detail: str) -> Outcome:
        self._good_frames = 0
        now = self.clock()
        retry_at = now + self._backoff.next_delay()
        if self.config.fault_window_s > 0:  # not before the next fault window
            next_window = self._epoch + (self._window(now) + 1) * self.config.fault_window_s
            retry_at = max(retry_at, next_window)
        self._retry_at = retry_at
        with self._lock:  # recorded before anything slow (the kill) happens
            # (window, class, window of the restart): the restart is a function of the
            # faults alone, so publishing it adds nothing
            self._pending.append((self._window(now), fault_class(kind), self._window(retry_at)))
        if self._sandbox is not None:
            code = self._sandbox.kill()
            if kind == "crash" and code is not None:
                detail += f" (exit status {code})"
                if code == -signal.SIGXCPU:  # RLIMIT_CPU ran out (still the class "crash")
                    kind = "cpu_limit"
            self._sandbox = None
        self._incidents[kind] += 1
        self.last_incident = (kind, detail)
        if self.state is not State.RESTARTING:
            self.lifecycle.fire(Event.FAULT)
        self.restarts += 1
        return Outcome(incident=kind, detail=detail)

    def published(self, now: float) -> tuple[dict[str, int], bool]:
        """What may leave the device at ``now``: fault counts by class (of the fixed
        alphabet, :data:`tinyward.app.budget.ALPHABET`) of the windows that are over, and
        health as those faults imply it (unhealthy from the window after a fault until its
        restart was due; for good once given up). Nothing about the current window: when
        in it the app failed is not told. Thread-safe; waits for nothing the app does.
        """
        if self.config.fault_window_s <= 0:  # no windows: everything at once
            with self._lock:
                self._published.update(c for _, c, _ in self._pending)
                self._pending.clear()
                return dict(self._published), self.healthy
        with self._lock:
            current = self._window(now)
            for window, cls, restart in self._pending:
                if window < current:
                    self._published[cls] += 1
                    self._last_published = (window, restart)
            self._pending = [p for p in self._pending if p[0] >= current]
            counts = dict(self._published)
            last = self._last_published
            gave_up = self._gave_up_window is not None and self._gave_up_window < current
        down = last is not None and current <= last[1]
        return counts, not gave_up and not down

    def interrupt(self) -> None:
        """Kill the running (or starting) app now, from any thread (e.g. on SIGTERM), so
        whatever waits for it returns at once. The owner still calls :meth:`close`."""
        for sandbox in (self._sandbox, self._starting):
            if sandbox is not None:
                sandbox.terminate_now()

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
