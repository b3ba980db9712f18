"""The lifecycle table, and the supervisor with a well-behaved app in the real sandbox."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyward.app.errors import IllegalTransition, SandboxError
from tinyward.app.manifest import load_manifest
from tinyward.app.sandbox import Sandbox, SandboxConfig
from tinyward.app.supervisor import (
    TRANSITIONS,
    Event,
    Lifecycle,
    State,
    Supervisor,
    SupervisorConfig,
)

from .conftest import frame

GOOD = Path(__file__).parent / "good" / "sensor.toml"


def test_happy_path_through_the_table():
    life = Lifecycle()
    for event, state in [(Event.START, State.STARTING), (Event.READY, State.READY),
                         (Event.FRAME, State.BUSY), (Event.RESULT, State.READY),
                         (Event.FRAME, State.BUSY), (Event.FAULT, State.RESTARTING),
                         (Event.START, State.STARTING), (Event.FAULT, State.RESTARTING),
                         (Event.GIVE_UP, State.FAILED), (Event.CLOSE, State.CLOSED)]:
        assert life.fire(event) is state


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair_not_in_the_table_raises_and_lands_in_error(state, event):
    life = Lifecycle()
    life.state = state
    if (state, event) in TRANSITIONS:
        assert life.fire(event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition):
            life.fire(event)
        assert life.state is State.ERROR


def test_failed_is_terminal_but_closable():
    assert {e for (s, e) in TRANSITIONS if s is State.FAILED} == {Event.CLOSE}


@pytest.mark.slow
def test_good_app_runs_and_reports_its_protections(clock):
    with Supervisor(load_manifest(GOOD), clock=clock) as sup:
        assert sup.start() and sup.healthy
        results = [sup.process(frame(2000)).result for _ in range(3)]
        assert [r["count"] for r in results] == [1, 2, 3]
        names = {p.name: p for p in sup.protections}
        for name in ("seccomp", "resource limits", "no_new_privs", "inherited fds",
                     "scrubbed environment", "landlock", "separate uid", "output contract"):
            assert name in names, name
        assert names["seccomp"].active and names["inherited fds"].active
        assert sup.incidents() == {}
    assert sup.state is State.CLOSED
    with pytest.raises(IllegalTransition):
        sup.process(frame())


@pytest.mark.slow
def test_every_protection_is_stated_even_when_off(clock):
    config = SandboxConfig(unsafe_no_landlock=True, unsafe_keep_uid=True,
                           required=("seccomp", "resource limits", "no_new_privs"))
    with Supervisor(load_manifest(GOOD), config, clock=clock) as sup:
        assert sup.start()
        names = {p.name: p for p in sup.protections}
        assert not names["landlock"].active and "unsafe_no_landlock" in names["landlock"].reason
        assert not names["separate uid"].active
        assert not names["filesystem isolation"].active


@pytest.mark.slow
def test_required_protection_missing_refuses_to_start():
    config = SandboxConfig(unsafe_no_seccomp=True)  # seccomp is required by default
    sandbox = Sandbox(load_manifest(GOOD), config)
    with pytest.raises(SandboxError, match="without: seccomp"):
        sandbox.start()


def test_secret_path_beneath_an_allowed_path_refuses_to_start():
    config = SandboxConfig(secret_paths=(GOOD.parent / "keystore",))
    with pytest.raises(SandboxError, match="beneath"):
        Sandbox(load_manifest(GOOD), config).start()


def test_wrong_frame_shape_is_a_caller_bug(clock):
    sup = Supervisor(load_manifest(GOOD), clock=clock)
    with pytest.raises(ValueError):
        sup.process(np.zeros((3, 1), dtype=np.int16))


@pytest.mark.slow
def test_app_that_cannot_start_is_given_up_after_the_limit(world_tmp, clock):
    folder = world_tmp / "broken"
    folder.mkdir(mode=0o755)
    (folder / "sensor.toml").write_text(GOOD.read_text())
    (folder / "model.json").write_text("{}")
    (folder / "good_app.py").write_text("raise SystemExit(3)\n")
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)
    sup = Supervisor(load_manifest(folder / "sensor.toml"), clock=clock,
                     config=SupervisorConfig(max_failed_starts=2, backoff_initial_s=1.0,
                                             fault_window_s=0.0))
    assert not sup.start() and sup.state is State.RESTARTING
    clock.advance(1.0)
    assert not sup.process(frame()).processed
    assert sup.state is State.FAILED and not sup.healthy
    assert sup.incidents() == {"start_failed": 2}
    assert sup.retry_at == pytest.approx(clock.now + 2.0)  # the backoff doubled
    sup.close()


@pytest.mark.slow
def test_one_fault_per_window_published_by_class_only_when_the_window_is_over(world_tmp, clock):
    # Issue 12, item 3: restarts wait for the next window; reports see a window's fault,
    # as its class, only once the window is over (so not when in it the app failed).
    folder = world_tmp / "broken"
    folder.mkdir(mode=0o755)
    (folder / "sensor.toml").write_text(GOOD.read_text())
    (folder / "model.json").write_text("{}")
    (folder / "good_app.py").write_text("raise SystemExit(3)\n")
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)
    clock.now = 1003.0  # windows of 10 s on the clock's grid: [1000, 1010) ...
    sup = Supervisor(load_manifest(folder / "sensor.toml"), clock=clock,
                     config=SupervisorConfig(fault_window_s=10.0, backoff_initial_s=1.0))
    assert not sup.start()
    assert sup.retry_at == 1010.0  # not 1004: the next window
    assert sup.published(1009.9) == ({}, True)  # the window is not over: nothing to tell
    clock.now = 1005.0
    assert not sup.process(frame()).processed  # no second fault in this window
    assert sup.published(1010.0) == ({"crash": 1}, False)  # start_failed is a "crash"
    clock.now = 1010.0
    assert not sup.process(frame()).processed  # restarted, failed again (window 1010)
    assert sup.incidents() == {"start_failed": 2}
    assert sup.published(1019.0) == ({"crash": 1}, False)
    assert sup.published(1020.0) == ({"crash": 2}, False)
    sup.close()
