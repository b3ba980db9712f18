"""air-gapped (live): the device can run with no network at all, its only interface an
authenticated local readout that locks out a brute force (C-AIRGAP-1).

Two pieces of live evidence, both needed for a pass:

1. **The mode, signed by the device.** ``--airgap-command`` (an argv with ``{nonce}``
   hex and ``{out}``) makes the device sign an attestation token in its air-gapped mode;
   the probe sends a fresh random 32-byte nonce and verifies the token as a PSA token
   (RFC 9783) with the attestation certificate (``--airgap-cert``, else ``--attest-cert``,
   else a tinyward device folder's ``certs/attestation.crt.pem`` checked against its
   ``device-ca.crt.pem``). One tinyward folder cannot run connected and air-gapped at
   once (``device run`` holds its instance lock): while the device under test runs
   connected, run the air-gapped mode on a second device of the product and name its
   certificate with ``--airgap-cert``.
   tinyward's operating-mode claim is the mode *enforced* in the signing process (it
   tries to open a socket: ``trust.airgap.enforced_mode``), so ``"air-gapped"`` means the
   process tree that signed could not reach any network — no listener, no connection.
   For tinyward: ``tinyward device run DIR --air-gapped --duration 1 --attest-nonce
   {nonce} --attest-out {out}`` (the token names the air gap's protections too), or
   ``tinyward device attest DIR --nonce {nonce} -o {out}`` on a device provisioned
   air-gapped.
2. **The readout authenticates and locks out.** ``--readout-command`` opens the device's
   local readout, reading codes from stdin (for tinyward ``tinyward device readout DIR``).
   The probe types up to :data:`MAX_GUESSES` random 8-digit codes, one per prompt, and
   reads each answer: ``unlocked`` (a random code accepted), ``wrong code``, or a lockout
   (``too many failed attempts`` / ``locked out`` / ``try again in``). Once locked out it
   closes the readout, opens it again and types one more code: the lockout must hold
   across the restart (a count kept in memory is reset by pulling the plug).

Pass: the token verifies and says ``air-gapped``, and the readout locked out within
:data:`MAX_GUESSES` codes and stayed locked after a restart. Fail: a token that says
``connected`` or does not verify; a random code accepted; no lockout; a lockout that a
restart reset. Not-tested: no command, no token, or answers the probe cannot read.
The probe leaves the readout locked out: the owner waits out the policy's delay (tinyward:
1 minute after 5 failures, 2 after the 6th).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.attest import MAX_TOKEN, certificate_key
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "air-gapped"
MAX_GUESSES = 8
SECONDS_PER_TOKEN = 60.0
SECONDS_PER_ANSWER = 10.0
MAX_OUTPUT = 1 << 20  # bytes read from one readout session
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_UNLOCKED = re.compile(r"\bunlocked\b")
_LOCKOUT = re.compile(r"too many failed attempts|\blocked out\b|try again in")
_WRONG = re.compile(r"wrong code|incorrect|invalid code|denied")
_PROMPT = re.compile(r"(code|pin|password)\s*[>:]\s*$")


@dataclass(frozen=True)
class Mode:
    """The signed token's answer: ``outcome`` "valid", "refused" or "no token"."""

    outcome: str
    mode: str | None = None
    protections: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Readout:
    """The brute force: ``outcome`` is "lockout-held", "accepted", "no-lockout",
    "reset-by-restart" or "unreadable"; ``guesses`` typed before the answer."""

    outcome: str
    guesses: int = 0
    detail: str = ""


def verdict(mode: Mode | None, readout: Readout | None, context: Context,
            where: str = "") -> list[Evidence]:
    """From the token and the brute force (pure)."""
    fails, gaps, goods = [], [], []
    if mode is None:
        gaps.append("no --airgap-command to make the device sign its mode")
    elif mode.outcome == "refused":
        fails.append(f"the air-gapped mode's token was refused: {mode.detail}")
    elif mode.outcome != "valid":
        gaps.append(f"the device gave no token: {mode.detail}")
    elif mode.mode != "air-gapped":
        fails.append(f"the device's signed token says its mode is {mode.mode!r}, not "
                     "'air-gapped': no air-gapped mode was shown")
    else:
        shown = f" ({', '.join(mode.protections)})" if mode.protections else ""
        goods.append(f"a token for a fresh nonce, verified, says 'air-gapped' (the mode "
                     f"the signing process enforces: no socket at all){shown}")
    if readout is None:
        gaps.append("no --readout-command to try the local readout's authentication")
    elif readout.outcome == "accepted":
        fails.append(f"the readout accepted a random code after {readout.guesses} "
                     f"guess(es): it does not authenticate")
    elif readout.outcome == "no-lockout":
        fails.append(f"{readout.guesses} wrong codes in a row were each checked: no "
                     "brute-force lockout")
    elif readout.outcome == "reset-by-restart":
        fails.append(f"locked out after {readout.guesses} wrong codes, but a restarted "
                     "readout checked the next code: the lockout does not survive a restart")
    elif readout.outcome == "lockout-held":
        goods.append(f"the readout locked out after {readout.guesses} wrong codes and was "
                     f"still locked out when opened again ({readout.detail})")
    else:
        gaps.append(f"the readout's answers could not be read: {readout.detail}")
    if fails:
        return for_all(context, NAME, "fail", "live", "; ".join(fails), where)
    if gaps:
        return for_all(context, NAME, "not-tested", "live",
                       "; ".join(gaps + [f"shown: {g}" for g in goods]), where)
    return for_all(context, NAME, "pass", "live", "; ".join(goods), where)


def signed_mode(command: tuple[str, ...], key: object, seconds: float) -> Mode:
    """One fresh nonce through the air-gap command; the token verified against it."""
    from tinyward.trust.attestation import verify_token
    from tinyward.trust.errors import BadToken, TokenMisuse

    nonce = secrets.token_bytes(32)
    with TemporaryDirectory(prefix="tinyward-airgap-") as scratch:
        out = Path(scratch) / "token.cbor"
        argv = [p.replace("{nonce}", nonce.hex()).replace("{out}", str(out)) for p in command]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=seconds, check=False)  # noqa: S603 - the user's own command
        except subprocess.TimeoutExpired:
            return Mode("no token", detail=f"the air-gap command ran past {seconds:.0f} s")
        except OSError as error:
            return Mode("no token", detail=f"the air-gap command did not start: {error}")
        if done.returncode != 0 or not out.is_file():
            return Mode("no token", detail=f"the air-gap command exited with "
                                           f"{done.returncode} and wrote no token")
        with out.open("rb") as handle:
            token = handle.read(MAX_TOKEN + 1)
    if len(token) > MAX_TOKEN:
        return Mode("refused", detail=f"the token is larger than {MAX_TOKEN} bytes")
    try:
        claims = verify_token(token, key, nonce)  # type: ignore[arg-type]
    except (BadToken, TokenMisuse) as error:
        return Mode("refused", detail=f"{type(error).__name__}: {error}")
    return Mode("valid", claims.operating_mode, tuple(claims.protections or ()))


class _Session:
    """One readout process: codes on its stdin, its screen read from stdout."""

    def __init__(self, command: tuple[str, ...]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603 - the user's own command
                                     stderr=subprocess.STDOUT, env=env)
        if self.proc.stdin is None or self.proc.stdout is None:  # never, with PIPE
            raise OSError("the readout's pipes did not open")
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.read = 0

    def answer(self, seconds: float) -> str:
        """Output until a code prompt, the process's end, or ``seconds`` of waiting."""
        fd = self.stdout.fileno()
        text = ""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.read < MAX_OUTPUT:
            ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.read += len(chunk)
            text += chunk.decode("utf-8", "replace")
            if _PROMPT.search(_ANSI.sub("", text).lower()):
                break
        return _ANSI.sub("", text).lower()

    def type(self, code: str) -> bool:
        try:
            self.stdin.write(code.encode() + b"\n")
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def close(self) -> None:
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):  # a readout gone before the last code
                stream.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def classify(answer: str) -> str:
    """"accepted", "lockout", "wrong" or "unreadable" (pure; ``answer`` lower case)."""
    if _UNLOCKED.search(answer):
        return "accepted"
    if _LOCKOUT.search(answer):
        return "lockout"
    if _WRONG.search(answer):
        return "wrong"
    return "unreadable"


def brute_force(command: tuple[str, ...], budget: Budget) -> Readout:
    """Random codes until a lockout (≤ :data:`MAX_GUESSES`), then once more after a restart."""
    def guess() -> str:
        return "".join(secrets.choice("0123456789") for _ in range(8))

    try:
        session = _Session(command)
    except OSError as error:
        return Readout("unreadable", detail=f"the readout command did not start: {error}")
    guesses = 0
    try:
        session.answer(SECONDS_PER_ANSWER)  # the locked screen and the first prompt
        while True:
            if guesses >= MAX_GUESSES:
                return Readout("no-lockout", guesses)
            if not budget.spend() or not session.type(guess()):
                return Readout("unreadable", guesses,
                               "the budget ran out" if budget.left() <= 0 or
                               budget.attempts <= 0 else "the readout stopped reading codes")
            guesses += 1
            said = classify(session.answer(min(SECONDS_PER_ANSWER, max(1.0, budget.left()))))
            if said == "accepted":
                return Readout("accepted", guesses)
            if said == "unreadable":
                return Readout("unreadable", guesses, "an answer that is neither 'wrong "
                                                      "code', a lockout nor 'unlocked'")
            if said == "lockout":
                break
    finally:
        session.close()
    try:
        again = _Session(command)
    except OSError as error:
        return Readout("unreadable", guesses, f"the readout did not start again: {error}")
    try:
        again.answer(SECONDS_PER_ANSWER)
        if not again.type(guess()):
            return Readout("unreadable", guesses, "the restarted readout read no code")
        said = classify(again.answer(SECONDS_PER_ANSWER))
    finally:
        again.close()
    if said == "lockout":
        return Readout("lockout-held", guesses, "the next code was not checked")
    if said == "accepted":
        return Readout("accepted", guesses + 1)
    if said == "wrong":
        return Readout("reset-by-restart", guesses)
    return Readout("unreadable", guesses, "the restarted readout's answer")


class AirGapped:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        mode: Mode | None = None
        where = []
        if target.airgap_command is not None:
            where.append(" ".join(target.airgap_command))
            mode = self._mode(target, budget)
        readout: Readout | None = None
        if target.readout_command is not None:
            where.append(" ".join(target.readout_command))
            readout = brute_force(target.readout_command, budget)
        return verdict(mode, readout, context, "; ".join(where))

    @staticmethod
    def _mode(target: Target, budget: Budget) -> Mode:
        command = target.airgap_command
        if command is None:
            return Mode("no token", detail="no --airgap-command")
        cert: Path | None = target.airgap_cert or target.attest_cert
        ca: Path | None = None
        if cert is None and target.device_dir is not None:
            cert = target.device_dir / "certs" / "attestation.crt.pem"
            ca = target.device_dir / "certs" / "device-ca.crt.pem"
        if cert is None or not cert.is_file():
            return Mode("no token", detail="no attestation certificate (--attest-cert, or a "
                                           "tinyward device folder's) to verify it with")
        try:
            key, _ = certificate_key(cert, ca)
        except Exception as error:  # noqa: BLE001 - ValueError, TypeError, InvalidSignature
            return Mode("refused", detail=f"the attestation certificate {cert} does not "
                                          f"check: {type(error).__name__}")
        if not budget.spend():
            return Mode("no token", detail="the budget ran out")
        return signed_mode(command, key,
                           min(SECONDS_PER_TOKEN, max(1.0, budget.left())))


__all__ = ["MAX_GUESSES", "AirGapped", "Mode", "Readout", "brute_force", "classify",
           "signed_mode", "verdict"]
