"""`tinyward detect export MODEL --out DIR`: write a fitted int8 detector as C99.

The `detect` group lives in cli/detect.py; it adds :data:`export` to itself
(``detect.add_command(export)``). Until then tests call :data:`export` directly.
"""

from __future__ import annotations

from pathlib import Path

import click

from tinyward.cli._paths import new_folder
from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect.errors import DetectError
from tinyward.detect.export_c import export_c
from tinyward.detect.models import load_detector


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              callback=new_folder, help="Folder for <prefix>.h and <prefix>.c (created if missing).")
@click.option("--prefix", default="tinyward_detector", show_default=True,
              help="C name prefix: lower-case letters, digits, single underscores.")
@click.option("--feature-names", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Text file with one feature name per line (for the header).")
def export(model: Path, out_dir: Path, prefix: str, feature_names: Path | None) -> None:
    """Export the int8 detector in MODEL as one C99 header and one source file."""
    detector = load_detector(model)
    if not isinstance(detector, (Int8AutoencoderDetector, Int8MahalanobisDetector)):
        raise DetectError(  # the person gave the wrong model: input, not a caller bug
            f"{model}: holds a float {detector.name!r} detector; only int8 detectors export to "
            "C (train 'autoencoder-int8' or 'mahalanobis-int8')"
        )
    names = None
    if feature_names is not None:
        names = [line.strip() for line in feature_names.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    files = export_c(detector, out_dir, prefix=prefix, feature_names=names)
    click.echo(f"wrote {files.header} and {files.source}")
    click.echo(f"{detector.name}: {detector.ops_per_inference()} ops per vector, "
               f"{detector.model_bytes()} bytes of const tables, threshold "
               f"{detector.threshold_int()}")


COMMANDS: list[click.Command] = []  # registered under `tinyward detect` by cli/detect.py
