"""Admin token and token buckets, without HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyward.fleet.guards import (
    ADMIN_TOKEN_FILE,
    AdminToken,
    HandshakeGate,
    Refused,
    TokenBuckets,
    create_admin_token,
)


def test_token_bucket_grants_burst_then_refills() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3.0)
    assert [buckets.take("d", 1, now=0.0) for _ in range(3)] == [None, None, None]
    assert buckets.take("d", 1, now=0.0) == pytest.approx(0.5)
    assert buckets.take("other", 1, now=0.0) is None  # per device
    assert buckets.take("d", 1, now=0.5) is None  # refilled one token in 0.5 s


def test_token_bucket_never_grants_more_than_burst() -> None:
    assert TokenBuckets(rate=1.0, burst=2.0).take("d", 3, now=0.0) == float("inf")


def test_admin_token_checks(tmp_path: Path) -> None:
    guard = AdminToken(tmp_path / ADMIN_TOKEN_FILE)
    with pytest.raises(Refused, match="no admin token is configured"):
        guard.check("Bearer anything")
    token = create_admin_token(tmp_path)
    guard.check(f"Bearer {token}")
    for wrong in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer \udcff"):
        with pytest.raises(Refused) as refused:
            guard.check(wrong)
        assert refused.value.status == 401
    newer = create_admin_token(tmp_path)  # rotation is picked up without a restart
    guard.check(f"Bearer {newer}")
    with pytest.raises(Refused):
        guard.check(f"Bearer {token}")


def test_handshake_gate_caps_per_address_and_makes_room_from_the_oldest() -> None:
    gate = HandshakeGate(per_address=2, total=3)
    assert gate.admit("a", 1) == (True, None)
    assert gate.admit("a", 2) == (True, None)
    assert gate.admit("a", 3) == (False, None)  # over the per-address cap: refused
    assert gate.admit("b", 4) == (True, None)
    assert gate.admit("c", 5) == (True, 1)  # full: the oldest (1, from "a") makes room
    assert gate.in_progress == 3
    assert gate.admit("a", 6) == (True, 2)  # "a" has one in progress again, so it may
    gate.release(2)  # released twice (evicted, then its handshake ends): no effect
    for key in (4, 5, 6):
        gate.release(key)
    assert gate.in_progress == 0
    assert gate.admit("a", 7) == (True, None)
