"""The persistent store-and-forward queue of signed reports, in protected storage.

Reports are numbered, signed and stored *before* anyone tries to send them, and leave the
queue only when the fleet server's acknowledgement (``stored_seq``: the highest sequence
number it has durably stored for this device) covers them. So a server that is down, a cut
network or a device that loses power loses nothing that was acknowledged, and everything
else is sent again, in order; the server's strict sequence check turns "at least once"
into "exactly once in storage".

Layout (records of :class:`~tinyward.trust.storage.ProtectedStorage`, each AEAD-sealed,
atomically written and rollback-checked)::

    link.queue.meta        {"v": 1, "capacity": N, "next_seq": s, "acked": a, "dropped": d}
    link.queue.slot.NNNN   {"seq": s, "report": <signed report bytes>}   for NNNN = s mod N

A ring of ``capacity`` slots: the report numbered ``s`` lives in slot ``s mod capacity``.
A slot whose ``seq`` is at most ``acked`` is free. The queue is rebuilt on open by reading
the slots, so no separate index can disagree with them.

Sequence numbers are **reserved before use**: :meth:`ReportQueue.reserve` commits
``next_seq`` to storage before the caller signs anything with the number, so a number is
never reused after a crash or restart. A crash between reserving and storing leaves a gap,
which the server accepts (it needs strictly increasing numbers, not consecutive ones).

**Full-queue policy: drop the oldest unacknowledged report, and count it.** When the
server has been unreachable for ``capacity`` reports, reserving the next number frees the
slot of the oldest unacknowledged report (the newest data is worth more than the oldest).
Each drop adds one to ``dropped``, a running total committed with the reservation, which
every later report carries in its incidents as ``dropped_reports``; a running total (not a
per-report delta) means a report that is itself dropped cannot hide earlier drops. The
server also sees the gap in sequence numbers. A crash between reserving and storing can
count one drop that did not happen: the count errs high, never low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from tinyward.errors import Misuse
from tinyward.link.errors import QueueDamaged

FORMAT_VERSION = 1
META_RECORD = "link.queue.meta"


class RecordStore(Protocol):
    """The part of ProtectedStorage the queue uses."""

    def write(self, name: str, value: bytes) -> int: ...

    def read(self, name: str) -> bytes: ...

    def exists(self, name: str) -> bool: ...


@dataclass(frozen=True)
class QueueConfig:
    """Capacity of the queue in reports (about ``capacity * report size`` bytes on disk)."""

    capacity: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.capacity, int) or not 1 <= self.capacity <= 9999:
            raise Misuse(f"queue capacity must be 1..9999 reports, not {self.capacity!r}")


@dataclass(frozen=True)
class Reservation:
    """A sequence number committed for one report, and the drop total to put in it."""

    seq: int
    dropped_reports: int


def _slot_name(index: int) -> str:
    return f"link.queue.slot.{index:04d}"


class ReportQueue:
    """See the module docstring. Not thread-safe: one runner owns a device's queue."""

    def __init__(self, storage: RecordStore, config: QueueConfig | None = None) -> None:
        """Open (or create) the queue in ``storage``.

        Raises:
            QueueDamaged: the records are unreadable or inconsistent.
            tinyward.trust.errors.StorageError: a record failed authentication or rollback.
        """
        self._storage = storage
        config = config or QueueConfig()
        if storage.exists(META_RECORD):
            meta = self._load_meta()
            if meta["capacity"] != config.capacity:
                # Slot positions depend on the capacity; changing it needs a drained queue.
                raise QueueDamaged(
                    f"the queue was created with capacity {meta['capacity']}, not "
                    f"{config.capacity}; drain it (let the server acknowledge everything) "
                    "before changing the capacity"
                )
            self._next_seq, self._acked, self._dropped = (
                meta["next_seq"], meta["acked"], meta["dropped"])
        else:
            self._next_seq, self._acked, self._dropped = 1, 0, 0
        self._capacity = config.capacity
        # seq -> report, for every unacknowledged stored report.
        self._entries: dict[int, bytes] = {}
        for index in range(self._capacity):
            name = _slot_name(index)
            if not storage.exists(name):
                continue
            seq, report = self._load_slot(name, index)
            if self._acked < seq < self._next_seq:
                self._entries[seq] = report
        if not storage.exists(META_RECORD):
            self._save_meta()

    # ---- records ---------------------------------------------------------------------

    def _load_meta(self) -> dict[str, int]:
        try:
            meta: Any = cbor2.loads(self._storage.read(META_RECORD))
        except cbor2.CBORDecodeError as error:
            raise QueueDamaged(f"queue metadata is not CBOR: {error}") from None
        keys = {"v", "capacity", "next_seq", "acked", "dropped"}
        if (not isinstance(meta, dict) or set(meta) != keys
                or not all(isinstance(meta[k], int) and not isinstance(meta[k], bool)
                           for k in keys)
                or meta["v"] != FORMAT_VERSION or not 1 <= meta["next_seq"]
                or not 0 <= meta["acked"] or meta["dropped"] < 0):
            raise QueueDamaged("queue metadata does not have the expected fields and values")
        return meta

    def _save_meta(self) -> None:
        self._storage.write(META_RECORD, cbor2.dumps({
            "v": FORMAT_VERSION, "capacity": self._capacity, "next_seq": self._next_seq,
            "acked": self._acked, "dropped": self._dropped,
        }))

    def _load_slot(self, name: str, index: int) -> tuple[int, bytes]:
        try:
            slot: Any = cbor2.loads(self._storage.read(name))
        except cbor2.CBORDecodeError as error:
            raise QueueDamaged(f"queue slot {index} is not CBOR: {error}") from None
        if (not isinstance(slot, dict) or set(slot) != {"seq", "report"}
                or not isinstance(slot["seq"], int) or not isinstance(slot["report"], bytes)
                or slot["seq"] < 1 or slot["seq"] % self._capacity != index):
            raise QueueDamaged(f"queue slot {index} does not hold a numbered report")
        return slot["seq"], slot["report"]

    # ---- the queue -------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def dropped(self) -> int:
        """Reports dropped because the queue was full (running total, persisted)."""
        return self._dropped

    @property
    def acked(self) -> int:
        """The highest sequence number the server has acknowledged."""
        return self._acked

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def __len__(self) -> int:
        return len(self._entries)

    def reserve(self) -> Reservation:
        """Commit the next sequence number (and any drop it causes) before it is used.

        Raises:
            tinyward.trust.errors.StorageError: storage refused the write.
        """
        seq = self._next_seq
        victim = seq - self._capacity
        if victim in self._entries:
            # The ring is full: this number's slot holds the oldest unacknowledged report.
            self._dropped += 1
        self._next_seq = seq + 1
        self._save_meta()
        self._entries.pop(victim, None)
        return Reservation(seq, self._dropped)

    def put(self, seq: int, report: bytes) -> None:
        """Store the signed ``report`` numbered ``seq`` (which :meth:`reserve` returned).

        Raises:
            Misuse: ``seq`` was not reserved, or is already stored.
        """
        if not self._acked < seq < self._next_seq or seq in self._entries:
            raise Misuse(f"sequence number {seq} was not reserved or is already queued")
        if seq <= self._next_seq - 1 - self._capacity:
            raise Misuse(f"sequence number {seq} is older than the ring holds")
        self._storage.write(_slot_name(seq % self._capacity),
                            cbor2.dumps({"seq": seq, "report": bytes(report)}))
        self._entries[seq] = bytes(report)

    def oldest(self) -> tuple[int, bytes] | None:
        """The oldest unacknowledged report, or None if everything is acknowledged."""
        if not self._entries:
            return None
        seq = min(self._entries)
        return seq, self._entries[seq]

    def pending(self) -> list[tuple[int, bytes]]:
        """Every unacknowledged report, oldest first."""
        return [(seq, self._entries[seq]) for seq in sorted(self._entries)]

    def acknowledge(self, stored_seq: int) -> int:
        """The server holds everything up to ``stored_seq``: free those reports.

        Returns how many reports left the queue. An acknowledgement at or below the
        current one changes nothing; one above ``next_seq - 1`` is refused (the server
        claims reports this device never made).

        Raises:
            QueueDamaged: ``stored_seq`` is beyond any number this device has used.
        """
        if stored_seq <= self._acked:
            return 0
        if stored_seq >= self._next_seq:
            raise QueueDamaged(
                f"the server acknowledges report {stored_seq}, but this device has only "
                f"numbered up to {self._next_seq - 1}: it is not this device's history "
                "(a restored backup of the device, or a server talking about another device)"
            )
        self._acked = stored_seq
        self._save_meta()
        freed = [seq for seq in self._entries if seq <= stored_seq]
        for seq in freed:
            del self._entries[seq]
        return len(freed)

    def drop_oldest(self) -> int | None:
        """Remove the oldest report, which the server refused for good; count it as dropped.

        Only the oldest can be refused (reports go out in order), so the queue marks it as
        done by moving ``acked`` to it. Returns its number, or None if the queue is empty.
        """
        head = self.oldest()
        if head is None:
            return None
        seq = head[0]
        self._dropped += 1
        self._acked = seq
        self._save_meta()
        del self._entries[seq]
        return seq

__all__ = ["QueueConfig", "ReportQueue", "Reservation"]
