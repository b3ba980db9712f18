import pytest

from tinyward.app.budget import ALPHABET, CpuBudget, fault_class


def test_cpu_budget_refills_at_its_share_and_caps_the_burst():
    budget = CpuBudget(share=0.5, burst=1.0)
    assert budget.charge(wall=0.0, cpu=0.0)
    assert budget.charge(wall=1.0, cpu=0.5)  # exactly its share
    assert budget.charge(wall=11.0, cpu=0.5)  # idle: the bucket is full again, not 6 s
    assert budget.remaining == pytest.approx(1.0)
    assert budget.charge(wall=11.5, cpu=1.5)  # a burst: min(1.0, 1.0 + 0.25) - 1.0 = 0
    assert not budget.charge(wall=12.0, cpu=2.0)  # 0 + 0.25 - 0.5 < 0: over budget
    budget.restart(wall=12.0, cpu=2.0)
    assert budget.remaining == pytest.approx(1.0)


def test_cpu_budget_refuses_nonsense():
    with pytest.raises(ValueError):
        CpuBudget(share=0.0, burst=1.0)
    with pytest.raises(ValueError):
        CpuBudget(share=0.5, burst=0.0)


def test_every_fault_kind_maps_into_the_small_alphabet():
    for kind in ("crash", "cpu_limit", "start_failed", "hang", "slow", "over_budget",
                 "not_a_map", "wrong_type", "oversize", "not_cbor", "anything else"):
        assert fault_class(kind) in ALPHABET
    assert len(ALPHABET) == 3

