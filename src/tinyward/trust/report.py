"""Signed, fixed-size device reports: the codec (sans-IO).

A report is what a device tells the world: a few high-level results, incident counts and
its health, numbered and signed. The same bytes travel to the fleet server in connected
mode (``POST /v1/reports``) and out of an air-gapped device as a QR code, so this module
does no I/O and knows nothing about transport. The format is specified in
``docs/reports.md``; in short:

- the payload is a CBOR map with exactly the text keys ``v dev seq t mode res inc health
  pad`` (see :class:`Report` for the meaning of each), and optionally ``upd`` (the
  device's update state and installed versions, :class:`UpdateStatus`);
- it is signed as a COSE_Sign1 with ES256 (built and parsed by :mod:`tinyward.trust.cose`,
  never by hand), with ``kid`` = the 32 raw bytes of the device ID in the protected header;
- the whole encoded message is padded, with zero bytes in ``pad``, to **exactly**
  ``size`` bytes (default 1024), so that a quiet report and a busy one look the same on
  the wire.

Verification order (:func:`verify_report`): COSE structure → signature → strict payload
schema (no missing or extra field, types, bounds, ``kid`` matches ``dev``) → exact size
and all-zero padding. Every refusal is a specific :class:`ReportError` subclass.

Exact size and CBOR length heads: a byte string's head grows from 1 to 2 bytes at length
24 and from 2 to 3 at 256, so some totals cannot be reached by growing ``pad`` alone (the
size jumps by 2). The encoder then drops the optional COSE_Sign1 tag (1 byte, tag 18):
tagged and untagged messages are both valid COSE and both accepted by the verifier.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.errors import BadInput, Misuse
from tinyward.trust import cose
from tinyward.trust.errors import TrustError
from tinyward.update.meta import COMPONENTS, Version

FORMAT_VERSION = 1
DEFAULT_SIZE = 1024
MODES = ("connected", "air-gapped")
HEALTH = ("ok", "degraded")
PAYLOAD_KEYS = frozenset({"v", "dev", "seq", "t", "mode", "res", "inc", "health", "pad"})
#: Optional payload keys: a report without them is as valid as before they existed.
OPTIONAL_KEYS = frozenset({"upd"})
#: Update states a device reports (the device's state table, ``tinyward.update.state``).
UPDATE_STATES = ("idle", "downloading", "staged", "trial", "accepted", "rejected", "reverted",
                 "failed")
UPDATE_KEYS = frozenset({"state", "ver", "why", "tgt"})
_WHY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
#: The longest ``x.y.z`` a version can be (each part 0..999999).
MAX_VERSION_TEXT = 20
MAX_SEQ = 2**63 - 1  # fits a signed 64-bit integer column in SQLite and PostgreSQL
MAX_TIMESTAMP = 2**40  # year ~36812: far enough, and bounded
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")
_PROTECTED_KEYS = frozenset({cose.HEADER_ALG, cose.HEADER_KID})
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

Scalar = int | float | str | bool | None
ResultValue = Scalar | tuple[Scalar, ...]


class ReportError(TrustError, BadInput):
    """Base class: a report was refused. The subclass says which check failed."""


class MalformedReport(ReportError):
    """Not a COSE_Sign1 report tinyward accepts, or its payload breaks the schema."""


class BadReportSignature(ReportError):
    """The report's signature does not verify with the device's report key."""


class ReportSizeMismatch(ReportError):
    """The report is not exactly the agreed size."""


class BadPadding(ReportError):
    """The ``pad`` field holds something other than zero bytes."""


class ReportTooLarge(TrustError, Misuse):
    """The report's content does not fit in the requested size (a caller bug on the device)."""


@dataclass(frozen=True)
class ReportLimits:
    """Bounds on everything an untrusted report may contain (safe defaults).

    ``max_bytes`` caps what is even parsed; the exact ``size`` check comes on top of it.
    """

    max_bytes: int = 64 * 1024
    max_results: int = 32
    max_result_fields: int = 16
    max_list_items: int = 64
    max_text: int = 256
    max_incident_kinds: int = 32
    max_count: int = 2**32 - 1


DEFAULT_LIMITS = ReportLimits()


@dataclass(frozen=True)
class UpdateStatus:
    """The ``upd`` field: where the device's update machinery is, and what runs.

    - ``state``: one of :data:`UPDATE_STATES`.
    - ``versions``: installed version of each component that has one, ``{component:
      "x.y.z"}`` (components of :data:`tinyward.update.meta.COMPONENTS`).
    - ``why``: a short code (``tinyward.update.errors`` ``code``) after a refusal, a
      failure or a revert; lowercase letters, digits and ``_ . -``, at most 40 characters.
    - ``target``: ``(component, "x.y.z")``, the target the state is about (the one being
      downloaded, tried, refused or reverted), so the fleet can tell which rollout a
      failure belongs to.
    """

    state: str
    versions: Mapping[str, str] = field(default_factory=dict)
    why: str | None = None
    target: tuple[str, str] | None = None

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> UpdateStatus:
        """From the map a device's update agent hands the runner (the wire's key names:
        ``state``, ``ver``, ``why``, ``tgt`` as ``{component: version}`` of one entry).

        Raises:
            Misuse: it breaks the schema the fleet checks (a device bug).
        """
        if not isinstance(value, Mapping):
            raise Misuse("an update status is a map with state, ver, why, tgt")
        # The agent's map in any key order: sorted here, as the encoder does.
        try:
            ordered = {key: _sorted_map(item) if key in ("ver", "tgt")
                       and isinstance(item, Mapping) else item for key, item in value.items()}
            return _check_update(_sorted_map(ordered))
        except (AttributeError, TypeError):  # a key that is not text
            raise Misuse("update status keys, components included, are text") from None
        except MalformedReport as error:
            raise Misuse(f"update status cannot be reported: {error}") from None


@dataclass(frozen=True)
class Report:
    """The content of one report (everything but the padding and the signature).

    - ``device_id``: the sender's device ID, 64 lowercase hex characters.
    - ``seq``: sequence number, 1, 2, 3 … per device; the fleet stores each once, in order.
    - ``timestamp``: when the device made it, integer Unix seconds (device clock).
    - ``mode``: ``"connected"`` or ``"air-gapped"``.
    - ``results``: the application's results, each a map of short names (letters, digits,
      ``_ . : -``) to an int, float, text, bool, None, or a tuple of those.
    - ``incidents``: attack/anomaly counts since the previous report, ``{kind: count}``.
    - ``health``: ``"ok"`` or ``"degraded"``.
    - ``update``: the device's update state and installed versions, or None (a device
      without update support; reports made before the field existed).
    """

    device_id: str
    seq: int
    timestamp: int
    mode: str = "connected"
    results: tuple[Mapping[str, ResultValue], ...] = ()
    incidents: Mapping[str, int] = field(default_factory=dict)
    health: str = "ok"
    update: UpdateStatus | None = None


def encode_report(
    report: Report,
    signer: cose.Signer,
    size: int = DEFAULT_SIZE,
    *,
    limits: ReportLimits = DEFAULT_LIMITS,
) -> bytes:
    """Sign ``report`` and pad it to exactly ``size`` bytes.

    Raises:
        Misuse: the report breaks the schema or ``limits`` (checked with the same rules
            the verifier uses, so a device can never send what the fleet refuses).
        ReportTooLarge: the content plus the fixed overhead does not fit in ``size``.
    """
    payload_map = _to_payload(report)
    try:
        _check_payload(_sorted_map({**payload_map, "pad": b""}), limits)
    except MalformedReport as error:
        raise Misuse(f"report cannot be encoded: {error}") from None
    if size > limits.max_bytes:
        raise Misuse(f"size {size} is over the limits' max_bytes {limits.max_bytes}")
    kid = bytes.fromhex(report.device_id)

    def build(pad_len: int, tagged: bool, with_signer: cose.Signer) -> bytes:
        # Deterministic CBOR (sorted keys, minimal heads, 64-bit floats): the only
        # encoding a verifier accepts (cose.loads_cbor, _check_order).
        payload = cbor2.dumps(_sorted_map({**payload_map, "pad": bytes(pad_len)}))
        return cose.sign1(payload, with_signer, protected_extra={cose.HEADER_KID: kid},
                          tagged=tagged)

    # Find the padding length with a dummy signer (the signature is always 64 bytes, so
    # lengths are exact), then sign once for real.
    dummy = _SizeOnlySigner(signer)
    smallest = len(build(0, True, dummy))
    if smallest > size:
        raise ReportTooLarge(
            f"report content needs {smallest} bytes with no padding, over the size {size}; "
            "send fewer results or raise the report size"
        )
    estimate = size - smallest
    # The heads of `pad` and of the payload grow by at most 2 + 2 bytes: search a few
    # lengths below the estimate, tagged first, untagged to bridge a 1-byte gap.
    for tagged in (True, False):
        for pad_len in range(estimate, max(-1, estimate - 8), -1):
            if len(build(pad_len, tagged, dummy)) == size:
                message = build(pad_len, tagged, signer)
                if len(message) != size:  # a signer that broke its 64-byte promise
                    raise Misuse("signer returned a signature of the wrong length")
                return message
    raise ReportTooLarge(f"no padding reaches exactly {size} bytes for this content")


@dataclass(frozen=True)
class UnverifiedReport:
    """A report whose COSE structure was parsed but whose signature is NOT checked yet.

    Parse once with :func:`decode_report`, look the key up by :attr:`device_id`, then call
    :meth:`verify`. Nothing in it may be trusted before :meth:`verify` returns.
    """

    sign1: cose.Sign1
    device_id: str
    length: int

    def verify(self, public_key: ec.EllipticCurvePublicKey, *, size: int = DEFAULT_SIZE,
               limits: ReportLimits = DEFAULT_LIMITS) -> Report:
        """Check signature, schema, size and padding; see :func:`verify_report`."""
        try:
            self.sign1.verify(public_key)
        except cose.BadSignature as error:
            raise BadReportSignature(f"report signature: {error}") from None
        try:
            payload = cose.loads_cbor(self.sign1.payload, "report payload")
        except cose.MalformedCose as error:
            raise MalformedReport(str(error)) from None
        report = _check_payload(payload, limits)
        if report.device_id != self.device_id:
            raise MalformedReport(
                "the kid in the protected header does not name the device in 'dev'")
        if self.length != size:
            raise ReportSizeMismatch(
                f"report is {self.length} bytes; reports must be exactly {size}")
        pad = payload["pad"]
        if pad.count(0) != len(pad):
            raise BadPadding("the padding must be zero bytes")
        return report


def decode_report(data: bytes, *, limits: ReportLimits = DEFAULT_LIMITS) -> UnverifiedReport:
    """Parse a report's COSE_Sign1 envelope and its ``kid`` — UNVERIFIED (see the class).

    Raises:
        MalformedReport: not a COSE_Sign1, or no 32-byte ``kid`` in the protected header.
    """
    sign1 = _decode(data, limits)
    return UnverifiedReport(sign1, _kid_device_id(sign1), len(data))


def peek_device_id(data: bytes, *, limits: ReportLimits = DEFAULT_LIMITS) -> str:
    """The device ID a report *claims* (its ``kid``) — UNVERIFIED.

    Use it only to find which key to verify with; trust nothing until
    :func:`verify_report` with that key has succeeded.

    Raises:
        MalformedReport: not a COSE_Sign1, or no 32-byte ``kid`` in the protected header.
    """
    return decode_report(data, limits=limits).device_id


def verify_report(
    data: bytes,
    public_key: ec.EllipticCurvePublicKey,
    *,
    size: int = DEFAULT_SIZE,
    limits: ReportLimits = DEFAULT_LIMITS,
) -> Report:
    """Verify a report against the device's report key and return its content.

    Checks, in order: COSE structure, signature, strict payload schema (and that ``kid``
    names the device in ``dev``), exact ``size``, all-zero padding.

    Raises:
        MalformedReport: bad structure, algorithm, schema, types or bounds.
        BadReportSignature: the signature does not verify with ``public_key``.
        ReportSizeMismatch: the message is not exactly ``size`` bytes.
        BadPadding: ``pad`` is not all zero bytes.
    """
    return decode_report(data, limits=limits).verify(public_key, size=size, limits=limits)


# --- internals ------------------------------------------------------------------------------


class _SizeOnlySigner:
    """Stands in for the real signer while the padding length is searched (no key use)."""

    def __init__(self, real: cose.Signer) -> None:
        self._real = real

    def sign_es256(self, message: bytes) -> bytes:
        return bytes(cose.ES256_SIGNATURE_BYTES)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._real.public_key()


def _decode(data: bytes, limits: ReportLimits) -> cose.Sign1:
    try:
        return cose.decode_sign1(data, max_bytes=limits.max_bytes)
    except cose.MalformedCose as error:
        raise MalformedReport(f"not a valid signed report: {error}") from None


def _kid_device_id(sign1: cose.Sign1) -> str:
    kid = sign1.protected.get(cose.HEADER_KID)
    if not isinstance(kid, bytes) or len(kid) != 32:
        raise MalformedReport("the protected header must carry a 32-byte kid (the device ID)")
    if sign1.unprotected:
        raise MalformedReport("the unprotected header must be empty")
    if sign1.protected.keys() != _PROTECTED_KEYS:
        raise MalformedReport("the protected header may hold only alg and kid")
    return kid.hex()


def _key_order(key: str) -> tuple[int, bytes]:
    """RFC 8949 §4.2.1 order of text keys (bytewise on the encoding: length, then bytes)."""
    encoded = key.encode("utf-8")
    return len(encoded), encoded


def _sorted_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: mapping[key] for key in sorted(mapping, key=_key_order)}


#: The payload's keys in deterministic order: a verifier compares the order it got.
PAYLOAD_ORDER = tuple(sorted(PAYLOAD_KEYS, key=_key_order))
_UPD_PAYLOAD_ORDER = tuple(sorted(PAYLOAD_KEYS | {"upd"}, key=_key_order))


def _in_order(mapping: Mapping[str, Any]) -> bool:
    """Keys in :func:`_key_order` (per report: no encoding, names are ASCII or refused)."""
    if len(mapping) < 2:
        return True
    keys = list(mapping)
    return all(type(a) is str and type(b) is str and (len(a), a) < (len(b), b)
               for a, b in itertools.pairwise(keys))


def _to_payload(report: Report) -> dict[str, Any]:
    payload = {
        "v": FORMAT_VERSION,
        "dev": report.device_id,
        "seq": report.seq,
        "t": report.timestamp,
        "mode": report.mode,
        "res": [_sorted_map({k: list(v) if isinstance(v, tuple) else v for k, v in r.items()})
                for r in report.results],
        "inc": _sorted_map(report.incidents),
        "health": report.health,
    }
    if report.update is not None:
        payload["upd"] = _update_payload(report.update)
    return payload


def _update_payload(update: UpdateStatus) -> Any:
    if not isinstance(update, UpdateStatus):
        return update  # the schema check refuses it with a clear message
    upd: dict[str, Any] = {"state": update.state, "ver": _sorted_map(update.versions)}
    if update.why is not None:
        upd["why"] = update.why
    if update.target is not None:
        # Anything but a (component, version) pair goes through as it is, to be refused.
        pair = isinstance(update.target, tuple) and len(update.target) == 2
        upd["tgt"] = {update.target[0]: update.target[1]} if pair else update.target
    return _sorted_map(upd)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_payload(payload: object, limits: ReportLimits) -> Report:
    """The strict schema; raises :class:`MalformedReport` naming the first broken rule."""
    if not isinstance(payload, dict):
        raise MalformedReport("the report payload must be a CBOR map")
    has_update = "upd" in payload
    if payload.keys() != (PAYLOAD_KEYS | {"upd"} if has_update else PAYLOAD_KEYS):
        keys = set(payload)
        missing = sorted(PAYLOAD_KEYS - keys)
        extra = sorted(repr(k) for k in keys - PAYLOAD_KEYS - OPTIONAL_KEYS)
        raise MalformedReport(
            "report fields are wrong:"
            + (f" missing {', '.join(missing)}" if missing else "")
            + (f" unexpected {', '.join(extra)}" if extra else "")
        )
    order = _UPD_PAYLOAD_ORDER if has_update else PAYLOAD_ORDER
    if tuple(payload) != order:
        raise MalformedReport("the payload's keys are not in deterministic order "
                              f"({', '.join(order)})")
    # type(...) is int: exact ints only (bool is a subclass of int; cbor2 makes no others).
    if type(payload["v"]) is not int or payload["v"] != FORMAT_VERSION:
        raise MalformedReport(f"report format version {payload['v']!r} is not {FORMAT_VERSION}")
    dev = payload["dev"]
    if not isinstance(dev, str) or not _DEVICE_ID.fullmatch(dev):
        raise MalformedReport("'dev' must be a device ID (64 lowercase hex characters)")
    seq = payload["seq"]
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise MalformedReport(f"'seq' must be an integer from 1 to {MAX_SEQ}")
    t = payload["t"]
    if type(t) is not int or not 0 <= t < MAX_TIMESTAMP:
        raise MalformedReport("'t' must be a non-negative integer (Unix seconds)")
    if payload["mode"] not in MODES or not isinstance(payload["mode"], str):
        raise MalformedReport(f"'mode' must be one of {', '.join(MODES)}")
    if payload["health"] not in HEALTH or not isinstance(payload["health"], str):
        raise MalformedReport(f"'health' must be one of {', '.join(HEALTH)}")
    if not isinstance(payload["pad"], bytes):
        raise MalformedReport("'pad' must be a byte string")
    results = _check_results(payload["res"], limits)
    incidents = _check_incidents(payload["inc"], limits)
    update = _check_update(payload["upd"]) if has_update else None
    return Report(dev, seq, t, payload["mode"], results, incidents, payload["health"], update)


def _check_update(upd: object) -> UpdateStatus:
    """``upd``: ``{"state": s, "ver": {component: "x.y.z"}, "why"?: code, "tgt"?:
    {component: "x.y.z"}}``, every key and value checked, nothing else."""
    if not isinstance(upd, dict):
        raise MalformedReport("'upd' must be a map")
    if not {"state", "ver"} <= upd.keys() or not upd.keys() <= UPDATE_KEYS:
        raise MalformedReport("'upd' holds state and ver, and may hold why and tgt; nothing "
                              f"else (got {', '.join(sorted(map(repr, upd))[:6])})")
    if not _in_order(upd):
        raise MalformedReport("'upd': keys are not in deterministic order")
    state = upd["state"]
    if not isinstance(state, str) or state not in UPDATE_STATES:
        raise MalformedReport(f"'upd' state must be one of {', '.join(UPDATE_STATES)}")
    versions = _check_versions(upd["ver"], "'upd' ver")
    why = upd.get("why")
    if why is not None and (not isinstance(why, str) or not _WHY.fullmatch(why)):
        raise MalformedReport("'upd' why must be a short code: 1-40 of a-z 0-9 _ . - "
                              "(the first a-z or 0-9)")
    target = None
    if "tgt" in upd:
        tgt = _check_versions(upd["tgt"], "'upd' tgt")
        if len(tgt) != 1:
            raise MalformedReport("'upd' tgt names exactly one component and its version")
        target = next(iter(tgt.items()))
    return UpdateStatus(state, versions, why, target)


def _check_versions(ver: object, what: str) -> dict[str, str]:
    if not isinstance(ver, dict):
        raise MalformedReport(f"{what} must be a map of component to version")
    if not _in_order(ver):
        raise MalformedReport(f"{what}: components are not in deterministic order")
    for component, version in ver.items():
        if not isinstance(component, str) or component not in COMPONENTS:
            raise MalformedReport(f"{what}: components are {', '.join(COMPONENTS)}")
        if not isinstance(version, str) or len(version) > MAX_VERSION_TEXT:
            raise MalformedReport(f"{what}: version of {component} must be MAJOR.MINOR.PATCH")
        try:
            Version.parse(version)
        except BadInput:
            raise MalformedReport(
                f"{what}: version of {component} must be MAJOR.MINOR.PATCH") from None
    return dict(ver)


def _check_results(res: object, limits: ReportLimits) -> tuple[Mapping[str, ResultValue], ...]:
    if not isinstance(res, list):
        raise MalformedReport("'res' must be an array of result maps")
    if len(res) > limits.max_results:
        raise MalformedReport(f"'res' has {len(res)} results, over the limit {limits.max_results}")
    out: list[Mapping[str, ResultValue]] = []
    for i, result in enumerate(res):
        if not isinstance(result, dict):
            raise MalformedReport(f"result {i} must be a map")
        if len(result) > limits.max_result_fields:
            raise MalformedReport(f"result {i} has over {limits.max_result_fields} fields")
        if not _in_order(result):
            raise MalformedReport(f"result {i}: field names are not in deterministic order")
        clean: dict[str, ResultValue] = {}
        for key, value in result.items():
            _check_name(key, f"result {i} field name")
            if isinstance(value, (list, tuple)):
                if len(value) > limits.max_list_items:
                    raise MalformedReport(f"result {i} field {key!r} has too many items")
                clean[key] = tuple(_check_scalar(v, limits, i, key) for v in value)
            else:
                clean[key] = _check_scalar(value, limits, i, key)
        out.append(clean)
    return tuple(out)


def _check_scalar(value: object, limits: ReportLimits, result: int, key: str) -> Scalar:
    # The place in the error message is built only on error: this runs per result value.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedReport(f"result {result} field {key!r}: numbers must be finite")
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise MalformedReport(f"result {result} field {key!r}: integer out of the 64-bit range")
        return value
    if isinstance(value, str):
        if len(value) > limits.max_text:
            raise MalformedReport(
                f"result {result} field {key!r}: text longer than {limits.max_text} characters")
        return value
    raise MalformedReport(
        f"result {result} field {key!r}: {type(value).__name__} is not an accepted result value")


def _check_incidents(inc: object, limits: ReportLimits) -> Mapping[str, int]:
    if not isinstance(inc, dict):
        raise MalformedReport("'inc' must be a map of incident kind to count")
    if len(inc) > limits.max_incident_kinds:
        raise MalformedReport(f"'inc' has over {limits.max_incident_kinds} kinds")
    if not _in_order(inc):
        raise MalformedReport("'inc': incident kinds are not in deterministic order")
    for kind, count in inc.items():
        _check_name(kind, "incident kind")
        if not _is_int(count) or not 0 <= count <= limits.max_count:
            raise MalformedReport(f"incident count for {kind!r} must be 0..{limits.max_count}")
    return dict(inc)


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MalformedReport(f"{what} must be 1-64 characters of letters, digits, _ . : -")


__all__ = [
    "DEFAULT_LIMITS", "DEFAULT_SIZE", "UPDATE_STATES", "BadPadding", "BadReportSignature",
    "MalformedReport", "Report", "ReportError", "ReportLimits", "ReportSizeMismatch",
    "ReportTooLarge", "UnverifiedReport", "UpdateStatus", "decode_report", "encode_report",
    "peek_device_id", "verify_report",
]
