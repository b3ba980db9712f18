"""An external TLS scanner (sslyze) against both listeners of the running fleet server: TLS
1.3 only, AEAD only; the device listener requires a client certificate in the handshake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sslyze import (
    ClientAuthenticationCredentials,
    ClientAuthRequirementEnum,
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
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


def _scan(port: int, credentials: tuple[str, str] | None = None) -> ServerScanResult:
    configuration = ServerNetworkConfiguration(
        tls_server_name_indication="127.0.0.1",
        tls_client_auth_credentials=ClientAuthenticationCredentials(
            certificate_chain_path=Path(credentials[0]), key_path=Path(credentials[1]))
        if credentials else None)
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("127.0.0.1", port),
        network_configuration=configuration, scan_commands=set(VERSIONS.values()))
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    return result


@pytest.mark.slow
def test_sslyze_without_a_client_certificate_cannot_connect_to_the_device_listener(
        running: Running) -> None:
    # Issue 12, item 5: the handshake itself is refused, so the scanner's probe gets nothing.
    result = _scan(running.server.port)
    assert result.scan_status == ServerScanStatusEnum.ERROR_NO_CONNECTIVITY
    assert "peer closed" in str(result.connectivity_error_trace)


@pytest.mark.slow
@pytest.mark.parametrize("listener", ["device", "admin"])
def test_sslyze_finds_only_tls13_aead_suites(running: Running, listener: str,
                                             tmp_path: Path) -> None:
    if listener == "device":  # the scanner shows a device's certificate
        cert_key = running.devices["a"].write_tls_files(tmp_path)
        result = _scan(running.server.port, (str(cert_key[0]), str(cert_key[1])))
    else:
        result = _scan(running.admin_port)
        assert result.connectivity_result is not None
        assert result.connectivity_result.client_auth_requirement == \
            ClientAuthRequirementEnum.DISABLED
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
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
