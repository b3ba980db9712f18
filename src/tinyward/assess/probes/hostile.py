"""hostile-app (live): the device's sandbox contains every hostile application and
reports it (I-APP-1: the app cannot reach secrets, the network or the core; I-INPUT-1:
its malformed output is refused and the device keeps working).

For a tinyward device folder (``device.json``): the battery in
``assess/data/hostile/`` (:mod:`tinyward.assess.hostile_apps`) runs in tinyward's real
sandbox, configured as ``tinyward device run`` configures it (the device folder is a
secret path). Each app behaves on ordinary frames and attacks on a frame whose first
sample is 666; its targets are real: the device's own root-of-trust key file, a
listening socket the probe opens, a marker file in a folder anyone may write.

An app is **contained** when (1) it processed an ordinary frame, (2) the attack frame
gave no result and the supervisor reported the expected incident, (3) nothing got out
(no connection to the listener, no marker), and (4) after the backoff an ordinary frame
is processed again. Pass: every app contained. Fail: any app got out, or its attack went
unreported; the battery stops at the first escape (``kill_core`` runs last: against a
sandbox without seccomp it would kill the assessment). The sandbox refusing to start at
all is not-tested: the device would not run its application either, so nothing about
containment was shown. Not a tinyward device: not-tested (a foreign device's sandbox
cannot be driven from its folder).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.hostile_apps import copy_app
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.target import Target

NAME = "hostile-app"
TRIGGER = 666


@dataclass(frozen=True)
class Hostile:
    """One hostile app of the battery: which requirement it attacks, the incident the
    supervisor must report, and the frame deadline it runs under."""

    app: str
    requirement: str
    incident: str
    attack: str
    deadline: float = 5.0


BATTERY: tuple[Hostile, ...] = (
    Hostile("keystore", "I-APP-1", "crash", "reads the device's root-of-trust key file"),
    Hostile("socket", "I-APP-1", "crash", "connects to a listening TCP socket on loopback"),
    Hostile("exec_shell", "I-APP-1", "crash", "executes /bin/sh to write a marker file"),
    Hostile("big_result", "I-INPUT-1", "oversize", "returns a 1 MB result"),
    Hostile("raw_frames", "I-INPUT-1", "oversize", "writes raw bytes into its output pipe"),
    Hostile("forged_results", "I-INPUT-1", "unsolicited",
            "writes 1,000 forged result messages into the pipe"),
    Hostile("numpy_scalar", "I-INPUT-1", "wrong_type", "returns a numpy scalar"),
    Hostile("hang", "I-INPUT-1", "hang", "never returns", deadline=0.5),
    Hostile("kill_core", "I-APP-1", "crash", "sends SIGKILL to the core (its parent)"),
)


@dataclass(frozen=True)
class AppRun:
    """What one hostile app did: ``started`` (the sandbox let it start), ``normal`` (an
    ordinary frame gave a result), ``result`` of the attack frame (None: refused),
    ``incident`` reported for it, ``escaped`` (what got out, "" for nothing),
    ``recovered`` (an ordinary frame processed after the backoff)."""

    app: Hostile
    started: bool
    normal: bool = False
    result: dict[str, Any] | None = None
    incident: str | None = None
    escaped: str = ""
    recovered: bool = False
    note: str = ""


def _contained(run: AppRun) -> str:
    """"" when contained, else what went wrong (pure)."""
    if run.escaped:
        return f"{run.app.app} ({run.app.attack}): {run.escaped}"
    if run.result is not None:
        return f"{run.app.app} ({run.app.attack}): its attack frame gave a result {run.result}"
    if run.incident is None:
        return f"{run.app.app} ({run.app.attack}): no incident was reported"
    if not run.recovered:
        return f"{run.app.app}: the device did not process frames again after the attack"
    return ""


def verdict(runs: list[AppRun], context: Context, where: str = "") -> list[Evidence]:
    """Per requirement the probe decides: fail if an app of it got out or went
    unreported, pass if every app of it ran and was contained (pure)."""
    evidence = []
    for requirement in context.requirements_of(NAME):
        mine = [r for r in runs if r.app.requirement == requirement.id]
        wanted = [h for h in BATTERY if h.requirement == requirement.id]
        problems = [p for p in (_contained(r) for r in mine if r.started and r.normal) if p]
        if problems:
            evidence.append(Evidence(requirement.id, "fail", "live", NAME,
                                     "; ".join(problems), where))
            continue
        unshown = [r for r in mine if not r.started or not r.normal]
        if unshown or len(mine) < len(wanted):
            ran = {r.app.app for r in mine}
            why = [f"{r.app.app}: {r.note or 'did not process an ordinary frame'}"
                   for r in unshown]
            why += [f"{h.app}: not run" for h in wanted if h.app not in ran]
            evidence.append(Evidence(requirement.id, "not-tested", "live", NAME,
                                     "not every hostile app was shown contained: "
                                     + "; ".join(why), where))
            continue
        evidence.append(Evidence(requirement.id, "pass", "live", NAME,
                                 f"{len(mine)} hostile apps contained, each reported "
                                 f"({', '.join(f'{r.app.app}: {r.incident}' for r in mine)}) "
                                 "and the device processed frames again", where))
    return evidence


class _Clock:
    """The supervisor's clock for its backoff: the probe moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@dataclass
class _Targets:
    """What the hostile apps aim at, and how to tell whether they got there."""

    folder: Path
    keystore: Path
    listener: socket.socket = field(default_factory=socket.socket)

    def for_app(self) -> dict[str, object]:
        return {"keystore": str(self.keystore), "port": self.listener.getsockname()[1],
                "marker": str(self.folder / "markers" / "pwned")}

    def escaped(self) -> str:
        try:
            connection, _ = self.listener.accept()
            connection.close()
            return "it connected to the listener on loopback"
        except BlockingIOError:
            pass
        if (self.folder / "markers" / "pwned").exists():
            return "the shell it executed wrote the marker file"
        return ""


def _copy_app(name: str, into: Path, target: dict[str, object]) -> Path:
    """The packaged app into a folder the sandbox user may read, with its target.json."""
    folder = copy_app(name, into / name)
    (folder / "target.json").write_text(json.dumps(target))
    (folder / "target.json").chmod(0o644)
    return folder / "sensor.toml"


def secret_file(device_dir: Path) -> Path | None:
    """The device's most valuable file: its root-of-trust key, else a keystore file."""
    candidates = [device_dir / "rot" / "root.key", *sorted((device_dir / "keys").glob("*"))]
    return next((p for p in candidates if p.is_file()), None)


def run_one(hostile: Hostile, manifest_path: Path, targets: _Targets,
            sandbox: Any) -> AppRun:
    import numpy as np

    from tinyward.app.errors import SandboxError
    from tinyward.app.manifest import load_manifest
    from tinyward.app.supervisor import Supervisor, SupervisorConfig

    manifest = load_manifest(manifest_path)
    shape = tuple(manifest.input.frame_shape)

    def frame(value: int = 100) -> Any:
        return np.full(shape, value, dtype=manifest.input.dtype)

    config = replace(sandbox, frame_deadline_s=hostile.deadline)
    clock = _Clock()
    supervisor = Supervisor(manifest, config,
                            SupervisorConfig(backoff_initial_s=1.0, fault_window_s=0.0), clock)
    try:
        if not supervisor.start():
            return AppRun(hostile, False, note=f"the sandbox did not start it "
                                               f"({', '.join(supervisor.incidents()) or '?'})")
        normal = supervisor.process(frame()).result is not None
        if not normal:
            return AppRun(hostile, True, note="an ordinary frame gave no result")
        outcome = supervisor.process(frame(TRIGGER))
        escaped = targets.escaped()
        clock.now += 60.0  # past the backoff: the supervisor restarts the app
        after = supervisor.process(frame())
        return AppRun(hostile, True, True, outcome.result, outcome.incident, escaped,
                      after.result is not None)
    except SandboxError as error:
        return AppRun(hostile, False, note=str(error))
    finally:
        supervisor.close()


class HostileApp:
    name = NAME
    kind = "live"

    def __init__(self, sandbox: Callable[[Path], Any] | None = None) -> None:
        # The sandbox configuration for a device folder: by default the one
        # `tinyward device run` uses; tests pass one with an ``unsafe_*`` layer off.
        self._sandbox = sandbox

    def _config(self, device_dir: Path) -> Any:
        from tinyward.app.sandbox import SandboxConfig

        if self._sandbox is not None:
            return self._sandbox(device_dir)
        return SandboxConfig(secret_paths=(device_dir,))

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        device_dir = target.device_dir
        if device_dir is None or not (device_dir / "device.json").is_file():
            return [Evidence(r.id, "not-tested", "live", NAME,
                             "no tinyward device folder (device.json) whose sandbox could run "
                             "the hostile applications")
                    for r in context.requirements_of(NAME)]
        secret = secret_file(device_dir)
        if secret is None:
            return [Evidence(r.id, "not-tested", "live", NAME,
                             f"no key file in {device_dir} for the hostile apps to aim at")
                    for r in context.requirements_of(NAME)]
        config = self._config(device_dir)
        runs: list[AppRun] = []
        scratch = Path(tempfile.mkdtemp(prefix="tinyward-hostile-", dir="/tmp"))
        try:
            scratch.chmod(0o755)  # the sandbox user must reach the apps
            (scratch / "markers").mkdir()
            (scratch / "markers").chmod(0o777)  # so a shell that got out could write here
            targets = _Targets(scratch, secret)
            with targets.listener:
                targets.listener.bind(("127.0.0.1", 0))
                targets.listener.listen()
                targets.listener.setblocking(False)
                for hostile in BATTERY:
                    if budget.left() <= 0 or not budget.spend():
                        break  # the rest are "not run": not-tested, never passed
                    manifest = _copy_app(hostile.app, scratch, targets.for_app())
                    run = run_one(hostile, manifest, targets, config)
                    runs.append(run)
                    if run.started and run.normal and _contained(run):
                        break  # one escape decides; a later app could harm the assessment
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return verdict(runs, context, str(device_dir))


__all__ = ["BATTERY", "AppRun", "Hostile", "HostileApp", "run_one", "secret_file", "verdict"]
