"""A deliberately weak HTML form login written only for the lockout-restart tests.

    python formlogin.py PORT MODE STATEFILE

MODE ``none``: every wrong password is checked, for ever. ``memory``: locked out (HTTP
429, Retry-After) after 3 failures, counted in memory, so a restart forgets them (the
mistake the probe exists to find). ``file``: the same count kept in STATEFILE, so a
restart keeps it. Plain HTTP on 127.0.0.1; the form has a hidden token, as real ones do.
"""

from __future__ import annotations

import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

FREE = 3
PAGE = ('<html><body><form method="post" action="/login">'
        '<input type="hidden" name="token" value="{token}">'
        '<input type="password" name="pw"><button>log in</button></form></body></html>')


class State:
    def __init__(self, mode: str, file: Path) -> None:
        self.mode, self.file, self.failures = mode, file, 0
        self.token = secrets.token_urlsafe(16)
        if mode == "file" and file.exists():
            self.failures = int(file.read_text() or 0)

    def fail(self) -> None:
        self.failures += 1
        if self.mode == "file":
            self.file.write_text(str(self.failures))

    def locked(self) -> bool:
        return self.mode != "none" and self.failures >= FREE


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
            body = text.encode()
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, PAGE.format(token=state.token))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = parse_qs(self.rfile.read(length).decode())
            if form.get("token") != [state.token]:
                self._send(403, "stale form")
            elif state.locked():
                self._send(429, "locked", {"Retry-After": "60"})
            elif form.get("pw") == ["the right one, never guessed"]:
                self._send(303, "ok", {"Location": "/"})
            else:
                state.fail()
                self._send(401, PAGE.format(token=state.token))

    return Handler


if __name__ == "__main__":
    port, mode, file = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    ThreadingHTTPServer(("127.0.0.1", port), handler(State(mode, file))).serve_forever()
