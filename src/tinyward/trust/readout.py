"""Who may read the local display: device-unique credentials and the persistent lockout.

The local readout (the e-ink display of an air-gapped sensor) shows nothing until the
reader authenticates with a time-based one-time code (TOTP, RFC 6238, via ``pyotp``) or a
device-unique PIN. There is no default credential: :meth:`ReadoutGate.enrol_totp` or
:meth:`ReadoutGate.enrol_pin` makes one per device at provisioning, or the owner sets one.

Every check goes through :mod:`tinyward.trust.lockout`; the lockout state lives in
protected storage and is written *before* the code is compared, so restarting the process
or cutting the power resets nothing; each attempt holds the storage lock from start to
end, so concurrent sessions are checked one by one. Codes are compared in constant time
and never logged. A TOTP code is accepted once: a code for a time step at or before the last
accepted one
(kept in protected storage) is refused, so a code seen over the owner's shoulder cannot be
replayed, not even by a second session at the same moment.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import pyotp

from tinyward.errors import BadInput, StateError
from tinyward.trust.errors import RecordTampered, TrustError
from tinyward.trust.lockout import LockoutPolicy, LockoutState, checked_attempt
from tinyward.trust.storage import ProtectedStorage

_CREDENTIAL = "readout.credential"
_LOCKOUT = "readout.lockout"
_POLICY = "readout.policy"
TOTP_STEP = 30
PIN_DIGITS = 8


class WrongCode(TrustError, BadInput):
    """The code was wrong (it counted against the lockout)."""


class NoCredential(TrustError, StateError):
    """The device has no readout credential yet; enrol one first."""


class WeakPin(TrustError, BadInput):
    """An owner-chosen PIN that is too short or trivially guessable."""


@dataclass(frozen=True)
class GateStatus:
    kind: str | None
    failures: int
    wait_seconds: float


class ReadoutGate:
    """Authenticates readers of the local display for one device."""

    def __init__(self, storage: ProtectedStorage, device_label: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._label = device_label
        self._clock = clock

    # ---- enrolment ------------------------------------------------------------------

    def enrol_totp(self, policy: LockoutPolicy | None = None) -> str:
        """Make a new TOTP secret; return the provisioning URI (show it once, e.g. as a QR)."""
        secret = pyotp.random_base32(length=32)
        self._store_credential({"kind": "totp", "secret": secret, "last_step": -1}, policy)
        return pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(
            name=self._label, issuer_name="tinyward readout"
        )

    def enrol_pin(self, pin: str | None = None, policy: LockoutPolicy | None = None) -> str:
        """Set a device-unique PIN (random 8 digits unless the owner chose one); return it."""
        if pin is None:
            pin = "".join(secrets.choice("0123456789") for _ in range(PIN_DIGITS))
        elif len(pin) < 6 or not pin.isdigit() or len(set(pin)) < 3:
            raise WeakPin("a PIN needs at least 6 digits and at least 3 different digits")
        self._store_credential({"kind": "pin", "pin": pin}, policy)
        return pin

    def _store_credential(
        self, credential: dict[str, object], policy: LockoutPolicy | None
    ) -> None:
        with self._storage.transaction():  # no attempt sees half a new enrolment
            self._storage.write(_POLICY, (policy or LockoutPolicy()).to_cbor())
            self._storage.write(_CREDENTIAL, cbor2.dumps(credential))
            self._storage.write(_LOCKOUT, LockoutState().to_cbor())

    # ---- checking -------------------------------------------------------------------

    def policy(self) -> LockoutPolicy:
        return LockoutPolicy.from_cbor(self._storage.read(_POLICY))

    def _credential(self) -> dict[str, object]:
        if not self._storage.exists(_CREDENTIAL):
            raise NoCredential(
                "this device has no readout credential; run `tinyward device readout-enrol`"
            )
        credential = cbor2.loads(self._storage.read(_CREDENTIAL))
        if not isinstance(credential, dict) or credential.get("kind") not in ("pin", "totp"):
            raise RecordTampered("the readout credential record has an unexpected shape")
        return credential

    def _lockout(self) -> LockoutState:
        if not self._storage.exists(_LOCKOUT):
            return LockoutState()
        return LockoutState.from_cbor(self._storage.read(_LOCKOUT))

    def status(self) -> GateStatus:
        state = self._lockout()
        kind = str(self._credential()["kind"]) if self._storage.exists(_CREDENTIAL) else None
        return GateStatus(kind, state.failures,
                          max(0.0, state.not_before - self._clock()))

    def attempt(self, code: str) -> None:
        """Check one code. Returns on success; raises :class:`~tinyward.trust.lockout.LockedOut`
        (nothing checked), :class:`WrongCode`, or :class:`NoCredential`."""
        # One attempt at a time across every process on this device: otherwise concurrent
        # sessions each read the same lockout state (N sessions, one counted failure, N
        # codes checked in one window) and the same last TOTP step (one code, N unlocks).
        with self._storage.transaction():
            credential = self._credential()
            now = self._clock()
            # Counted as a failure and persisted before the code is looked at.
            if not checked_attempt(
                self._lockout, lambda state: self._storage.write(_LOCKOUT, state.to_cbor()),
                self.policy(), now, lambda: self._code_matches(credential, code.strip(), now),
            ):
                raise WrongCode("wrong code")

    def _code_matches(self, credential: dict[str, object], code: str, now: float) -> bool:
        supplied = code.encode()
        if credential["kind"] == "pin":
            return hmac.compare_digest(supplied, str(credential["pin"]).encode())
        totp = pyotp.TOTP(str(credential["secret"]), interval=TOTP_STEP)
        step_now = int(now // TOTP_STEP)
        matched_step = None
        for step in (step_now - 1, step_now, step_now + 1):  # one step of clock drift
            expected = totp.at(step * TOTP_STEP).encode()
            if hmac.compare_digest(supplied, expected):
                matched_step = step
        last_step = credential.get("last_step", -1)
        if matched_step is None or not isinstance(last_step, int) or matched_step <= last_step:
            return False
        credential["last_step"] = matched_step
        self._storage.write(_CREDENTIAL, cbor2.dumps(credential))
        return True
