"""atheris harness: :func:`tinyward.update.archive.extract_app` on an app archive (tar, or
gzip of a tar) the fuzzer writes.

Documented outcomes: the archive is extracted into its new folder, holding only regular
files and folders, all inside it (nothing is written beside it); or
:class:`~tinyward.update.errors.BadArchive` and the folder does not exist. Anything else
is a crash.
"""

from __future__ import annotations

import io
import shutil
import tarfile

from tests.fuzz.harness import REPO, instrumented, run, workdir

with instrumented(__name__):
    from tinyward.update.archive import ArchiveLimits, extract_app
    from tinyward.update.errors import BadArchive

WORK = workdir("archive")
LIMITS = ArchiveLimits(max_entries=64, max_file_bytes=1 << 16, max_total_bytes=1 << 18)


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    case = WORK / "case"
    shutil.rmtree(case, ignore_errors=True)
    (case / "box").mkdir(parents=True)
    (case / "t.tar").write_bytes(data)
    out = case / "box" / "out"
    try:
        extract_app(case / "t.tar", out, LIMITS)
    except BadArchive:
        assert not out.exists(), "a refused archive left a folder"
    else:
        for path in out.rglob("*"):
            assert not path.is_symlink(), "a link was extracted"
            assert path.is_file() or path.is_dir(), "a special file was extracted"
            assert path.resolve().is_relative_to(out.resolve()), "a file escaped"
    assert sorted(p.name for p in case.iterdir()) == ["box", "t.tar"], "wrote beside it"
    assert [p.name for p in (case / "box").iterdir()] in ([], ["out"]), "wrote beside it"


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "../outside"
                tar.addfile(info)
    return buffer.getvalue()


def seeds() -> list[bytes]:
    import gzip

    app = REPO / "tests" / "update" / "apps" / "good"
    good = [(p.name, tarfile.REGTYPE, p.read_bytes()) for p in sorted(app.iterdir())]
    out = [_tar(good), gzip.compress(_tar(good), mtime=0)]
    out.append(_tar([*good, ("lib/", tarfile.DIRTYPE, b""), ("lib/x.py", tarfile.REGTYPE, b"1")]))
    out.append(_tar([*good, ("../x", tarfile.REGTYPE, b"1")]))
    out.append(_tar([*good, ("l", tarfile.SYMTYPE, b"")]))
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
