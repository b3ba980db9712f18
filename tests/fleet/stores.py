"""Fixtures that run a test against every report store backend: SQLite and PostgreSQL.

``store_url`` (parametrized: ``sqlite``, ``postgresql``) names a fresh empty database;
``make_store(**kw)`` opens it (closed at teardown). PostgreSQL comes from one throwaway
cluster per test session (``tinyward.lab.pgcluster``: Debian's initdb/pg_ctl, a unix
socket in a private temporary folder), each test getting a database of its own; or, when
``TINYWARD_TEST_PG`` names a server (``postgresql://user@host:port/postgres``), from that
server. No PostgreSQL at all is a skip locally and a failure under CI=true.

Imported by tests/fleet/conftest.py (fixtures must be visible there).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_or_skip
from tinyward.fleet.store import ReportStore, SQLiteStore, open_store

BACKENDS = ("sqlite", "postgresql")


class _Server:
    """Where test databases are made: a throwaway cluster or ``TINYWARD_TEST_PG``."""

    def __init__(self) -> None:
        self.cluster: Any = None
        self.admin_url = os.environ.get("TINYWARD_TEST_PG", "")
        self._names = itertools.count(1)
        self._made: list[str] = []
        if not self.admin_url:
            from tinyward.lab.pgcluster import TempCluster, find_bin

            if find_bin() is None:
                return
            self.cluster = TempCluster().start()
            self.admin_url = self.cluster.url()

    def create_database(self) -> str:
        import psycopg

        name = f"tw_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            # Tests run one after the other: the databases of earlier ones can go (each
            # is ~8 MB), with any connection a test left open.
            for old in (*self._made, name):
                admin.execute(f"DROP DATABASE IF EXISTS {old} WITH (FORCE)")
            self._made = [name]
            admin.execute(f"CREATE DATABASE {name}")
        if self.cluster is not None:
            return str(self.cluster.url(name))
        return _with_database(self.admin_url, name)  # another server: the same URL


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The session's PostgreSQL (a ``_Server``), or a ``_Missing`` saying why there is none
    (each test that needs it then skips, or fails under CI=true)."""
    try:
        server = _Server()
    except Exception as error:  # noqa: BLE001 - reported as the reason of the skip/failure
        server = None
        reason = f"PostgreSQL could not be started: {error}"
    else:
        reason = ("PostgreSQL is not installed (scripts/install-system-deps.sh installs "
                  "Debian's postgresql), nor named by TINYWARD_TEST_PG")
        if not server.admin_url:
            server = None
    yield server if server is not None else _Missing(reason)
    if server is not None and server.cluster is not None:
        server.cluster.stop()


class _Missing:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def new_url(backend: str, tmp_path: Path, pg_server: Any) -> str:
    """A fresh empty database of ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/f.db"
    if isinstance(pg_server, _Missing):
        require_or_skip(pg_server.reason)
    return str(pg_server.create_database())


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store_backend == "sqlite":
        return new_url(store_backend, tmp_path, None)
    return new_url(store_backend, tmp_path, request.getfixturevalue("pg_server"))


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[..., ReportStore]]:
    opened: list[ReportStore] = []

    def make(**kw: Any) -> ReportStore:
        store = open_store(store_url, **kw)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def sql(store: Any, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on either backend (placeholders: ``?``); its rows."""
    if isinstance(store, SQLiteStore):
        return list(store._db.execute(query, params).fetchall())
    with store._pool.connection() as connection:
        cursor = connection.execute(query.replace("?", "%s"), params)
        return list(cursor.fetchall()) if cursor.description else []


def wipe(store: Any) -> None:
    """Empty every table (between hypothesis examples on one database)."""
    for table in ("reports", "devices", "incidents", "update_failures", "incident_events"):
        sql(store, f"DELETE FROM {table}")  # noqa: S608 - the schema's table names
