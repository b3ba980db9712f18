"""The running server checked against the OpenAPI document in the repository (schemathesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .serverkit import Running, running_server

# Reports are opaque bytes on the wire: send them as schemathesis sends octet streams.
schemathesis.serializer.alias(["application/cose", "application/cbor"], "application/octet-stream")

DOCUMENT = json.loads(resources.files("tinyward.fleet").joinpath("openapi.json").read_text())
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {(op.method.upper(), op.path): op
              for op in (result.ok() for result in SCHEMA.get_all_operations())}

@pytest.fixture(scope="module", name="running")
def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_server(tmp_path_factory, ("a", "b", "c", "revoked"))



def _base(running: Running, admin: bool = False) -> str:
    return f"https://127.0.0.1:{running.admin_port if admin else running.server.port}"


def test_document_covers_every_route(running: Running) -> None:
    assert set(OPERATIONS) == {
        ("GET", "/v1/health"), ("POST", "/v1/reports"), ("POST", "/v1/reports/batch"),
        ("GET", "/v1/devices"), ("GET", "/v1/devices/{device_id}"), ("GET", "/v1/fleet"),
        ("GET", "/v1/openapi.json"), ("GET", "/v1/rollouts"), ("POST", "/v1/rollouts"),
        ("GET", "/v1/rollouts/{rollout_id}"), ("POST", "/v1/rollouts/{rollout_id}/widen"),
        ("POST", "/v1/rollouts/{rollout_id}/halt"), ("POST", "/v1/rollouts/{rollout_id}/resume"),
        ("GET", "/v1/incidents"), ("GET", "/metrics")}


def test_served_document_is_the_repository_one(running: Running) -> None:
    status, served = running.request(
        "GET", "/v1/openapi.json", headers={"Authorization": f"Bearer {running.admin_token}"})
    assert status == 200 and served == DOCUMENT


@pytest.mark.parametrize("key", [("GET", "/v1/health"), ("GET", "/v1/devices"),
                                 ("GET", "/v1/devices/{device_id}"), ("GET", "/v1/fleet"),
                                 ("GET", "/v1/openapi.json"), ("GET", "/v1/rollouts"),
                                 ("GET", "/v1/rollouts/{rollout_id}"),
                                 ("POST", "/v1/rollouts"),
                                 ("POST", "/v1/rollouts/{rollout_id}/widen"),
                                 ("GET", "/v1/incidents"), ("GET", "/metrics")])
@pytest.mark.parametrize("token", ["right", "wrong"])
def test_open_and_admin_endpoints_conform(running: Running, key: tuple[str, str],
                                          token: str) -> None:
    secret = running.admin_token if token == "right" else "not-the-token"
    headers = {"Authorization": f"Bearer {secret}"}
    verify = str(running.fleet.root_ca_path)

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(OPERATIONS[key].as_strategy())
    def check(case: schemathesis.Case) -> None:
        # Random device IDs are mostly unknown (404, documented); the admin token is ours.
        case.call_and_validate(base_url=_base(running, admin=True), headers=headers,
                               verify=verify,
                               excluded_checks=[positive_data_acceptance])

    check()


def test_reports_endpoint_conforms_with_real_reports(running: Running, tmp_path: Path) -> None:
    device = running.devices["b"]
    cert_key = tuple(str(p) for p in device.write_tls_files(tmp_path))
    verify = str(running.fleet.root_ca_path)
    operation = OPERATIONS[("POST", "/v1/reports")]
    # Positive: a real signed report is stored (200, Ack schema); and a replay is a
    # documented 409 with the Error schema.
    report = running.report("b")
    for expected in (200, 409):
        case = operation.Case(body=report, media_type="application/cose")
        response = case.call_and_validate(base_url=_base(running), verify=verify, cert=cert_key)
        assert response.status_code == expected

    # Generated bodies (random bytes): every answer must be a documented one.
    @settings(max_examples=10, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=_base(running), verify=verify, cert=cert_key,
                               excluded_checks=[positive_data_acceptance])

    check()
