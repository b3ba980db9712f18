"""Who may use the dashboard: the admin password, its lockout, sessions and CSRF tokens.

No HTTP here (``views.py`` has that), so every rule can be tested alone.

- **Password**: set with ``tinyward fleet dashboard-password FLEET_DIR``; only an scrypt
  hash is kept (``FLEET_DIR/dashboard/password``, 0600), compared in constant time.
- **Lockout**: the readout's (:mod:`tinyward.trust.lockout`): the same policy, the same
  count-before-check protocol (:func:`~tinyward.trust.lockout.checked_attempt`), its state
  persisted with the same CBOR record in the same kind of folder
  (:class:`tinyward.trust._files.FileFolder`: atomic writes, a lock shared by every
  process), so a restart resets nothing and concurrent logins are checked one at a time.
  A new password resets it, as a new readout credential does.
- **Sessions**: a random 256-bit token in the cookie; the server keeps only its SHA-256,
  with an idle and an absolute expiry. A new password ends every session.
- **CSRF**: each session has its own synchroniser token, put in every form and compared
  in constant time. The login form (no session yet) uses a signed double-submit token: a
  random pre-login cookie and, in the form, its HMAC under a key that lives only in this
  process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinyward.errors import BadInput, StateError
from tinyward.trust._files import FileFolder
from tinyward.trust.lockout import LockoutPolicy, LockoutState, checked_attempt

DASHBOARD_DIR = "dashboard"
PASSWORD_FILE = "password"  # noqa: S105 (a file name; it holds only an scrypt hash)
LOCKOUT_FILE = "lockout.cbor"
POLICY_FILE = "policy.cbor"
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
#: scrypt cost: 2**15 × 8 × 128 bytes = 32 MiB and ≈ 0.1 s per guess on one core.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
SESSION_IDLE = 15 * 60.0
SESSION_MAX = 8 * 3600.0
MAX_SESSIONS = 64


class NoPassword(StateError):
    """No dashboard password is set; run `tinyward fleet dashboard-password FLEET_DIR`."""


class WeakPassword(BadInput):
    """A password too short (or too long) for the dashboard."""


class WrongPassword(BadInput):
    """The password was wrong (it counted against the lockout)."""


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password`` under a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def password_matches(stored: str, password: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (compared in constant time)."""
    try:
        scheme, n_text, r_text, p_text, salt, digest = stored.strip().split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        # Costs this module writes, within bounds (a damaged file must not ask for 2**80).
        if scheme != "scrypt" or not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt, validate=True),
                             n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, UnicodeEncodeError):  # a damaged hash never matches
        return False
    return hmac.compare_digest(got, expected)


class LoginGate:
    """The admin password and its persistent lockout, in ``FLEET_DIR/dashboard/``."""

    def __init__(self, fleet_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = FileFolder(Path(fleet_dir) / DASHBOARD_DIR, "")
        self._clock = clock

    def set_password(self, password: str, policy: LockoutPolicy | None = None) -> None:
        """Replace the password (and reset the lockout, as a new readout credential does)."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise WeakPassword(f"the dashboard password needs {MIN_PASSWORD} to "
                               f"{MAX_PASSWORD} characters")
        hashed = hash_password(password)
        with self.folder.lock():
            self.folder.write(POLICY_FILE, (policy or LockoutPolicy()).to_cbor())
            self.folder.write(PASSWORD_FILE, hashed.encode("ascii") + b"\n")
            self.folder.write(LOCKOUT_FILE, LockoutState().to_cbor())

    def stored(self) -> str | None:
        """The stored hash (it identifies the password's version), or None if none is set."""
        data = self.folder.read(PASSWORD_FILE, 4096)
        return None if data is None else data.decode("ascii", "replace").strip()

    def policy(self) -> LockoutPolicy:
        data = self.folder.read(POLICY_FILE, 256)
        return LockoutPolicy() if data is None else LockoutPolicy.from_cbor(data)

    def lockout(self) -> LockoutState:
        data = self.folder.read(LOCKOUT_FILE, 256)
        return LockoutState() if data is None else LockoutState.from_cbor(data)

    def wait_seconds(self) -> float:
        return max(0.0, self.lockout().not_before - self._clock())

    def attempt(self, password: str) -> str:
        """Check one password; return the stored hash it matched (the session's version).

        Raises :class:`~tinyward.trust.lockout.LockedOut` (nothing checked),
        :class:`WrongPassword` or :class:`NoPassword`.
        """
        with self.folder.lock():  # one attempt at a time, across every process
            stored = self.stored()
            if stored is None:
                raise NoPassword("no dashboard password is set; run "
                                 "`tinyward fleet dashboard-password FLEET_DIR`")
            if not checked_attempt(
                self.lockout, lambda s: self.folder.write(LOCKOUT_FILE, s.to_cbor()),
                self.policy(), self._clock(), lambda: password_matches(stored, password),
            ):
                raise WrongPassword("wrong password")
            return stored


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


@dataclass
class Session:
    """What the server keeps of a session (never the token itself)."""

    csrf: str
    created: float
    last_used: float
    password_version: str


class Sessions:
    """Sessions in memory, by SHA-256 of their token (the admin listener has one worker)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *,
                 idle: float = SESSION_IDLE, maximum: float = SESSION_MAX,
                 capacity: int = MAX_SESSIONS) -> None:
        self._clock, self.idle, self.maximum, self.capacity = clock, idle, maximum, capacity
        self._by_digest: dict[bytes, Session] = {}
        self._lock = threading.Lock()
        # Signs the login form's double-submit token; new per process (a restart only
        # makes an open login form submit once more).
        self._login_key = secrets.token_bytes(32)

    def create(self, password_version: str) -> tuple[str, Session]:
        """A new session: ``(token for the cookie, session)``; the oldest goes at capacity."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), now, now, password_version)
        with self._lock:
            while len(self._by_digest) >= self.capacity:
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d].last_used)
                del self._by_digest[oldest]
            self._by_digest[_digest(token)] = session
        return token, session

    def find(self, token: str | None, password_version: str | None) -> Session | None:
        """The live session of ``token``; expired ones and those of an old password end."""
        if not token:
            return None
        digest = _digest(token)  # a dict lookup on a hash: no timing about the token
        now = self._clock()
        with self._lock:
            session = self._by_digest.get(digest)
            if session is None:
                return None
            if (now - session.last_used > self.idle or now - session.created > self.maximum
                    or password_version is None
                    or not hmac.compare_digest(session.password_version.encode(),
                                               password_version.encode())):
                del self._by_digest[digest]
                return None
            session.last_used = now
            return session

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_digest.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._by_digest)

    # -- the login form's token (no session yet) -----------------------------------------

    def login_token(self, pre: str) -> str:
        """The form token that goes with the pre-login cookie ``pre``."""
        return hmac.new(self._login_key, pre.encode("ascii", "replace"),
                        hashlib.sha256).hexdigest()

    def login_token_ok(self, pre: str | None, presented: str | None) -> bool:
        if not pre or not presented:
            return False
        return hmac.compare_digest(self.login_token(pre).encode(),
                                   presented.encode("ascii", "replace"))


def csrf_ok(session: Session, presented: str | None) -> bool:
    """The synchroniser token check (constant time)."""
    if not presented:
        return False
    return hmac.compare_digest(session.csrf.encode("ascii"), presented.encode("ascii", "replace"))
