"""The health check a new version must pass in trial before it is accepted.

What "healthy" means, per component (issue 14, item 3):

- ``app``: the application, started in the real sandbox under the real supervisor with
  the manifest's own contract, produces ``results_needed`` contract-valid results before
  the deadline. Its first fault ends the trial (no restarts: a trial proves, it does not
  hope): a crash or failure to start is ``crashed``, a result off the contract or the
  protocol is ``contract``, a hang or a deadline missed is ``deadline``, anything else
  ``health-failed``.
- ``detector``, ``model``: the file loads with the component's loader (the detector
  loader by default: ``tinyward.detect.load_model``, which treats the file as hostile).
- every component: the link reaches the fleet, when a ``link`` callable is given (the
  runner passes one that makes a real round trip; tests pass a plain function).

Time comes from an injected ``clock`` (monotonic seconds) for the trial's deadline; the
per-frame deadline is the sandbox's real one. Nothing here raises for what the new
version does, nor for a loader or frame source that raises something unexpected:
:meth:`HealthCheck.run` returns a :class:`Verdict` (a failed one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyward.errors import TinywardError
from tinyward.update.errors import (
    TrialContract,
    TrialCrashed,
    TrialDeadline,
    TrialFailed,
    TrialLinkDown,
)

#: Supervisor incident kinds, by the reason code they end a trial with.
CRASH_KINDS = frozenset({"crash", "start_failed", "cpu_limit"})
DEADLINE_KINDS = frozenset({"hang", "slow"})
CONTRACT_KINDS = frozenset({"not_a_map", "extra_field", "missing_field", "wrong_type",
                            "out_of_range", "too_frequent", "oversize", "truncated",
                            "not_cbor", "malformed", "unsolicited"})


@dataclass(frozen=True)
class TrialConfig:
    """How a new version proves itself."""

    #: seconds (of the injected clock) from the trial's start to a verdict
    deadline_s: float = 30.0
    #: contract-valid results the app must produce
    results_needed: int = 3
    #: frames fed at most (an app that answers none of them fails: ``deadline``)
    max_frames: int = 50
    #: False: an app's manifest is loaded and checked but the app is not run (a device
    #: without the sandbox's kernel features; the power-cut test, which is about slots)
    run_app: bool = True


@dataclass(frozen=True)
class Verdict:
    """The end of a trial: passed, or the reason code and a line for people. ``elapsed_s``
    is the clock's time from the trial's start to the verdict."""

    ok: bool
    why: str | None = None
    detail: str = ""
    elapsed_s: float = 0.0


#: frames for the app's trial: given the manifest's input spec, an iterator of frames
FrameSource = Callable[[object], Iterator[np.ndarray]]


def zero_frames(manifest: object) -> Iterator[np.ndarray]:
    """Frames of zeros in the manifest's dtype and shape (the default trial input)."""
    spec = manifest.input  # type: ignore[attr-defined]
    while True:
        yield np.zeros(spec.frame_shape, dtype=np.dtype(spec.dtype))


def load_detector_file(path: Path) -> None:
    """Load a detector model file as the detector runner would (hostile input)."""
    from tinyward.detect.pipeline import load_model

    load_model(path)


DEFAULT_LOADERS: Mapping[str, Callable[[Path], object]] = {
    "detector": load_detector_file,
}


@dataclass
class HealthCheck:
    """Runs the trial of one component's new content (an app folder or a file)."""

    config: TrialConfig = field(default_factory=TrialConfig)
    #: the app's sandbox (``tinyward.app.sandbox.SandboxConfig``); None: the default one
    sandbox_config: object | None = None
    frames: FrameSource = zero_frames
    loaders: Mapping[str, Callable[[Path], object]] = field(
        default_factory=lambda: dict(DEFAULT_LOADERS))
    #: True when the link reaches the fleet (None: not checked, e.g. no network in tests)
    link: Callable[[], bool] | None = None
    clock: Callable[[], float] = time.monotonic

    def run(self, component: str, content: Path) -> Verdict:
        """Try ``content`` (the new slot's app folder or file) as ``component``."""
        start = self.clock()
        try:
            if component == "app":
                self._app(content, start)
            loader = self.loaders.get(component)
            if loader is not None:
                try:
                    loader(content)
                except (TinywardError, OSError, ValueError) as error:
                    raise TrialFailed(f"the new {component} does not load: {error}") from None
            if self.link is not None and not self.link():
                raise TrialLinkDown("the link did not reach the fleet from the new version")
            if self.clock() - start > self.config.deadline_s:
                raise TrialDeadline(f"no verdict within {self.config.deadline_s:g} s")
        except TrialFailed as failure:
            return Verdict(False, failure.code, str(failure), self.clock() - start)
        except Exception as error:  # noqa: BLE001 - e.g. a frame source run dry: a failure
            return Verdict(False, TrialFailed.code, f"the trial raised "
                           f"{type(error).__name__}: {error}", self.clock() - start)
        return Verdict(True, None, "healthy", self.clock() - start)

    def _app(self, folder: Path, start: float) -> None:
        from tinyward.app.errors import ManifestError
        from tinyward.app.manifest import load_manifest
        from tinyward.app.sandbox import SandboxConfig
        from tinyward.app.supervisor import Supervisor, SupervisorConfig

        try:
            manifest = load_manifest(folder / "sensor.toml")
        except ManifestError as error:
            raise TrialFailed(f"the new app's manifest is refused: {error}") from None
        if not self.config.run_app:
            return
        sandbox = self.sandbox_config or SandboxConfig()
        if not isinstance(sandbox, SandboxConfig):
            raise TypeError("sandbox_config must be a SandboxConfig")
        # One start, no fault windows: the first fault is the verdict.
        supervisor_config = SupervisorConfig(max_failed_starts=1, fault_window_s=0)
        deadline = start + self.config.deadline_s
        good = 0
        with Supervisor(manifest, sandbox, supervisor_config, clock=self.clock) as sup:
            if not sup.start():
                kind, detail = sup.last_incident or ("start_failed", "")
                raise TrialCrashed(f"the new app did not start ({kind}: {detail})")
            frames = self.frames(manifest)
            for _ in range(self.config.max_frames):
                left = deadline - self.clock()
                if left <= 0:
                    break
                outcome = sup.process(next(frames), deadline_s=min(
                    left, sandbox.frame_deadline_s))
                if outcome.incident is not None:
                    raise _failure(outcome.incident, outcome.detail)
                if outcome.result is not None:
                    good += 1
                    if good >= self.config.results_needed:
                        return
        raise TrialDeadline(f"{good} of {self.config.results_needed} contract-valid results "
                            f"within {self.config.deadline_s:g} s")


def _failure(kind: str, detail: str) -> TrialFailed:
    text = f"the new app failed its trial: {kind} ({detail})"
    if kind in CRASH_KINDS:
        return TrialCrashed(text)
    if kind in DEADLINE_KINDS:
        return TrialDeadline(text)
    if kind in CONTRACT_KINDS:
        return TrialContract(text)
    return TrialFailed(text)
