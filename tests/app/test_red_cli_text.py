"""Red-team variant: app-chosen text in ``tinyward app run`` and ``app inspect``.

A result's field name or value is echoed in the incident detail (``undeclared field
'[/bold]'``), and a manifest's enum values in ``app inspect``'s table; both went through
rich's markup parser, so ``[/bold]`` ended the command with a MarkupError traceback
instead of the incident line, and escape characters reached the terminal raw.
"""

from __future__ import annotations

import cbor2
from click.testing import CliRunner

from tinyward.cli.main import cli

from .conftest import TRIGGER
from .test_hostile_cbor import hostile  # noqa: F401 (fixture)


def test_app_run_shows_an_app_chosen_field_name_as_text(hostile, tmp_path) -> None:  # noqa: F811
    payload = cbor2.dumps({"count": 1, "state": "normal", "score": 0.5, "[/bold]\x1b[2J": 1})
    manifest = hostile([payload])
    rows = ["distance_mm"] + ["1000"] * 40
    rows[1], rows[2] = str(TRIGGER), "0"  # frame 0 triggers payload 0
    log = tmp_path / "frames.csv"
    log.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, ["app", "run", str(manifest), "--frames", str(log)],
                                terminal_width=200)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "incident extra_field" in result.output and "[/bold]" in result.output
    assert "\x1b[2J" not in result.output


def test_app_inspect_shows_enum_values_as_text(tmp_path) -> None:
    (tmp_path / "app.py").write_text("class A:\n    pass\n")
    (tmp_path / "sensor.toml").write_text(
        '[app]\nname = "x"\nversion = "1"\nentry = "app:A"\nmodels = []\n'
        '[input]\nchannels = ["[/u]\\u001b[2J"]\nsample_rate_hz = 1\ndtype = "int16"\n'
        'frame_shape = [1, 1]\n'
        '[output]\nmax_results_per_minute = 1\n'
        '[output.fields]\ns = { type = "enum", values = ["[/bold]", "\\u001b[2Jx"] }\n')
    result = CliRunner().invoke(
        cli, ["app", "inspect", "--no-probe", str(tmp_path / "sensor.toml")], terminal_width=200)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "[/bold]" in result.output and "[/u]" in result.output
    assert "\x1b[2J" not in result.output


def test_device_run_status_shows_an_app_chosen_value_without_its_escapes() -> None:
    """`device run`'s status line and its "latest result" print results with result_text."""
    from tinyward.cli._show import result_text

    shown = result_text({"state": "\x1b[2J\x1b[Hfake\x07", "count": 3})
    assert shown.isprintable(), repr(shown)
    assert "fake" in shown and "count=3" in shown
