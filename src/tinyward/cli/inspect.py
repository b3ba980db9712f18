"""`tinyward inspect cert|bundle|token|report FILE [--json]`: show a file for a person.

In the manner of smallstep's ``step certificate inspect``: what is in the file, readable,
or as JSON for machines. Inspecting parses and checks the *format* only; it trusts
nothing. A token's or a report's signature is not checked here (it says so): that is what
``attest verify`` and ``report verify`` are for, against a fleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tinyward.cli._show import result_text
from tinyward.errors import BadInput

MAX_FILE_BYTES = 256 * 1024


class InspectError(BadInput):
    """The file is not what the inspect command was asked to show."""


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InspectError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InspectError(f"{path}: a folder, not a file") from None
    except OSError as error:
        raise InspectError(f"{path}: cannot read it ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise InspectError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not one of ours")
    return data


def _emit(document: Mapping[str, Any], as_json: bool, text: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo("\n".join(text))


def _when(moment: datetime | int) -> str:
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- certificates ------------------------------------------------------------------------


def _key_text(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _extensions(cert: x509.Certificate) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ext in cert.extensions:
        value = ext.value
        critical = " (critical)" if ext.critical else ""
        if isinstance(value, x509.BasicConstraints):
            text = f"CA: {'yes' if value.ca else 'no'}"
            if value.path_length is not None:
                text += f", path length {value.path_length}"
            found["basic_constraints"] = text + critical
        elif isinstance(value, x509.KeyUsage):
            uses = [name for name in ("digital_signature", "content_commitment",
                                      "key_encipherment", "data_encipherment", "key_agreement",
                                      "key_cert_sign", "crl_sign") if getattr(value, name)]
            found["key_usage"] = ", ".join(uses) + critical
        elif isinstance(value, x509.ExtendedKeyUsage):
            found["extended_key_usage"] = ", ".join(
                getattr(oid, "_name", oid.dotted_string) for oid in value) + critical
        elif isinstance(value, x509.SubjectAlternativeName):
            found["subject_alternative_names"] = [str(name.value) for name in value]
        elif isinstance(value, x509.SubjectKeyIdentifier):
            found["subject_key_id"] = value.digest.hex()
        elif isinstance(value, x509.AuthorityKeyIdentifier) and value.key_identifier:
            found["authority_key_id"] = value.key_identifier.hex()
        else:
            found[getattr(ext.oid, "_name", ext.oid.dotted_string)] = "present" + critical
    return found


def certificate_document(cert: x509.Certificate, now: datetime | None = None) -> dict[str, Any]:
    """A certificate as a JSON-ready dict."""
    now = now or datetime.now(UTC)
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = ("valid now" if before <= now < after
             else "EXPIRED" if now >= after else "NOT YET VALID")
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.subject == cert.issuer,
        "serial": f"{cert.serial_number:x}",
        "not_before": _when(before),
        "not_after": _when(after),
        "validity": state,
        "public_key": _key_text(cert.public_key()),
        "spki_sha256": digest.finalize().hex(),
        "signature_algorithm": getattr(cert.signature_algorithm_oid, "_name",
                                       cert.signature_algorithm_oid.dotted_string),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "extensions": _extensions(cert),
    }


def certificate_text(doc: Mapping[str, Any], title: str = "Certificate") -> list[str]:
    lines = [f"{title}:",
             f"  subject:     {doc['subject']}",
             f"  issuer:      {doc['issuer']}" + ("  (self-signed)" if doc["self_signed"] else ""),
             f"  serial:      {doc['serial']}",
             f"  valid:       {doc['not_before']} to {doc['not_after']} ({doc['validity']})",
             f"  public key:  {doc['public_key']}",
             f"  SPKI SHA-256 (pin): {doc['spki_sha256']}",
             f"  signature:   {doc['signature_algorithm']}",
             f"  fingerprint (SHA-256): {doc['fingerprint_sha256']}"]
    for name, value in doc["extensions"].items():
        shown = ", ".join(value) if isinstance(value, list) else value
        lines.append(f"  {name.replace('_', ' ')}: {shown}")
    return lines


def _certificates(data: bytes, path: Path) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise InspectError(f"{path}: not an X.509 certificate (PEM or DER)") from None


@click.group("inspect")
def inspect_group() -> None:
    """Show a certificate, device bundle, attestation token or report, readable (or --json).

    Inspecting parses the file and checks its format; it does not decide trust.
    """


@inspect_group.command("cert")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_cert(file: Path, as_json: bool) -> None:
    """Show the certificate(s) in FILE (PEM, several allowed, or DER)."""
    docs = [certificate_document(c) for c in _certificates(_read(file), file)]
    text: list[str] = []
    for index, doc in enumerate(docs):
        text += certificate_text(doc, "Certificate" if len(docs) == 1
                                 else f"Certificate {index + 1} of {len(docs)}")
    _emit(docs[0] if len(docs) == 1 else {"certificates": docs}, as_json, text)


# ---- device bundles ----------------------------------------------------------------------


@inspect_group.command("bundle")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_bundle(file: Path, as_json: bool) -> None:
    """Show a device bundle (from `fleet enroll` or `fleet bundle`)."""
    from tinyward.fleet.bundle import DeviceBundle

    bundle = DeviceBundle.from_json(_read(file))  # checks the chain inside the bundle
    certificates = {purpose: certificate_document(bundle.certificate(purpose))
                    for purpose in bundle.certificates}
    doc: dict[str, Any] = {"device_id": bundle.device_id, "fleet_id": bundle.fleet_id,
           "server_pin_sha256": bundle.server_spki_sha256.hex(),
           "certificates": certificates,
           "device_ca": certificate_document(bundle.device_ca),
           "root_ca": certificate_document(bundle.root_ca)}
    text = ["Device bundle (public material only: no keys):",
            f"  device ID:   {bundle.device_id}",
            f"  fleet ID:    {bundle.fleet_id}",
            f"  server pin:  {doc['server_pin_sha256']} (SHA-256 of the server's public key)"]
    for purpose, cert in certificates.items():
        text.append(f"  {purpose} certificate: serial {cert['serial']}, {cert['validity']} "
                    f"until {cert['not_after']}, key pin {cert['spki_sha256'][:16]}…")
    for name in ("device_ca", "root_ca"):
        ca = doc[name]
        text.append(f"  {name.replace('_', ' ')}: {ca['subject']}, {ca['validity']} until "
                    f"{ca['not_after']}")
    _emit(doc, as_json, text)


# ---- attestation tokens ------------------------------------------------------------------


@inspect_group.command("token")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_token(file: Path, as_json: bool) -> None:
    """Show a PSA attestation token (from `device attest`): its claims, UNVERIFIED."""
    from tinyward.trust.attestation import claims_to_json, decode_claims
    from tinyward.trust.cose import MalformedCose, decode_sign1

    data = _read(file)
    try:
        # As `attest verify` reads a token: RFC 9783 tolerates other serialisations.
        message = decode_sign1(data, deterministic=False)
    except MalformedCose as error:
        raise InspectError(f"{file}: not a PSA token (a COSE_Sign1): {error}") from None
    claims = claims_to_json(decode_claims(message.payload))
    doc = {"signature": "not checked", "tagged": message.tagged, "claims": claims}
    text = [f"PSA attestation token ({len(data)} bytes)",
            "  signature:      NOT checked (check it with `tinyward attest verify`)",
            f"  profile:        {claims['profile']}",
            f"  device ID:      {claims['device_id']}",
            f"  instance ID:    {claims['instance_id']}",
            f"  implementation: {claims['implementation_id']}",
            "  lifecycle:      {} (0x{:04x})".format(claims["security_lifecycle_state"],
                                                   claims["security_lifecycle"]),
            f"  operating mode: {claims['operating_mode']}",
            f"  nonce:          {claims['nonce']}",
            f"  boot seed:      {claims['boot_seed']}",
            "  software components:"]
    for component in claims["software_components"]:
        text.append(f"    {component['measurement_type']}: {component['measurement_value']} "
                    f"(version {component['version'] or '-'}, "
                    f"{component['measurement_desc'] or 'sha-256'})")
    _emit(doc, as_json, text)


# ---- reports -----------------------------------------------------------------------------


def _report_bytes(data: bytes, path: Path) -> bytes:
    from tinyward.readout.offline import TEXT_PREFIX, from_text

    if data.lstrip().startswith(TEXT_PREFIX.encode()):
        return from_text(data.decode("ascii", errors="replace"))
    return data  # a report as the link sends it (binary)


@inspect_group.command("report")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_report(file: Path, as_json: bool) -> None:
    """Show a signed report (a readout's TW1: text or the binary form): UNVERIFIED."""
    from tinyward.trust.cose import MalformedCose, loads_cbor
    from tinyward.trust.report import decode_report

    data = _report_bytes(_read(file), file)
    unverified = decode_report(data)
    try:
        payload = loads_cbor(unverified.sign1.payload, "report payload")
    except MalformedCose as error:
        raise InspectError(f"{file}: the report's payload is not CBOR: {error}") from None
    if not isinstance(payload, Mapping):
        raise InspectError(f"{file}: the report's payload is not a map")
    raw_results, raw_incidents = payload.get("res"), payload.get("inc")
    results: list[dict[str, Any]] = ([dict(r) for r in raw_results if isinstance(r, Mapping)]
                                     if isinstance(raw_results, list) else [])
    incidents: dict[str, Any] = dict(raw_incidents) if isinstance(raw_incidents, Mapping) else {}
    stamp = payload.get("t")
    doc: dict[str, Any] = {
        "signature": "not checked", "bytes": len(data), "device_id": unverified.device_id,
        "seq": payload.get("seq"), "time": stamp, "mode": payload.get("mode"),
        "health": payload.get("health"),
        "results": results, "incidents": incidents, "format_version": payload.get("v"),
        "padding_bytes": len(payload["pad"]) if isinstance(payload.get("pad"), bytes) else None,
    }
    text = [f"Signed report ({len(data)} bytes)",
            "  signature: NOT checked (check it with `tinyward report verify`)",
            f"  device ID: {unverified.device_id}",
            f"  number:    #{doc['seq']}",
            f"  made at:   {_when(stamp) if isinstance(stamp, int) else stamp} (device clock)",
            f"  mode:      {doc['mode']}",
            f"  health:    {doc['health']}",
            f"  results:   {len(results)}"]
    text += [f"    {result_text(r)}" for r in results]
    text.append("  incidents: " + (", ".join(f"{k} {v}" for k, v in sorted(incidents.items()))
                                   or "none"))
    _emit(doc, as_json, text)


COMMANDS: list[click.Command] = [inspect_group]
