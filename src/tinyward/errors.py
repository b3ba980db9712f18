"""The root of every tinyward exception.

Each subpackage has its own ``errors.py`` whose classes derive from :class:`TinywardError`.
Two families are kept apart, as in python-tuf:

- :class:`BadInput` (and subclasses): bytes or files from outside were refused —
  malformed, forged, replayed, tampered, oversized. The message says what a person can do.
- :class:`Misuse`: the caller used an API wrongly (a bug, not an attack).

The CLI catches :class:`TinywardError` in one place, prints ``str(error)`` and exits non-zero.
"""


class TinywardError(Exception):
    """Base class of all tinyward errors."""

    exit_code: int = 1


class BadInput(TinywardError):
    """Input from outside the trust boundary was refused."""

    exit_code = 2


class Misuse(TinywardError):
    """An API was called in a way it does not allow (a caller bug)."""

    exit_code = 3
