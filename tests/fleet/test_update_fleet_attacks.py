"""An outside attacker's look at the fleet side of signed updates (issue 14).

Each test is the attack, named; where the defence can be switched off (``unsafe_…``)
the attack is also shown succeeding without it. Attacks that already held are tested
too, so that they keep holding.
"""

from __future__ import annotations

import itertools
import json
import os
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.exceptions import ExpiredMetadataError

from tests.fleet.helpers import SERVER_PASSPHRASE
from tests.fleet.test_update_repo import (
    ROOT_SECRETS,
    TARGETS_2,
    first_root,
    make_repo,
    publish_app,
    update_key,
)
from tinyward.fleet import update_keys, update_repo
from tinyward.fleet.errors import BadFleet, BadRollout
from tinyward.fleet.rollouts import RolloutBook
from tinyward.fleet.update_repo import MissingKey, UnknownTarget, UpdateRepository
from tinyward.trust.report import UpdateStatus
from tinyward.update.errors import BadTargetMeta
from tinyward.update.meta import TargetMeta, Version

from .serverkit import Running, start_running


@pytest.fixture
def repo(tmp_path: Path) -> UpdateRepository:
    return make_repo(tmp_path)


def _stored(repo: UpdateRepository, name: str) -> Path:
    (path,) = [p for p in repo.targets_dir.iterdir() if p.name.endswith(name)]
    return path


# -- the repository on disk ------------------------------------------------------------


def test_attack_symlinked_target_to_server_key_not_served(
        repo: UpdateRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who can write repo/targets/ (a sync job, a careless copy) swaps a target
    for a symlink to the online timestamp key: the delivery must not hand the key out."""
    stored = _stored(repo, publish_app(repo))
    key_file = repo.server_dir / "update-timestamp-1.key"
    assert key_file.is_file()
    stored.unlink()
    stored.symlink_to(key_file)
    with pytest.raises(UnknownTarget):
        repo.served_file(f"targets/{stored.name}")
    monkeypatch.setattr(update_keys, "unsafe_follow_links", True)
    assert repo.served_file(f"targets/{stored.name}") == key_file.read_bytes()


def test_attack_symlinked_metadata_refused(repo: UpdateRepository) -> None:
    """A metadata file replaced by a symlink (here to a copy of itself) is not served and
    makes the repository refuse to work: tinyward never writes one."""
    timestamp = repo.metadata_dir / "timestamp.json"
    copy = repo.base / "elsewhere.json"
    copy.write_bytes(timestamp.read_bytes())
    timestamp.unlink()
    timestamp.symlink_to(copy)
    with pytest.raises(UnknownTarget):
        repo.served_file("metadata/timestamp.json")
    with pytest.raises(BadFleet, match=r"timestamp\.json is missing or damaged"):
        repo.status()


def test_attack_fifo_in_targets_does_not_block_the_server(repo: UpdateRepository) -> None:
    """A FIFO under a target's name would block the serving thread forever on open()."""
    stored = _stored(repo, publish_app(repo))
    stored.unlink()
    os.mkfifo(stored)
    with pytest.raises(UnknownTarget):
        repo.served_file(f"targets/{stored.name}")


def test_attack_device_file_in_targets_not_read(repo: UpdateRepository) -> None:
    """A symlink to /dev/zero would have the server read 512 MiB per request."""
    stored = _stored(repo, publish_app(repo))
    stored.unlink()
    stored.symlink_to("/dev/zero")
    tracemalloc.start()
    try:
        with pytest.raises(UnknownTarget):
            repo.served_file(f"targets/{stored.name}")
        assert tracemalloc.get_traced_memory()[1] < 16 * 1024 * 1024
    finally:
        tracemalloc.stop()


def _peak_while(action: object) -> int:
    tracemalloc.start()
    try:
        with pytest.raises((BadFleet, BadRollout, ValueError)):
            action()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)


HUGE = 64 * 1024 * 1024


def test_attack_huge_metadata_read_with_a_bound(repo: UpdateRepository,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 MiB timestamp.json (sparse: no disk used) is refused after reading at most
    the 4 MiB bound, not read whole into memory first."""
    _sparse(repo.metadata_dir / "timestamp.json", HUGE)
    assert _peak_while(repo.status) < 16 * 1024 * 1024
    monkeypatch.setattr(update_keys, "unsafe_follow_links", True)  # the old, unbounded read
    assert _peak_while(repo.status) >= HUGE


def test_attack_huge_pending_and_key_index_read_with_a_bound(repo: UpdateRepository) -> None:
    _sparse(repo.pending_dir / "targets.json", HUGE)
    assert _peak_while(repo.status) < 16 * 1024 * 1024
    (repo.pending_dir / "targets.json").unlink()
    _sparse(repo.base / "keys.json", HUGE)
    assert _peak_while(repo.keys) < 16 * 1024 * 1024


def test_attack_huge_targets_metadata_for_rollout_start_bounded(repo: UpdateRepository) -> None:
    publish_app(repo)
    _sparse(repo.metadata_dir / "999.targets.json", HUGE)
    book = RolloutBook(repo.fleet_dir)
    assert _peak_while(lambda: book.start("app", "1.0.0", "x", percent=10)) < 16 * 1024 * 1024


def test_trusted_root_returns_the_bytes_it_verified(repo: UpdateRepository,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The root handed to device bundles is the one verified, not a second read of the
    file (which could have been swapped in between)."""
    good = first_root(repo)
    real = Path.read_bytes

    def swapped(self: Path) -> bytes:
        return b"{swapped}" if self.name.endswith(".root.json") else real(self)

    monkeypatch.setattr(Path, "read_bytes", swapped)
    assert repo.trusted_root() == good


@pytest.mark.parametrize("product_class", ["pump\n", "../../server", "/abs", "a" * 65, "x\0y",
                                           "pu\u0301mp", "ﬁ"])
def test_attack_path_tricks_in_target_names_refused(repo: UpdateRepository,
                                                    product_class: str) -> None:
    """The target name is built from the product class: nothing but [A-Za-z0-9_.-]."""
    with pytest.raises(BadTargetMeta):
        repo.add("app", b"x", version="1.0.0", product_class=product_class)
    assert list(repo.targets_dir.iterdir()) == []


@pytest.mark.parametrize("version", ["1.0.0\n", "1.0.0\n\x1b[2J"])
def test_attack_newline_in_version_refused(repo: UpdateRepository, version: str) -> None:
    """``$`` in a pattern matches before a final newline: "1.0.0\\n" passed as a version
    (and a product class, cohort or device ID with a newline as a name)."""
    with pytest.raises(BadTargetMeta):
        Version.parse("1.2.3\n")
    with pytest.raises(BadTargetMeta):
        TargetMeta.from_custom({"component": "app", "version": "1.0.0", "min_tinyward": "0.1.0",
                                "product_class": "pump", "cohorts": ["canary\n"]})
    with pytest.raises(BadTargetMeta):
        repo.add("app", b"x", version=version, product_class="pump")


def test_served_file_refuses_long_nul_and_metadata_named_targets(repo: UpdateRepository) -> None:
    for bad in ("targets/" + "0" * 64 + ".a\0b", "targets/" + "0" * 64 + "." + "a" * 400,
                "metadata/timestamp.json\0", "targets/timestamp.json",
                "targets/" + "0" * 64 + "/../../keys.json", "metadata/1.root.json\n"):
        with pytest.raises(UnknownTarget):
            repo.served_file(bad)


# -- keys --------------------------------------------------------------------------------


def test_attack_key_index_points_root_name_at_a_targets_key(repo: UpdateRepository) -> None:
    """keys.json edited so that "root-1" names the update-signing (targets) key: the
    signature is refused, because the root metadata, not the index, says who counts."""
    path = repo.base / "keys.json"
    document = json.loads(path.read_bytes())
    document["keys"]["root-1"]["keyid"] = document["keys"]["update-signing"]["keyid"]
    path.write_text(json.dumps(document))
    repo.propose_root(update_repo.RootChange(), {}, SERVER_PASSPHRASE)
    signer = update_key(repo)  # the targets key, whatever the index calls it
    with pytest.raises(MissingKey, match="not a root key"):
        repo.sign("root", [signer], SERVER_PASSPHRASE)


def test_attack_online_key_cannot_sign_targets_or_root(repo: UpdateRepository) -> None:
    root = repo._trusted_root()[0].signed
    online = repo._online_signer("timestamp", root, SERVER_PASSPHRASE)
    repo.add("app", b"evil", version="1.0.0", product_class="pump")
    with pytest.raises(MissingKey, match="not delegated for targets"):
        repo.publish([online], SERVER_PASSPHRASE)
    repo.propose_root(update_repo.RootChange(), {}, SERVER_PASSPHRASE)
    with pytest.raises(MissingKey, match="not a root key"):
        repo.sign("root", [online], SERVER_PASSPHRASE)


def test_passphrase_never_in_a_wrong_passphrase_error(repo: UpdateRepository) -> None:
    secret = b"not the passphrase: violet anchor 1234"
    with pytest.raises(Exception) as raised:
        repo.offline_signer("root-1", secret)
    assert secret.decode() not in str(raised.value) and "violet" not in repr(raised.value)
    assert ROOT_SECRETS[0].decode() not in str(raised.value)


# -- rollouts ----------------------------------------------------------------------------


def test_attack_rollout_of_unknown_or_mismatched_target_refused(repo: UpdateRepository) -> None:
    """The admin API passes component, version and target from its body to the book: a
    rollout of a target the repository does not have, or that claims another version
    (offered as one thing, counted as another), is refused there, not only in the CLI."""
    name = publish_app(repo, "1.0.0")
    book = RolloutBook(repo.fleet_dir)
    with pytest.raises(BadRollout, match="no target"):
        book.start("app", "1.0.0", "pump-sensor.app-9.9.9", percent=10)
    with pytest.raises(BadRollout, match=r"not app 2\.0\.0"):
        book.start("app", "2.0.0", name, percent=10)
    with pytest.raises(BadRollout, match=r"not model 1\.0\.0"):
        book.start("model", "1.0.0", name, percent=10)
    assert book.start("app", "1.0.0", name, percent=10).target_path == name


def test_attack_symlinked_rollouts_file_refused(tmp_path: Path) -> None:
    book = RolloutBook(tmp_path)
    book.start("app", "1.0.0", "app-1.0.0.tar", percent=5)
    elsewhere = tmp_path / "other.json"
    elsewhere.write_bytes(book.path.read_bytes())
    book.path.unlink()
    book.path.symlink_to(elsewhere)
    with pytest.raises(BadRollout, match="not a regular file"):
        book.rollouts()
    book.path.unlink()
    os.mkfifo(book.path)
    with pytest.raises(BadRollout, match="not a regular file"):
        book.rollouts()


@pytest.mark.parametrize("field, value", [
    ("percent", "NaN"), ("percent", "Infinity"), ("percent", "-1"), ("percent", "101"),
    ("percent", "1e-9"), ("halt_at", "NaN"), ("halt_at", "0"), ("halt_at", "1.5"),
    ("min_reports", "0"), ("min_reports", "1e400"),
    ("cohorts", json.dumps([f"c{i}" for i in range(65)])),
    ("cohorts", json.dumps(["x\u001b[2J"])), ("target_path", '"../../keys.json"'),
    ("component", '"kernel"'),
])
def test_attack_admin_rollout_inputs_refused(tmp_path: Path, field: str, value: str) -> None:
    """What Python's JSON parser lets through (NaN, Infinity, 1e400) included."""
    book = RolloutBook(tmp_path)
    body = {"component": "app", "version": "1.0.0", "target_path": "t", "percent": 10}
    body[field] = json.loads(value)
    with pytest.raises(BadRollout):
        book.start(body.pop("component"), body.pop("version"),  # type: ignore[arg-type]
                   body.pop("target_path"), **body)  # type: ignore[arg-type]
    assert book.rollouts() == ()


# -- the halt rule's cost ----------------------------------------------------------------

NAMES = ("a0", "a1")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    ticks = itertools.count(0, 3600)  # the rate limit's clock: an hour between reports
    state = start_running(tmp_path, NAMES, monotonic=lambda: float(next(ticks)))
    yield state
    state.server.stop()


def test_attack_repeated_failure_reports_do_not_rerun_the_halt_rule(
        running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """One enrolled device repeating ``failed`` made every acknowledgement apply the halt
    rule over the whole fleet (~18 µs per device and running rollout). A repeat costs
    nothing now, unless the rollout was resumed since (then it counts again)."""
    book = running.fleet_server.rollouts
    # A large minimum: the rollout keeps running, and so the rule keeps being asked.
    rollout = book.start("app", "1.1.0", "app-1.1.0.tar", percent=100, min_reports=1000)
    calls: list[int] = []
    real = book.evaluate

    def counted(*args: object) -> object:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(book, "evaluate", counted)
    failed = UpdateStatus("failed", {"app": "1.0.0"}, "bad-signature", ("app", "1.1.0"))
    for _ in range(5):
        status, body = running.post("a0", running.report("a0", update=failed))
        assert status == 200, body
    assert len(calls) == 1
    book.halt(rollout.rollout_id)
    book.resume(rollout.rollout_id)  # a new window: the same failure counts again
    status, body = running.post("a0", running.report("a0", update=failed))
    assert status == 200, body
    assert len(calls) == 2


# -- threshold signing: the pending file between holders ---------------------------------


def _two_holder_repo(tmp_path: Path) -> tuple[UpdateRepository, object, object]:
    repo = make_repo(tmp_path, targets_threshold=2)
    return repo, update_key(repo), repo.offline_signer("targets-2", TARGETS_2)


def test_attack_pending_targets_swapped_after_first_signature_refused(tmp_path: Path) -> None:
    """Holder A signs; someone edits pending/targets.json (the target's hash now that of
    their image) and leaves A's signature on it; holder B, signing blind, must not add a
    signature to the swapped content."""
    repo, first, second = _two_holder_repo(tmp_path)
    name = repo.add("app", b"good", version="1.0.0", product_class="pump")
    assert not repo.publish([first], SERVER_PASSPHRASE).committed  # type: ignore[list-item]
    path = repo.pending_dir / "targets.json"
    document = json.loads(path.read_bytes())
    document["signed"]["targets"][name]["hashes"]["sha256"] = "ab" * 32
    document["signed"]["targets"][name]["length"] = 666
    path.write_text(json.dumps(document))
    with pytest.raises(BadFleet, match="changed after update-signing signed it"):
        repo.sign("targets", [second], SERVER_PASSPHRASE)  # type: ignore[list-item]
    assert set(json.loads(path.read_bytes())["signatures"][0].values()) == {
        document["signatures"][0]["keyid"], document["signatures"][0]["sig"]}


def test_attack_replayed_pending_targets_cannot_rewrite_a_published_version(
        tmp_path: Path) -> None:
    """An old pending file, with a valid signature of holder A over a draft that was
    never published, is put back after version 2 went out; holder B signs what is
    pending: it must not overwrite the published 2.targets.json (a split view: clients
    that have version 2 keep it, new ones would get the draft)."""
    repo, first, second = _two_holder_repo(tmp_path)
    repo.add("app", b"draft", version="1.0.0", product_class="pump")
    repo.publish([first], SERVER_PASSPHRASE)  # type: ignore[list-item]
    draft = (repo.pending_dir / "targets.json").read_bytes()
    repo.add("model", b"m", version="1.0.0", product_class="pump")  # voids A's signature
    repo.publish([first], SERVER_PASSPHRASE)  # type: ignore[list-item]
    assert repo.sign("targets", [second], SERVER_PASSPHRASE).committed  # type: ignore[list-item]
    published = (repo.metadata_dir / "2.targets.json").read_bytes()
    (repo.pending_dir / "targets.json").write_bytes(draft)
    with pytest.raises(update_repo.RepositoryError, match="stale"):
        repo.sign("targets", [second], SERVER_PASSPHRASE)  # type: ignore[list-item]
    assert (repo.metadata_dir / "2.targets.json").read_bytes() == published


def test_attack_pending_root_swapped_after_first_signature_refused(
        repo: UpdateRepository) -> None:
    """The same between root holders: a key of the attacker's added to the proposal."""
    repo.propose_root(update_repo.RootChange(), {}, SERVER_PASSPHRASE)
    repo.sign("root", [repo.offline_signer("root-1", ROOT_SECRETS[0])], SERVER_PASSPHRASE)
    path = repo.pending_dir / "root.json"
    document = json.loads(path.read_bytes())
    document["signed"]["roles"]["root"]["threshold"] = 1
    path.write_text(json.dumps(document))
    with pytest.raises(BadFleet, match="changed after root-1 signed it"):
        repo.sign("root", [repo.offline_signer("root-2", ROOT_SECRETS[1])], SERVER_PASSPHRASE)
    assert not (repo.metadata_dir / "2.root.json").exists()


def test_pending_signature_of_a_key_retired_meanwhile_is_not_tamper(tmp_path: Path) -> None:
    """A holder's signature made before a rotation retired their key only stops counting."""
    repo, first, _ = _two_holder_repo(tmp_path)
    repo.add("app", b"x", version="1.0.0", product_class="pump")
    repo.publish([first], SERVER_PASSPHRASE)  # type: ignore[list-item]
    repo.propose_root(update_repo.RootChange(remove=("update-signing",), targets_threshold=1),
                      {}, SERVER_PASSPHRASE)
    for holder in (0, 1):
        repo.sign("root", [repo.offline_signer(f"root-{holder + 1}", ROOT_SECRETS[holder])],
                  SERVER_PASSPHRASE)
    outcome = repo.sign("targets", [repo.offline_signer("targets-2", TARGETS_2)],
                        SERVER_PASSPHRASE)
    assert outcome.committed and outcome.signed_by == ("targets-2",)


@pytest.fixture
def held_clock(tmp_path: Path) -> Iterator[tuple[Running, list[float]]]:
    clock = [1000.0]  # the server's monotonic clock, moved by the test only
    state = start_running(tmp_path, NAMES, monotonic=lambda: clock[0])
    yield state, clock
    state.server.stop()


def test_attack_one_device_flipping_states_runs_the_halt_rule_boundedly(
        held_clock: tuple[Running, list[float]], monkeypatch: pytest.MonkeyPatch) -> None:
    """An enrolled device alternating failed / idle / new versions in every report made
    each acknowledgement apply the halt rule over the whole fleet. Now: its first
    failure for the rollout's target at once, anything else at most once per spacing;
    another device's first failure is still checked at once, and a change held back is
    checked with the next report after the spacing."""
    from tinyward.fleet import server

    spacing = getattr(server, "HALT_CHECK_SPACING", 10.0)
    running, clock = held_clock
    book = running.fleet_server.rollouts
    book.start("app", "1.1.0", "app-1.1.0.tar", percent=100, min_reports=1000)
    calls: list[int] = []
    real = book.evaluate

    def counted(*args: object) -> object:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(book, "evaluate", counted)
    failed = UpdateStatus("failed", {"app": "1.0.0"}, "bad-signature", ("app", "1.1.0"))
    flips = [failed, UpdateStatus("idle", {"app": "1.0.0"}),
             UpdateStatus("accepted", {"app": "1.1.0"}), UpdateStatus("downloading",
                                                                   {"app": "1.0.0"})] * 3
    for update in flips:
        status, body = running.post("a0", running.report("a0", update=update))
        assert status == 200, body
    assert len(calls) == 2  # the first failure, and one spaced change
    status, body = running.post("a1", running.report("a1", update=failed))
    assert status == 200, body
    assert len(calls) == 3  # another device's failure: at once (it covers a0's so far)
    status, body = running.post("a0", running.report("a0", update=flips[2]))  # new version
    assert status == 200, body
    assert len(calls) == 3  # held back
    clock[0] += spacing
    status, body = running.post("a1", running.report("a1", update=failed))  # a repeat
    assert status == 200, body
    assert len(calls) == 4  # the changes held back are checked now


def test_a_halt_rule_that_failed_runs_again_with_the_next_report_after_the_spacing(
        held_clock: tuple[Running, list[float]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A device's first failure runs the rule at once and is then marked seen; if that run
    raised (a transient read error), the failure must still be counted later, not only
    when some device reports a new change."""
    from tinyward.fleet import server

    spacing = getattr(server, "HALT_CHECK_SPACING", 10.0)
    running, clock = held_clock
    book = running.fleet_server.rollouts
    book.start("app", "1.1.0", "app-1.1.0.tar", percent=100, min_reports=1000)
    calls: list[int] = []
    real = book.evaluate

    def flaky(*args: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("transient")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(book, "evaluate", flaky)
    failed = UpdateStatus("failed", {"app": "1.0.0"}, "bad-signature", ("app", "1.1.0"))
    status, body = running.post("a0", running.report("a0", update=failed))
    assert status == 200, body
    assert len(calls) == 1  # ran at once, and raised
    clock[0] += spacing
    status, body = running.post("a0", running.report("a0", update=failed))  # a repeat
    assert status == 200, body
    assert len(calls) == 2  # retried, not forgotten


def test_attack_escape_sequences_in_halt_reason_never_reach_a_terminal(tmp_path: Path) -> None:
    """`rollout halt --reason` (the CLI does not check it) or an edited rollouts.json:
    the reason is shown by `rollout status` in another operator's terminal."""
    book = RolloutBook(tmp_path)
    made = book.start("app", "1.0.0", "app-1.0.0.tar", percent=5)
    halted = book.halt(made.rollout_id, "operator: \x1b]52;c;ZWNobyBwd25lZA==\x07\u202egnp.exe\n")
    assert halted.why is not None and halted.why.isprintable()
    document = json.loads(book.path.read_bytes())
    document["rollouts"][0]["why"] = "\x1b[2Jfake"
    book.path.write_text(json.dumps(document))
    assert book.get(made.rollout_id).why == "?[2Jfake"


# -- clocks ------------------------------------------------------------------------------


def test_attack_clock_set_forward_then_corrected_does_not_leave_a_long_freeze_window(
        tmp_path: Path) -> None:
    """The server's clock is pushed a month ahead (a bad NTP answer): its refresh signs a
    timestamp valid until then. Once the clock is right, the next refresh re-signs at
    once (a higher version, which devices then require) instead of serving the
    month-long one that an attacker could keep and replay to freeze devices."""
    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo(tmp_path, now)
    ahead = now + timedelta(days=30)
    assert repo.refresh_online(ahead, SERVER_PASSPHRASE) == ("snapshot", "timestamp")
    assert repo.refresh_online(now, SERVER_PASSPHRASE) == ("snapshot", "timestamp")
    timestamp = json.loads((repo.metadata_dir / "timestamp.json").read_bytes())["signed"]
    assert timestamp["version"] == 3
    expires = datetime.fromisoformat(timestamp["expires"].replace("Z", "+00:00"))
    assert expires == now + timedelta(days=1)
    assert repo.refresh_online(now, SERVER_PASSPHRASE) == ()  # and then quiet again


def test_clock_set_back_is_noticed_by_devices_within_the_timestamp_expiry(
        tmp_path: Path) -> None:
    """A clock set back makes the server sign metadata that devices see as expired (or
    sign nothing new): a stock client refuses, it does not install from it."""
    from tests.fleet.tufclient import fetch

    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo(tmp_path, now - timedelta(days=30))  # everything signed "a month ago"
    name = repo.add("app", b"x", version="1.0.0", product_class="pump",
                    now=now - timedelta(days=30))
    repo.publish([update_key(repo)], SERVER_PASSPHRASE, now=now - timedelta(days=30))
    with pytest.raises(ExpiredMetadataError):
        fetch(repo.base / "repo", first_root(repo), tmp_path / "client", name)


def test_attack_replayed_pending_root_after_its_rotation_refused(repo: UpdateRepository) -> None:
    """A copy of the pending root v2, kept with one holder's signature, put back after v2
    went out: it can never become a second v2 (the next root is v3)."""
    repo.propose_root(update_repo.RootChange(), {}, SERVER_PASSPHRASE)
    repo.sign("root", [repo.offline_signer("root-1", ROOT_SECRETS[0])], SERVER_PASSPHRASE)
    kept = (repo.pending_dir / "root.json").read_bytes()
    assert repo.sign("root", [repo.offline_signer("root-2", ROOT_SECRETS[1])],
                     SERVER_PASSPHRASE).committed
    published = (repo.metadata_dir / "2.root.json").read_bytes()
    (repo.pending_dir / "root.json").write_bytes(kept)
    with pytest.raises(update_repo.RepositoryError, match="the next is 3"):
        repo.sign("root", [repo.offline_signer("root-3", ROOT_SECRETS[2])], SERVER_PASSPHRASE)
    assert (repo.metadata_dir / "2.root.json").read_bytes() == published
