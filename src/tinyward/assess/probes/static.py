"""identity and update-trust (static): read a device folder or image; nothing runs.

The walk is bounded (:data:`MAX_FILES` entries, files up to :data:`MAX_BYTES`, symlinks
never followed), and the verdicts are pure functions of what the walk collected:

- identity (I-ID-1): a private key in the clear anywhere in the folder fails (a key in the
  image is every device's key, CWE-321); a device certificate (not a CA) naming one
  subject, with no clear key, passes, labelled static: one folder cannot show that another
  device's keys differ, and the evidence says so. Neither: not-tested.
- update-trust (I-UPD-1): a TUF root (``*root.json`` whose ``signed._type`` is ``root``)
  with at least one key and a threshold passes; none found: not-tested (another update
  mechanism is not recognised, so it is not failed either).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

MAX_FILES = 5000
MAX_BYTES = 1 << 20
_CLEAR_KEYS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN EC PRIVATE KEY-----",
               b"-----BEGIN RSA PRIVATE KEY-----", b"-----BEGIN OPENSSH PRIVATE KEY-----",
               b"-----BEGIN DSA PRIVATE KEY-----")
_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass
class FolderFacts:
    """What the walk saw (relative paths)."""

    files: int = 0
    truncated: bool = False
    clear_keys: list[str] = field(default_factory=list)
    device_certs: list[tuple[str, str]] = field(default_factory=list)  # (path, subject)
    tuf_roots: list[tuple[str, int, int]] = field(default_factory=list)  # (path, keys, thr)


def scan_file(relative: str, data: bytes, facts: FolderFacts) -> None:
    """Add what one file shows to ``facts`` (pure)."""
    if any(marker in data for marker in _CLEAR_KEYS):
        facts.clear_keys.append(relative)
    if _CERT in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            certs = []
        for cert in certs[:1]:  # the leaf comes first in a chain file
            try:
                is_ca = cert.extensions.get_extension_for_class(
                    x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            except ValueError:  # extensions are parsed on first use: a malformed one
                continue
            try:
                subject = cert.subject.rfc4514_string()
            except ValueError:
                continue
            if not is_ca:
                facts.device_certs.append((relative, subject))
    if relative.endswith("root.json"):
        try:
            signed = json.loads(data).get("signed", {})
        except (ValueError, AttributeError):
            return
        if isinstance(signed, dict) and signed.get("_type") == "root":
            # The device wrote this JSON: any value may be of any type.
            keys = signed.get("keys")
            roles = signed.get("roles")
            root = roles.get("root") if isinstance(roles, dict) else None
            threshold = root.get("threshold") if isinstance(root, dict) else None
            facts.tuf_roots.append((relative, len(keys) if isinstance(keys, dict) else 0,
                                    threshold if type(threshold) is int else 0))


def walk(folder: Path, budget: Budget) -> FolderFacts:
    facts = FolderFacts()
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if facts.files >= MAX_FILES or budget.left() <= 0:
                facts.truncated = True
                return facts
            path = Path(root) / name
            facts.files += 1
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            scan_file(str(path.relative_to(folder)), data, facts)
    return facts


def identity_verdict(facts: FolderFacts, context: Context) -> list[Evidence]:
    name = "identity"
    if facts.clear_keys:
        return for_all(context, name, "fail", "static",
                       f"private key(s) in the clear in the device folder: "
                       f"{', '.join(facts.clear_keys[:5])}", facts.clear_keys[0])
    if facts.truncated:
        return for_all(context, name, "not-tested", "static",
                       f"the folder has more than {MAX_FILES} files: not all were read")
    if not facts.device_certs:
        return for_all(context, name, "not-tested", "static",
                       f"no device certificate among {facts.files} files (keys kept "
                       "elsewhere, e.g. sealed storage, cannot be read statically)")
    path, subject = facts.device_certs[0]
    return for_all(context, name, "pass", "static",
                   f"device certificate {path} names {subject}; no private key in the "
                   f"clear among {facts.files} files (one folder: that other devices' "
                   "keys differ is not compared)", path)


def update_verdict(facts: FolderFacts, context: Context) -> list[Evidence]:
    name = "update-trust"
    good = [(p, k, t) for p, k, t in facts.tuf_roots if k >= 1 and t >= 1]
    if good:
        path, keys, threshold = good[0]
        return for_all(context, name, "pass", "static",
                       f"TUF root {path}: {keys} key(s), root threshold {threshold}", path)
    if facts.tuf_roots:
        return for_all(context, name, "fail", "static",
                       f"TUF root {facts.tuf_roots[0][0]} has no keys or no threshold",
                       facts.tuf_roots[0][0])
    return for_all(context, name, "not-tested", "static",
                   f"no TUF root among {facts.files} files (other update mechanisms are "
                   "not recognised)")


class _FolderCheck:
    kind = "static"
    name = ""

    def _facts(self, target: Target, budget: Budget, context: Context) -> FolderFacts | None:
        if target.device_dir is None:
            return None
        if context.folder_facts is None:  # both checks share one bounded walk
            context.folder_facts = walk(target.device_dir, budget)
        facts: FolderFacts = context.folder_facts
        return facts


class Identity(_FolderCheck):
    name = "identity"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        facts = self._facts(target, budget, context)
        if facts is None:
            return for_all(context, self.name, "not-tested", "static", "no device folder")
        return identity_verdict(facts, context)


class UpdateTrust(_FolderCheck):
    name = "update-trust"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        facts = self._facts(target, budget, context)
        if facts is None:
            return for_all(context, self.name, "not-tested", "static", "no device folder")
        if not facts.tuf_roots and target.device_dir is not None:
            _sealed_root(target.device_dir, facts)
        return update_verdict(facts, context)


def _sealed_root(folder: Path, facts: FolderFacts) -> None:
    """A tinyward device folder keeps its update root sealed in its storage (a walk of
    the files cannot read it): open the device, as its own process would, and look."""
    if not (folder / "device.json").is_file():
        return
    from tinyward.errors import TinywardError
    from tinyward.trust.device import Device

    try:
        root = Device.open(folder).update_trusted_root()
    except (TinywardError, OSError):
        return
    if root is not None:
        scan_file("(sealed storage) update root.json", root, facts)


__all__ = ["FolderFacts", "Identity", "UpdateTrust", "identity_verdict", "scan_file",
           "update_verdict", "walk"]
