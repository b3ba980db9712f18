"""The fleet server over real mutual TLS 1.3 on loopback: one test per attack or bad input."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import ServerThread, server_ssl_context
from tinyward.fleet.server import FleetServer
from tinyward.lab.simdevice import SimulatedDevice
from tinyward.trust import cose

from ..conftest import with_cose_part
from .serverkit import COSE_TYPE, PASSPHRASE, Running, running_server, start_running


@pytest.fixture(scope="module", name="running")
def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_server(tmp_path_factory, ("a", "b", "c", "revoked"))



def _stored(running: Running, name: str) -> tuple[int, int]:
    device_id = running.devices[name].device_id
    return running.store.last_seq(device_id), running.store.count_reports(device_id)


def _other_device_still_served(running: Running) -> None:
    status, body = running.post("c", running.report("c"))
    assert status == 200, body
    assert body["stored_seq"] == running.devices["c"].next_seq - 1


def test_valid_report_stored_and_acked(running: Running) -> None:
    before = _stored(running, "a")
    status, body = running.post("a", running.report("a"))
    assert status == 200
    assert body == {"stored_seq": before[0] + 1}
    assert _stored(running, "a") == (before[0] + 1, before[1] + 1)


def test_application_cbor_content_type_accepted(running: Running) -> None:
    status, body = running.post("a", running.report("a"), content_type="application/cbor")
    assert status == 200, body


def _resigned(running: Running, name: str, change: dict[str, object], remove: str = "",
              dirty_padding: bool = False) -> bytes:
    device = running.devices[name]
    message = cose.decode_sign1(running.report(name, seq=device.next_seq))
    payload = cbor2.loads(message.payload)
    payload.update(change)
    if dirty_padding:  # same length, so only the padding check can refuse it
        payload["pad"] = b"\x01" + payload["pad"][1:]
    payload.pop(remove, None)
    return cose.sign1(cbor2.dumps(payload), device.report_signer,
                      protected_extra={cose.HEADER_KID: bytes.fromhex(device.device_id)})


def _wrong_alg(running: Running) -> bytes:
    return with_cose_part(running.report("a", seq=running.devices["a"].next_seq), 0,
                          cbor2.dumps({1: -35, 4: bytes.fromhex(running.devices["a"].device_id)}))


BAD_INPUTS = {
    # The exact size is checked before anything is decoded (issue 12, item 6): shorter or
    # longer bodies are bad_size whatever they hold; the schema rules are in test_ingest.
    "malformed_cbor": (lambda r: b"\xff\xfe\x00 not cbor", COSE_TYPE, 400, "bad_size"),
    "malformed_cbor_right_size": (lambda r: b"\xff" * 1024, COSE_TYPE, 400, "malformed"),
    # (one byte longer than a report: the algorithm rule itself is in tests/trust/test_cose)
    "wrong_cose_alg": (_wrong_alg, COSE_TYPE, 400, "bad_size"),
    "missing_field": (lambda r: _resigned(r, "a", {}, remove="health"), COSE_TYPE, 400, "bad_size"),
    "extra_field": (lambda r: _resigned(r, "a", {"admin": True}), COSE_TYPE, 400, "bad_size"),
    "one_megabyte_body": (lambda r: b"\x00" * (1 << 20), COSE_TYPE, 413, "body_too_large"),
    "truncated_body": (lambda r: r.report("a", seq=r.devices["a"].next_seq)[:700], COSE_TYPE, 400,
                       "bad_size"),
    "wrong_content_type": (lambda r: r.report("a", seq=r.devices["a"].next_seq), "text/plain", 415,
                           "unsupported_content_type"),
    "wrong_cose_type": (lambda r: r.report("a", seq=r.devices["a"].next_seq),
                        'application/cose; cose-type="cose-sign"', 415, "unsupported_content_type"),
    "duplicate_seq": (lambda r: r.report("a", seq=r.devices["a"].next_seq - 1), COSE_TYPE, 409,
                      "replay"),
    "out_of_order_seq": (lambda r: r.report("a", seq=1), COSE_TYPE, 409, "replay"),
    "clock_far_ahead": (lambda r: r.report("a", seq=r.devices["a"].next_seq,
                                           timestamp=int(time.time()) + 86400), COSE_TYPE, 422,
                        "clock_skew"),
    "clock_far_behind": (lambda r: r.report("a", seq=r.devices["a"].next_seq, timestamp=1000),
                         COSE_TYPE, 422, "clock_skew"),
    "wrong_size": (lambda r: r.devices["a"].report(seq=r.devices["a"].next_seq,
                                                   timestamp=int(time.time()), size=512),
                   COSE_TYPE, 400, "bad_size"),
    "bad_padding": (lambda r: _resigned(r, "a", {}, dirty_padding=True), COSE_TYPE, 400,
                    "bad_padding"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_refused_nothing_stored_others_served(running: Running, name: str) -> None:
    # Make sure "a" has stored something, so that duplicates and out-of-order exist.
    if running.store.last_seq(running.devices["a"].device_id) < 2:
        for _ in range(2):
            assert running.post("a", running.report("a"))[0] == 200
    make, content_type, status, code = BAD_INPUTS[name]
    body = make(running)
    before = _stored(running, "a")
    got_status, got = running.post("a", body, content_type=content_type)
    assert (got_status, got["error"]) == (status, code), got
    assert got["reason"]
    assert _stored(running, "a") == before
    _other_device_still_served(running)


def test_replay_answer_carries_stored_seq(running: Running) -> None:
    report = running.report("a")
    assert running.post("a", report)[0] == 200
    status, body = running.post("a", report)
    assert status == 409 and body["stored_seq"] == running.devices["a"].next_seq - 1


def test_device_a_posting_b_report_refused(running: Running) -> None:
    before = _stored(running, "b")
    status, body = running.post("a", running.report("b"))
    assert (status, body["error"]) == (403, "signer_mismatch")
    assert _stored(running, "b") == before


def test_flipped_byte_refused(running: Running) -> None:
    report = bytearray(running.report("a", seq=running.devices["a"].next_seq))
    report[-5] ^= 0x01  # inside the signature
    status, body = running.post("a", bytes(report))
    assert (status, body["error"]) == (403, "bad_signature")


def test_no_client_certificate_refused_in_the_handshake(running: Running) -> None:
    # Issue 12, item 5: the device listener requires the certificate in the handshake, so
    # a client without one never reaches HTTP (it held a connection slot before).
    _handshake_refused(running, running.anonymous_context())


def test_device_endpoints_are_not_on_the_admin_listener(running: Running) -> None:
    status, body = running.request("POST", "/v1/reports", body=running.report("a"),
                                   headers={"Content-Type": "application/cbor"},
                                   port=running.admin_port)
    assert (status, body["error"]) == (405, "method_not_allowed") or status == 404, body


def test_health_is_open(running: Running) -> None:
    assert running.request("GET", "/v1/health") == (200, {"status": "ok"})


def _handshake_refused(running: Running, context: ssl.SSLContext) -> None:
    """The server is up, took the TCP connection, and refused this client's certificate.

    A dead or hung server must not pass: the TCP connection is made outside the expected
    refusal (refused connect = error), a timeout is not a refusal, and an enrolled device
    gets an answer from the same server right after.
    """
    raw = socket.create_connection(("127.0.0.1", running.server.port), timeout=20)
    try:
        # TLS 1.3: the server checks the client certificate after the client's Finished, so
        # the refusal shows on the first read: an alert, or the connection closed unanswered.
        with pytest.raises((ssl.SSLError, http.client.RemoteDisconnected, ConnectionResetError)):
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if not tls.recv(1):
                raise http.client.RemoteDisconnected("closed without an answer")
    finally:
        raw.close()
    _other_device_still_served(running)


def test_the_handshake_check_fails_for_an_accepted_certificate(running: Running) -> None:
    """A control for the handshake tests: an enrolled device's context is not refused."""
    with pytest.raises(pytest.fail.Exception):
        _handshake_refused(running, running.context("a"))


def test_certificate_from_another_ca_refused_at_handshake(running: Running,
                                                          tmp_path: Path) -> None:
    other = Fleet.init(tmp_path / "other", PASSPHRASE)
    stranger = SimulatedDevice.enrolled(other, PASSPHRASE)
    context = stranger.client_context(tmp_path / "tls")
    context.load_verify_locations(cafile=str(running.fleet.root_ca_path))
    _handshake_refused(running, context)


def test_self_signed_certificate_refused_at_handshake(running: Running, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ab" * 32)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = running.anonymous_context()
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    _handshake_refused(running, context)


def test_tls12_client_refused(running: Running) -> None:
    context = running.anonymous_context()
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), socket.create_connection(
            ("127.0.0.1", running.server.port), timeout=20) as raw, context.wrap_socket(
            raw, server_hostname="127.0.0.1"):
        pass


def test_report_certificate_is_not_a_tls_certificate(running: Running, tmp_path: Path) -> None:
    # The report key's certificate (EKU: report) must not open a device TLS session.
    device = running.devices["a"]
    cert, key = tmp_path / "r.pem", tmp_path / "rk.pem"
    from cryptography.hazmat.primitives import serialization

    cert.write_text(device.certificates["report"])
    key.write_bytes(device.keys["report"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = running.anonymous_context()
    context.load_cert_chain(cert, key)
    _handshake_refused(running, context)


def test_revoked_device_refused(running: Running) -> None:
    assert running.post("revoked", running.report("revoked"))[0] == 200
    running.fleet.revoke(running.devices["revoked"].device_id)
    before = _stored(running, "revoked")
    status, body = running.post("revoked", running.report("revoked"))
    assert (status, body["error"]) == (403, "revoked")
    assert _stored(running, "revoked") == before
    _other_device_still_served(running)


def test_batch_each_report_judged(running: Running) -> None:
    device = running.devices["b"]
    first = device.next_seq
    reports = [running.report("b") for _ in range(3)]
    batch = cbor2.dumps([reports[0], reports[1], reports[0], b"junk".ljust(1024, b"\0"),
                         reports[2]])
    status, body = running.post("b", batch, content_type="application/cbor",
                                path="/v1/reports/batch")
    assert status == 200
    assert body["stored_seq"] == first + 2
    assert [r["code"] for r in body["results"]] == ["stored", "stored", "replay", "malformed",
                                                    "stored"]
    assert running.store.last_seq(device.device_id) == first + 2


def test_batch_not_an_array_refused(running: Running) -> None:
    status, body = running.post("b", cbor2.dumps({"a": 1}), content_type="application/cbor",
                                path="/v1/reports/batch")
    assert (status, body["error"]) == (400, "malformed")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
@pytest.mark.parametrize("path", ["/v1/devices", "/v1/fleet", "/v1/openapi.json",
                                  "/v1/devices/" + "00" * 32])
def test_admin_endpoint_without_or_with_wrong_token_401(running: Running, path: str,
                                                        authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    status, body = running.request("GET", path, headers=headers)
    assert status == 401 and body["error"] in ("admin_token_required", "bad_admin_token")


def test_admin_endpoints_with_token(running: Running) -> None:
    auth = {"Authorization": f"Bearer {running.admin_token}"}
    running.post("c", running.report("c", incidents={"port_scan": 2}))
    status, body = running.request("GET", "/v1/devices", headers=auth)
    assert status == 200
    assert {d["device_id"] for d in body["devices"]} == {
        d.device_id for d in running.devices.values()}
    c_id = running.devices["c"].device_id
    status, one = running.request("GET", f"/v1/devices/{c_id}", headers=auth)
    assert status == 200 and one["last_seq"] == running.devices["c"].next_seq - 1
    assert one["incidents"]["port_scan"] >= 2
    status, fleet = running.request("GET", "/v1/fleet", headers=auth)
    assert status == 200 and fleet["fleet_id"] == running.fleet.fleet_id
    assert fleet["devices_enrolled"] == 4
    status, missing = running.request("GET", "/v1/devices/" + "00" * 32, headers=auth)
    assert (status, missing["error"]) == (404, "unknown_device")


def test_unknown_path_and_method_answer_json(running: Running) -> None:
    assert running.request("GET", "/v2/anything")[0] == 404
    status, body = running.request("DELETE", "/v1/health")
    assert (status, body["error"]) == (405, "method_not_allowed")


def test_a_device_revoked_while_it_uploads_a_batch_gets_nothing_stored(tmp_path: Path) -> None:
    # The TLS identity (enrolled, not revoked) is checked when the request head arrives;
    # revocation must be read again once the body has: a batch whose upload straddles
    # `tinyward fleet revoke` is refused, report by report, and nothing is stored.
    state = start_running(tmp_path, ("slow",))
    try:
        body = cbor2.dumps([state.report("slow") for _ in range(3)])
        head = (f"POST /v1/reports/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/cbor\r\nContent-Length: {len(body)}\r\n\r\n")
        raw = socket.create_connection(("127.0.0.1", state.server.port), timeout=20)
        with state.context("slow").wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(head.encode() + body[:100])
            time.sleep(0.3)  # the server has the head and part of the body
            state.fleet.revoke(state.devices["slow"].device_id)
            tls.sendall(body[100:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        reply = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        # (On a machine so slow that the head was read only after the revocation, the whole
        # request is refused instead: also right.)
        codes = [r["code"] for r in reply["results"]] if "results" in reply else [reply["error"]]
        assert set(codes) == {"revoked"}
        assert _stored(state, "slow") == (0, 0)
    finally:
        state.server.stop()


def test_a_device_is_looked_up_when_it_connects_not_on_its_first_report(tmp_path: Path) -> None:
    # Per-connection work (certificate check, report key, last stored seq) runs after the
    # handshake, before any request; a refused device is left for its request to refuse.
    state = start_running(tmp_path, ("early", "revoked"))
    assert state.post("early", state.report("early"))[0] == 200  # seq 1 is stored
    early = state.devices["early"].device_id
    revoked = state.devices["revoked"].device_id
    state.fleet.revoke(revoked)
    cold = FleetServer(FleetDirectory(state.fleet), state.store)  # as after a restart
    thread = ServerThread(cold, server_ssl_context(state.fleet))
    try:
        connections = {}
        for name in ("early", "revoked"):
            connections[name] = http.client.HTTPSConnection(
                "127.0.0.1", thread.port, context=state.context(name), timeout=20)
            connections[name].connect()  # the TLS handshake, no request yet
        deadline = time.monotonic() + 10
        while early not in cold._seq_cache and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cold._seq_cache[early] == 1
        assert early in cold.directory._keys
        assert revoked not in cold._seq_cache
        answers = {}
        for name, connection in connections.items():
            connection.request("POST", "/v1/reports", body=state.report(name),
                               headers={"Content-Type": COSE_TYPE})
            response = connection.getresponse()
            answers[name] = (response.status, json.loads(response.read()))
            connection.close()
        assert answers["early"] == (200, {"stored_seq": 2})
        assert (answers["revoked"][0], answers["revoked"][1]["error"]) == (403, "revoked")
    finally:
        thread.stop()
        state.server.stop()
