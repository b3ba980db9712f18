"""The update state table: every transition, every refusal, and the rules it encodes."""

from __future__ import annotations

import pytest

from tinyward.update.meta import Version
from tinyward.update.state import (
    BUG,
    RESTING,
    TRANSITIONS,
    Action,
    Event,
    IllegalUpdateTransition,
    State,
    UpdateMachine,
)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair_is_in_the_table_or_refused(state: State, event: Event) -> None:
    machine = UpdateMachine(state, "app", Version(1, 0, 0))
    if (state, event) in TRANSITIONS:
        new, actions = TRANSITIONS[(state, event)]
        step = machine.fire(event, why="x")
        assert (step.state, step.actions) == (new, actions)
        assert machine.state is new
    else:
        with pytest.raises(IllegalUpdateTransition):
            machine.fire(event)
        assert machine.state is State.FAILED and machine.why == BUG


def test_happy_path() -> None:
    machine = UpdateMachine()
    machine.offer("app", Version(1, 2, 0))
    steps = [machine.fire(e) for e in (Event.DOWNLOADED, Event.SLOT_VERIFIED, Event.HEALTH_OK)]
    assert [s.state for s in steps] == [State.STAGED, State.TRIAL, State.ACCEPTED]
    assert steps[0].actions == (Action.WRITE_SLOT,)
    assert steps[1].actions == (Action.SWITCH, Action.START_TRIAL)
    assert steps[2].actions == (Action.CONFIRM, Action.RAISE_COUNTER, Action.REPORT)


def test_only_health_ok_raises_the_counter_and_only_after_confirm() -> None:
    raising = [pair for pair, (_, actions) in TRANSITIONS.items()
               if Action.RAISE_COUNTER in actions]
    assert set(raising) == {(State.TRIAL, Event.HEALTH_OK),
                            (State.ACCEPTED, Event.POWER_CUT_RECOVERY)}
    actions = TRANSITIONS[(State.TRIAL, Event.HEALTH_OK)][1]
    assert actions.index(Action.CONFIRM) < actions.index(Action.RAISE_COUNTER)


def test_every_trial_failure_reverts() -> None:
    for event in (Event.HEALTH_FAILED, Event.CRASHED, Event.DEADLINE_PASSED,
                  Event.POWER_CUT_RECOVERY):
        new, actions = TRANSITIONS[(State.TRIAL, event)]
        assert new is State.REVERTED and actions[0] is Action.REVERT


def test_refusals_before_the_switch_never_switch_or_revert() -> None:
    for (state, _event), (_new, actions) in TRANSITIONS.items():
        if state in (State.DOWNLOADING, State.STAGED) and _new is not State.TRIAL:
            assert not {Action.SWITCH, Action.REVERT, Action.RAISE_COUNTER} & set(actions)


def test_an_offer_is_taken_only_at_rest() -> None:
    assert {s for (s, e) in TRANSITIONS if e is Event.OFFER} == set(RESTING)


def test_every_state_has_a_recovery() -> None:
    assert {s for (s, e) in TRANSITIONS if e is Event.POWER_CUT_RECOVERY} == set(State)
    for state in (State.DOWNLOADING, State.STAGED):
        assert TRANSITIONS[(state, Event.POWER_CUT_RECOVERY)][0] is State.FAILED


def test_offer_clears_the_last_why_and_records_the_version() -> None:
    machine = UpdateMachine(State.REVERTED, "app", Version(1, 0, 0), why="crashed")
    machine.offer("model", Version(2, 0, 0))
    assert (machine.state, machine.why, machine.component) == (State.DOWNLOADING, None, "model")


def test_record_round_trip_and_bad_records() -> None:
    machine = UpdateMachine(State.TRIAL, "detector", Version(0, 3, 1), why=None)
    again = UpdateMachine.from_record(machine.to_record())
    assert again.to_record() == machine.to_record()
    for bad in ({}, {"state": "nope"}, {"state": "idle", "component": "kernel"},
                {"state": "idle", "version": "1.0"}, {"state": "idle", "why": 3}):
        with pytest.raises(ValueError):
            UpdateMachine.from_record(bad)


def test_the_table_in_docs_is_the_table_in_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "updates.md").read_text()
    section = doc.split("### States", 1)[1].split("###", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("state", "---"):
            continue
        for state in cells[0].split(", "):
            new = state if cells[2] == "(unchanged)" else cells[2]
            actions = () if cells[3] == "—" else tuple(cells[3].split(", "))
            documented[(state, cells[1])] = (new, actions)
    in_code = {(s.value, e.value): (n.value, tuple(a.value for a in actions))
               for (s, e), (n, actions) in TRANSITIONS.items()}
    assert documented == in_code
