"""`tinyward update …`: the update repository's CLI; each mistake is one `error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.fleet.helpers import CLI_SECRETS
from tests.fleet.tufclient import fetch
from tinyward.cli.main import cli

KEY_SECRETS = {
    "TINYWARD_UPDATE_KEY_ROOT_1_PASSPHRASE": "first root holder: blue kettle 4417",
    "TINYWARD_UPDATE_KEY_ROOT_2_PASSPHRASE": "second root holder: quiet lantern 92",
    "TINYWARD_UPDATE_KEY_ROOT_3_PASSPHRASE": "third root holder: amber orchard 305",
    "TINYWARD_UPDATE_KEY_TARGETS_2_PASSPHRASE": "second targets holder: copper meadow 81",
    "TINYWARD_UPDATE_KEY_ROOT_4_PASSPHRASE": "fourth root holder: silver harbour 6",
}
ENV = {**CLI_SECRETS, **KEY_SECRETS}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=ENV if env is None else env).invoke(cli, [str(a) for a in args])


def error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def no_secret_shown(result: Result) -> None:
    for secret in ENV.values():
        assert secret not in result.output


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fleet"
    assert run("fleet", "init", folder).exit_code == 0
    result = run("update", "init", folder, "--targets-keys", "2")
    assert result.exit_code == 0, result.output
    no_secret_shown(result)
    return folder


def test_add_publish_status_and_client(fleet_dir: Path, tmp_path: Path) -> None:
    app = tmp_path / "app.tar"
    app.write_bytes(b"bundle")
    result = run("update", "add", fleet_dir, "app", app, "--version", "1.0.0",
                 "--product-class", "pump-sensor", "--cohort", "canary")
    assert result.exit_code == 0, result.output
    result = run("update", "publish", fleet_dir)
    assert "published targets version 2" in result.output, result.output
    no_secret_shown(result)
    status = json.loads(run("update", "status", fleet_dir, "--json").output)
    assert status["targets"][0]["custom"]["cohorts"] == ["canary"]
    assert status["roles"]["root"]["signatures"] == 3 and status["roles"]["root"]["threshold"] == 2
    text = run("update", "status", fleet_dir).output
    assert "targets   v2" in text and "pump-sensor.app-1.0.0" in text
    repo = fleet_dir / "updates" / "repo"
    data, _ = fetch(repo, (repo / "metadata" / "1.root.json").read_bytes(), tmp_path / "c",
                    "pump-sensor.app-1.0.0")
    assert data == b"bundle"
    keys = run("update", "keys", "list", fleet_dir).output
    assert "update-signing" in keys and "timestamp-1" in keys


def test_version_not_newer_is_one_error_line(fleet_dir: Path, tmp_path: Path) -> None:
    app = tmp_path / "app.tar"
    app.write_bytes(b"bundle")
    args = ("update", "add", fleet_dir, "app", app, "--product-class", "pump-sensor")
    assert run(*args, "--version", "1.0.0").exit_code == 0
    assert run("update", "publish", fleet_dir).exit_code == 0
    assert "not newer than the published 1.0.0" in error_line(run(*args, "--version", "0.9.0"))


def test_unknown_component_is_one_error_line(fleet_dir: Path, tmp_path: Path) -> None:
    app = tmp_path / "fw.bin"
    app.write_bytes(b"x")
    line = error_line(run("update", "add", fleet_dir, "firmware", app, "--version", "1.0.0",
                          "--product-class", "p"))
    assert "unknown component 'firmware'" in line


def test_missing_key_is_one_error_line(fleet_dir: Path, tmp_path: Path) -> None:
    assert "no key named 'root-7'" in error_line(
        run("update", "sign", fleet_dir, "targets", "--key", "root-7"))
    (fleet_dir / "keys" / "update-root-1.key").rename(tmp_path / "elsewhere.key")
    run("update", "rotate-root", fleet_dir)
    assert "--keys" in error_line(run("update", "sign", fleet_dir, "root", "--key", "root-1"))


def test_weak_passphrase_is_one_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    assert run("fleet", "init", folder).exit_code == 0
    env = {**ENV, "TINYWARD_UPDATE_KEY_ROOT_2_PASSPHRASE": "password1234"}
    line = error_line(run("update", "init", folder, env=env))
    assert "root-2 passphrase is too weak" in line
    assert not (folder / "updates" / "keys.json").exists()


def test_threshold_not_met_then_met(fleet_dir: Path) -> None:
    result = run("update", "rotate-root", fleet_dir, "--replace", "root-1", "--key", "root-2")
    assert "1 more signature(s) needed" in result.output, result.output
    assert "pending root v2" in run("update", "status", fleet_dir).output
    assert "not a root key" in error_line(
        run("update", "sign", fleet_dir, "root", "--key", "targets-2"))
    result = run("update", "sign", fleet_dir, "root", "--key", "root-3")
    assert "published root version 2" in result.output, result.output
    no_secret_shown(result)


def test_bad_threshold_is_one_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    assert run("fleet", "init", folder).exit_code == 0
    result = run("update", "init", folder, "--root-threshold", "4")
    assert "threshold must be between 1 and its 3 keys" in error_line(result)
    assert result.exit_code == 2  # the person's mistake, not a caller bug (3)


def test_expired_metadata_is_one_error_line(fleet_dir: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from datetime import UTC, datetime, timedelta

    from tinyward.cli import update as update_cli

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime.now(UTC) + timedelta(days=400)

    monkeypatch.setattr(update_cli, "datetime", Later)
    assert "root expired" in error_line(run("update", "refresh", fleet_dir))


def test_signing_twice_is_one_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    assert run("fleet", "init", folder).exit_code == 0
    assert run("update", "init", folder, "--targets-keys", "2",
               "--targets-threshold", "2").exit_code == 0
    app = tmp_path / "app.tar"
    app.write_bytes(b"bundle")
    run("update", "add", folder, "app", app, "--version", "1.0.0", "--product-class", "p")
    result = run("update", "publish", folder)
    assert "1 more signature(s) needed" in result.output, result.output
    assert "already signed" in error_line(run("update", "sign", folder, "targets",
                                              "--key", "update-signing"))
    result = run("update", "sign", folder, "targets", "--key", "targets-2")
    assert "published targets version 2" in result.output, result.output


def test_online_rotation(fleet_dir: Path, tmp_path: Path) -> None:
    result = run("update", "rotate-online", fleet_dir, "--key", "root-1", "--key", "root-2")
    assert "published root version 2" in result.output, result.output
    keys = run("update", "keys", "list", fleet_dir).output
    assert "timestamp-2" in keys
    repo = fleet_dir / "updates" / "repo"
    from tests.fleet.tufclient import updater

    updater(repo, (repo / "metadata" / "1.root.json").read_bytes(), tmp_path / "c").refresh()


def test_server_refuses_update_key_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyward.cli.fleet_secrets import refuse_foreign_secrets
    from tinyward.errors import Misuse

    monkeypatch.setenv("TINYWARD_UPDATE_KEY_ROOT_1_PASSPHRASE", "x")
    with pytest.raises(Misuse, match="TINYWARD_UPDATE_KEY_ROOT_1_PASSPHRASE"):
        refuse_foreign_secrets()


def test_provision_with_product_class_gets_update_trust(fleet_dir: Path, tmp_path: Path) -> None:
    from tinyward.trust.device import Device

    result = run("device", "provision", tmp_path / "dev", "--fleet", fleet_dir, "--readout",
                 "none", "--product-class", "pump-sensor")
    assert result.exit_code == 0, result.output
    device = Device.open(tmp_path / "dev")
    assert device.product_class() == "pump-sensor"
    root = fleet_dir / "updates" / "repo" / "metadata" / "1.root.json"
    assert device.update_trusted_root() == root.read_bytes()
    status = json.loads((fleet_dir / "devices" / device.device_id / "status.json").read_bytes())
    assert status["product_class"] == "pump-sensor"


def test_enroll_bad_product_class_is_one_error_line(fleet_dir: Path, tmp_path: Path) -> None:
    assert run("device", "init", tmp_path / "dev").exit_code == 0
    line = error_line(run("fleet", "enroll", fleet_dir, tmp_path / "dev" / "enroll.csr.pem",
                          "--product-class", "a b"))
    assert "--product-class 'a b' is not a name" in line
    line = error_line(run("device", "provision", tmp_path / "dev2", "--fleet", fleet_dir,
                          "--product-class", "x/y"))
    assert "is not a name" in line and not (tmp_path / "dev2").exists()


def test_status_of_expired_repository_ends_with_one_error_line(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.fleet.test_update_repo import make_repo

    repo = make_repo(tmp_path, now=datetime.now(UTC) - timedelta(days=2))
    result = run("update", "status", repo.fleet_dir)
    assert "timestamp v1" in result.output and "EXPIRED" in result.output
    assert "expired: timestamp" in error_line(result) and result.exit_code == 2
    assert "update refresh" in error_line(result)
    assert run("update", "refresh", repo.fleet_dir).exit_code == 0
    assert run("update", "status", repo.fleet_dir).exit_code == 0
