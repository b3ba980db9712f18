"""The assessment lab's controls (docs/assessment.md, "A tinyward device in the lab") are
never a default: `device run --help` does not show them, the configs default to safe, and
the debug port, when switched on, is what the lab says it is (HTTPS, TLS 1.3 only)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys

import pytest

from tinyward.link.client import LinkConfig
from tinyward.link.debugport import DebugPort
from tinyward.link.runner import RunnerConfig


def test_the_unsafe_switches_are_off_by_default_and_hidden() -> None:
    assert RunnerConfig().unsafe_debug_port is None
    assert LinkConfig().unsafe_unpinned is False
    shown = subprocess.run([sys.executable, "-m", "tinyward", "device", "run", "--help"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert "unsafe" not in shown.lower() and "debug-port" not in shown and \
        "no-pin" not in shown


def _get(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_the_debug_port_serves_status_over_tls13_only() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    debug = DebugPort(port, lambda: {"state": "running", "generated": 3})
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a throw-away self-signed key
        answer = _get(debug.port, context)
        assert answer.startswith(b"HTTP/1.0 200")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"state": "running",
                                                                "generated": 3}
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            _get(debug.port, old)
    finally:
        debug.close()
