"""The fleet's chunk server (fleet/delivery.py): only the repository's files, one chunk per
answer, every answer the same size."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from tinyward.fleet.delivery import ChunkServer, DeliveryConfig
from tinyward.link import chunks
from tinyward.update.meta import Offer, Version

DEVICE = "cd" * 32


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "metadata").mkdir(parents=True)
    (repo / "targets").mkdir()
    (repo / "metadata" / "1.root.json").write_bytes(b"r" * 3000)
    (repo / "targets" / "abc.app-1.0.0.bin").write_bytes(os.urandom(5000))
    return repo


def _ask(server: ChunkServer, path: str, offset: int = 0) -> chunks.Frame:
    request = chunks.FetchRequest(chunks.path_handle(path), offset)
    body = server.answer(DEVICE, request.header(), 7)
    assert len(body) == server.frame_size
    return chunks.decode_frame(body, server.config.chunk_size)


def test_a_file_comes_one_chunk_per_answer(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    server = ChunkServer(repo)
    data = (repo / "targets" / "abc.app-1.0.0.bin").read_bytes()
    got, offset = b"", 0
    while offset < len(data):
        frame = _ask(server, "targets/abc.app-1.0.0.bin", offset)
        assert frame.status == chunks.DATA and frame.total == 5000 and frame.stored_seq == 7
        assert len(frame.data) <= 1024
        got += frame.data
        offset += len(frame.data)
    assert got == data


@pytest.mark.parametrize("path", ["metadata/../../secret", "../secret", "secret",
                                  "targets/link", "targets/sub/file", "metadata/2.root.json",
                                  "keys/ca.key", "/etc/passwd"])
def test_nothing_outside_the_repositorys_two_folders_is_served(tmp_path: Path,
                                                               path: str) -> None:
    repo = _repo(tmp_path)
    (tmp_path / "secret").write_bytes(b"fleet secret")
    (repo / "keys").mkdir()
    (repo / "keys" / "ca.key").write_bytes(b"key")
    (repo / "targets" / "link").symlink_to(tmp_path / "secret")
    (repo / "targets" / "sub").mkdir()
    (repo / "targets" / "sub" / "file").write_bytes(b"nested")
    frame = _ask(ChunkServer(repo), path)
    assert frame.status == chunks.NOT_FOUND and frame.data == b""


def test_a_file_published_later_is_found(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    server = ChunkServer(repo, DeliveryConfig(rescan_after=0.0))
    assert _ask(server, "metadata/timestamp.json").status == chunks.NOT_FOUND
    (repo / "metadata" / "timestamp.json").write_bytes(b"{}")
    assert _ask(server, "metadata/timestamp.json").data == b"{}"


def test_bad_requests_get_a_frame_of_the_same_size(tmp_path: Path) -> None:
    server = ChunkServer(_repo(tmp_path))
    for header in ("junk", "0" * 82, "01" + "00" * 40):
        body = server.answer(DEVICE, header, 1)
        assert len(body) == server.frame_size
    assert _ask(server, "metadata/1.root.json", 999_999).status == chunks.BAD_REQUEST


def test_no_repository_is_not_found_not_an_error(tmp_path: Path) -> None:
    assert _ask(ChunkServer(tmp_path / "none"), "metadata/1.root.json").status == \
        chunks.NOT_FOUND


def test_the_offer_rides_in_every_frame_and_a_failing_hook_costs_nothing(
        tmp_path: Path) -> None:
    offer = Offer("model", "model-1.2.0.bin", Version(1, 2, 0))
    asked: list[tuple[str, dict[str, str]]] = []

    def rollout(device: str, installed: Mapping[str, str]) -> Offer | None:
        asked.append((device, dict(installed)))
        return offer
    server = ChunkServer(_repo(tmp_path), offers=rollout)
    idle = chunks.IDLE_REQUEST.header()
    frame = chunks.decode_frame(server.answer(DEVICE, idle, 1, installed={"model": "1.1.0"}))
    assert frame.offer == chunks.OfferWire("model", "model-1.2.0.bin", "1.2.0")
    assert asked == [(DEVICE, {"model": "1.1.0"})]  # from the report the frame answers
    # A report sent again (nothing known of it): no offer, the hook is not asked.
    assert chunks.decode_frame(server.answer(DEVICE, idle, 1, "replay")).offer is None
    assert len(asked) == 1

    def broken(device: str, installed: Mapping[str, str]) -> Offer | None:
        raise RuntimeError("rollout bug")
    body = ChunkServer(_repo(tmp_path / "b"), offers=broken).answer(DEVICE, idle, 1,
                                                                    installed={})
    assert chunks.decode_frame(body).offer is None
    long = ChunkServer(_repo(tmp_path / "c"),
                       offers=lambda d, i: Offer("app", "x" * 500, Version(1, 0, 0)))
    assert chunks.decode_frame(long.answer(DEVICE, idle, 1, installed={})).offer is None


def test_an_idle_answer_does_the_work_of_a_chunk(tmp_path: Path) -> None:
    # Timing is measured by `tinyward bench update`; here, that the work is the same:
    # an idle answer opens and reads one chunk of a served file, as a chunk's answer does.
    reads: list[chunks.FetchRequest] = []

    class Counting(ChunkServer):
        def _read(self, request: chunks.FetchRequest) -> tuple[int, int, bytes]:
            reads.append(request)
            return super()._read(request)

    server = Counting(_repo(tmp_path))
    _ask(server, "metadata/1.root.json")
    server.answer(DEVICE, chunks.IDLE_REQUEST.header(), 1)
    assert len(reads) == 2 and reads[1].handle in (
        chunks.path_handle("metadata/1.root.json"),
        chunks.path_handle("targets/abc.app-1.0.0.bin"))


def test_a_fifo_swapped_in_after_the_listing_does_not_block_the_answer(
        tmp_path: Path) -> None:
    # Between the allow-list lookup and the open, the listed file becomes a FIFO: a
    # blocking open would hang the answer until some writer came along.
    import threading

    repo = _repo(tmp_path)
    target = repo / "targets" / "abc.app-1.0.0.bin"

    class Swapping(ChunkServer):
        def _lookup(self, handle: bytes) -> Path | None:
            found = super()._lookup(handle)
            if found == target and not target.is_fifo():
                target.unlink()
                os.mkfifo(target)
            return found

    server = Swapping(repo)
    frames: list[chunks.Frame] = []
    asking = threading.Thread(
        target=lambda: frames.append(_ask(server, "targets/abc.app-1.0.0.bin")), daemon=True)
    asking.start()
    asking.join(5)
    blocked = asking.is_alive()
    if blocked:  # stuck in open(): let it go, then fail
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
        asking.join(5)
    assert not blocked
    assert frames and frames[0].status == chunks.NOT_FOUND and frames[0].data == b""
