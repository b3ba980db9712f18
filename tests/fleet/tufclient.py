"""A stock ``tuf.ngclient.Updater`` over a fleet's repository folder, for tests.

No tinyward code on the client side: only a file-reading fetcher (python-tuf's own
``FetcherInterface``), so the repository is judged by python-tuf's verification alone.
The HTTPS variant is in test_update_interop.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

BASE = "http://repo.invalid/"


class DirFetcher(FetcherInterface):
    """Serves ``BASE/metadata/...`` and ``BASE/targets/...`` from a repository folder."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.fetched.append(url)
        path = self.repo / url.removeprefix(BASE)
        if not url.startswith(BASE) or not path.is_file():
            raise exceptions.DownloadHTTPError(f"not found: {url}", 404)
        return iter([path.read_bytes()])


def updater(repo_dir: Path, trusted_root: bytes | None, workdir: Path) -> Updater:
    """A client that trusts ``trusted_root`` (None: the root it persisted in ``workdir``
    before) and keeps its state in ``workdir``."""
    (workdir / "meta").mkdir(parents=True, exist_ok=True)
    (workdir / "dl").mkdir(parents=True, exist_ok=True)
    return Updater(str(workdir / "meta"), BASE + "metadata/", str(workdir / "dl"),
                   BASE + "targets/", fetcher=DirFetcher(repo_dir), bootstrap=trusted_root)


def fetch(repo_dir: Path, trusted_root: bytes, workdir: Path, target: str) -> tuple[bytes, object]:
    """Refresh, then download ``target``: (its bytes, its custom metadata)."""
    client = updater(repo_dir, trusted_root, workdir)
    client.refresh()
    info = client.get_targetinfo(target)
    if info is None:
        raise LookupError(target)
    path = client.download_target(info)
    return Path(path).read_bytes(), info.custom
