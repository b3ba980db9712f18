"""Which event loop the fleet server runs on (fleet/runner.py: event_loop_factory)."""

from __future__ import annotations

import asyncio

import pytest

from tinyward.errors import BadInput
from tinyward.fleet.runner import EVENT_LOOP_ENV, event_loop_factory


def test_asyncio_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert event_loop_factory() is asyncio.new_event_loop


def test_uvloop_is_the_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    loop = event_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_unknown_loop_is_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")
    with pytest.raises(BadInput, match="uvloop or asyncio"):
        event_loop_factory()
