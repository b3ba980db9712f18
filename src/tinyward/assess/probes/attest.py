"""attestation (live): the device answers a fresh challenge with a signed attestation
token naming its software measurements (I-ATTEST-1).

The user names how the device is asked (``--attest-command``: an argv with ``{nonce}``
where the challenge goes, as hex, and ``{out}`` where the token is written; for tinyward,
``tinyward device attest DIR --nonce {nonce} -o {out}``) and the device's attestation
certificate (``--attest-cert PEM``; a tinyward device folder's
``certs/attestation.crt.pem`` by default, checked as issued by the folder's
``certs/device-ca.crt.pem``). The probe sends :data:`CHALLENGES` fresh random 32-byte
nonces, one per run of the command, and verifies each token as a PSA token (RFC 9783:
:func:`tinyward.trust.attestation.verify_token`) with the certificate's key and *that*
nonce.

Pass: every token verifies and names at least one software component. Fail: a token
refused (a stale or replayed token answers an old nonce; a wrong key; malformed) or one
that names no measurement. A command that wrote no token leaves it not-tested.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "attestation"
CHALLENGES = 2
MAX_TOKEN = 1 << 16
SECONDS_PER_TOKEN = 30.0


@dataclass(frozen=True)
class Answer:
    """One challenge: ``outcome`` is "valid", "refused" or "no token"; ``detail`` says
    why (or what the token claimed)."""

    outcome: str
    detail: str
    components: int = 0


def verdict(answers: list[Answer], certificate_note: str, context: Context,
            where: str = "") -> list[Evidence]:
    """From the verified answers (pure)."""
    if not answers:
        return for_all(context, NAME, "not-tested", "live", "no challenge was sent")
    refused = [a for a in answers if a.outcome == "refused"]
    if refused:
        return for_all(context, NAME, "fail", "live",
                       f"a token for a fresh nonce was refused: {refused[0].detail}", where)
    bare = [a for a in answers if a.outcome == "valid" and a.components == 0]
    if bare:
        return for_all(context, NAME, "fail", "live",
                       "the token verifies but names no software measurement", where)
    missing = [a for a in answers if a.outcome != "valid"]
    if missing:
        return for_all(context, NAME, "not-tested", "live",
                       f"the device gave no token: {missing[0].detail}", where)
    return for_all(context, NAME, "pass", "live",
                   f"{len(answers)} fresh nonces, each answered with a PSA token (RFC 9783) "
                   f"that verifies with the attestation certificate's key ({certificate_note}) "
                   f"and names {answers[0].detail}", where)


def certificate_key(cert_path: Path, ca_path: Path | None) -> tuple[object, str]:
    """The attestation key, and what was checked about its certificate."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if ca_path is None or not ca_path.is_file():
        return cert.public_key(), f"{cert_path.name}; its issuer not checked"
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises ValueError, InvalidSignature, TypeError
    return cert.public_key(), f"{cert_path.name}, issued by {ca_path.name}"


@dataclass(frozen=True)
class Signed:
    """A token made for a fresh nonce: ``outcome`` "valid" (then ``claims`` are its
    verified claims), "refused" or "no token"; ``detail`` says why."""

    outcome: str
    detail: str = ""
    claims: Any = None


def signed_token(command: tuple[str, ...], key: object, seconds: float,
                 what: str = "attest command") -> Signed:
    """One fresh random nonce through the device's ``command`` (``{nonce}`` hex and
    ``{out}`` in its argv); the token read (≤ :data:`MAX_TOKEN` bytes) and verified
    against that nonce. The attestation and air-gapped probes share it."""
    from tinyward.trust.attestation import verify_token
    from tinyward.trust.errors import BadToken, TokenMisuse

    nonce = secrets.token_bytes(32)
    with TemporaryDirectory(prefix="tinyward-attest-") as scratch:
        out = Path(scratch) / "token.cbor"
        argv = [p.replace("{nonce}", nonce.hex()).replace("{out}", str(out)) for p in command]
        try:
            # Output unread, so not captured: the device's program could write without end.
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: S603 - the user's own command
                                  timeout=seconds, check=False)
        except subprocess.TimeoutExpired:
            return Signed("no token", f"the {what} ran past {seconds:.0f} s")
        except OSError as error:
            return Signed("no token", f"the {what} did not start: {error}")
        if done.returncode != 0 or not out.is_file():
            return Signed("no token", f"the {what} exited with {done.returncode} "
                                      "and wrote no token")
        with out.open("rb") as handle:
            token = handle.read(MAX_TOKEN + 1)
    if len(token) > MAX_TOKEN:
        return Signed("refused", f"the token is larger than {MAX_TOKEN} bytes")
    try:
        return Signed("valid", claims=verify_token(token, key, nonce))  # type: ignore[arg-type]
    except BadToken as error:
        return Signed("refused", f"{type(error).__name__}: {error}")
    except TokenMisuse as error:  # the certificate's key is not P-256
        return Signed("refused", f"the attestation certificate's key: {error}")


def challenge(command: tuple[str, ...], key: object, seconds: float) -> Answer:
    """One fresh nonce through the device's command; the token verified against it."""
    signed = signed_token(command, key, seconds)
    if signed.outcome != "valid":
        return Answer(signed.outcome, signed.detail)
    components = signed.claims.software_components
    names = ", ".join(sorted({c.measurement_type or "?" for c in components}))
    return Answer("valid", f"{len(components)} software component(s) ({names})",
                  len(components))


class Attestation:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        command = target.attest_command
        if command is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no --attest-command to challenge the device with a nonce")
        cert: Path | None = target.attest_cert
        ca: Path | None = None
        if cert is None and target.device_dir is not None:
            cert = target.device_dir / "certs" / "attestation.crt.pem"
            ca = target.device_dir / "certs" / "device-ca.crt.pem"
        if cert is None or not cert.is_file():
            return for_all(context, NAME, "not-tested", "live",
                           "no attestation certificate (--attest-cert, or a tinyward device "
                           "folder's certs/attestation.crt.pem) to verify tokens with")
        try:
            key, note = certificate_key(cert, ca)
        except (ValueError, TypeError) as error:
            return for_all(context, NAME, "fail", "live",
                           f"the attestation certificate {cert} does not check: {error}")
        except Exception as error:  # noqa: BLE001 - cryptography's InvalidSignature
            return for_all(context, NAME, "fail", "live",
                           f"the attestation certificate {cert} is not issued by {ca}: "
                           f"{type(error).__name__}")
        answers = []
        for _ in range(CHALLENGES):
            if not budget.spend():
                break
            answers.append(challenge(command, key, min(SECONDS_PER_TOKEN,
                                                        max(1.0, budget.left()))))
        if len(answers) < CHALLENGES and all(a.outcome == "valid" for a in answers):
            answers.append(Answer("no token", "the budget ran out before every challenge"))
        return verdict(answers, note, context, " ".join(command))


__all__ = ["CHALLENGES", "Answer", "Attestation", "certificate_key", "challenge", "verdict"]
