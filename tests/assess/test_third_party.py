"""Third-party software nobody here wrote, run on loopback as a device's service would be:
OpenSSL's own `s_server`, in two configurations. The findings must match each
configuration (TLS 1.3 only passes tls-config; a TLS 1.2 CBC suite fails it), and its
one-connection-at-a-time loop is starved by the pre-authentication flood."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tinyward.assess.probes import preauth
from tinyward.assess.probes.preauth import PreauthExhaustion
from tinyward.assess.probes.tlsconfig import TlsConfig
from tinyward.assess.run import assess
from tinyward.assess.target import make_target

from ..conftest import needs
from .tlsservice import self_signed

OPENSSL = shutil.which("openssl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s_server(folder: Path, *options: str) -> Iterator[int]:
    cert, key = self_signed(folder)
    port = _free_port()
    process = subprocess.Popen(
        [str(OPENSSL), "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key), "-www", "-quiet", *options],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("openssl s_server did not start listening within 20 s")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_tls13_only_passes_tls_config(tmp_path: Path) -> None:
    with s_server(tmp_path, "-tls1_3") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)), probes=[TlsConfig()])
    evidence = result.verdicts["C-COMM-1"]
    assert evidence.verdict == "pass", evidence.text
    assert "TLS 1.3 only" in evidence.text


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_with_a_cbc_suite_fails_tls_config(tmp_path: Path) -> None:
    with s_server(tmp_path, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)), probes=[TlsConfig()])
    evidence = result.verdicts["C-COMM-1"]
    assert evidence.verdict == "fail", evidence.text
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in evidence.text


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_serves_one_client_at_a_time_and_is_starved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preauth, "FLOOD", 8)
    monkeypatch.setattr(preauth, "BOUND", 5.0)  # it never serves while held
    with s_server(tmp_path, "-tls1_3") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)),
                        probes=[TlsConfig(), PreauthExhaustion()])
    evidence = result.verdicts["A-PREAUTH-1"]
    assert evidence.verdict == "fail", evidence.text
