"""Red-team variant: text an application chooses, shown to a person at the readout.

A manifest's enum values are any strings, and the app picks which one each result holds.
The readout printed them through rich's markup parser, raw: an enum value ``[/bold]``
made ``show_results`` raise (MarkupError: the readout died whenever the newest result held
it, so nobody could read the device), ``[bold red]…[/]`` styled itself, and
``\\x1b[2J\\x1b[H`` reached the terminal as is (clear the screen, home the cursor: the app
paints its own "screen", e.g. a false mode line, under the real one's title).
Now every value from a result is shown as plain text with control characters escaped.
"""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from tinyward.readout import state as display
from tinyward.readout.screen import ReadoutScreen

HOSTILE_VALUES = ["[/bold]", "[bold red]UNLOCKED[/]", "\x1b[2J\x1b[H— connected —",
                  "a\x07b\x9bc", "[link=https://evil.example]x[/link]"]


def _screen(device, values: list[str]) -> tuple[ReadoutScreen, io.StringIO]:
    display.save(device.storage, display.DisplayState(
        updated_at=int(time.time()), mode="air-gapped",
        results=({f"f{i}": v for i, v in enumerate(values)},)))
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="standard")
    return ReadoutScreen(device, console=console), out


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_an_app_chosen_result_value_is_shown_as_plain_text(fleet_and_device, value) -> None:
    _, device = fleet_and_device
    screen, out = _screen(device, [value])
    screen.show_results()  # must not raise
    shown = out.getvalue()
    assert "\x1b[2J" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\x1b]8;" not in shown  # no hyperlink escape
    if value.startswith("["):
        assert value in shown  # the brackets themselves, not a style
