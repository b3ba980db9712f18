"""Guards of the fleet server that need no HTTP: admin token, rate limits, refusals.

Kept apart from :mod:`tinyward.fleet.server` so each can be read (and tested) alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

from tinyward._fsutil import atomic_write
from tinyward.errors import TinywardError

ADMIN_TOKEN_FILE = "admin-token.sha256"  # noqa: S105 (a file name; it holds only a hash)
_Key = TypeVar("_Key", bound=Hashable)


class Refused(TinywardError):
    """Internal: stop handling a request and answer with a JSON error."""

    def __init__(self, status: int, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason, self.extra = status, code, reason, extra


class TokenBuckets:
    """Per-device token buckets (in memory, per process). Pure apart from the dict.

    ``rate`` and ``burst`` are the defaults; :meth:`take` may give a key its own (the
    fleet server derives each device's rate from the device's declared schedule).
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, n: int, now: float, rate: float | None = None,
             burst: float | None = None) -> float | None:
        """Take ``n`` tokens; None if granted, else the seconds until they would be.

        ``rate``/``burst`` (default: the buckets' own) are this key's: a bucket refills at
        the rate given now, so a changed schedule applies from the next call on."""
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - last) * rate)
        if n > tokens:
            self._buckets[key] = (tokens, now)
            return (n - tokens) / rate if n <= burst else float("inf")
        self._buckets[key] = (tokens - n, now)
        return None


class HandshakeGate(Generic[_Key]):
    """Caps on connections that have not finished their TLS handshake (pure, per process).

    Before the handshake nobody is authenticated, so these connections get their own
    budget — per client address and in all — and never count against the connections of
    devices that have shown their certificate. :meth:`admit` says whether a new one may
    start its handshake; :meth:`release` is called once it has finished or failed.

    Over the per-address cap a new connection is refused. When the total is reached, the
    *oldest* handshake in progress makes room instead: a flood from many addresses then
    has to keep opening connections faster than a device completes its handshake (a few
    milliseconds) to keep that device out, rather than just hold its slots.
    """

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address, self.total = per_address, total
        self._by_address: Counter[str] = Counter()
        self._oldest_first: dict[_Key, str] = {}  # key -> address, in admission order

    def admit(self, address: str, key: _Key) -> tuple[bool, _Key | None]:
        """``(admitted, evicted)``: whether ``key`` may start its handshake, and which
        older one (if any) was released to make room; the caller closes that one."""
        if self._by_address[address] >= self.per_address:
            return False, None
        evicted = None
        if len(self._oldest_first) >= self.total:
            evicted = next(iter(self._oldest_first))
            self.release(evicted)
        self._oldest_first[key] = address
        self._by_address[address] += 1
        return True, evicted

    def release(self, key: _Key) -> None:
        """``key``'s handshake is over (or it was evicted); a second call does nothing."""
        address = self._oldest_first.pop(key, None)
        if address is None:
            return
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    @property
    def in_progress(self) -> int:
        return len(self._oldest_first)


class AuditLog:
    """Append-only JSON lines of administrative calls (0600), never a secret.

    One line per admin request: time, client address, method, path (without the query),
    HTTP status and outcome code. Tokens are never written, not even a bad one: a
    mistyped token is often the real one with a typo.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, *, address: str, method: str, path: str, status: int, outcome: str) -> None:
        line = json.dumps({"time": round(time.time(), 3), "address": address, "method": method,
                           "path": path[:256], "status": status, "outcome": outcome},
                          ensure_ascii=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
            finally:
                os.close(fd)


class AdminToken:
    """The admin bearer token's SHA-256, read from the fleet folder (re-read on change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int], str] | None = None

    def _digest(self) -> str | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        version = (stat.st_ino, stat.st_mtime_ns)
        if self._cached is None or self._cached[0] != version:
            try:
                digest = self.path.read_text("ascii").strip()
            except (OSError, UnicodeDecodeError):
                return None
            self._cached = (version, digest)
        return self._cached[1]

    def check(self, authorization: str | None) -> None:
        """Raises :class:`Refused` (401) unless ``authorization`` is ``Bearer <the token>``."""
        digest = self._digest()
        if digest is None or len(digest) != 64:
            raise Refused(401, "admin_token_not_configured",
                          "no admin token is configured; "
                          "run `tinyward fleet admin-token FLEET_DIR`")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "admin_token_required",
                          "send the admin token as 'Authorization: Bearer <token>'")
        try:
            presented = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
        except UnicodeEncodeError:
            presented = ""
        # Constant time: the comparison must not tell how much of the digest matched.
        if not hmac.compare_digest(presented.encode("ascii"), digest.encode("ascii")):
            raise Refused(401, "bad_admin_token", "the admin token is not valid")


def create_admin_token(fleet_dir: Path) -> str:
    """Make a new admin bearer token for the fleet and return it (shown once, never stored).

    Only its SHA-256 is written, atomically, to ``FLEET_DIR/admin-token.sha256`` (0600);
    a new token replaces the previous one, also in a running server (re-read on change).

    Raises:
        OSError: the file cannot be written.
    """
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()
    atomic_write(Path(fleet_dir) / ADMIN_TOKEN_FILE, (digest + "\n").encode("ascii"))
    return token
