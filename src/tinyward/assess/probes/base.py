"""The probe interface: a name, a kind, and ``run(target, context) -> evidence``."""

from __future__ import annotations

import time
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


__all__ = ["Budget", "Context", "Probe", "for_all"]
