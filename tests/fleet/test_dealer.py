"""The connection dealer: one worker accepts, every worker gets its share, none is lost.

Real sockets, real TLS 1.3 with the fleet's admin listener context (no client certificate:
dealing is the same on both listeners); the "other worker" is a second dealer on its end
of a real SOCK_SEQPACKET channel (in the same loop, which the dealer cannot tell from
another process).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import ConnectionDealer, admin_ssl_context, bind


class _Counting(asyncio.Protocol):
    """Counts the connections whose TLS handshake finished, per dealer."""

    def __init__(self, made: list[int]) -> None:
        self._made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._made.append(1)


async def _connect(port: int, context: ssl.SSLContext) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                              server_hostname="127.0.0.1")
    writer.close()


async def _deal(
    fleet: Fleet, clients: int, *, worker_alive: bool
) -> tuple[list[int], list[int], list[int]]:
    server_context = admin_ssl_context(fleet)
    client_context = ssl.create_default_context(cafile=str(fleet.root_ca_path))
    listening = bind("127.0.0.1", 0)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    here: list[int] = []
    there: list[int] = []
    accepting = ConnectionDealer(lambda: _Counting(here), server_context, 10.0,
                                 listening=listening, workers=[ours])
    dealt_to = ConnectionDealer(lambda: _Counting(there), server_context, 10.0,
                                dealt_from=theirs)
    accepting.start()
    if worker_alive:
        dealt_to.start()
    else:
        theirs.close()
    try:
        port = listening.getsockname()[1]
        await asyncio.wait_for(
            asyncio.gather(*(_connect(port, client_context) for _ in range(clients))), 30)
        for _ in range(200):  # the server side finishes its handshakes a moment later
            if len(here) + len(there) == clients:
                break
            await asyncio.sleep(0.02)
    finally:
        await accepting.close()
        if worker_alive:
            await dealt_to.close()
        ours.close()
    return accepting.dealt, here, there


def test_connections_are_dealt_round_robin(fleet: Fleet) -> None:
    dealt, here, there = asyncio.run(_deal(fleet, 8, worker_alive=True))
    assert dealt == [4, 4]
    assert (len(here), len(there)) == (4, 4)  # every one completed its TLS handshake


def test_a_dead_worker_costs_no_connection(fleet: Fleet) -> None:
    dealt, here, there = asyncio.run(_deal(fleet, 5, worker_alive=False))
    assert dealt == [5, 0]
    assert (len(here), len(there)) == (5, 0)


def test_a_dealer_must_either_accept_or_be_dealt_to(fleet: Fleet) -> None:
    context = admin_ssl_context(fleet)
    with pytest.raises(ValueError, match="either accepts"):
        ConnectionDealer(asyncio.Protocol, context, 10.0)


def test_a_worker_hears_when_its_dealer_is_gone(fleet: Fleet) -> None:
    # The accepting worker killed (even by SIGKILL) closes its end of the channel: the
    # other workers must notice and stop instead of living on as orphans.
    async def run() -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gone = asyncio.Event()
        dealt_to = ConnectionDealer(asyncio.Protocol, admin_ssl_context(fleet), 10.0,
                                    dealt_from=theirs, on_dealer_gone=gone.set)
        dealt_to.start()
        ours.close()
        try:
            await asyncio.wait_for(gone.wait(), 10)
        finally:
            await dealt_to.close()
        return gone.is_set()

    assert asyncio.run(run())


def test_a_client_that_is_not_tls_costs_nothing_but_its_own_connection(fleet: Fleet) -> None:
    # Junk instead of a ClientHello fails that connection's handshake, quietly; the dealer
    # keeps accepting, and the next real client is served.
    async def run() -> list[int]:
        server_context = admin_ssl_context(fleet)
        listening = bind("127.0.0.1", 0)
        made: list[int] = []
        dealer = ConnectionDealer(lambda: _Counting(made), server_context, 10.0,
                                  listening=listening)
        dealer.start()
        port = listening.getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)))
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # the server hangs up …
            assert len(answer) < 64  # … with at most a TLS alert, no HTTP
            writer.close()
            await _connect(port, ssl.create_default_context(cafile=str(fleet.root_ca_path)))
            for _ in range(200):
                if made:
                    break
                await asyncio.sleep(0.02)
        finally:
            await dealer.close()
        return made

    assert asyncio.run(run()) == [1]
