"""The persistent store-and-forward queue of signed reports, in protected storage.

Reports are numbered, signed and stored *before* anyone tries to send them, and leave the
queue only when the fleet server's acknowledgement (``stored_seq``: the highest sequence
number it has durably stored for this device) covers them. So a server that is down, a cut
network or a device that loses power loses nothing that was acknowledged, and everything
else is sent again, in order; the server's strict sequence check turns "at least once"
into "exactly once in storage".

Layout (records of :class:`~tinyward.trust.storage.ProtectedStorage`, each AEAD-sealed,
atomically written and rollback-checked)::

    link.queue.meta        {"v": 2, "capacity": N, "next_seq": s, "acked": a,
                            "dropped": d, "reported": r, "last_delta": x,
                            "open": o, "open_victim": w}
    link.queue.slot.NNNN   {"seq": s, "report": <signed bytes>, "carried": c}  for NNNN = s mod N

A ring of ``capacity`` slots: the report numbered ``s`` lives in slot ``s mod capacity``.
A slot whose ``seq`` is at most ``acked`` is free. The queue is rebuilt from the slots, so
no separate index can disagree with them -- and rebuilt **before every change**, inside one
storage transaction (the folder's cross-process lock), because other processes share the
series: a readout taking numbers for offline (QR) reports
(:meth:`ReportQueue.reserve_offline`) while ``device run`` keeps its queue open. A queue
that trusted its memory would hand out a number already taken, and the fleet would refuse
one of the two reports as a replay.

Sequence numbers are **reserved before use**: :meth:`ReportQueue.reserve` commits
``next_seq`` to storage before the caller signs anything with the number, so a number is
never reused after a crash or restart. A crash between reserving and storing leaves a gap,
which the server accepts (it needs strictly increasing numbers, not consecutive ones).

**Full-queue policy: drop the oldest unacknowledged report, and count it.** When the
server has been unreachable for ``capacity`` reports, reserving the next number frees the
slot of the oldest unacknowledged report (the newest data is worth more than the oldest).
Each drop adds one to ``dropped`` (a running total, committed with the reservation). Like
every incident count, ``dropped_reports`` in a report's incidents is a *delta*: the drops
not yet told in an earlier stored report (``dropped - reported``), and the fleet sums them.
A report that carried a count (``carried``) and is then dropped itself gives its count
back, so no drop goes untold. The runner's latest reservation is recorded (``open``, with
the report it displaced, ``open_victim``, which is hidden until the new report replaces it
in its slot); one whose report was never stored (a crash in between) gives its count back
when the runner reopens the queue, and the drop it caused is undone (the displaced report
is still in its slot). That recovery is committed, so it happens once. Offline numbers
take no slot and displace nothing. The server also sees the gap in sequence numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from tinyward.errors import Misuse
from tinyward.link.errors import QueueDamaged

FORMAT_VERSION = 2
META_RECORD = "link.queue.meta"
SLOT_PREFIX = "link.queue.slot."


class RecordStore(Protocol):
    """The part of ProtectedStorage the queue uses."""

    def write(self, name: str, value: bytes) -> int: ...

    def read(self, name: str) -> bytes: ...

    def exists(self, name: str) -> bool: ...

    def version(self, name: str) -> int: ...

    def transaction(self) -> AbstractContextManager[None]: ...


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
    return f"{SLOT_PREFIX}{index:04d}"


def _from_format_1(meta: dict[Any, Any]) -> dict[Any, Any]:
    """Format 1 recorded no open reservation: its last number, if not stored, was one."""
    last, acked, capacity = meta.get("next_seq"), meta.get("acked"), meta.get("capacity")
    if (not isinstance(last, int) or not isinstance(acked, int)
            or not isinstance(capacity, int) or "open" in meta):
        return meta  # refused by the checks that follow
    last -= 1
    opened = last > acked
    return {**meta, "v": FORMAT_VERSION, "open": last if opened else 0,
            "open_victim": max(last - capacity, 0) if opened else 0}


class ReportQueue:
    """See the module docstring.

    Safe across processes sharing the device folder: every change (reserve, put,
    acknowledge, drop) runs in one storage transaction that first reloads the queue from
    storage, so a number another process took meanwhile is never handed out again.
    Reading (:meth:`pending`, :attr:`acked`, ...) shows the state as of this queue's last
    change or :meth:`refresh`. Not thread-safe: one runner owns a device's queue.
    ``unsafe_stale`` (tests only) skips the reload, to show the race it closes.
    """

    _META_KEYS = frozenset({"v", "capacity", "next_seq", "acked", "dropped", "reported",
                            "last_delta", "open", "open_victim"})

    def __init__(self, storage: RecordStore, config: QueueConfig | None = None, *,
                 recover: bool = True, unsafe_stale: bool = False) -> None:
        """Open (or create) the queue in ``storage``.

        ``config=None`` takes the capacity the queue was created with. ``recover`` (the
        runner, which holds the device's instance lock) finishes a stored reservation
        that a crash left without its report; a process that only takes numbers for
        offline reports, or only reads the queue, passes False, since the runner may be
        between its reserve and put right now (recovering that reservation would make
        the runner's put fail as not reserved).

        Raises:
            QueueDamaged: the records are unreadable or inconsistent.
            tinyward.trust.errors.StorageError: a record failed authentication or rollback.
        """
        self._storage = storage
        self._unsafe_stale = unsafe_stale
        self._capacity = (config or QueueConfig()).capacity
        self._next_seq, self._acked, self._dropped, self._reported = 1, 0, 0, 0
        self._last_delta = self._open = self._open_victim = 0
        self._seen = -1  # the metadata's version this state was loaded from or saved as
        # slot index -> (seq, report, carried), as stored.
        self._slots: dict[int, tuple[int, bytes, int]] = {}
        # seq -> (report, drop count it carries), for every unacknowledged stored report.
        self._entries: dict[int, tuple[bytes, int]] = {}
        with storage.transaction():
            if not storage.exists(META_RECORD):
                self._save_meta()
            else:
                self._reload(check_capacity=config is not None)
            if recover:
                self._recover()

    # ---- records ---------------------------------------------------------------------

    def _load_meta(self) -> dict[str, int]:
        try:
            meta: Any = cbor2.loads(self._storage.read(META_RECORD))
        except cbor2.CBORDecodeError as error:
            raise QueueDamaged(f"queue metadata is not CBOR: {error}") from None
        if isinstance(meta, dict) and meta.get("v") == 1:
            meta = _from_format_1(meta)
        if (not isinstance(meta, dict) or set(meta) != self._META_KEYS
                or not all(isinstance(meta[k], int) and not isinstance(meta[k], bool)
                           and meta[k] >= 0 for k in self._META_KEYS)
                or meta["v"] != FORMAT_VERSION or meta["next_seq"] < 1
                or not 1 <= meta["capacity"] <= 9999
                or meta["acked"] >= meta["next_seq"] or meta["reported"] > meta["dropped"]
                or meta["open"] >= meta["next_seq"] or meta["open_victim"] >= max(meta["open"], 1)):
            raise QueueDamaged("queue metadata does not have the expected fields and values")
        return meta

    def _save_meta(self) -> None:
        self._seen = self._storage.write(META_RECORD, cbor2.dumps({
            "v": FORMAT_VERSION, "capacity": self._capacity, "next_seq": self._next_seq,
            "acked": self._acked, "dropped": self._dropped, "reported": self._reported,
            "last_delta": self._last_delta, "open": self._open,
            "open_victim": self._open_victim,
        }))

    def _load_slot(self, name: str, index: int) -> tuple[int, bytes, int]:
        try:
            slot: Any = cbor2.loads(self._storage.read(name))
        except cbor2.CBORDecodeError as error:
            raise QueueDamaged(f"queue slot {index} is not CBOR: {error}") from None
        if (not isinstance(slot, dict) or set(slot) != {"seq", "report", "carried"}
                or not isinstance(slot["seq"], int) or not isinstance(slot["report"], bytes)
                or not isinstance(slot["carried"], int) or slot["carried"] < 0
                or slot["seq"] < 1 or slot["seq"] % self._capacity != index):
            raise QueueDamaged(f"queue slot {index} does not hold a numbered report")
        return slot["seq"], slot["report"], slot["carried"]

    def _open_pending(self) -> bool:
        """The last stored reservation's report is not (yet) in its slot."""
        if not self._open:
            return False
        held = self._slots.get(self._open % self._capacity)
        return held is None or held[0] != self._open

    def _reload(self, check_capacity: bool = True) -> None:
        """Rebuild the whole state from storage (call inside a transaction).

        Every change writes the metadata (a put too), so while its committed version is
        the one this queue last saw, nobody else changed anything: one counter read.
        """
        if self._storage.version(META_RECORD) == self._seen:
            return
        meta = self._load_meta()
        self._seen = self._storage.version(META_RECORD)  # the read may finish a commit
        if check_capacity and meta["capacity"] != self._capacity:
            # Slot positions depend on the capacity; changing it needs a drained queue.
            raise QueueDamaged(
                f"the queue was created with capacity {meta['capacity']}, not "
                f"{self._capacity}; drain it (let the server acknowledge everything) "
                "before changing the capacity"
            )
        self._capacity = meta["capacity"]
        self._next_seq, self._acked = meta["next_seq"], meta["acked"]
        self._dropped, self._reported = meta["dropped"], meta["reported"]
        self._last_delta, self._open = meta["last_delta"], meta["open"]
        self._open_victim = meta["open_victim"]
        self._slots = {}
        for index in range(self._capacity):
            name = _slot_name(index)
            if self._storage.exists(name):
                self._slots[index] = self._load_slot(name, index)
        # The report an open reservation displaced is counted as dropped already, though
        # it stays in its slot until the new report is stored.
        hidden = self._open_victim if self._open_pending() else 0
        self._entries = {seq: (report, carried) for seq, report, carried in self._slots.values()
                         if self._acked < seq < self._next_seq and seq != hidden}

    def _recover(self) -> None:
        """A stored reservation whose report never came (a crash in between): undo what it
        counted. Its count of drops was never told, and the report it displaced is still
        in its slot, so that drop did not happen. Committed, so it is done once."""
        if not self._open_pending():
            return
        self._reported -= self._last_delta
        victim = self._open_victim
        held = self._slots.get(self._open % self._capacity)
        if victim and held is not None and held[0] == victim and victim > self._acked:
            self._dropped -= 1
            self._reported += held[2]
            self._entries[victim] = (held[1], held[2])
        self._last_delta = self._open = self._open_victim = 0
        self._save_meta()

    @contextmanager
    def _change(self) -> Iterator[None]:
        """One change: under the storage lock, on the state as stored right now."""
        with self._storage.transaction():
            if not self._unsafe_stale:
                self._reload()
            yield

    def refresh(self) -> None:
        """Reload the state from storage (what other processes changed)."""
        with self._storage.transaction():
            self._reload()

    # ---- the queue -------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def dropped(self) -> int:
        """Reports dropped (queue full, or refused by the server): running total, persisted."""
        return self._dropped

    @property
    def acked(self) -> int:
        """The highest sequence number the server has acknowledged."""
        return self._acked

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def owed(self) -> int:
        """Drops not yet told in any stored report (the next report tells them)."""
        return self._dropped - self._reported

    def __len__(self) -> int:
        return len(self._entries)

    def _lose(self, seq: int) -> None:
        """Count one report as dropped; the drops it carried are owed again."""
        _, carried = self._entries.pop(seq)
        self._dropped += 1
        self._reported -= carried

    def reserve(self) -> Reservation:
        """Commit the next sequence number (and any drop it causes) before it is used.

        The returned ``dropped_reports`` is the number of drops this report must tell
        (a delta); pass the same number to :meth:`put`.

        Raises:
            tinyward.trust.errors.StorageError: storage refused the write.
        """
        with self._change():
            # Only the runner stores reservations: one still open was left by a crash.
            self._recover()
            seq = self._next_seq
            victim = 0
            held = self._slots.get(seq % self._capacity)
            if held is not None and held[0] in self._entries:
                # The ring is full: this number's slot holds an unacknowledged report
                # (the oldest, unless numbers went to offline reports).
                victim = held[0]
                self._lose(victim)
            delta = self._dropped - self._reported
            self._reported = self._dropped
            self._last_delta, self._open, self._open_victim = delta, seq, victim
            self._next_seq = seq + 1
            self._save_meta()
        return Reservation(seq, delta)

    @classmethod
    def reserve_offline(cls, storage: RecordStore) -> Reservation:
        """Commit the next number for a report that leaves another way (a QR code).

        It is never stored in the queue, so it takes no slot and displaces nothing; it
        tells the drops owed so far. Does not touch a reservation the runner may have
        open right now.
        """
        with storage.transaction():
            queue = cls(storage, recover=False)
            seq = queue._next_seq
            delta = queue._dropped - queue._reported
            queue._reported = queue._dropped
            queue._next_seq = seq + 1
            queue._save_meta()
        return Reservation(seq, delta)

    def put(self, seq: int, report: bytes, carried: int = 0) -> None:
        """Store the signed ``report`` numbered ``seq`` (which :meth:`reserve` returned),
        telling ``carried`` drops (the reservation's ``dropped_reports``).

        Raises:
            Misuse: ``seq`` was not reserved, or is already stored.
        """
        with self._change():
            if seq != self._open or not self._open_pending() or seq <= self._acked:
                raise Misuse(f"sequence number {seq} was not reserved or is already queued")
            index = seq % self._capacity
            self._storage.write(_slot_name(index), cbor2.dumps(
                {"seq": seq, "report": bytes(report), "carried": int(carried)}))
            self._slots[index] = (seq, bytes(report), int(carried))
            self._entries[seq] = (bytes(report), int(carried))
            # Stored: nothing left to recover. And the metadata's new version tells every
            # other open queue that a slot changed.
            self._last_delta = self._open = self._open_victim = 0
            self._save_meta()

    def oldest(self) -> tuple[int, bytes] | None:
        """The oldest unacknowledged report, or None if everything is acknowledged."""
        if not self._entries:
            return None
        seq = min(self._entries)
        return seq, self._entries[seq][0]

    def pending(self) -> list[tuple[int, bytes]]:
        """Every unacknowledged report, oldest first."""
        return [(seq, self._entries[seq][0]) for seq in sorted(self._entries)]

    def acknowledge(self, stored_seq: int) -> int:
        """The server holds everything up to ``stored_seq``: free those reports.

        Returns how many reports left the queue. An acknowledgement at or below the
        current one changes nothing; one above ``next_seq - 1`` is refused (the server
        claims reports this device never made).

        Raises:
            QueueDamaged: ``stored_seq`` is beyond any number this device has used.
        """
        with self._change():
            if stored_seq <= self._acked:
                return 0
            if stored_seq >= self._next_seq:
                raise QueueDamaged(
                    f"the server acknowledges report {stored_seq}, but this device has only "
                    f"numbered up to {self._next_seq - 1}: it is not this device's history "
                    "(a restored backup of the device, or a server talking about another "
                    "device)"
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
        with self._change():
            head = self.oldest()
            if head is None:
                return None
            seq = head[0]
            self._lose(seq)
            self._acked = seq
            self._save_meta()
        return seq


__all__ = ["QueueConfig", "ReportQueue", "Reservation"]
