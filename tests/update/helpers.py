"""Test helpers: devices, app archives and targets for the update tests (no network: a
target is a file, its TUF length and hashes computed here as a repository would)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

from tinyward.update.meta import TargetMeta, Version

HERE = Path(__file__).parent
APPS = HERE / "apps"
PRODUCT = "pump-sensor"


def meta(component: str, version: str, product: str = PRODUCT, **kw: object) -> TargetMeta:
    return TargetMeta.from_custom({"component": component, "version": version,
                                   "product_class": product, "min_tinyward": "0.1.0", **kw})


def tuf_info(path: Path) -> tuple[int, dict[str, str]]:
    data = Path(path).read_bytes()
    return len(data), {"sha256": hashlib.sha256(data).hexdigest(),
                       "sha512": hashlib.sha512(data).hexdigest()}


def app_tar(folder: Path, out: Path, *, extra: dict[str, bytes] | None = None) -> Path:
    """A tar of ``folder``'s files (names relative to it), plus ``extra`` files."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(Path(folder).rglob("*")):
            if "__pycache__" in path.parts:
                continue
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def raw_tar(out: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A tar of hand-made members (an attacker's archive)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def app_version(source: Path, dest: Path, version: str) -> Path:
    """A copy of the app folder ``source`` whose manifest says ``version``, world-readable
    (the sandbox's user must read it)."""
    shutil.copytree(source, dest)
    manifest = dest / "sensor.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace('version = "1.0.0"', f'version = "{version}"'))
    for root, _dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return dest


def version(text: str) -> Version:
    return Version.parse(text)
