"""A small stand-in fleet server for link tests: real TLS 1.3 with client certificates,
the real ingest decision (:mod:`tinyward.fleet.ingest`), sequence numbers kept in memory.

The real server (``tinyward fleet serve``) is used by the crash-and-partition test; this one
is small enough to stop and start inside a unit test.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.ingest import Accept, decide
from tinyward.fleet.pki import Fleet


class FakeFleetServer:
    def __init__(self, fleet: Fleet, port: int = 0) -> None:
        self.fleet = fleet
        self.directory = FleetDirectory(fleet)
        self.stored: dict[str, list[int]] = {}
        self.reports: dict[str, list] = {}
        self.requests = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        fleet.load_server_chain(context, None)  # the tests' fleets keep it in clear
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=Path(fleet.device_ca_path).read_text()
                                      + Path(fleet.root_ca_path).read_text())
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                outer.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                der = self.connection.getpeercert(binary_form=True)
                device_id = outer.directory.tls_identity(der)
                last = max(outer.stored.get(device_id, [0]))
                decision = decide(body, device_id, outer.directory, last, int(time.time()))
                if isinstance(decision, Accept):
                    outer.stored.setdefault(device_id, []).append(decision.report.seq)
                    outer.reports.setdefault(device_id, []).append(decision.report)
                    status, doc = 200, {"stored_seq": decision.report.seq}
                else:
                    status, doc = decision.status, {"code": decision.code,
                                                    "reason": decision.reason}
                    if decision.stored_seq is not None:
                        doc["stored_seq"] = decision.stored_seq
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
