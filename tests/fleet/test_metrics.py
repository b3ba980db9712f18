"""GET /metrics on the admin listener, scraped over real TLS and parsed with
prometheus_client's own parser; label cardinality bounded; admin token required."""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tinyward.fleet.metrics import MAX_KINDS, REFUSAL_REASONS
from tinyward.fleet.server import _HTTP_CODES

from .serverkit import Running, running_server


@pytest.fixture(scope="module", name="running")
def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_server(tmp_path_factory, ("a", "b", "never"))


def scrape(running: Running, token: str | None = None) -> tuple[int, str, str]:
    connection = http.client.HTTPSConnection("127.0.0.1", running.admin_port,
                                             context=running.anonymous_context(), timeout=20)
    headers = {"Authorization": f"Bearer {token or running.admin_token}"}
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed by prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_scraped_and_parsed(running: Running) -> None:
    status, content_type, before = scrape(running)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    stored = value(before, "tinyward_reports_stored_total")
    replays = value(before, "tinyward_refusals_total", reason="replay")
    tamper = value(before, "tinyward_incidents_total", kind="sensor.tamper")
    acks = value(before, "tinyward_ingest_seconds_count", endpoint="report")

    replayed = running.report("a")
    assert running.post("a", replayed)[0] == 200
    assert running.post("a", replayed)[0] == 409
    assert running.post("b", running.report("b", incidents={"sensor.tamper": 3}))[0] == 200

    after = scrape(running)[2]
    assert value(after, "tinyward_reports_stored_total") == stored + 2
    assert value(after, "tinyward_refusals_total", reason="replay") == replays + 1
    assert value(after, "tinyward_incidents_total", kind="sensor.tamper") == tamper + 3
    assert value(after, "tinyward_ingest_seconds_count", endpoint="report") == acks + 2
    # every latency observation fell into the +Inf bucket, and its sum is positive
    assert value(after, "tinyward_ingest_seconds_bucket", endpoint="report", le="+Inf") == \
        acks + 2
    assert value(after, "tinyward_ingest_seconds_sum", endpoint="report") > 0
    # devices by state, from the store and the fleet's records
    assert value(after, "tinyward_devices", state="ok") == 2
    assert value(after, "tinyward_devices", state="never") == 1
    assert value(after, "tinyward_devices", state="quiet") == 0


def test_metrics_need_the_admin_token(running: Running) -> None:
    status, _, body = scrape(running, token="not-the-token")
    assert status == 401 and "tinyward_" not in body
    after = scrape(running)[2]
    assert value(after, "tinyward_refusals_total", reason="bad_admin_token") >= 1


def test_metrics_not_on_the_device_listener(running: Running) -> None:
    status, _ = running.request("GET", "/metrics", device="a")
    assert status == 404


def test_tls_handshake_failures_counted_and_logged(running: Running,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    before = value(scrape(running)[2], "tinyward_refusals_total",
                   reason="tls_handshake_failed")
    context = running.anonymous_context()  # no client certificate: the handshake fails
    caplog.set_level(logging.INFO, logger="tinyward.fleet.access")
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=10) as raw, \
            pytest.raises((ssl.SSLError, OSError)), \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(100):
            raise OSError("closed")
    for _ in range(100):  # the server notes it after the client has seen the alert
        if value(scrape(running)[2], "tinyward_refusals_total",
                 reason="tls_handshake_failed") > before:
            break
    assert value(scrape(running)[2], "tinyward_refusals_total",
                 reason="tls_handshake_failed") == before + 1
    assert any("reason=tls_handshake_failed" in r.getMessage() for r in caplog.records)


def test_incident_kind_labels_bounded(running: Running) -> None:
    """A device naming many fresh incident kinds (its own text) must not create a series
    for each: after MAX_KINDS kinds, the rest count under "other"."""
    for batch in range(3):
        kinds = {f"made.up{batch:02d}x{i:02d}": 1 for i in range(24)}
        assert running.post("a", running.report("a", incidents=dict(sorted(kinds.items()))))[0] \
            == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape(running)[2])}
    kinds = {s.labels["kind"] for s in families["tinyward_incidents"].samples
             if s.name == "tinyward_incidents_total"}
    assert len(kinds) <= MAX_KINDS + 1 and "other" in kinds
    assert not any(len(s.labels.get("device", "")) for f in families.values()
                   for s in f.samples), "no device IDs as labels"


def test_every_refusal_code_is_a_known_reason() -> None:
    """The reason label's vocabulary covers every code the server answers (else 'other'
    would hide a reason an operator needs)."""
    import inspect

    from tinyward.fleet import guards, ingest, rollouts_api, server

    source = "".join(inspect.getsource(m) for m in (ingest, guards, server, rollouts_api))
    import re

    codes = set(re.findall(r'(?:Reject|Refused)\(\d+, "([a-z_]+)"', source))
    codes |= set(_HTTP_CODES.values())
    assert codes and codes <= REFUSAL_REASONS, codes - REFUSAL_REASONS


def test_incidents_endpoint_lists_reported_incidents(running: Running) -> None:
    device_id = running.devices["b"].device_id
    assert running.post("b", running.report("b", incidents={"net.novel": 1}))[0] == 200
    auth = {"Authorization": f"Bearer {running.admin_token}"}
    status, body = running.request("GET", f"/v1/incidents?device={device_id}&kind=net.novel",
                                   headers=auth)
    assert status == 200
    (found,) = body["incidents"]
    assert found["device_id"] == device_id and found["count"] == 1
    assert found["evidence"] == f"report seq {found['seq']}"
    status, body = running.request("GET", "/v1/incidents?limit=1", headers=auth)
    assert status == 200 and len(body["incidents"]) == 1
    assert running.request("GET", "/v1/incidents?device=nope", headers=auth)[0] == 400
    assert running.request("GET", "/v1/incidents?since=-1", headers=auth)[0] == 400
    assert running.request("GET", "/v1/incidents")[0] == 401
