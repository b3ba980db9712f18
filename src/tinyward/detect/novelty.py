"""Peer and service novelty: a bounded, learned set of whom the device talks to, and how.

A device that trusts no network still knows its peers. At fit time every benign packet
gives one **service tuple** — the unordered pair of IP addresses, the IP protocol and
the *service port* (the lower of the two ports: the server's well-known port, not the
client's ephemeral one; 0 without ports) — and the set keeps a 64-bit keyed hash of
each distinct tuple. At score time a packet whose tuple's hash is not in the set is
*novel*. Nothing but the hash is kept: no address or port ever becomes a feature value,
and the hash is keyed so that it is not a function of the addresses alone.

**Hash.** BLAKE2s (RFC 7693) with a per-model random 16-byte key and an 8-byte digest
(``hashlib.blake2s``), read little-endian as an unsigned 64-bit number. BLAKE2s rather
than BLAKE2b because its 32-bit words suit a Cortex-M4; the C export
(:mod:`.novelty_c`) implements the same standard function and is checked against
hashlib. Why a key, when the peers' addresses are no secret from an attacker on the
same network (they can watch the traffic)? The key is not what protects the set:
an attacker who can spoof a known peer's address is not novel, and novelty never
claims otherwise (the link's mutual TLS and the statistical detector are the defences
there). The key does two smaller things: (1) without it, anyone could search offline
for an (address, port) that collides with a known tuple in the stored hash — cheap if
the hash were short; with it, a collision needs the key, which never leaves the device
and the model file; (2) a leaked model file alone reveals no peer addresses (with the
key too, IPv4 peers can be recovered by brute force over 2**32 x ports: treat a model
file with its key as confidential, like the device's configuration).

**Bounds.** A sorted array of at most ``capacity`` unsigned 64-bit hashes (8 bytes
each; 256 by default: 2 KiB), looked up by binary search (at most ``ceil(log2 n)+1``
compares). False "known" rate for a random new tuple: ``n / 2**64`` (negligible; a
Bloom filter of the same bytes would give ~2 % at n = 256). **At capacity**: if the
benign training data holds more distinct tuples than ``capacity``, the set keeps the
``capacity`` most frequent (ties by hash) and records in :attr:`NoveltySet.dropped`
how many tuples and training packets were left out; those tuples will be novel, so
they alarm at score time — the caller must say so (the bench and CLI print it) and
may raise the capacity.

**Cost per packet**: one BLAKE2s compression (the key block is compressed once, at
start-up) — 10 rounds x 8 G functions x 14 32-bit operations plus finalisation,
:data:`OPS_PER_PACKET` — and one binary search.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.pcap import Packet

KEY_BYTES = 16
DIGEST_BYTES = 8
DEFAULT_CAPACITY = 256
MAX_CAPACITY = 1 << 16
_PORTS = (6, 17, 132)  # TCP, UDP, SCTP carry ports

# One BLAKE2s compression: 10 rounds x 8 G x (6 adds, 4 xors, 4 rotates) + 16 feed-forward
# xors + the 16-word message load; plus building the <= 35-byte message.
HASH_OPS = 10 * 8 * 14 + 16 + 16 + 35
OPS_PER_PACKET = HASH_OPS + 17  # binary search over <= 65,536 hashes: <= 17 compares


GRANULARITIES = ("pair", "service")


def service_tuple(packet: Packet, granularity: str = "pair") -> bytes:
    """The bytes hashed for ``packet``, the same for both directions of a conversation.

    ``pair``: lower address, higher address, protocol, service port (big-endian).
    ``service``: the server's address only (the side with the service port; the lower
    address when both ports are equal), protocol, service port — for a network where
    new *clients* of known services are benign (MQTTset's test clients are hosts never
    seen in training).
    """
    ports = packet.proto in _PORTS
    port = min(packet.sport, packet.dport) if ports else 0
    tail = bytes((packet.proto,)) + port.to_bytes(2, "big")
    if granularity == "service":
        if ports and packet.sport != packet.dport:
            server = packet.src if packet.sport < packet.dport else packet.dst
        else:
            server = min(packet.src, packet.dst)
        return server + tail
    lo, hi = sorted((packet.src, packet.dst))
    return lo + hi + tail


def keyed_hash(key: bytes, data: bytes) -> int:
    """BLAKE2s-64 of ``data`` under ``key``, as an unsigned little-endian integer."""
    digest = hashlib.blake2s(data, key=key, digest_size=DIGEST_BYTES).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Dropped:
    """What fitting left out at capacity: distinct tuples and training packets."""

    tuples: int = 0
    packets: int = 0


class NoveltySet:
    """The learned set of service-tuple hashes (see the module docstring)."""

    def __init__(self, key: bytes, hashes: Iterable[int], capacity: int = DEFAULT_CAPACITY,
                 dropped: Dropped = Dropped(), granularity: str = "pair") -> None:
        if granularity not in GRANULARITIES:
            raise DetectMisuse(f"granularity {granularity!r}: choose one of {GRANULARITIES}")
        self.granularity = granularity
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise DetectMisuse(f"the novelty key must be {KEY_BYTES} bytes")
        if not (isinstance(capacity, int) and 1 <= capacity <= MAX_CAPACITY):
            raise DetectMisuse(f"capacity={capacity!r} must be an integer in 1..{MAX_CAPACITY}")
        values = sorted(set(int(h) for h in hashes))
        if len(values) > capacity:
            raise DetectMisuse(f"{len(values)} hashes do not fit a capacity of {capacity}")
        if values and not (values[0] >= 0 and values[-1] < 1 << 64):
            raise DetectMisuse("a hash outside 0..2**64-1")
        self.key = key
        self.capacity = capacity
        self.hashes = np.asarray(values, dtype=np.uint64)
        self.dropped = dropped

    @classmethod
    def fit(cls, packets: Sequence[Packet], *, capacity: int = DEFAULT_CAPACITY,
            key: bytes | None = None, granularity: str = "pair") -> NoveltySet:
        """Learn the tuples of BENIGN ``packets``; a fresh random key unless given.

        At capacity the most frequent tuples are kept (see :attr:`dropped`).
        """
        key = os.urandom(KEY_BYTES) if key is None else key
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise DetectMisuse(f"the novelty key must be {KEY_BYTES} bytes")
        if granularity not in GRANULARITIES:
            raise DetectMisuse(f"granularity {granularity!r}: choose one of {GRANULARITIES}")
        counts = Counter(keyed_hash(key, service_tuple(p, granularity)) for p in packets)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept, left = ranked[:capacity], ranked[capacity:]
        dropped = Dropped(len(left), sum(n for _, n in left))
        return cls(key, (h for h, _ in kept), capacity, dropped, granularity)

    def __len__(self) -> int:
        return len(self.hashes)

    def hash_of(self, packet: Packet) -> int:
        return keyed_hash(self.key, service_tuple(packet, self.granularity))

    def novel(self, packets: Sequence[Packet]) -> np.ndarray:
        """A boolean per packet: True when its tuple was not learned."""
        if not packets:
            return np.zeros(0, dtype=bool)
        wanted = np.fromiter((self.hash_of(p) for p in packets), dtype=np.uint64,
                             count=len(packets))
        if len(self.hashes) == 0:
            return np.ones(len(packets), dtype=bool)
        at = np.searchsorted(self.hashes, wanted)
        found = self.hashes[np.minimum(at, len(self.hashes) - 1)] == wanted
        return np.asarray(~found, dtype=bool)

    def nbytes(self) -> int:
        """Bytes on the device: the sorted hashes (8 each) and the 16-byte key."""
        return DIGEST_BYTES * len(self.hashes) + KEY_BYTES

    @staticmethod
    def ops_per_packet(n: int = DEFAULT_CAPACITY) -> int:
        return HASH_OPS + math.ceil(math.log2(max(n, 1))) + 1

    def to_doc(self) -> dict[str, object]:
        return {"key": self.key.hex(), "capacity": self.capacity,
                "granularity": self.granularity,
                "hashes": [int(h) for h in self.hashes],
                "dropped": {"tuples": self.dropped.tuples, "packets": self.dropped.packets}}

    @classmethod
    def from_doc(cls, doc: object) -> NoveltySet:
        """Rebuild from :meth:`to_doc` output (hostile input). Raises DetectMisuse."""
        if not isinstance(doc, dict):
            raise DetectMisuse("bad novelty set: not an object")
        try:
            key = bytes.fromhex(doc["key"])
            hashes = doc["hashes"]
            capacity = doc["capacity"]
            if not isinstance(hashes, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in hashes
            ):
                raise DetectMisuse("'hashes' is not a list of integers")
            if len(hashes) > MAX_CAPACITY:
                raise DetectMisuse("too many hashes")
            d = doc.get("dropped", {})
            dropped = Dropped(int(d.get("tuples", 0)), int(d.get("packets", 0)))
            granularity = doc.get("granularity", "pair")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DetectMisuse(f"bad novelty set: {error!r}") from None
        return cls(key, hashes, capacity, dropped, granularity)
