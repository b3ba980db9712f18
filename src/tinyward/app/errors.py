"""Errors of the application sandbox (``tinyward.app``).

Two families, as everywhere in tinyward:

- :class:`~tinyward.errors.BadInput` subclasses: something from outside the trusted core
  was refused — a manifest (:class:`ManifestError`), a message on the pipe
  (:class:`ProtocolError`), a result that breaks the contract (:class:`ContractViolation`),
  or an application that could not be started (:class:`SandboxError`).
- :class:`~tinyward.errors.Misuse` subclasses: the caller used the API wrongly
  (:class:`IllegalTransition`).
"""

from __future__ import annotations

from tinyward.errors import BadInput, Misuse


class ManifestError(BadInput):
    """A ``sensor.toml`` was refused. ``line`` is 1-based, or ``None`` when unknown."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class ContractViolation(BadInput):
    """A result broke the output contract. ``kind`` names the incident (``wrong_type`` …)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class ProtocolError(BadInput):
    """A message on the pipe was refused. ``kind`` is ``oversize``, ``truncated``,
    ``not_cbor`` or ``malformed``."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class SandboxError(BadInput):
    """The application could not be started in the sandbox (or a required layer failed)."""


class IllegalTransition(Misuse):
    """The supervisor's state table does not allow this event in this state (a bug)."""
