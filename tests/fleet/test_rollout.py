"""The pure rollout logic: membership, widening, cohorts, offers and the halt rule."""

from __future__ import annotations

import hashlib

import pytest

from tinyward.fleet.errors import BadRollout, RolloutConflict, UnknownRollout
from tinyward.fleet.rollout import (
    BUCKETS,
    Observation,
    Rollout,
    bucket,
    check_no_conflict,
    evaluate,
    find,
    is_complete,
    offer_for,
    should_halt,
    tally,
)
from tinyward.update.meta import Offer, Version

IDS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
V = Version(1, 1, 0)


def _rollout(percent: float | None = 10.0, **kw: object) -> Rollout:
    kw.setdefault("rollout_id", "0123456789abcdef")
    return Rollout.start("app", "1.1.0", "app-1.1.0.tar", now=1000, percent=percent,  # type: ignore[arg-type]
                         **kw)


def _members(rollout: Rollout, cohort: str | None = None) -> set[str]:
    return {d for d in IDS if rollout.is_member(d, cohort)}


def test_membership_is_stable_and_close_to_the_percentage() -> None:
    rollout = _rollout(10.0)
    first = _members(rollout)
    assert first == _members(Rollout.from_json(rollout.to_json()))  # stable across reloads
    assert 150 <= len(first) <= 250  # 10 % of 2,000, give or take the hash


def test_widening_keeps_every_earlier_member() -> None:
    rollout = _rollout(10.0)
    small = _members(rollout)
    wider = rollout.widen(50.0, now=2000)
    assert small < _members(wider)
    assert 900 <= len(_members(wider)) <= 1100
    assert _members(wider.widen(100.0, now=3000)) == set(IDS)
    assert wider.stages == ((1000, 10.0), (2000, 50.0))


def test_widening_only_goes_up_and_not_while_halted() -> None:
    rollout = _rollout(20.0)
    with pytest.raises(BadRollout, match="goes up"):
        rollout.widen(10.0, now=1)
    with pytest.raises(BadRollout, match="goes up"):
        rollout.widen(20.0, now=1)
    with pytest.raises(RolloutConflict, match="halted"):
        rollout.halt("test", 5).widen(50.0, now=6)


def test_two_rollouts_pick_different_devices() -> None:
    one = _members(_rollout(10.0, rollout_id="aaaaaaaaaaaaaaaa"))
    two = _members(_rollout(10.0, rollout_id="bbbbbbbbbbbbbbbb"))
    assert len(one & two) < len(one) / 2  # independent: about 10 % of 10 % overlap


def test_bucket_is_the_documented_hash() -> None:
    device = IDS[0]
    digest = hashlib.sha256(b"tinyward-rollout\0" + b"0123456789abcdef\0"
                            + device.encode()).digest()
    assert bucket("0123456789abcdef", device) == int.from_bytes(digest[:8], "big") % BUCKETS


def test_cohort_filter() -> None:
    rollout = _rollout(None, cohorts=("canary",))
    assert rollout.percent == 100.0
    assert _members(rollout, "canary") == set(IDS)
    assert _members(rollout, "production") == set()
    assert _members(rollout, None) == set()
    both = _rollout(50.0, cohorts=("canary", "lab"))
    assert _members(both, "lab") == _members(both, "canary") == _members(_rollout(50.0))


def test_start_refuses_bad_input() -> None:
    with pytest.raises(BadRollout, match="percentage, cohorts"):
        _rollout(None)
    for bad in (0, -1, 101, float("nan"), True):
        with pytest.raises(BadRollout):
            _rollout(bad)  # type: ignore[arg-type]
    with pytest.raises(BadRollout, match="not a name"):
        _rollout(10, cohorts=("../x",))
    with pytest.raises(BadRollout, match="threshold"):
        _rollout(10, halt_at=0)
    with pytest.raises(BadRollout, match="threshold"):
        _rollout(10, halt_at=1.5)
    with pytest.raises(BadRollout, match="component"):
        Rollout.start("kernel", "1.0.0", "k", now=1, percent=10)
    with pytest.raises(BadRollout, match="MAJOR"):
        Rollout.start("app", "1.0", "k", now=1, percent=10)
    with pytest.raises(BadRollout, match="repository path"):
        Rollout.start("app", "1.0.0", "../etc/passwd", now=1, percent=10)


def test_offer_only_to_members_below_the_version_and_never_when_halted() -> None:
    rollout = _rollout(50.0)
    member = next(d for d in IDS if rollout.is_member(d, None))
    outsider = next(d for d in IDS if not rollout.is_member(d, None))
    offer = Offer("app", "app-1.1.0.tar", V)
    assert rollout.offer_for(member, None, {"app": "1.0.0"}) == offer
    assert rollout.offer_for(member, None, {}) == offer
    assert rollout.offer_for(member, None, {"app": "garbage"}) == offer
    assert rollout.offer_for(member, None, {"app": "1.1.0"}) is None
    assert rollout.offer_for(member, None, {"app": Version(2, 0, 0)}) is None
    assert rollout.offer_for(outsider, None, {"app": "1.0.0"}) is None
    assert rollout.halt("operator", 5).offer_for(member, None, {"app": "1.0.0"}) is None
    assert offer_for([rollout.halt("x", 5)], member, None, {}) is None
    assert offer_for([rollout], member, None, {}) == offer


def _seen(rollout: Rollout, failed: int, updated: int, waiting: int = 0,
          at: int = 1500) -> list[Observation]:
    members = [d for d in IDS if rollout.is_member(d, None)]
    out = [Observation(d, failed_at=at, state="reverted") for d in members[:failed]]
    out += [Observation(d, installed=V, state="accepted")
            for d in members[failed:failed + updated]]
    out += [Observation(d) for d in members[failed + updated:failed + updated + waiting]]
    return out


def test_halts_exactly_at_the_threshold() -> None:
    rollout = _rollout(100.0, halt_at=0.1, min_reports=5)
    assert should_halt(rollout, tally(rollout, _seen(rollout, 1, 10))) is None  # 1/11 < 10 %
    why = should_halt(rollout, tally(rollout, _seen(rollout, 1, 9)))  # 1/10 = 10 %: halts
    assert why is not None and "1 of 10" in why



def test_limit_members_claiming_the_version_dilute_the_failure_share() -> None:
    # The module docstring's limit: a lying member that says it runs the target counts as
    # updated. 2 real failures in 11 decided halt at 0.1; 9 more claimed updates hide them.
    rollout = _rollout(100.0, halt_at=0.1, min_reports=5)
    assert should_halt(rollout, tally(rollout, _seen(rollout, 2, 9))) is not None
    assert should_halt(rollout, tally(rollout, _seen(rollout, 2, 18))) is not None
    assert should_halt(rollout, tally(rollout, _seen(rollout, 2, 19))) is None

def test_no_decision_below_the_minimum_number_of_outcomes() -> None:
    rollout = _rollout(100.0, halt_at=0.1, min_reports=5)
    assert should_halt(rollout, tally(rollout, _seen(rollout, 4, 0, waiting=100))) is None
    assert should_halt(rollout, tally(rollout, _seen(rollout, 5, 0))) is not None
    assert should_halt(rollout, tally(rollout, _seen(rollout, 1, 4))) is not None  # 20 %


def test_waiting_devices_do_not_dilute_the_failure_share() -> None:
    rollout = _rollout(100.0, halt_at=0.25, min_reports=4)
    counted = tally(rollout, _seen(rollout, 2, 4, waiting=500))
    assert counted.members == 506 and counted.decided == 6
    assert should_halt(rollout, counted) is not None


def test_failures_outside_the_rollout_do_not_count() -> None:
    rollout = _rollout(10.0, min_reports=1)
    outsiders = [Observation(d, failed_at=1500, state="failed")
                 for d in IDS if not rollout.is_member(d, None)]
    counted = tally(rollout, outsiders)
    assert counted.members == 0 and should_halt(rollout, counted) is None


def test_a_revoked_devices_failures_do_not_count() -> None:
    rollout = _rollout(100.0, min_reports=1)
    revoked = [Observation(d, revoked=True, failed_at=1500, state="failed") for d in IDS[:50]]
    assert should_halt(rollout, tally(rollout, revoked)) is None
    # The same reports from devices that are not revoked would halt it.
    assert should_halt(rollout, tally(rollout, [Observation(d, failed_at=1500, state="failed")
                                                for d in IDS[:50]])) is not None


def test_failures_before_the_window_do_not_count_and_resume_opens_a_new_one() -> None:
    rollout = _rollout(100.0, min_reports=1)
    old = _seen(rollout, 5, 5, at=999)  # reported before the rollout started
    assert tally(rollout, old).failed == 0
    halted, _ = evaluate(rollout, _seen(rollout, 5, 5, at=1500), now=1600)
    assert halted.halted and halted.halted_at == 1600
    resumed = halted.resume(now=1700)
    after, counted = evaluate(resumed, _seen(rollout, 5, 5, at=1500), now=1800)
    assert not after.halted and counted.failed == 0
    with pytest.raises(RolloutConflict):
        resumed.resume(now=1900)


def test_a_device_that_failed_then_updated_counts_as_updated() -> None:
    rollout = _rollout(100.0, min_reports=1)
    counted = tally(rollout, [Observation(IDS[0], installed=V, failed_at=1500)])
    assert counted.outcomes["updated"] == 1 and counted.failed == 0


def test_completion_and_state_counts() -> None:
    rollout = _rollout(100.0, min_reports=5)
    seen = [*_seen(rollout, 0, 10), Observation(IDS[-1], state="trial")]
    counted = tally(rollout, seen)
    assert counted.states == {"accepted": 10, "trial": 1}
    assert not is_complete(rollout, counted)
    assert is_complete(rollout, tally(rollout, seen[:10]))
    assert not is_complete(_rollout(50.0), tally(_rollout(50.0), _seen(_rollout(50.0), 0, 10)))


def test_persisted_form_round_trips_and_damage_is_refused() -> None:
    rollout = _rollout(10.0, cohorts=("canary",)).widen(30, 1100).halt("why", 1200)
    assert Rollout.from_json(rollout.to_json()) == rollout
    for key, value in (("halted", "yes"), ("stages", []), ("percent", 0), ("id", "x"),
                       ("version", "1.0"), ("cohorts", "canary")):
        with pytest.raises(BadRollout):
            Rollout.from_json({**rollout.to_json(), key: value})
    with pytest.raises(BadRollout):
        Rollout.from_json([])



def test_unknown_rollout_names_a_command_that_exists() -> None:
    from click.testing import CliRunner

    from tinyward.cli.main import cli

    with pytest.raises(UnknownRollout) as caught:
        find([], "0123456789abcdef")
    hint = str(caught.value).split("`")[1]  # the command the message tells people to run
    args = hint.split()[1:]
    assert args[-1] == "FLEET"
    result = CliRunner().invoke(cli, [*args[:-1], "--help"])
    assert result.exit_code == 0, result.output

def test_one_running_rollout_per_component_and_find() -> None:
    running = _rollout(10.0)
    with pytest.raises(RolloutConflict, match="halt it first"):
        check_no_conflict([running], _rollout(10.0, rollout_id="1111111111111111"))
    check_no_conflict([running.halt("x", 1)], _rollout(10.0, rollout_id="1111111111111111"))
    assert find([running], running.rollout_id) is running
    with pytest.raises(UnknownRollout):
        find([running], "ffffffffffffffff")
