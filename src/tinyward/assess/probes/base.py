"""The probe interface: a name, a kind, and ``run(target, context) -> evidence``."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tinyward.assess.evidence import Evidence
from tinyward.assess.model import Model, Requirement
from tinyward.assess.target import Target


@dataclass
class Budget:
    """Every probe's limits: wall-clock seconds and connection attempts (a probe that
    runs out stops and reports not-tested for what it did not reach)."""

    seconds: float = 120.0
    attempts: int = 200
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.started))

    def spend(self) -> bool:
        """Take one attempt; False when the count or the time is used up."""
        if self.attempts <= 0 or self.left() <= 0:
            return False
        self.attempts -= 1
        return True


@dataclass
class Context:
    """What probes share: the model, and facts found by earlier probes (the open TCP
    ports from the port scan, what each speaks, the device folder's contents)."""

    model: Model
    open_ports: tuple[int, ...] | None = None  # None: no scan ran
    services: dict[int, str] = field(default_factory=dict)  # port -> "tls" | "plaintext" | ...
    folder_facts: Any = None  # the static checks' one walk of the device folder

    def requirements_of(self, probe: str) -> tuple[Requirement, ...]:
        return tuple(r for r in self.model.requirements if r.probe == probe)


class Probe(Protocol):
    name: str
    kind: str  # "live", "static" or "declaration"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]: ...


def for_all(context: Context, probe: str, verdict: str, kind: str, text: str,
            where: str = "") -> list[Evidence]:
    """The same evidence for every requirement that names ``probe``."""
    return [Evidence(r.id, verdict, kind, probe, text, where)
            for r in context.requirements_of(probe)]


class CutOff:
    """Whether :func:`cut_off` fired."""

    fired = False


@contextlib.contextmanager
def cut_off(connection: http.client.HTTPConnection, seconds: float) -> Iterator[CutOff]:
    """Connect ``connection`` and shut its socket down once ``seconds`` have passed.

    A socket timeout bounds each read, not the exchange: a device that sends one byte a
    little faster than the timeout holds ``http.client`` for as long as it likes. Shutting
    the socket from a timer ends any read in progress (it sees the end of the stream), so
    the exchange ends within ``seconds`` plus one read's timeout. Raises TimeoutError when
    the time ran out during the connect."""
    state = CutOff()

    def cut() -> None:
        state.fired = True
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown: an SSLSocket's would drop its TLS state
                # under a read another thread is in.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, seconds), cut)
    timer.daemon = True
    timer.start()
    try:
        connection.connect()
        if state.fired:  # fired before the socket existed: nothing was cut
            raise TimeoutError(f"no connection within {seconds:.0f} s")
        yield state
    finally:
        timer.cancel()


__all__ = ["Budget", "Context", "CutOff", "Probe", "cut_off", "for_all"]
