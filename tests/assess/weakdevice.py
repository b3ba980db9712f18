"""A deliberately weak device, written only for the tests: a plain HTTP service with a
default password (admin/admin, HTTP Basic) and a telnet-style login (root/root), both on
loopback. Nothing in tinyward uses it."""

from __future__ import annotations

import base64
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTTP_LOGIN = ("admin", "admin")
TELNET_LOGIN = ("root", "root")


class _Http(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(":".join(HTTP_LOGIN).encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="weak camera"')
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>admin page</html>")

    def log_message(self, *args: object) -> None:
        pass


class _Telnet(socketserver.StreamRequestHandler):
    timeout = 5

    def handle(self) -> None:
        try:
            self.wfile.write(b"weakcam login: ")
            user = self.rfile.readline(100).strip().decode(errors="replace")
            self.wfile.write(b"Password: ")
            password = self.rfile.readline(100).strip().decode(errors="replace")
            if (user, password) == TELNET_LOGIN:
                self.wfile.write(b"\r\nWelcome to weakcam\r\n# ")
            else:
                self.wfile.write(b"\r\nLogin incorrect\r\n")
        except OSError:
            pass


class _TelnetServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the probes hang up mid-request (a TLS hello, a banner read): expected


@dataclass(frozen=True)
class Weak:
    http_port: int
    telnet_port: int


@contextmanager
def weak_device() -> Iterator[Weak]:
    http = _HttpServer(("127.0.0.1", 0), _Http)
    telnet = _TelnetServer(("127.0.0.1", 0), _Telnet)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (http, telnet)]
    for thread in threads:
        thread.start()
    try:
        yield Weak(http.server_address[1], telnet.server_address[1])
    finally:
        for server in (http, telnet):
            server.shutdown()
            server.server_close()
