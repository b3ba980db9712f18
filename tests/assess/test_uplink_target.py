"""A device's uplink (its fleet server) is probed too, so it is checked like the target's
address: an outside uplink is refused before anything runs."""

from __future__ import annotations

import pytest

from tinyward.assess.target import TargetRefused, make_target


def test_an_outside_uplink_is_refused() -> None:
    with pytest.raises(TargetRefused):
        make_target(address="127.0.0.1", uplink_address="192.0.2.7", uplink_port=8443)
    with pytest.raises(TargetRefused):
        make_target(address="127.0.0.1", uplink_address="fleet.example", uplink_port=8443)


def test_the_uplink_defaults_to_the_targets_address() -> None:
    assert make_target(address="127.0.0.1", uplink_port=8443).uplink == ("127.0.0.1", 8443)
    assert make_target(address="127.0.0.1").uplink is None
    named = make_target(address="192.0.2.7", named=True, uplink_address="192.0.2.8",
                        uplink_port=8443)
    assert named.uplink == ("192.0.2.8", 8443)
