"""The update client over the chunk channel, against the fleet's chunk server in process
(no TLS: the protocol and TUF's checks; the same through the real link and server is
test_delivery_attacks.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tinyward.fleet.delivery import ChunkServer
from tinyward.lab.tufrepo import PRODUCT, TufRepo
from tinyward.link import chunks
from tinyward.update import errors
from tinyward.update.client import UpdateClient, UpdateClientConfig
from tinyward.update.fetcher import ChunkChannel
from tinyward.update.meta import Offer, Version

DEVICE = "ab" * 32


class Pump:
    """Plays the runner: one exchange at a time, each carrying the channel's request."""

    def __init__(self, channel: ChunkChannel, server: ChunkServer) -> None:
        self.channel, self.server = channel, server
        self.stop = threading.Event()
        self.requests: list[str] = []
        self.frames: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set() and seq < 20_000:
            seq += 1
            request = self.channel.request()
            self.requests.append(request.header())
            body = self.server.answer(DEVICE, request.header(), seq)
            self.frames.append(len(body))
            self.channel.answer(request, chunks.decode_frame(body, self.server.config.chunk_size))
            self.stop.wait(0.001)

    def __enter__(self) -> Pump:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _client(tmp_path: Path, repo: TufRepo, got: list, **kw: object) -> UpdateClient:
    return UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes, product_class=PRODUCT,
                        workdir=tmp_path / "device", on_verified=lambda *a: got.append(a),
                        config=UpdateClientConfig(chunk_size=256, chunk_timeout=30,
                                                  max_misses=3), **kw)


def test_a_verified_target_reaches_on_verified_in_fixed_size_frames(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    data = bytes(range(256)) * 9 + b"tail"  # not a multiple of the chunk size
    path = repo.add_target("model", "1.2.0", data)
    repo.publish()
    got: list = []
    client = _client(tmp_path, repo, got)
    server = ChunkServer(repo.dir, chunks_config(256))
    with Pump(client.channel, server) as pump:
        client.run(Offer("model", path, Version(1, 2, 0)))
    component, file, meta, length, _ = got[0]
    assert (component, length, meta.version) == ("model", len(data), Version(1, 2, 0))
    assert Path(file).read_bytes() == data
    assert set(map(len, pump.requests)) == {82}  # every request the same width
    assert set(pump.frames) == {chunks.frame_size(256)}  # every answer the same size
    assert client.status()["state"] == "staged"


def chunks_config(size: int):
    from tinyward.fleet.delivery import DeliveryConfig
    return DeliveryConfig(chunk_size=size)


def test_wrong_product_is_refused_before_the_target_is_fetched(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    path = repo.add_target("app", "2.0.0", b"x" * 5000, product_class="other-sensor")
    repo.publish()
    got: list = []
    client = _client(tmp_path, repo, got)
    with Pump(client.channel, ChunkServer(repo.dir, chunks_config(256))), \
            pytest.raises(errors.WrongProduct):
        client.run(Offer("app", path, Version(2, 0, 0)))
    assert got == []
    assert client.status()["why"] == "wrong-product"


def test_no_answer_is_slow_retrieval_not_a_hang(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    client = UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "d",
                          on_verified=lambda *a: None,
                          config=UpdateClientConfig(chunk_timeout=0.3))
    with pytest.raises(errors.SlowRetrieval):
        client.run(Offer("app", "app-1.0.0.bin", Version(1, 0, 0)))
    assert client.status()["state"] == "failed"


def test_an_agent_that_fails_is_said_not_silent(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    path = repo.add_target("config", "1.0.1", b"c" * 700)
    repo.publish()

    def agent(*args: object) -> None:
        raise OSError("no space left on device")
    client = UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "d", on_verified=agent,
                          config=UpdateClientConfig(chunk_size=256, chunk_timeout=30))
    with Pump(client.channel, ChunkServer(repo.dir, chunks_config(256))), \
            pytest.raises(OSError):
        client.run(Offer("config", path, Version(1, 0, 1)))
    assert client.status()["state"] == "failed"
    assert client.status()["why"] == "apply-failed"


def _scripted(channel: ChunkChannel,
              answer: Callable[[chunks.FetchRequest], chunks.Frame]) -> threading.Thread:
    """Plays a runner whose fleet answers each request with ``answer(request)``."""
    def run() -> None:
        while not channel.closed:
            request = channel.request()
            if not request.idle:
                channel.answer(request, answer(request))
            threading.Event().wait(0.001)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_chunk_past_the_length_the_fleet_declared_is_refused() -> None:
    from tuf.api import exceptions as tuf_errors

    from tinyward.update.fetcher import ChunkFetcher
    # The fleet says the file is 10 bytes long and sends a full 256-byte chunk: the bytes
    # past its own declared end are not the file's; they are refused, never handed on.
    channel = ChunkChannel()
    fetcher = ChunkFetcher(channel, chunk_size=256, timeout=5, max_misses=3)
    _scripted(channel, lambda r: chunks.Frame(0, chunks.DATA, r.handle, r.offset, 10,
                                              b"x" * 256))
    try:
        with pytest.raises(tuf_errors.DownloadError, match="past the 10 bytes the fleet declared"):
            list(fetcher._fetch("tinyward:/metadata/timestamp.json"))
    finally:
        channel.close()
    assert fetcher.fetched == 0


def test_a_chunk_ending_at_the_declared_length_is_taken_whole() -> None:
    from tinyward.update.fetcher import ChunkFetcher
    channel = ChunkChannel()
    fetcher = ChunkFetcher(channel, chunk_size=256, timeout=5, max_misses=3)
    body = bytes(range(256)) + b"tail"

    def answer(r: chunks.FetchRequest) -> chunks.Frame:
        return chunks.Frame(0, chunks.DATA, r.handle, r.offset, len(body),
                            body[r.offset:r.offset + 256])
    _scripted(channel, answer)
    try:
        got = b"".join(fetcher._fetch("tinyward:/metadata/timestamp.json"))
    finally:
        channel.close()
    assert got == body and fetcher.fetched == len(body)


def test_an_offer_of_an_unknown_component_is_ignored_not_reported() -> None:
    # Taken up, its target would stand in the report's upd as {"firmware": ...}, which the
    # report schema refuses: every report would go out without upd until the next offer.
    from tinyward.trust.report import UpdateStatus
    with pytest.raises(Exception, match="components are"):
        UpdateStatus.from_mapping({"state": "downloading", "ver": {},
                                   "tgt": {"firmware": "1.0.0"}})
    offers: list[Offer] = []
    channel = ChunkChannel(on_offer=offers.append)
    for component in ("firmware", "app"):
        channel.answer(chunks.IDLE_REQUEST, chunks.Frame(
            0, offer=chunks.OfferWire(component, f"{component}-1.0.0.tar", "1.0.0")))
    assert offers == [Offer("app", "app-1.0.0.tar", Version(1, 0, 0))]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_download_is_tried_again_after_its_backoff(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    path = repo.add_target("model", "1.2.0", b"m" * 900)
    repo.publish()
    got: list = []
    clock = FakeClock()
    client = UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "d",
                          on_verified=lambda *a: got.append(a), clock=clock,
                          config=UpdateClientConfig(chunk_size=256, chunk_timeout=0.2,
                                                    retry_after=60, max_retry_after=100))
    offer = Offer("model", path, Version(1, 2, 0))
    client.offer(offer)  # nobody answers: slow retrieval
    client.join(10)
    assert client.status()["state"] == "failed" and client.status()["why"] == "slow-retrieval"
    failed = client.last_error
    client.offer(offer)
    client.join(10)
    assert client.last_error is failed  # not before the backoff
    clock.now += 60
    with Pump(client.channel, ChunkServer(repo.dir, chunks_config(256))):
        client.offer(offer)
        client.join(30)
    assert client.status()["state"] == "staged" and len(got) == 1


def test_backoff_doubles_up_to_its_cap(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    clock = FakeClock()
    client = UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "d",
                          on_verified=lambda *a: None, clock=clock,
                          config=UpdateClientConfig(chunk_timeout=0.05, retry_after=10,
                                                    max_retry_after=25))
    offer = Offer("app", "app-1.0.0.bin", Version(1, 0, 0))
    waits = []
    client.offer(offer)  # the first try, failing at once
    client.join(10)
    for _ in range(3):
        start, failed = clock.now, client.last_error
        assert failed is not None
        # Step the clock a second at a time until an offer starts a new try. A try is
        # told by its own refusal (a new object after join), not by catching the thread
        # alive, which a loaded machine could miss.
        while client.last_error is failed and clock.now - start < 100:
            clock.now += 1
            client.offer(offer)
            client.join(10)
        waits.append(clock.now - start)
    assert waits == [10, 20, 25]


def test_a_refused_target_is_not_tried_again(tmp_path: Path) -> None:
    repo = TufRepo(tmp_path / "repo")
    path = repo.add_target("app", "2.0.0", b"x" * 500, product_class="other-sensor")
    repo.publish()
    clock = FakeClock()
    client = UpdateClient(device_id=DEVICE, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "d",
                          on_verified=lambda *a: None, clock=clock,
                          config=UpdateClientConfig(chunk_size=256, chunk_timeout=30))
    offer = Offer("app", path, Version(2, 0, 0))
    with Pump(client.channel, ChunkServer(repo.dir, chunks_config(256))):
        client.offer(offer)
        client.join(30)
        assert client.status()["why"] == "wrong-product"
        refused = client.last_error
        clock.now += 10**6
        client.offer(offer)
        client.join(30)
        assert client.last_error is refused  # no new try (a try would leave its own refusal)


def test_attack_server_answering_each_chunk_just_in_time_hits_the_overall_deadline() -> None:
    from tuf.api import exceptions as tuf_errors

    from tinyward.update.fetcher import ChunkFetcher
    channel = ChunkChannel()
    clock = FakeClock()

    def slow_but_on_time(request: chunks.FetchRequest) -> chunks.Frame:
        clock.now += 50  # within the per-chunk timeout every time
        return chunks.Frame(0, chunks.DATA, request.handle, request.offset, 10**6,
                            b"z" * 256)
    thread = _scripted(channel, slow_but_on_time)
    fetcher = ChunkFetcher(channel, chunk_size=256, timeout=60, deadline=clock.now + 500,
                           clock=clock)
    try:
        with pytest.raises(tuf_errors.SlowRetrievalError, match="overall deadline"):
            list(fetcher._fetch("tinyward:/targets/x"))
        assert fetcher.fetched <= 11 * 256  # it stopped after about 500 / 50 chunks
    finally:
        channel.close()
        thread.join(5)
