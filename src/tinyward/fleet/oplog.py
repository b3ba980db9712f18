"""The operator's log of ``fleet serve``: one line per connection and per refusal.

Logger ``tinyward.fleet.access`` (INFO), lines like::

    connection listener=device peer=192.0.2.7 device=3f9a61c2 outcome=accepted
    refused listener=device peer=192.0.2.7 device=3f9a61c2 status=409 reason=replay
    refused listener=device peer=198.51.100.4 reason=tls_handshake_failed

What a line may hold: the listener, the peer's address, the first 8 hex characters of the
authenticated device's ID (never from an unauthenticated claim), the outcome or refusal
code (a fixed word, never text the client chose), and the HTTP status. Never a token, a
certificate, a report or its results, a path or a header.

Rate-limited so that a flood cannot fill the disk: a token bucket of
:data:`LINES_PER_SECOND` lines per second with a burst of :data:`BURST` lines (per
process). Lines over it are counted, not written; the next line written after them says
how many were left out (``suppressed=N``), so the operator knows the log is partial.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LINES_PER_SECOND = 20.0
BURST = 200
#: Characters of a device ID shown (enough to find it with `fleet devices`, not a secret).
DEVICE_PREFIX = 8

_access = logging.getLogger("tinyward.fleet.access")


class OperatorLog:
    """Writes the lines; ``clock`` and ``logger`` are for tests."""

    def __init__(self, *, rate: float = LINES_PER_SECOND, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = _access) -> None:
        self._rate, self._burst, self._clock, self._log = rate, float(burst), clock, logger
        self._tokens = float(burst)
        self._at = clock()
        self._suppressed = 0
        self._lock = threading.Lock()  # the accepting loop and the app share one instance

    def connection(self, listener: str, peer: str, outcome: str,
                   device: str | None = None) -> None:
        self._write("connection", listener, peer, device, f"outcome={outcome}")

    def refusal(self, listener: str, peer: str, reason: str, *, device: str | None = None,
                status: int | None = None) -> None:
        status_part = f"status={status} " if status is not None else ""
        self._write("refused", listener, peer, device, f"{status_part}reason={reason}")

    def incident(self, device: str, kind: str) -> None:
        self._write("incident", "fleet", "-", device, f"kind={kind}")

    def _write(self, event: str, listener: str, peer: str, device: str | None,
               tail: str) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
        who = f" device={device[:DEVICE_PREFIX]}" if device else ""
        more = f" suppressed={suppressed}" if suppressed else ""
        self._log.info("%s listener=%s peer=%s%s %s%s", event, listener, _safe(peer), who,
                       tail, more)


def _safe(text: str) -> str:
    """An address as the kernel gave it; anything odd (never expected) is replaced, so a
    line stays one line."""
    return text if text and all(c.isalnum() or c in ".:%-_" for c in text) else "?"
