"""`tinyward detect export MODEL --out DIR`: write a fitted int8 detector as C99.

The `detect` group lives in cli/detect.py; it adds :data:`export` to itself
(``detect.add_command(export)``). Until then tests call :data:`export` directly.
"""

from __future__ import annotations

from pathlib import Path

import click

from tinyward.cli._paths import new_folder
from tinyward.detect.errors import DetectError, DetectMisuse
from tinyward.detect.models import load_detector
from tinyward.detect.pipeline import export_detector_c

#: ``--out DIR`` of both C exports (the detector here, the packet features in cli/detect.py).
c_out_folder = click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    callback=new_folder,
    help="Folder for <prefix>.h and <prefix>.c (created if missing).",
)


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@c_out_folder
@click.option(
    "--prefix",
    default="tinyward_detector",
    show_default=True,
    help="C name prefix: lower-case letters, digits, single underscores.",
)
@click.option(
    "--feature-names",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Text file with one feature name per line (for the header).",
)
def export(model: Path, out_dir: Path, prefix: str, feature_names: Path | None) -> None:
    """Export the int8 detector in MODEL as one C99 header and one source file."""
    detector = load_detector(model)
    names = _model_feature_names(model)
    if feature_names is not None:
        names = [line.strip() for line in feature_names.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    try:
        files = export_detector_c(detector, out_dir, prefix=prefix, feature_names=names)
    except DetectMisuse as error:  # the person gave the wrong model or prefix: input
        raise DetectError(f"{model}: {error}") from None
    click.echo(f"wrote {files.header} and {files.source}")
    click.echo(f"{detector.name}: {detector.ops_per_inference()} ops per vector, "
               f"{detector.model_bytes()} bytes of const tables, threshold "
               f"{files.threshold}")


def _model_feature_names(model: Path) -> list[str] | None:
    """The feature names of the model's own feature extractor, for the header."""
    from tinyward.detect.export_c import _FEATURE_NAME
    from tinyward.detect.pipeline import load_model
    from tinyward.errors import TinywardError

    try:
        names = list(load_model(model).features.extractor.feature_names)
    except TinywardError:  # no feature state with it: the header numbers the features
        return None
    return names if all(_FEATURE_NAME.match(n) for n in names) else None


COMMANDS: list[click.Command] = []  # registered under `tinyward detect` by cli/detect.py
