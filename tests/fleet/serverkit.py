"""Helpers for the fleet server tests: a real fleet, real devices, a real TLS server.

(Not a conftest: the PKI tests own tests/fleet/conftest.py. Each server test module makes
its own module-scoped ``running`` fixture with :func:`running_server`.)"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.guards import create_admin_token
from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import ServerThread, admin_ssl_context, server_ssl_context
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import ReportStore, open_store
from tinyward.lab.simdevice import SimulatedDevice

PASSPHRASE = b"test passphrase for the fleet"
COSE_TYPE = 'application/cose; cose-type="cose-sign1"'


@dataclass
class Running:
    fleet: Fleet
    store: ReportStore
    server: ServerThread
    admin_token: str
    devices: dict[str, SimulatedDevice]
    folder: Path
    fleet_server: FleetServer

    def context(self, name: str) -> ssl.SSLContext:
        return self.devices[name].client_context(self.folder / "tls" / name)

    @property
    def admin_port(self) -> int:
        assert self.server.admin_port is not None
        return self.server.admin_port

    def anonymous_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(self.fleet.root_ca_path))
        return context

    def request(self, method: str, path: str, *, device: str | None = None,
                context: ssl.SSLContext | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, port: int | None = None
                ) -> tuple[int, dict[str, Any]]:
        # A device's requests go to the device listener, everything else (administrators,
        # anonymous clients) to the admin listener, unless ``port`` says otherwise.
        if port is None:
            port = self.server.port if device or context is not None else self.admin_port
        if context is None:
            context = self.context(device) if device else self.anonymous_context()
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        assert response.getheader("Content-Type", "").startswith("application/json"), data
        return response.status, json.loads(data)

    def post(self, device: str, body: bytes, content_type: str = COSE_TYPE,
             path: str = "/v1/reports") -> tuple[int, dict[str, Any]]:
        return self.request("POST", path, device=device, body=body,
                            headers={"Content-Type": content_type})

    def report(self, device: str, **kw: Any) -> bytes:
        kw.setdefault("timestamp", int(time.time()))
        return self.devices[device].report(**kw)


def start_running(folder: Path, names: tuple[str, ...],
                  config: ServerConfig | None = None, *,
                  schedules: dict[str, float] | None = None,
                  monotonic: Callable[[], float] = time.monotonic,
                  store_url: str | None = None) -> Running:
    """``schedules``: declared report intervals by device name (default: the fleet's);
    ``monotonic``: the rate limit's clock (a test may drive it); ``store_url``: the
    database (default: SQLite in ``folder``)."""
    fleet = Fleet.init(folder / "fleet", PASSPHRASE)
    devices = {name: SimulatedDevice.enrolled(fleet, PASSPHRASE, (schedules or {}).get(name))
               for name in names}
    store = open_store(store_url or f"sqlite:///{folder / 'reports.db'}")
    fleet_server = FleetServer(FleetDirectory(fleet), store, config, monotonic=monotonic)
    server = ServerThread(fleet_server, server_ssl_context(fleet),
                          admin_context=admin_ssl_context(fleet))
    token = create_admin_token(fleet.directory)
    return Running(fleet, store, server, token, devices, folder, fleet_server)


def running_server(tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...],
                   config: ServerConfig | None = None) -> Iterator[Running]:
    """Body of a ``running`` fixture: start a server with these devices, stop it after."""
    state = start_running(tmp_path_factory.mktemp("fleet"), names, config)
    yield state
    state.server.stop()
