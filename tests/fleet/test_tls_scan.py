"""An external TLS scanner (sslyze) against the running fleet server: TLS 1.3 only, AEAD only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from .serverkit import Running, running_server

VERSIONS = {
    "ssl_2_0_cipher_suites": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "ssl_3_0_cipher_suites": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0_cipher_suites": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "tls_1_1_cipher_suites": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "tls_1_2_cipher_suites": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "tls_1_3_cipher_suites": ScanCommand.TLS_1_3_CIPHER_SUITES,
}


@pytest.fixture(scope="module", name="running")
def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_server(tmp_path_factory, ("a",))


@pytest.mark.slow
def test_sslyze_finds_only_tls13_aead_suites(running: Running) -> None:
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("127.0.0.1", running.server.port),
        scan_commands=set(VERSIONS.values()))
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED
    accepted = {}
    for attribute in VERSIONS:
        attempt = getattr(result.scan_result, attribute)
        assert attempt.result is not None, attempt.error_trace
        accepted[attribute] = [s.cipher_suite.name for s in attempt.result.accepted_cipher_suites]
    assert {k: v for k, v in accepted.items() if v} == {"tls_1_3_cipher_suites": accepted[
        "tls_1_3_cipher_suites"]}
    assert accepted["tls_1_3_cipher_suites"]
    assert all("GCM" in name or "CHACHA20_POLY1305" in name
               for name in accepted["tls_1_3_cipher_suites"])
