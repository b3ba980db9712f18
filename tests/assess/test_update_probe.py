"""update-tamper: tinyward's update client, fed by a repository the probe owns through the
fleet's chunk server, refuses every tampered update and takes the genuine one.

Controls: a client that forgets the version it runs (no anti-rollback) fails on the plain
rollback (the hidden one still meets the offer check); a client that installs whatever it
is offered fails on every attack; a repository that never reaches the client (the genuine
update not accepted) is not-tested, never a pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes.base import Budget, Context
from tinyward.assess.probes.update import CASES, Case, UpdateTamper, tinyward_client, verdict
from tinyward.assess.target import make_target
from tinyward.trust.device import Device
from tinyward.update.fetcher import ChunkChannel
from tinyward.update.meta import TargetMeta


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("update-probe") / "device"
    Device.init(folder)
    return folder


def probe(device_dir: Path, **kw: Any) -> tuple[str, str]:
    evidence = UpdateTamper(**kw).run(make_target(device_dir=device_dir), Context(load_model()),
                                      Budget(240, 50))
    assert [e.requirement for e in evidence] == ["I-UPD-2"]
    return evidence[0].verdict, evidence[0].text


def test_update_tamper_verdicts() -> None:
    context = Context(load_model())
    good = [Case("genuine", "accepted", after="1.2.0"),
            *(Case(name, "refused", "x") for name in CASES if name != "genuine")]
    assert verdict(good, context)[0].verdict == "pass"
    taken = [*good[:-1], Case("substituted", "accepted", after="1.2.0")]
    assert verdict(taken, context)[0].verdict == "fail"
    # A genuine update that did not arrive: the refusals prove nothing.
    assert verdict([Case("genuine", "no answer"), *good[1:]], context)[0].verdict == \
        "not-tested"
    assert verdict(good[:-1], context)[0].verdict == "not-tested"  # a case missing
    assert verdict([], context)[0].verdict == "not-tested"


def test_tinyward_update_client_refuses_every_tampered_update(device_dir: Path) -> None:
    result, text = probe(device_dir)
    assert result == "pass", text
    for name in CASES:
        assert f"{name}: " in text
    assert "genuine: accepted, running 1.1.0 -> 1.2.0" in text
    expected = {"forged-key": "bad-signature", "rollback": "rollback",
                "rollback-hidden": "rollback", "below-threshold": "bad-signature",
                "wrong-product": "wrong-product", "mix-and-match": "metadata-version",
                "frozen": "expired", "replayed-metadata": "metadata-version",
                "oversized": "too-long", "truncated": "bad-download",
                "substituted": "bad-download"}
    assert set(expected) == set(CASES) - {"genuine"}
    for case, code in expected.items():
        assert f"{case}: refused ({code})" in text, text


def forgetful_client(**kw: Any) -> Any:
    """A client without anti-rollback: it does not know the version it runs."""
    kw["installed"] = lambda component: None
    return tinyward_client(**kw)


def test_control_a_client_without_anti_rollback_fails_on_rollback(device_dir: Path) -> None:
    result, text = probe(device_dir, make_client=forgetful_client)
    assert result == "fail", text
    taken = text.split("tampered update(s): ")[1].split(" (")[0]
    # The hidden rollback is still refused: the signed version must match the offer's.
    assert taken == "rollback", text
    assert "rollback-hidden: refused (offer-mismatch)" in text


class _InstallsAnything:
    """A device that installs whatever the fleet offers, verifying nothing."""

    def __init__(self, *, on_verified: Any, product_class: str, **_: Any) -> None:
        self.on_verified = on_verified
        self.product_class = product_class
        self.channel = ChunkChannel(on_offer=self._offer)
        self.last_error = None
        self.busy = False
        self.state = "idle"
        self.taken: set[str] = set()

    def _offer(self, offer: Any) -> None:
        if offer.target_path not in self.taken:
            self.taken.add(offer.target_path)
            meta = TargetMeta(offer.component, offer.version, self.product_class,
                              offer.version)
            self.state = "staged"
            self.on_verified(offer.component, Path("/dev/null"), meta, 0, {})

    def status(self) -> dict[str, Any]:
        return {"state": self.state}

    def close(self) -> None:
        self.channel.close()


def test_control_a_client_that_verifies_nothing_fails(device_dir: Path) -> None:
    result, text = probe(device_dir, make_client=_InstallsAnything)
    assert result == "fail", text
    assert "forged-key" in text.split("(")[1] and "truncated" in text


def test_control_a_repository_that_never_reaches_the_client_is_not_tested(
        device_dir: Path) -> None:
    class Deaf(_InstallsAnything):
        def _offer(self, offer: Any) -> None:
            pass  # the offers never arrive: nothing accepted, nothing refused

    result, text = probe(device_dir, make_client=Deaf, seconds_per_case=3.0)
    assert result == "not-tested" and "genuine: no answer" in text, text


def test_a_folder_that_is_not_a_tinyward_device_is_not_tested(tmp_path: Path) -> None:
    result, text = probe(tmp_path)
    assert result == "not-tested" and "tinyward device folder" in text
