"""Fuzz the link's parsers of outside input: server answers, TLS framing, queue records."""

from __future__ import annotations

import ssl
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyward.lab.proxy import _Framer
from tinyward.link.client import ReportLink
from tinyward.link.errors import LinkError
from tinyward.link.queue import META_RECORD, QueueConfig, ReportQueue
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage


def _link() -> ReportLink:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return ReportLink("https://127.0.0.1:1", context, bytes(32))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(status=st.integers(100, 599),
       body=st.one_of(st.binary(max_size=200),
                      json_values.map(lambda v: __import__("json").dumps(v).encode()),
                      st.integers(-5, 10**20).map(
                          lambda n: b'{"stored_seq": %d}' % n)))
def test_any_server_answer_is_an_ack_or_a_link_error(status: int, body: bytes) -> None:
    link = _link()
    try:
        stored = link._answer(status, body)
    except LinkError:
        return
    assert status in (200, 409) and isinstance(stored, int) and stored >= 0


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_tls_framing_never_fails_and_never_invents_bytes(chunks: list[bytes]) -> None:
    framer = _Framer()
    records = [r for chunk in chunks for r in framer.feed(chunk)]
    assert sum(length for _, length in records) <= sum(map(len, chunks))
    assert all(length >= 5 for _, length in records)


@pytest.fixture(scope="module")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzzq")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=json_values | st.dictionaries(
    st.sampled_from(["v", "capacity", "next_seq", "acked", "dropped", "reported",
                     "last_delta", "x"]), st.integers(-3, 5) | st.booleans(), max_size=8))
def test_damaged_queue_metadata_is_refused_with_queue_damaged(storage_dir: Path,
                                                              meta: object) -> None:
    from tinyward.link.errors import QueueDamaged

    key = storage_dir / "root.key"
    root = (FileRootOfTrust(key, storage_dir / "c") if key.exists()
            else FileRootOfTrust.create(key, storage_dir / "c"))
    storage = ProtectedStorage(storage_dir / "s", root)
    storage.write(META_RECORD, cbor2.dumps(meta))
    try:
        queue = ReportQueue(storage, QueueConfig(capacity=4))
    except QueueDamaged:
        return
    assert 0 <= queue.acked < queue.next_seq and queue.owed >= 0
