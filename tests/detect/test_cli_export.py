"""`tinyward detect export` (called directly until cli/detect.py adds it to its group)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import CI
from tinyward.cli.detect_export import export
from tinyward.detect.models import make_detector

from ._synthetic import make_data

BENIGN, _, _ = make_data(n_benign=1500)


def test_export_writes_header_and_source_that_compile(tmp_path: Path) -> None:
    detector = make_detector("autoencoder-int8")
    detector.fit(BENIGN)
    model = tmp_path / "m.json"
    detector.save(model)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"f{i}" for i in range(BENIGN.shape[1])))
    result = CliRunner().invoke(export, [str(model), "--out", str(tmp_path / "c"),
                                         "--prefix", "pump", "--feature-names", str(names)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "pump.h").exists() and (tmp_path / "c" / "pump.c").exists()
    assert "[15] f15" in (tmp_path / "c" / "pump.h").read_text()
    if shutil.which("gcc") is None:
        if CI:  # the compile check is evidence: CI may not drop it (tests/conftest.py)
            pytest.fail("CI=true and gcc is not installed")
    else:
        subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-c",
                        str(tmp_path / "c" / "pump.c"), "-o", str(tmp_path / "pump.o")],
                       check=True)


def test_export_refuses_float_model(tmp_path: Path) -> None:
    detector = make_detector("mahalanobis")
    detector.fit(BENIGN)
    model = tmp_path / "m.json"
    detector.save(model)
    result = CliRunner().invoke(export, [str(model), "--out", str(tmp_path / "c")])
    assert result.exit_code != 0
    assert "only int8 detectors" in str(result.exception)


@pytest.mark.parametrize("content", [b"", b"{", b"\x00\xff", b'{"format": "other"}'])
def test_export_refuses_bad_model_file(tmp_path: Path, content: bytes) -> None:
    model = tmp_path / "bad.json"
    model.write_bytes(content)
    result = CliRunner().invoke(export, [str(model), "--out", str(tmp_path / "c")])
    assert result.exit_code != 0
    assert str(model) in str(result.exception)
    assert not (tmp_path / "c").exists()
