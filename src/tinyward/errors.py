"""The root of every tinyward exception, and the exit codes of the ``tinyward`` command.

Each subpackage has its own ``errors.py`` whose classes derive from :class:`TinywardError`
(a test walks every module and checks it: ``tests/test_error_family.py``). Three families
are kept apart, as in python-tuf:

- :class:`BadInput` (and subclasses): bytes or files from outside were refused —
  malformed, forged, replayed, tampered, oversized, missing. The message says what a
  person can do.
- :class:`StateError`: the request is fine but does not fit the state of a folder, a device
  or a fleet (it already exists, it is not provisioned yet, another process holds it).
- :class:`Misuse`: the caller used an API wrongly (a bug, not an attack, not a user error).

The CLI catches :class:`TinywardError` in one place, prints one ``error: …`` line and exits
with the class's ``exit_code`` (table: :data:`EXIT_CODES`, docs/cli.md).
"""

from __future__ import annotations

# One table, printed by `tinyward --help` (lines fit 80 columns) and in docs/cli.md (a test
# keeps the two equal).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "failed: server unreachable, port in use, nothing delivered, revoked, I/O"),
    (2, "refused: bad, forged, replayed or missing input, wrong passphrase, usage"),
    (3, "a bug: an API was called in a way it does not allow (please report it)"),
    (4, "wrong state: it already exists, is not provisioned yet, or is busy"),
    (130, "aborted: Ctrl-C, or no input where a prompt needed one"),
)


class TinywardError(Exception):
    """Base class of all tinyward errors."""

    exit_code: int = 1


class BadInput(TinywardError):
    """Input from outside the trust boundary was refused."""

    exit_code = 2


class StateError(TinywardError):
    """The request does not fit the current state (exists already, not ready, busy)."""

    exit_code = 4


class Misuse(TinywardError):
    """An API was called in a way it does not allow (a caller bug)."""

    exit_code = 3
