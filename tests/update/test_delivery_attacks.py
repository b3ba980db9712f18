"""TUF's attacks on an update, each through the real link and the real fleet server.

A provisioned device runs its real :class:`~tinyward.link.runner.DeviceRunner` against the
real fleet server (tests/link/liveserver.py, mutual TLS, SQLite); the fleet offers a target;
the device's stock ``tuf.ngclient.Updater`` fetches it one chunk per report
(tinyward.update.fetcher) from the server's chunk delivery (tinyward.fleet.delivery), which
serves a TUF repository that each test tampers with as the attacker would. Each refusal:
nothing reaches the A/B agent (``on_verified``), the installed versions stay, and the
reason is in the device's status, which its next report carries (``upd.why``).

TUF's list (theupdateframework.io/docs/security): arbitrary installation, endless data,
extraneous dependencies, fast-forward, indefinite freeze, malicious mirrors (here: the
fleet server itself is untrusted for content), mix-and-match, rollback, slow retrieval,
vulnerability to key compromise, wrong software installation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Key, Signature, Signer, SSlibKey
from tuf.api.metadata import Metadata, Snapshot

from tinyward.fleet.delivery import ChunkServer
from tinyward.fleet.pki import Fleet
from tinyward.lab.proxy import TCPProxy
from tinyward.lab.tufrepo import PRODUCT, TufRepo
from tinyward.link import chunks
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, RunStats
from tinyward.link.shaper import ShaperConfig
from tinyward.trust.device import Device
from tinyward.trust.report import Report
from tinyward.update.client import UpdateClient, UpdateClientConfig
from tinyward.update.fetcher import ChunkChannel
from tinyward.update.meta import Offer, Version

from ..link.liveserver import LiveFleetServer

PASSPHRASE = b"update-tests-passphrase"
SETTLED = ("staged", "rejected", "failed")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet.init(tmp_path_factory.mktemp("fleet") / "fleet", PASSPHRASE)


@dataclass
class Delivery:
    """One device, one repository, one offer at a time; run with :meth:`run`."""

    root: Path
    fleet: Fleet
    repo: TufRepo
    installed: dict[str, Version] = field(default_factory=dict)
    offer: Offer | None = None
    got: list[tuple[Any, ...]] = field(default_factory=list)
    server_class: type[ChunkServer] = ChunkServer
    #: A path between device and server (an attacker's), given the server's port.
    proxy: Callable[[int, ChunkChannel], TCPProxy] | None = None
    chunk_timeout: float = 30.0

    def __post_init__(self) -> None:
        self.device = Device.init(self.root / "device")
        self.device.install(self.fleet.enroll(self.device.enrolment_request, PASSPHRASE))
        self.client = UpdateClient(
            device_id=self.device.device_id, trusted_root=self.repo.root_bytes,
            product_class=PRODUCT, workdir=Path(self.device.directory) / "update",
            on_verified=lambda *args: self.got.append(args),
            installed=self.installed.get,
            config=UpdateClientConfig(chunk_timeout=self.chunk_timeout, max_misses=3))

    def run(self, *rounds: Callable[[], Offer]) -> RunStats:
        """Each round sets up the repository and returns the offer; the runner reports
        until the client settles, then for a few more reports (so ``upd.why`` goes out)."""
        delivery = self.server_class(self.repo.dir,
                                     offers=lambda device_id, installed: self.offer)
        with LiveFleetServer(self.fleet, delivery=delivery) as server:
            self.server = server
            proxy = None if self.proxy is None else self.proxy(server.port, self.client.channel)
            runner = DeviceRunner(self.device, proxy.url if proxy else server.url,
                                  RunnerConfig(shaper=ShaperConfig(interval=0.1),
                                               link=LinkConfig(backoff_initial=0.05,
                                                               backoff_max=0.5)),
                                  fetch=self.client.channel, update_status=self.client.status)
            stop = threading.Event()
            thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
            thread.start()
            try:
                for make_offer in rounds:
                    before = len(self.got), self.client.last_error
                    self.offer = make_offer()
                    self._settle(before)
                if proxy is not None:
                    proxy.restore()  # the path is back: the queued reports go out
                frames = self.client.channel.frames
                for _ in range(300):  # three more reports answered and the queue (reports
                    # made while the path was cut) drained, at most 30 s
                    if self.client.channel.frames >= frames + 3 and runner.stats.queued <= 1:
                        break
                    time.sleep(0.1)
            finally:
                stop.set()
                thread.join(30)
                self.client.close()
                if proxy is not None:
                    proxy.close()
        return runner.stats

    def _settle(self, before: tuple[int, Any]) -> None:
        for _ in range(600):  # at most 60 s: a few hundred reports at 0.1 s
            if ((len(self.got), self.client.last_error) != before
                    and self.client.status()["state"] in SETTLED and not self.client.busy):
                return
            time.sleep(0.1)
        raise AssertionError(f"the update did not settle: {self.client.status()}")

    def assert_refused(self, stats: RunStats, code: str) -> None:
        status = self.client.status()
        assert status["why"] == code, (status, self.client.last_error)
        assert status["state"] in ("rejected", "failed")
        assert self.got == []  # nothing reached the A/B agent: the running version stays
        # The status every report since the refusal carried (the runner's copy):
        assert stats.update is not None and stats.update["why"] == code
        stored = self.server.reports[self.device.device_id]
        if "update" in {f.name for f in fields(Report)}:  # the upd field (h-rollout)
            assert stored[-1].update.why == code


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    return TufRepo(tmp_path / "repo")


@pytest.fixture
def delivery(tmp_path: Path, fleet: Fleet, repo: TufRepo) -> Delivery:
    return Delivery(tmp_path, fleet, repo)


def _target(repo: TufRepo, component: str = "model", version: str = "1.2.0",
            size: int = 3000, **kw: Any) -> Callable[[], Offer]:
    def make() -> Offer:
        path = repo.add_target(component, version, bytes(i % 251 for i in range(size)), **kw)
        repo.publish()
        return Offer(component, path, Version.parse(version))
    return make


# -- the control: a good update arrives -----------------------------------------------------


def test_a_signed_target_is_delivered_through_the_link(delivery: Delivery,
                                                       repo: TufRepo) -> None:
    stats = delivery.run(_target(repo, size=5000))
    assert len(delivery.got) == 1
    component, path, meta, length, _ = delivery.got[0]
    assert (component, length, str(meta.version)) == ("model", 5000, "1.2.0")
    assert Path(path).read_bytes() == bytes(i % 251 for i in range(5000))
    assert delivery.client.status()["state"] == "staged" and "why" not in delivery.client.status()
    assert stats.update is not None and stats.update["state"] == "staged"


# -- arbitrary installation -----------------------------------------------------------------


def test_arbitrary_installation_substituted_target_is_refused(delivery: Delivery,
                                                              repo: TufRepo) -> None:
    def attack() -> Offer:
        offer = _target(repo)()
        file = repo.target_file(offer.target_path)
        file.write_bytes(b"EVIL" + file.read_bytes()[4:])  # same length, other bytes
        return offer
    delivery.assert_refused(delivery.run(attack), "bad-download")


def test_arbitrary_installation_metadata_signed_by_an_unknown_key_is_refused(
        delivery: Delivery, repo: TufRepo) -> None:
    def attack() -> Offer:
        repo.add_target("app", "9.0.0", b"attacker's app")
        repo.publish(targets_signer=CryptoSigner.generate_ed25519())
        return Offer("app", "app-9.0.0.bin", Version(9, 0, 0))
    delivery.assert_refused(delivery.run(attack), "bad-signature")


# -- key compromise ---------------------------------------------------------------------------


class _TokenSigner(Signer):
    """A fleet signing token (the CA's key) as a securesystemslib signer: the attacker who
    holds the CA key signs update metadata with it."""

    def __init__(self, token: Any) -> None:
        self._token = token
        self._key = SSlibKey.from_crypto(token.public_key())

    @classmethod
    def from_priv_key_uri(cls, *args: Any, **kwargs: Any) -> Signer:
        raise NotImplementedError

    @property
    def public_key(self) -> Key:
        return self._key

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._key.keyid, self._token.sign(payload).hex())


def test_targets_signed_with_the_fleet_ca_key_are_refused(delivery: Delivery, repo: TufRepo,
                                                          fleet: Fleet) -> None:
    ca_signer = _TokenSigner(fleet.root_ca_token(PASSPHRASE))

    def attack() -> Offer:
        repo.add_target("app", "9.0.0", b"signed by the CA, not by the update keys")
        repo.publish(targets_signer=ca_signer)
        return Offer("app", "app-9.0.0.bin", Version(9, 0, 0))
    delivery.assert_refused(delivery.run(attack), "bad-signature")


def test_key_compromise_below_the_threshold_is_refused(tmp_path: Path, fleet: Fleet) -> None:
    repo = TufRepo(tmp_path / "repo2", targets_threshold=2)
    run = Delivery(tmp_path / "d2", fleet, repo)

    def attack() -> Offer:
        repo.add_target("app", "9.0.0", b"one stolen key of two")
        repo.publish(targets_signer=repo.targets_signers[1])
        return Offer("app", "app-9.0.0.bin", Version(9, 0, 0))
    run.assert_refused(run.run(attack), "bad-signature")


# -- rollback, freeze, fast-forward, mix-and-match --------------------------------------------


def test_rollback_to_an_older_signed_version_is_refused(tmp_path: Path, fleet: Fleet,
                                                        repo: TufRepo) -> None:
    run = Delivery(tmp_path, fleet, repo, installed={"model": Version(1, 3, 0)})
    stats = run.run(_target(repo, version="1.2.0"))  # validly signed, but older
    run.assert_refused(stats, "rollback")


def test_rollback_hidden_behind_a_newer_offer_is_refused(tmp_path: Path, fleet: Fleet,
                                                         repo: TufRepo) -> None:
    # The (unsigned) offer claims 1.4.0; the signed target says 1.2.0.
    run = Delivery(tmp_path, fleet, repo, installed={"model": Version(1, 3, 0)})

    def attack() -> Offer:
        offer = _target(repo, version="1.2.0")()
        return Offer(offer.component, offer.target_path, Version(1, 4, 0))
    run.assert_refused(run.run(attack), "rollback")


def test_indefinite_freeze_expired_timestamp_is_refused(delivery: Delivery,
                                                        repo: TufRepo) -> None:
    from datetime import UTC, datetime, timedelta

    def attack() -> Offer:
        path = repo.add_target("model", "1.2.0", b"x" * 100)
        # A correctly signed timestamp that expired: the attacker replays it for ever.
        repo.publish(timestamp_expires=datetime.now(UTC).replace(microsecond=0)
                     - timedelta(hours=1))
        return Offer("model", path, Version(1, 2, 0))
    delivery.assert_refused(delivery.run(attack), "expired")


def test_metadata_rollback_older_timestamp_is_refused(delivery: Delivery,
                                                      repo: TufRepo) -> None:
    saved: dict[str, bytes] = {}

    def good() -> Offer:
        saved["timestamp"] = repo.metadata("timestamp.json").read_bytes()  # version 1
        return _target(repo, component="config", version="1.0.0", size=500)()  # version 2

    def attack() -> Offer:
        offer = _target(repo, component="model", version="2.0.0")()  # version 3
        repo.metadata("timestamp.json").write_bytes(saved["timestamp"])  # back to 1
        return offer
    stats = delivery.run(good, attack)
    assert [g[0] for g in delivery.got] == ["config"]  # the control went through
    delivery.got.clear()
    delivery.assert_refused(stats, "metadata-version")


def test_fast_forward_snapshot_version_is_refused(delivery: Delivery, repo: TufRepo) -> None:
    def attack() -> Offer:
        offer = _target(repo)()
        # The attacker's snapshot claims a version far ahead of what the timestamp names
        # (re-signed with the snapshot key, as one who stole it would).
        version = repo.snapshot.signed.version
        forged = Metadata(Snapshot(version=version + 1000, expires=repo.snapshot.signed.expires,
                                   meta=dict(repo.snapshot.signed.meta)))
        forged.sign(repo.signers["snapshot"])
        repo.metadata(f"{version}.snapshot.json").write_bytes(forged.to_bytes())
        return offer
    delivery.assert_refused(delivery.run(attack), "metadata-version")


def test_mix_and_match_targets_from_another_snapshot_is_refused(delivery: Delivery,
                                                                repo: TufRepo) -> None:
    def attack() -> Offer:
        old = repo.metadata("1.targets.json").read_bytes()  # validly signed, older set
        offer = _target(repo)()  # publishes 2.targets.json, named by snapshot 2
        repo.metadata("2.targets.json").write_bytes(old)
        return offer
    delivery.assert_refused(delivery.run(attack), "metadata-version")


# -- endless data, slow retrieval, truncated and corrupted downloads -------------------------


def test_endless_data_target_longer_than_signed_is_refused(delivery: Delivery,
                                                           repo: TufRepo) -> None:
    def attack() -> Offer:
        offer = _target(repo)()
        with repo.target_file(offer.target_path).open("ab") as file:
            file.write(bytes(50_000))  # and it would go on
        return offer
    delivery.assert_refused(delivery.run(attack), "too-long")


class _StallingServer(ChunkServer):
    """A server that sends the first chunk of a target and then filler for ever."""

    def _read(self, request: chunks.FetchRequest) -> tuple[int, int, bytes]:
        status, total, data = super()._read(request)
        path = self._lookup(request.handle) if request.handle else None
        if path is not None and path.parent.name == "targets" and request.offset > 0:
            return chunks.IDLE, 0, b""
        return status, total, data


def test_slow_retrieval_server_stops_mid_target_is_refused(tmp_path: Path, fleet: Fleet,
                                                           repo: TufRepo) -> None:
    run = Delivery(tmp_path, fleet, repo, server_class=_StallingServer)
    run.assert_refused(run.run(_target(repo)), "slow-retrieval")


class _CutMidFrame(TCPProxy):
    """A path that, once the device asks for a target past its first chunk, passes half of
    the server's answer and then goes dead (every connection closed, none accepted)."""

    def __init__(self, port: int, channel: ChunkChannel) -> None:
        super().__init__(("127.0.0.1", port))
        self.channel = channel
        self.fired = threading.Event()

    def _pump(self, src: Any, dst: Any, upstream: bool, number: int) -> None:
        if upstream or self.fired.is_set():
            super()._pump(src, dst, upstream, number)
            return
        try:
            while data := src.recv(65536):
                request = self.channel.request()
                if request.offset > 0 and not self.fired.is_set():
                    dst.sendall(data[:len(data) // 2])  # half a frame, then nothing
                    self.fired.set()
                    threading.Thread(target=self.cut, daemon=True).start()
                    return
                dst.sendall(data)
        except OSError:
            pass


def test_slow_retrieval_path_cut_mid_frame_is_refused(tmp_path: Path, fleet: Fleet,
                                                      repo: TufRepo) -> None:
    # The metadata here fits one chunk per file, so the first request past offset 0 is the
    # target's second chunk; the device waits 3 s for it (120 s by default), then gives up.
    run = Delivery(tmp_path, fleet, repo, proxy=_CutMidFrame, chunk_timeout=3.0)
    run.assert_refused(run.run(_target(repo)), "slow-retrieval")
    assert "targets/" in str(run.client.last_error)


def test_truncated_download_is_refused(delivery: Delivery, repo: TufRepo) -> None:
    def attack() -> Offer:
        offer = _target(repo)()
        file = repo.target_file(offer.target_path)
        file.write_bytes(file.read_bytes()[:1500])
        return offer
    delivery.assert_refused(delivery.run(attack), "bad-download")


def test_corrupted_download_is_refused(delivery: Delivery, repo: TufRepo) -> None:
    def attack() -> Offer:
        offer = _target(repo)()
        file = repo.target_file(offer.target_path)
        data = bytearray(file.read_bytes())
        data[2000] ^= 0x01
        file.write_bytes(bytes(data))
        return offer
    delivery.assert_refused(delivery.run(attack), "bad-download")


# -- wrong software, extraneous dependencies --------------------------------------------------


def test_wrong_product_class_is_refused(delivery: Delivery, repo: TufRepo) -> None:
    delivery.assert_refused(delivery.run(_target(repo, product_class="door-sensor")),
                            "wrong-product")


def test_extraneous_target_not_in_signed_metadata_is_refused(delivery: Delivery,
                                                             repo: TufRepo) -> None:
    # TUF's extraneous-dependencies attack has no dependencies to abuse here (a target
    # names none); its nearest form is an offer for something the signed targets do not
    # list, e.g. a file slipped into the repository folder.
    def attack() -> Offer:
        (repo.targets_dir / "deadbeef.app-9.0.0.bin").write_bytes(b"not signed")
        repo.publish()
        return Offer("app", "app-9.0.0.bin", Version(9, 0, 0))
    delivery.assert_refused(delivery.run(attack), "no-such-target")


