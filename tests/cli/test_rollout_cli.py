"""Cohorts and rollouts through the CLI: `fleet enroll --cohort`, `fleet set-cohort`,
`tinyward rollout start/widen/halt/resume/status`, each refusal one `error:` line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tuf.api.metadata import Metadata, TargetFile, Targets

from tests.fleet.helpers import CLI_SECRETS, PASSPHRASE, UPDATE_PASSPHRASE, request_pem
from tinyward.cli.main import cli
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.pki import Fleet
from tinyward.update.meta import TargetMeta, Version


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def _one_error(result: Result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    Fleet.init(tmp_path / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE)
    return tmp_path / "fleet"


def _enrol(fleet_dir: Path, tmp_path: Path, *extra: str) -> tuple[Result, str]:
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    out = tmp_path / "b.json"
    out.unlink(missing_ok=True)
    result = _run("fleet", "enroll", str(fleet_dir), str(request), "-o", str(out), *extra,
                  env=CLI_SECRETS)
    device_id = DeviceBundle.from_json(out.read_bytes()).device_id if out.exists() else ""
    return result, device_id


def test_cohorts_at_enrolment_and_later(fleet_dir: Path, tmp_path: Path) -> None:
    result, device_id = _enrol(fleet_dir, tmp_path, "--cohort", "canary")
    assert result.exit_code == 0, result.output
    assert Fleet.open(fleet_dir).device(device_id).cohort == "canary"
    _one_error(_enrol(fleet_dir, tmp_path, "--cohort", "no/slash")[0], "not a name")
    assert len(Fleet.open(fleet_dir).devices()) == 1  # refused before anything was made
    moved = _run("fleet", "set-cohort", str(fleet_dir), device_id, "site-7")
    assert moved.exit_code == 0 and "cohort site-7" in moved.output
    row = next(line for line in _run("fleet", "devices", str(fleet_dir)).output.splitlines()
               if device_id[:12] in line)
    assert [cell.strip() for cell in row.split("│")][5] == "site-7"
    Fleet.open(fleet_dir).revoke(device_id)  # revoking keeps the cohort
    assert Fleet.open(fleet_dir).device(device_id).cohort == "site-7"
    cleared = _run("fleet", "set-cohort", str(fleet_dir), device_id, "--none")
    assert cleared.exit_code == 0 and "no cohort" in cleared.output
    assert Fleet.open(fleet_dir).device(device_id).cohort is None
    _one_error(_run("fleet", "set-cohort", str(fleet_dir), device_id), "COHORT or --none")
    _one_error(_run("fleet", "set-cohort", str(fleet_dir), device_id, "../x"), "not a name")


def test_rollout_commands_and_their_audit_lines(fleet_dir: Path) -> None:
    _one_error(_run("rollout", "start", str(fleet_dir), "app.tar", "--percent", "10"),
               "--component and --version")
    started = _run("rollout", "start", str(fleet_dir), "app.tar", "--percent", "10",
                   "--component", "app", "--version", "1.1.0", "--halt-at", "0.2")
    assert started.exit_code == 0, started.output
    assert "app 1.1.0 (app.tar) to 10 % of the fleet, running; halts at 20 %" in started.output
    rid = started.output.split()[2].rstrip(":")
    _one_error(_run("rollout", "start", str(fleet_dir), "app2.tar", "--percent", "10",
                    "--component", "app", "--version", "1.2.0"), "still running")
    _one_error(_run("rollout", "widen", str(fleet_dir), rid, "--percent", "5"), "goes up")
    assert "to 50 %" in _run("rollout", "widen", str(fleet_dir), rid, "--percent", "50").output
    halted = _run("rollout", "halt", str(fleet_dir), rid, "--reason", "bad build")
    assert "HALTED (operator: bad build)" in halted.output
    _one_error(_run("rollout", "widen", str(fleet_dir), rid, "--percent", "90"), "resume it")
    assert "resumed" in _run("rollout", "resume", str(fleet_dir), rid).output
    _one_error(_run("rollout", "resume", str(fleet_dir), rid), "not halted")
    _one_error(_run("rollout", "halt", str(fleet_dir), "f" * 16), "no rollout")
    status = _run("rollout", "status", str(fleet_dir), "--json")
    assert status.exit_code == 0, status.output
    (only,) = json.loads(status.output)["rollouts"]
    assert only["id"] == rid and only["percent"] == 50 and only["members"] == 0
    text = _run("rollout", "status", str(fleet_dir), rid).output
    assert "members 0" in text and "running" in text
    audit = [json.loads(line) for line in (fleet_dir / "audit.log").read_text().splitlines()]
    assert [(a["address"], a["method"]) for a in audit] == [
        ("cli", "START"), ("cli", "WIDEN"), ("cli", "HALT"), ("cli", "RESUME")]


def _publish(fleet_dir: Path, path: str, meta: TargetMeta) -> None:
    targets = Targets(version=3, expires=datetime(2030, 1, 1, tzinfo=UTC))
    targets.targets[path] = TargetFile(4, {"sha256": "00" * 32}, path,
                                       unrecognized_fields={"custom": meta.to_custom()})
    folder = fleet_dir / "updates" / "repo" / "metadata"
    folder.mkdir(parents=True)
    (folder / "3.targets.json").write_bytes(Metadata(targets).to_bytes())


def test_start_reads_component_and_version_from_the_fleets_repository(fleet_dir: Path) -> None:
    _publish(fleet_dir, "model-2.0.0.bin", TargetMeta("model", Version(2, 0, 0), "pump",
                                                      Version(0, 1, 0)))
    started = _run("rollout", "start", str(fleet_dir), "model-2.0.0.bin", "--cohort", "lab")
    assert started.exit_code == 0, started.output
    assert "model 2.0.0 (model-2.0.0.bin) to 100 % of cohorts lab" in started.output
    _one_error(_run("rollout", "start", str(fleet_dir), "other.bin", "--percent", "5"),
               "no target 'other.bin'")
    _one_error(_run("rollout", "start", str(fleet_dir), "model-2.0.0.bin", "--percent", "5",
                    "--version", "9.9.9"), "is version 2.0.0, not 9.9.9")


def test_report_verify_json_shows_the_update_status_only_when_there_is_one() -> None:
    from tinyward.cli.report import _as_json
    from tinyward.trust.report import Report, UpdateStatus

    plain = _as_json(Report("ab" * 32, 1, 1))
    assert "update" not in plain  # the same document as before the field existed
    shown = _as_json(Report("ab" * 32, 2, 1, update=UpdateStatus(
        "reverted", {"app": "1.0.0"}, "crash", ("app", "1.1.0"))))
    assert shown["update"] == {"state": "reverted", "versions": {"app": "1.0.0"},
                               "why": "crash", "target": ["app", "1.1.0"]}


def test_fleet_devices_shows_update_state_and_versions_from_the_reports(
        fleet_dir: Path, tmp_path: Path) -> None:
    from tinyward.fleet.store import SQLiteStore
    from tinyward.trust.report import Report, UpdateStatus

    _, device_id = _enrol(fleet_dir, tmp_path)
    store = SQLiteStore(fleet_dir / "reports.db")
    store.append(device_id, [(Report(device_id, 1, 1, update=UpdateStatus(
        "reverted", {"app": "1.0.0", "model": "2.1.0"}, "crash", ("app", "1.1.0"))), b"x")],
        received_at=2)
    store.close()
    output = _run("fleet", "devices", str(fleet_dir)).output
    row = next(line for line in output.splitlines() if device_id[:12] in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[6:8] == ["reverted (crash)", "app 1.0.0 model 2.1.0"]
