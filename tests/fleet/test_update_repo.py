"""The fleet's TUF update repository (fleet/update_repo.py), judged by a stock ngclient.

Each refusal is a named test written as the attack or the mistake; the client side is
python-tuf's ``Updater`` with a file fetcher only (tests/fleet/tufclient.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from tests.fleet.helpers import PASSPHRASE, SERVER_PASSPHRASE, UPDATE_PASSPHRASE
from tests.fleet.tufclient import fetch, updater
from tinyward.fleet import update_repo
from tinyward.fleet.errors import WeakPassphrase, WrongPassphrase
from tinyward.fleet.pki import Fleet
from tinyward.fleet.tokens import FileSigningKey
from tinyward.fleet.update_repo import (
    BadThreshold,
    MetadataExpired,
    MissingKey,
    NotNewer,
    RootChange,
    ThresholdNotMet,
    TokenSigner,
    UnknownComponent,
    UpdateRepository,
)
from tinyward.update.errors import BadTargetMeta
from tinyward.update.meta import TargetMeta

ROOT_SECRETS = [b"first root holder: blue kettle 4417", b"second root holder: quiet lantern 92",
                b"third root holder: amber orchard 305"]
TARGETS_2 = b"second targets holder: copper meadow 81"
NEW_ROOT = b"fourth root holder: silver harbour 6"


def real_now() -> datetime:
    # ngclient checks expiry against its own clock: client-facing tests sign "now".
    return datetime.now(UTC).replace(microsecond=0)


def make_fleet(tmp_path: Path, now: datetime) -> Fleet:
    return Fleet.init(tmp_path / "fleet", PASSPHRASE, now=now, update_passphrase=UPDATE_PASSPHRASE,
                      server_passphrase=SERVER_PASSPHRASE)


def make_repo(tmp_path: Path, now: datetime | None = None, *, targets_threshold: int = 1,
              **kwargs: object) -> UpdateRepository:
    now = now or real_now()
    fleet = make_fleet(tmp_path, now)
    return UpdateRepository.init(
        fleet.directory, root_secrets=ROOT_SECRETS, targets_secrets=[TARGETS_2],
        update_signing=fleet.update_signing_token(UPDATE_PASSPHRASE),
        server_secret=SERVER_PASSPHRASE, root_threshold=2, targets_threshold=targets_threshold,
        now=now, **kwargs)  # type: ignore[arg-type]


def update_key(repo: UpdateRepository) -> TokenSigner:
    return repo.offline_signer("update-signing", UPDATE_PASSPHRASE)  # type: ignore[return-value]


def client_dir(tmp_path: Path, name: str = "client") -> Path:
    return tmp_path / name


def first_root(repo: UpdateRepository) -> bytes:
    return (repo.metadata_dir / "1.root.json").read_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> UpdateRepository:
    return make_repo(tmp_path)


def publish_app(repo: UpdateRepository, version: str = "1.0.0", data: bytes = b"app v1",
                now: datetime | None = None) -> str:
    name = repo.add("app", data, version=version, product_class="pump-sensor", now=now)
    outcome = repo.publish([update_key(repo)], SERVER_PASSPHRASE, now=now)
    assert outcome.committed
    return name


# -- the good path ---------------------------------------------------------------------


def test_init_layout_and_default_thresholds(repo: UpdateRepository) -> None:
    names = sorted(p.name for p in repo.metadata_dir.iterdir())
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    status = repo.status()
    assert status["roles"]["root"]["threshold"] == 2
    assert status["roles"]["root"]["keys"] == ["root-1", "root-2", "root-3"]
    assert status["roles"]["targets"]["keys"] == ["targets-2", "update-signing"]
    assert {k["name"]: k["online"] for k in status["keys"]}["timestamp-1"] is True
    root = json.loads(first_root(repo))["signed"]
    assert root["consistent_snapshot"] is True
    # Offline keys sealed in keys/ (one passphrase each), online ones in server/.
    assert (repo.keys_dir / "update-root-1.key").is_file()
    assert (repo.server_dir / "update-timestamp-1.key").is_file()
    assert not list(repo.metadata_dir.glob("*.key*"))


def test_stock_client_downloads_target_with_custom_meta(repo: UpdateRepository,
                                                         tmp_path: Path) -> None:
    name = publish_app(repo, data=b"the application bundle")
    data, custom = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), name)
    assert data == b"the application bundle"
    meta = TargetMeta.from_custom(custom)
    assert (meta.component, str(meta.version), meta.product_class) == ("app", "1.0.0",
                                                                       "pump-sensor")
    # Hash-prefixed target file, consistent snapshot metadata names.
    assert any(p.name.endswith(".pump-sensor.app-1.0.0") for p in repo.targets_dir.iterdir())
    assert (repo.metadata_dir / "2.targets.json").is_file()
    assert (repo.metadata_dir / "2.snapshot.json").is_file()


def test_trusted_root_is_the_newest_root_bytes(repo: UpdateRepository) -> None:
    assert repo.trusted_root() == first_root(repo)


# -- mistakes at publish time ------------------------------------------------------------


def test_version_not_newer_than_published_refused(repo: UpdateRepository) -> None:
    publish_app(repo, "1.2.0")
    for version in ("1.2.0", "1.1.9"):
        with pytest.raises(NotNewer, match=r"not newer than the published 1\.2\.0"):
            repo.add("app", b"x", version=version, product_class="pump-sensor")
    # Another product class has its own line of versions.
    repo.add("app", b"x", version="1.0.0", product_class="door-sensor")


def test_version_not_newer_than_pending_refused(repo: UpdateRepository) -> None:
    repo.add("model", b"m", version="2.0.0", product_class="pump-sensor")
    with pytest.raises(NotNewer, match=r"pending 2\.0\.0"):
        repo.add("model", b"m", version="2.0.0", product_class="pump-sensor")


def test_unknown_component_refused(repo: UpdateRepository) -> None:
    with pytest.raises(UnknownComponent, match="firmware"):
        repo.add("firmware", b"x", version="1.0.0", product_class="pump-sensor")
    assert not (repo.pending_dir / "targets.json").exists()


def test_bad_version_and_names_refused(repo: UpdateRepository) -> None:
    with pytest.raises(BadTargetMeta):
        repo.add("app", b"x", version="01.0.0", product_class="pump-sensor")
    with pytest.raises(BadTargetMeta):
        repo.add("app", b"x", version="1.0.0", product_class="../etc")
    with pytest.raises(BadTargetMeta):
        repo.add("app", b"x", version="1.0.0", product_class="p", devices=["not-an-id"])


def test_weak_or_repeated_passphrase_refused(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, real_now())
    with pytest.raises(WeakPassphrase):
        UpdateRepository.init(fleet.directory, root_secrets=[b"password1234", *ROOT_SECRETS[1:]],
                              server_secret=SERVER_PASSPHRASE, targets_secrets=[TARGETS_2])
    with pytest.raises(WeakPassphrase, match="its own passphrase"):
        UpdateRepository.init(fleet.directory, root_secrets=[ROOT_SECRETS[0]] * 3,
                              server_secret=SERVER_PASSPHRASE, targets_secrets=[TARGETS_2])
    assert not (fleet.directory / "updates" / "keys.json").exists()


def test_wrong_passphrase_refused(repo: UpdateRepository) -> None:
    with pytest.raises(WrongPassphrase):
        repo.offline_signer("root-1", ROOT_SECRETS[1])


def test_missing_key_refused(repo: UpdateRepository, tmp_path: Path) -> None:
    with pytest.raises(MissingKey, match="no key named"):
        repo.offline_signer("root-9", ROOT_SECRETS[0])
    elsewhere = UpdateRepository(repo.fleet_dir, keys_dir=tmp_path / "usb-stick")
    with pytest.raises(MissingKey, match="--keys"):
        elsewhere.offline_signer("root-1", ROOT_SECRETS[0])
    (repo.server_dir / "update-timestamp-1.key").rename(repo.server_dir / "moved")
    with pytest.raises(MissingKey, match="online timestamp"):
        repo.refresh_online(None, SERVER_PASSPHRASE, force=True)


def test_root_key_cannot_sign_targets(repo: UpdateRepository) -> None:
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor")
    with pytest.raises(MissingKey, match="not delegated for targets"):
        repo.publish([repo.offline_signer("root-1", ROOT_SECRETS[0])], SERVER_PASSPHRASE)


# -- thresholds ------------------------------------------------------------------------


def test_targets_threshold_not_met_stays_pending(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, targets_threshold=2)
    before = (repo.metadata_dir / "timestamp.json").read_bytes()
    name = repo.add("detector", b"d", version="1.0.0", product_class="pump-sensor")
    outcome = repo.publish([update_key(repo)], SERVER_PASSPHRASE)
    assert not outcome.committed and outcome.missing == 1
    assert (repo.metadata_dir / "timestamp.json").read_bytes() == before
    assert repo.status()["pending"]["targets"]["signed_by"] == ["update-signing"]
    with pytest.raises(LookupError):  # not published: the client cannot see it
        fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), name)
    second = repo.offline_signer("targets-2", TARGETS_2)
    outcome = repo.sign("targets", [second], SERVER_PASSPHRASE)
    assert outcome.committed and outcome.signed_by == ("targets-2", "update-signing")
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path, "c2"), name)
    assert data == b"d"


def _force_publish(repo: UpdateRepository, targets: Metadata[Targets]) -> None:
    """What an attacker with the server (online keys) but too few offline keys does: put
    the targets it could sign into a snapshot and timestamp the client will fetch."""
    root = repo._trusted_root()[0].signed
    version = targets.signed.version
    (repo.metadata_dir / f"{version}.targets.json").write_bytes(
        targets.to_bytes(JSONSerializer()))
    snap = Metadata(Snapshot(version=50, expires=real_now() + timedelta(days=1),
                             meta={"targets.json": MetaFile(version)}))
    snap.sign(repo._online_signer("snapshot", root, SERVER_PASSPHRASE))
    (repo.metadata_dir / "50.snapshot.json").write_bytes(snap.to_bytes(JSONSerializer()))
    stamp = Metadata(Timestamp(version=50, expires=real_now() + timedelta(days=1),
                               snapshot_meta=MetaFile(50)))
    stamp.sign(repo._online_signer("timestamp", root, SERVER_PASSPHRASE))
    (repo.metadata_dir / "timestamp.json").write_bytes(stamp.to_bytes(JSONSerializer()))


def _evil_targets(repo: UpdateRepository) -> Metadata[Targets]:
    from tuf.api.metadata import TargetFile

    evil = TargetFile.from_data("pump-sensor.app-9.9.9", b"evil", ["sha256"])
    evil.unrecognized_fields["custom"] = {"component": "app", "version": "9.9.9",
                                          "product_class": "pump-sensor",
                                          "min_tinyward": "0.1.0", "devices": [], "cohorts": []}
    (repo.targets_dir / f"{evil.hashes['sha256']}.pump-sensor.app-9.9.9").write_bytes(b"evil")
    return Metadata(Targets(version=7, expires=real_now() + timedelta(days=1),
                            targets={evil.path: evil}))


def test_client_refuses_targets_below_threshold(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, targets_threshold=2)
    evil = _evil_targets(repo)
    evil.sign(update_key(repo))  # one of two required
    _force_publish(repo, evil)
    with pytest.raises(tuf_errors.UnsignedMetadataError, match="targets was signed by 1/2"):
        updater(repo.base / "repo", first_root(repo), client_dir(tmp_path)).refresh()


def test_client_refuses_target_signed_by_ca_key(repo: UpdateRepository, tmp_path: Path) -> None:
    """The fleet's device CA key is a real fleet key, and not delegated for targets."""
    fleet = Fleet.open(repo.fleet_dir)
    ca_signer = TokenSigner(fleet.device_ca_token(PASSPHRASE))
    # The repository refuses it ...
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor")
    with pytest.raises(MissingKey, match="not delegated for targets"):
        repo.publish([ca_signer], SERVER_PASSPHRASE)
    # ... and a client refuses targets signed with it even with valid online roles around.
    evil = _evil_targets(repo)
    evil.sign(ca_signer)
    _force_publish(repo, evil)
    with pytest.raises(tuf_errors.UnsignedMetadataError, match="targets was signed by 0/1"):
        updater(repo.base / "repo", first_root(repo), client_dir(tmp_path)).refresh()


def test_unsafe_forced_publish_with_delegated_key_is_accepted(repo: UpdateRepository,
                                                              tmp_path: Path) -> None:
    """Control for the two attacks above: the same forged publish signed by the delegated
    key goes through, so their refusals are the key check, not a broken forgery."""
    evil = _evil_targets(repo)
    evil.sign(update_key(repo))
    _force_publish(repo, evil)
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path),
                    "pump-sensor.app-9.9.9")
    assert data == b"evil"


def test_client_refuses_rolled_back_timestamp(repo: UpdateRepository, tmp_path: Path) -> None:
    """Rollback: a server (or a mirror) that serves an older, validly signed timestamp to a
    client that has already seen a newer one."""
    publish_app(repo, "1.0.0")
    old = (repo.metadata_dir / "timestamp.json").read_bytes()
    publish_app(repo, "1.1.0")
    work = client_dir(tmp_path)
    updater(repo.base / "repo", first_root(repo), work).refresh()
    (repo.metadata_dir / "timestamp.json").write_bytes(old)
    with pytest.raises(tuf_errors.BadVersionNumberError, match="timestamp"):
        updater(repo.base / "repo", None, work).refresh()


@pytest.mark.parametrize(("tamper", "refusal"), [
    (b"evil v1", tuf_errors.LengthOrHashMismatchError),              # same length
    (b"good v1" + b"\0" * 4096, tuf_errors.DownloadLengthMismatchError),
], ids=["replaced", "endless-data"])
def test_client_refuses_tampered_or_longer_target(repo: UpdateRepository, tmp_path: Path,
                                                  tamper: bytes, refusal: type) -> None:
    """The repository signs each target's length and SHA-256: a replaced file, or one
    longer than its metadata says, is refused by the stock client."""
    name = publish_app(repo, "1.0.0", b"good v1")
    (stored,) = [p for p in repo.targets_dir.iterdir() if p.name.endswith(name)]
    stored.write_bytes(tamper)
    with pytest.raises(refusal):
        fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), name)


# -- expiry ----------------------------------------------------------------------------


def test_client_refuses_expired_timestamp(tmp_path: Path) -> None:
    """Freeze attack: a server that keeps serving old metadata; the timestamp runs out."""
    repo = make_repo(tmp_path, now=real_now() - timedelta(days=2))
    with pytest.raises(tuf_errors.ExpiredMetadataError, match=r"timestamp\.json is expired"):
        updater(repo.base / "repo", first_root(repo), client_dir(tmp_path)).refresh()
    # The server's refresh re-signs the online roles and the client is served again.
    # (the snapshot, signed for 7 days, still has more than half its life left)
    assert repo.refresh_online(real_now(), SERVER_PASSPHRASE) == ("timestamp",)
    updater(repo.base / "repo", first_root(repo), client_dir(tmp_path, "c2")).refresh()


def test_client_refuses_expired_targets(tmp_path: Path) -> None:
    expiry = update_repo.Expiry(targets=timedelta(days=1))
    repo = make_repo(tmp_path, now=real_now() - timedelta(days=2), expiry=expiry)
    repo.refresh_online(real_now(), SERVER_PASSPHRASE)
    with pytest.raises(tuf_errors.ExpiredMetadataError, match="targets is expired"):
        updater(repo.base / "repo", first_root(repo), client_dir(tmp_path)).refresh()
    # Re-publishing (nothing new) re-signs targets with a fresh expiry.
    assert repo.publish([update_key(repo)], SERVER_PASSPHRASE, real_now()).committed
    updater(repo.base / "repo", first_root(repo), client_dir(tmp_path, "c2")).refresh()


def test_expired_pending_targets_refused_then_renewed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, targets_threshold=2)
    long_ago = real_now() - timedelta(days=100)
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor", now=long_ago)
    assert not repo.publish([update_key(repo)], SERVER_PASSPHRASE, long_ago).committed
    second = repo.offline_signer("targets-2", TARGETS_2)
    with pytest.raises(MetadataExpired, match="pending targets expired"):
        repo.sign("targets", [second], SERVER_PASSPHRASE)
    # publish renews it (fresh expiry, signatures void), then both holders sign again.
    assert not repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed
    assert repo.sign("targets", [second], SERVER_PASSPHRASE).committed


def test_refresh_online_only_when_needed(repo: UpdateRepository) -> None:
    now = real_now()
    assert repo.refresh_online(now, SERVER_PASSPHRASE) == ()
    # A timestamp with less than half its day left is re-signed; the snapshot (7 days) not.
    assert repo.refresh_online(now + timedelta(hours=13), SERVER_PASSPHRASE) == ("timestamp",)
    assert repo.refresh_online(now + timedelta(days=4), SERVER_PASSPHRASE) == (
        "snapshot", "timestamp")


def test_expired_root_refused_for_publish(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, now=real_now() - timedelta(days=400))
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor", now=real_now())
    with pytest.raises(MetadataExpired, match="root expired"):
        repo.publish([update_key(repo)], SERVER_PASSPHRASE, real_now())
    with pytest.raises(MetadataExpired, match="root expired"):
        repo.refresh_online(real_now(), SERVER_PASSPHRASE)


# -- a failed publish ------------------------------------------------------------------


@pytest.mark.parametrize("failing_file", ["3.targets.json", "3.snapshot.json", "timestamp.json"])
def test_failed_publish_keeps_previous_state(repo: UpdateRepository, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             failing_file: str) -> None:
    good = publish_app(repo, "1.0.0", b"good v1")
    repo.add("app", b"v2", version="2.0.0", product_class="pump-sensor")
    real_write = update_repo.atomic_write

    def failing(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.name == failing_file:  # the disk fills up at this step of the publish
            raise OSError(28, "No space left on device", str(path))
        real_write(path, data, mode)

    monkeypatch.setattr(update_repo, "atomic_write", failing)
    with pytest.raises(OSError):
        repo.publish([update_key(repo)], SERVER_PASSPHRASE)
    monkeypatch.setattr(update_repo, "atomic_write", real_write)
    # Clients still get the previous, fully verifiable state.
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), good)
    assert data == b"good v1"
    client = updater(repo.base / "repo", first_root(repo), client_dir(tmp_path, "c2"))
    client.refresh()
    assert client.get_targetinfo("pump-sensor.app-2.0.0") is None
    # Retrying completes it: a refresh if the signed targets made it to disk, else publish.
    if failing_file == "3.targets.json":
        assert (repo.pending_dir / "targets.json").is_file()  # the staged targets are kept
        assert repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed
    else:
        assert repo.refresh_online(None, SERVER_PASSPHRASE) == ("snapshot", "timestamp")
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path, "c3"),
                    "pump-sensor.app-2.0.0")
    assert data == b"v2"


# -- root rotation ---------------------------------------------------------------------


def test_root_rotation_chain_followed_by_stock_client(repo: UpdateRepository,
                                                       tmp_path: Path) -> None:
    publish_app(repo, "1.0.0", b"before")
    planned = repo.planned_key_names(RootChange(replace=("root-1", "timestamp-1",
                                                         "snapshot-1")))
    assert planned == [("root-4", "root"), ("timestamp-2", "timestamp"),
                       ("snapshot-2", "snapshot")]
    repo.propose_root(RootChange(replace=("root-1", "timestamp-1", "snapshot-1")),
                      {"root-4": NEW_ROOT}, SERVER_PASSPHRASE)
    one = repo.sign("root", [repo.offline_signer("root-2", ROOT_SECRETS[1])], SERVER_PASSPHRASE)
    assert not one.committed and one.missing == 1
    assert not (repo.metadata_dir / "2.root.json").exists()
    two = repo.sign("root", [repo.offline_signer("root-4", NEW_ROOT)], SERVER_PASSPHRASE)
    # root-4 counts for the new root only; the old one still needs a second old key.
    assert not two.committed and two.missing == 1
    done = repo.sign("root", [repo.offline_signer("root-3", ROOT_SECRETS[2])], SERVER_PASSPHRASE)
    assert done.committed and done.version == 2
    assert done.online_refreshed == ("snapshot", "timestamp")
    assert repo.trusted_root() == (repo.metadata_dir / "2.root.json").read_bytes()
    # A client that only knows root 1 walks the chain to root 2 and trusts the new
    # online keys; the retired root-1 key no longer counts.
    name = publish_app(repo, "1.1.0", b"after")
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), name)
    assert data == b"after"
    assert json.loads(repo.trusted_root())["signed"]["version"] == 2
    with pytest.raises(MissingKey, match="not a root key"):
        repo.propose_root(RootChange(), {}, SERVER_PASSPHRASE)
        repo.sign("root", [repo.offline_signer("root-1", ROOT_SECRETS[0])], SERVER_PASSPHRASE)


def test_client_refuses_root_signed_only_by_new_keys(repo: UpdateRepository,
                                                      tmp_path: Path) -> None:
    """An attacker who makes a root of their own keys cannot continue the chain."""
    from securesystemslib.signer import CryptoSigner

    mine = [CryptoSigner.generate_ecdsa() for _ in range(2)]
    root = repo._trusted_root()[0].signed
    forged = Metadata(type(root).from_dict(root.to_dict()))
    forged.signed.version = 2
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    for signer in mine:
        forged.signed.add_key(signer.public_key, "root")
        forged.sign(signer, append=True)
    (repo.metadata_dir / "2.root.json").write_bytes(forged.to_bytes(JSONSerializer()))
    with pytest.raises(tuf_errors.UnsignedMetadataError, match="root was signed by 0/2"):
        updater(repo.base / "repo", first_root(repo), client_dir(tmp_path)).refresh()


def test_rotation_threshold_change_and_bad_threshold(repo: UpdateRepository) -> None:
    with pytest.raises(BadThreshold, match="threshold"):
        repo.propose_root(RootChange(root_threshold=4), {}, SERVER_PASSPHRASE)
    repo.propose_root(RootChange(targets_threshold=2), {}, SERVER_PASSPHRASE)
    outcome = repo.sign("root", [repo.offline_signer("root-1", ROOT_SECRETS[0]),
                                 repo.offline_signer("root-2", ROOT_SECRETS[1])],
                        SERVER_PASSPHRASE)
    assert outcome.committed
    assert repo.status()["roles"]["targets"]["threshold"] == 2
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor")
    assert not repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed


def test_same_holder_signing_twice_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, targets_threshold=2)
    repo.add("app", b"a", version="1.0.0", product_class="pump-sensor")
    assert not repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed
    with pytest.raises(ThresholdNotMet, match="update-signing has already signed"):
        repo.sign("targets", [update_key(repo)], SERVER_PASSPHRASE)
    with pytest.raises(ThresholdNotMet, match="already signed"):
        repo.publish([update_key(repo)], SERVER_PASSPHRASE)
    assert repo.status()["pending"]["targets"]["missing"] == 1


def test_threshold_not_met_when_nothing_pending(repo: UpdateRepository) -> None:
    with pytest.raises(update_repo.RepositoryError, match="no root metadata is waiting"):
        repo.sign("root", [repo.offline_signer("root-1", ROOT_SECRETS[0])], SERVER_PASSPHRASE)


def test_update_signing_key_is_a_targets_key(repo: UpdateRepository) -> None:
    fleet = Fleet.open(repo.fleet_dir)
    token = FileSigningKey(repo.keys_dir / "update-signing.key", UPDATE_PASSPHRASE,
                           "update-signing")
    assert TokenSigner(token).public_key.keyid == repo.keys()["update-signing"].keyid
    assert fleet.update_signing_public_key is not None


def test_threshold_not_met_error_type() -> None:
    assert issubclass(ThresholdNotMet, update_repo.RepositoryError)


def test_server_refresh_opens_online_keys_once(repo: UpdateRepository,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The server re-signs on a timer; each scrypt opening costs 128 MiB, so once is enough."""
    from tinyward.fleet import update_keys

    server = UpdateRepository(repo.fleet_dir)
    opened: list[str] = []
    real_open = update_keys.open_key

    def counting(data: bytes, secret: bytes, purpose: str, name: str = "") -> object:
        opened.append(purpose)
        return real_open(data, secret, purpose, name=name)

    monkeypatch.setattr(update_keys, "open_key", counting)
    now = real_now()
    for hours in (13, 40, 100):  # the snapshot too, at 100 h
        assert "timestamp" in server.refresh_online(now + timedelta(hours=hours),
                                                    SERVER_PASSPHRASE)
    assert sorted(opened) == ["update-snapshot", "update-timestamp"]


def test_fleet_without_update_key_gets_new_targets_keys(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, now=real_now())
    repo = UpdateRepository.init(fleet.directory, root_secrets=ROOT_SECRETS[:1],
                                 targets_secrets=[TARGETS_2], server_secret=None,
                                 root_threshold=1)
    assert sorted(repo.keys()) == ["root-1", "snapshot-1", "targets-1", "timestamp-1"]
    # Online keys in clear (0600), like a clear server TLS key: no secret needed.
    assert (repo.server_dir / "update-timestamp-1.key.pem").stat().st_mode & 0o777 == 0o600
    name = repo.add("config", b"c", version="1.0.0", product_class="pump-sensor")
    assert repo.publish([repo.offline_signer("targets-1", TARGETS_2)], None).committed
    data, _ = fetch(repo.base / "repo", first_root(repo), client_dir(tmp_path), name)
    assert data == b"c"


def _refresh_many(fleet_dir: str, count: int) -> None:
    server = UpdateRepository(Path(fleet_dir))
    for _ in range(count):
        server.refresh_online(None, SERVER_PASSPHRASE, force=True)


def test_concurrent_refreshes_never_reuse_a_version(repo: UpdateRepository) -> None:
    """The server's timer and a console publish write snapshot N+1 from the same N: the
    repository's lock makes them take turns (no version written twice, none lost)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_refresh_many, args=(str(repo.fleet_dir), 8))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    stamp = json.loads((repo.metadata_dir / "timestamp.json").read_bytes())["signed"]
    assert stamp["version"] == 1 + 16
    assert stamp["meta"]["snapshot.json"]["version"] == 1 + 16
    assert sorted(repo._versions("snapshot")) == list(range(1, 18))


def test_failed_init_leaves_no_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = make_fleet(tmp_path, real_now())
    real_refresh = UpdateRepository.refresh_online

    def crash(self: UpdateRepository, *args: object, **kwargs: object) -> tuple[str, ...]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(UpdateRepository, "refresh_online", crash)
    with pytest.raises(OSError):
        UpdateRepository.init(fleet.directory, root_secrets=ROOT_SECRETS,
                              targets_secrets=[TARGETS_2], server_secret=SERVER_PASSPHRASE)
    assert not (fleet.directory / "updates").exists()
    assert not [p for p in fleet.directory.iterdir() if p.name.startswith(".updates-")]
    monkeypatch.setattr(UpdateRepository, "refresh_online", real_refresh)
    repo = UpdateRepository.init(fleet.directory, root_secrets=ROOT_SECRETS,
                                 targets_secrets=[TARGETS_2], server_secret=SERVER_PASSPHRASE)
    assert repo.status()["roles"]["timestamp"]["version"] == 1


def test_refresh_never_publishes_a_targets_rollback(repo: UpdateRepository) -> None:
    publish_app(repo, "1.0.0")
    newest = repo.metadata_dir / "2.targets.json"
    document = json.loads(newest.read_bytes())
    document["signatures"] = []  # damaged: v2 no longer meets the threshold, v1 does
    newest.write_text(json.dumps(document))
    with pytest.raises(update_repo.BadFleet, match="below the published 2"):
        repo.refresh_online(None, SERVER_PASSPHRASE, force=True)


@pytest.mark.parametrize("entry", [
    {"file": "../../server/server.key"},     # the index steering a signer to another file
    {"role": "admin"},
    {"keyid": None, "file": None},
])
def test_damaged_key_index_refused(repo: UpdateRepository, entry: dict[str, object]) -> None:
    path = repo.base / "keys.json"
    document = json.loads(path.read_bytes())
    document["keys"]["root-1"].update(entry)
    path.write_text(json.dumps(document))
    with pytest.raises(update_repo.BadFleet, match=r"keys\.json is damaged"):
        repo.offline_signer("root-1", ROOT_SECRETS[0])


def test_served_file_gives_repository_files_only(repo: UpdateRepository) -> None:
    name = publish_app(repo, "1.0.0", b"good v1")
    (stored,) = [p for p in repo.targets_dir.iterdir() if p.name.endswith(name)]
    assert repo.served_file(f"targets/{stored.name}") == b"good v1"
    assert repo.served_file("metadata/timestamp.json") == (
        repo.metadata_dir / "timestamp.json").read_bytes()
    assert repo.served_file("metadata/1.root.json") == first_root(repo)
    for bad in ("metadata/../../keys.json", "../server/update-timestamp-1.key",
                "metadata/1.root.json/", "metadata/root.json", "targets/../../fleet.json",
                "/etc/passwd", "metadata/9.root.json", f"targets/{'0' * 64}.x"):
        with pytest.raises(update_repo.UnknownTarget):
            repo.served_file(bad)
