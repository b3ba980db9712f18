"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's initdb and pg_ctl.

The cluster lives in a fresh temporary folder, listens on a unix socket in that folder
only (no TCP port: nothing else on the machine can reach it through the network, and two
clusters never compete for a port) and is removed when stopped. It keeps PostgreSQL's
durable defaults (``fsync``, ``synchronous_commit``): the figures measured on it are those
of a real server. Run as root, the server runs as the ``postgres`` user (PostgreSQL
refuses root).

    with TempCluster() as cluster:
        url = cluster.create_database("fleet")   # postgresql://postgres@/fleet?host=/tmp/…
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tinyward.errors import TinywardError

#: Where Debian's postgresql package keeps its server binaries (newest version first).
BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``, or None if PostgreSQL is not installed."""
    folders = sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name)
                     if Path(p).parent.name.isdigit() else 0, reverse=True)
    for folder in folders:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and (Path(found).parent / "initdb").exists() else None


class ClusterError(TinywardError):
    """The cluster could not be made or started (the message has the server's log)."""


class TempCluster:
    """A PostgreSQL server of its own in a temporary folder (a context manager)."""

    def __init__(self, user: str = "postgres") -> None:
        self.bin = find_bin()
        if self.bin is None:
            raise ClusterError("PostgreSQL is not installed (apt-get install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="tinyward-pg-"))
        self.data = self.folder / "data"
        self.user = user  # the database superuser's name
        self._run_as: str | None = None
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            self._run_as = "postgres"
            account = pwd.getpwnam(self._run_as)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        os.chmod(self.folder, 0o700)

    def _run(self, *command: str, timeout: float = 120) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False, user=self._run_as, cwd=self.folder)
        if done.returncode != 0:
            raise ClusterError(f"{Path(command[0]).name} failed: {done.stderr[-2000:]}"
                               f"{self._log()}")

    def _log(self) -> str:
        log = self.folder / "server.log"
        with contextlib.suppress(OSError):
            return "\n" + log.read_text()[-2000:]
        return ""

    def start(self) -> TempCluster:
        assert self.bin is not None  # checked in __init__
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                  "--auth=trust", "-E", "UTF8", "--no-instructions")
        self._start_server()
        return self

    def _start_server(self) -> None:
        assert self.bin is not None  # checked in __init__
        # -l: the server's output goes to its log, never to our pipes (which it would
        # hold open for as long as it runs).
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses='' -c unix_socket_directories='{self.folder}'"
                  " -c max_connections=200", "start")

    def restart(self) -> None:
        """Stop the server at once (as a crash would) and start it again."""
        assert self.bin is not None  # checked in __init__
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "-t", "60", "stop")
        self._start_server()

    def stop(self) -> None:
        if self.bin is not None and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "-t", "60", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The ``postgresql://`` URL of a database of this cluster (over its unix socket)."""
        return f"postgresql://{self.user}@/{database}?host={quote(str(self.folder), safe='')}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (named ``name``, or ``t1``, ``t2`` …); returns its URL."""
        import psycopg

        name = name or f"t{next(self._names)}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> TempCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
