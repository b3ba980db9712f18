"""Software measurements: reproducible from the documented format, sensitive to every change."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import pytest

from tinyward.trust import measurement
from tinyward.trust.attestation import measure_files, measure_tinyward_code
from tinyward.trust.errors import MeasurementError
from tinyward.trust.measurement import UNSIGNED_SIGNER_ID, measurement_digest

SIGNER = hashlib.sha256(b"signer").digest()


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "labels.txt").write_text("cat\ndog\n")
    (root / "sub" / "empty").write_bytes(b"")
    (root / "no-files-here").mkdir()
    return root


def _reference(args: list[tuple[int, str, bytes]]) -> bytes:
    """The format of docs/attestation.md, written out independently of the module."""
    digest = hashlib.sha256(b"tinyward-measure/1\x00")
    for index, name, content in sorted(args, key=lambda e: (e[0], e[1].encode())):
        path = name.encode()
        digest.update(struct.pack(">II", index, len(path)) + path)
        digest.update(struct.pack(">Q", len(content)) + content)
    return digest.digest()


def test_digest_follows_the_documented_format(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "m")
    extra = tmp_path / "app.py"
    extra.write_text("print('hi')\n")
    expected = _reference([
        (0, "model.bin", (tree / "model.bin").read_bytes()),
        (0, "sub/empty", b""),
        (0, "sub/labels.txt", b"cat\ndog\n"),
        (1, "app.py", b"print('hi')\n"),
    ])
    assert measurement_digest([tree, extra]) == expected


def test_component_fields(tmp_path: Path) -> None:
    component = measure_files([_tree(tmp_path / "m")], "App_CONFIG", SIGNER, "2")
    assert len(component.measurement_value) == 32
    assert (component.measurement_type, component.version) == ("App_CONFIG", "2")
    assert (component.signer_id, component.measurement_desc) == (SIGNER, "sha-256")


def test_same_tree_in_another_place_measures_the_same(tmp_path: Path) -> None:
    first = _tree(tmp_path / "a")
    second = tmp_path / "elsewhere" / "b"
    shutil.copytree(first, second)
    os.utime(second / "model.bin", (0, 0))  # timestamps are not measured
    assert measurement_digest([first]) == measurement_digest([second])


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "model.bin").write_bytes((r / "model.bin").read_bytes()[:-1] + b"\x00"),
        lambda r: (r / "sub" / "labels.txt").rename(r / "sub" / "labels.txy"),
        lambda r: (r / "sub" / "labels.txt").rename(r / "labels.txt"),
        lambda r: (r / "sub" / "new").write_bytes(b""),
        lambda r: (r / "sub" / "empty").unlink(),
        lambda r: (r / "sub" / "empty").write_bytes(b"\x00"),
    ],
    ids=["content", "rename", "move", "add-empty-file", "remove-empty-file", "grow"],
)
def test_every_change_changes_the_measurement(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    tree = _tree(tmp_path / "m")
    before = measurement_digest([tree])
    change(tree)
    assert measurement_digest([tree]) != before


def test_boundaries_between_files_are_framed(tmp_path: Path) -> None:
    # "ab"+"c" and "a"+"bc" concatenate alike; the length framing tells them apart.
    one, two = tmp_path / "one", tmp_path / "two"
    for root, (x, y) in ((one, (b"ab", b"c")), (two, (b"a", b"bc"))):
        root.mkdir()
        (root / "1").write_bytes(x)
        (root / "2").write_bytes(y)
    assert measurement_digest([one]) != measurement_digest([two])


def test_argument_order_and_grouping_count(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert measurement_digest([a, b]) != measurement_digest([b, a])


def test_symlink_inside_a_directory_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "m")
    (tree / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_bytes(b"secret")
    with pytest.raises(MeasurementError, match="not a regular file"):
        measurement_digest([tree])
    (tree / "link").unlink()
    (tree / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(MeasurementError, match="symbolic link"):
        measurement_digest([tree])


def test_missing_or_empty_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="No such file"):
        measurement_digest([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeasurementError, match="nothing to measure"):
        measurement_digest([tmp_path / "empty"])
    with pytest.raises(MeasurementError):
        measure_files([], "App", SIGNER)
    with pytest.raises(MeasurementError, match="signer_id"):
        measure_files([_tree(tmp_path / "m")], "App", b"short")


def test_tinyward_code_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = measure_tinyward_code()
    assert real.measurement_type == "PRoT" and real.signer_id == UNSIGNED_SIGNER_ID
    assert real == measure_tinyward_code()  # stable
    copy = tmp_path / "tinyward"
    shutil.copytree(measurement.tinyward_package_dir(), copy)
    monkeypatch.setattr(measurement, "tinyward_package_dir", lambda: copy)
    assert measure_tinyward_code() == real  # location does not matter
    (copy / "trust" / "__pycache__").mkdir(exist_ok=True)
    (copy / "trust" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    (copy / "py.typed").write_text("changed")
    assert measure_tinyward_code() == real  # only .py source counts
    with open(copy / "trust" / "attestation.py", "a") as handle:
        handle.write("\n# patched\n")
    assert measure_tinyward_code().measurement_value != real.measurement_value
