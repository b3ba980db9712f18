"""The fleet's keys kept apart (issue 12, item 8): attacks first, then rotation and migration.

- The internet-facing server holds only its own TLS key: its memory, environment and open
  files never include a CA or update private key (nor their passphrases).
- Keys at rest are sealed under a memory-hard KDF whose stated cost cannot be edited down.
- Weak passphrases are refused with the rule they broke; each role has its own secret.
- Fleets of the old format (one passphrase, PBKDF2 at 2,048 iterations) are refused with a
  migration hint, and `fleet migrate` moves them.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import needs
from tests.fleet.conftest import NOW
from tests.fleet.helpers import (
    CLI_SECRETS,
    PASSPHRASE,
    SERVER_PASSPHRASE,
    UPDATE_PASSPHRASE,
    device_keys,
    request_pem,
)
from tinyward.cli.main import cli
from tinyward.errors import Misuse
from tinyward.fleet import keyseal
from tinyward.fleet.errors import (
    BadFleet,
    OldFleetFormat,
    UntrustedCertificate,
    WeakPassphrase,
    WrongPassphrase,
)
from tinyward.fleet.keyseal import DEFAULT_SCRYPT, ScryptParams, open_key, read_params, seal_key
from tinyward.fleet.passphrase import MIN_CHARS
from tinyward.fleet.pki import DeviceBundle, Fleet, device_ca_label
from tinyward.fleet.profiles import (
    fleet_id_of,
    make_device_ca,
    make_root_ca,
    make_server_certificate,
)
from tinyward.fleet.runner import server_ssl_context
from tinyward.lab.fleetproc import server_environment

LATER = NOW + timedelta(days=1)


def _scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(32, "big")


def _offline_scalars(fleet: Fleet) -> dict[str, bytes]:
    return {
        "root-ca": _scalar(open_key((fleet.keys_path / "root-ca.key").read_bytes(), PASSPHRASE,
                                    "root-ca")),
        "device-ca": _scalar(open_key((fleet.keys_path / "device-ca.key").read_bytes(),
                                      PASSPHRASE, "device-ca")),
        "update-signing": _scalar(open_key((fleet.keys_path / "update-signing.key").read_bytes(),
                                           UPDATE_PASSPHRASE, "update-signing")),
        # The key that replaces the server's own at the next rotation: taking the server
        # must not give it (else the rotation would not get rid of the intruder).
        "server-next": _scalar(open_key((fleet.keys_path / "server-next.key").read_bytes(),
                                        PASSPHRASE, "server-next")),
    }


def _memory_holds(pid: int, needles: dict[str, bytes]) -> set[str]:
    """Which of ``needles`` (32-byte private scalars) appear in the process's memory, in
    the big-endian form or in OpenSSL's BIGNUM form (64-bit limbs, least significant
    first, i.e. the bytes reversed)."""
    found: set[str] = set()
    forms = {name: (value, value[::-1]) for name, value in needles.items()}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            for name, (big, little) in forms.items():
                if big in chunk or little in chunk:
                    found.add(name)
    return found


def _server_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


# -- the server holds only what it needs ------------------------------------------------


@needs(Path("/proc/self/mem").exists(), "needs /proc/<pid>/mem")
def test_attack_server_memory_env_and_files_hold_no_ca_or_update_key(tmp_path: Path) -> None:
    """Take the running `fleet serve` (2 workers): read every byte of its memory, its
    environment and its open files, as whoever compromised it would."""
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE,
                       server_passphrase=SERVER_PASSPHRASE)
    fleet.enroll(request_pem(), PASSPHRASE)
    offline = _offline_scalars(fleet)
    server_key = open_key(fleet.server_key_path.read_bytes(), SERVER_PASSPHRASE, "server")
    env = server_environment(SERVER_PASSPHRASE)
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet.directory), "--port", "0",
         "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, line + (process.stderr.read() if process.stderr else "")
        pids = _server_processes(process.pid)
        assert len(pids) == 2  # the accepting process and its worker
        for pid in pids:
            found = _memory_holds(pid, {**offline, "server": _scalar(server_key)})
            # The scan works: it finds the key the server must hold (its own TLS key) ...
            assert "server" in found, f"scan found nothing in {pid}: the check is blind"
            # ... and nothing of the CA or the update key.
            assert found == {"server"}, f"process {pid} holds {sorted(found - {'server'})}"
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert PASSPHRASE not in environ and UPDATE_PASSPHRASE not in environ
            assert b"TINYWARD_CA_PASSPHRASE" not in environ
            opened = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert not [p for p in opened if str(fleet.keys_path) in p], opened
    finally:
        process.terminate()
        process.wait(30)


def test_attack_server_code_path_never_opens_an_offline_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same in-process, with a spy on every sealed-key open and every file read."""
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE,
                       server_passphrase=SERVER_PASSPHRASE)
    opened: list[str] = []
    real_open_key = keyseal.open_key

    def spy(data: bytes, secret: bytes, purpose: str, name: str = "") -> ec.EllipticCurvePrivateKey:
        opened.append(purpose)
        return real_open_key(data, secret, purpose, name)

    monkeypatch.setattr("tinyward.fleet.pki.open_key", spy)
    monkeypatch.setattr("tinyward.fleet.tokens.open_key", spy)
    read: list[str] = []
    real_read_bytes = Path.read_bytes

    def read_spy(self: Path) -> bytes:
        read.append(str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_spy)
    from tinyward.fleet.directory import FleetDirectory

    opened_fleet = Fleet.open(fleet.directory)
    server_ssl_context(opened_fleet, SERVER_PASSPHRASE)
    FleetDirectory(opened_fleet)
    assert opened == ["server"]
    assert not [p for p in read if p.startswith(str(fleet.keys_path))], read


def test_server_workers_open_the_sealed_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scrypt derivation costs 128 MiB: forked workers reuse the parent's opened key."""
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, server_passphrase=SERVER_PASSPHRASE)
    derived: list[int] = []
    real_derive = keyseal._derive

    def counting(secret: bytes, salt: bytes, params: ScryptParams) -> bytes:
        derived.append(params.n)
        return real_derive(secret, salt, params)

    monkeypatch.setattr(keyseal, "_derive", counting)
    for _ in range(3):
        server_ssl_context(fleet, SERVER_PASSPHRASE)
    assert len(derived) == 1
    with pytest.raises(WrongPassphrase):  # a wrong passphrase is not served from the cache
        server_ssl_context(fleet, b"another server passphrase")


def test_attack_serve_refuses_a_ca_or_update_secret_in_its_environment(tmp_path: Path) -> None:
    Fleet.init(tmp_path / "fleet", PASSPHRASE)
    for name in ("TINYWARD_CA_PASSPHRASE", "TINYWARD_UPDATE_PASSPHRASE",
                 "TINYWARD_FLEET_PASSPHRASE"):
        result = CliRunner().invoke(
            cli, ["fleet", "serve", str(tmp_path / "fleet"), "--port", "0"],
            env={name: "whatever it is"})
        assert result.exit_code != 0
        assert f"refuses to run with {name}" in result.output
        assert "Traceback" not in result.output


def test_attack_each_role_needs_its_own_secret(tmp_path: Path) -> None:
    with pytest.raises(Misuse, match="CA and server passphrases are the same"):
        Fleet.init(tmp_path / "f", PASSPHRASE, server_passphrase=PASSPHRASE)
    with pytest.raises(Misuse, match="CA and update passphrases are the same"):
        Fleet.init(tmp_path / "f", PASSPHRASE, update_passphrase=PASSPHRASE)
    fleet = Fleet.init(tmp_path / "g", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE,
                       server_passphrase=SERVER_PASSPHRASE)
    with pytest.raises(WrongPassphrase):  # the server's secret opens no CA key
        fleet.device_ca_token(SERVER_PASSPHRASE)
    with pytest.raises(WrongPassphrase):
        fleet.enroll(request_pem(), SERVER_PASSPHRASE)
    with pytest.raises(WrongPassphrase):  # nor the update key
        fleet.update_signing_token(SERVER_PASSPHRASE)


# -- keys at rest -------------------------------------------------------------------------


def test_attack_keys_at_rest_are_memory_hard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the real cost (tests/conftest.py lowers it for speed; undone here)."""
    monkeypatch.setattr(keyseal, "DEFAULT_SCRYPT", ScryptParams())
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE,
                       server_passphrase=SERVER_PASSPHRASE)
    sealed = [*fleet.keys_path.glob("*.key"), fleet.server_key_path]
    assert len(sealed) == 5  # root CA, device CA, update, server, next server
    for path in sealed:
        document = json.loads(path.read_bytes())
        assert document["kdf"]["name"] == "scrypt" and document["aead"] == "AES-256-GCM"
        params = read_params(path.read_bytes())
        assert (params.n, params.r, params.p) == (2**17, 8, 1), path
        assert params.memory_bytes >= 128 * 2**20  # per guess
        assert b"BEGIN" not in path.read_bytes()  # no PKCS#8 PBKDF2 PEM anywhere
    assert ScryptParams(2**17, 8, 1) == DEFAULT_SCRYPT


def test_attack_lowered_kdf_cost_in_a_key_file_does_not_open(tmp_path: Path) -> None:
    """An attacker who may write the file cannot make the next guesser's job cheaper:
    the parameters are bound as associated data."""
    key = ec.generate_private_key(ec.SECP256R1())
    document = json.loads(seal_key(key, PASSPHRASE, "device-ca"))
    document["kdf"]["n"] //= 2
    with pytest.raises(WrongPassphrase):
        open_key(json.dumps(document).encode(), PASSPHRASE, "device-ca")


def test_attack_key_file_of_another_role_refused(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE, update_passphrase=UPDATE_PASSPHRASE)
    # The root CA's sealed file put where the device CA's goes (same passphrase): the
    # purpose is bound into the file and checked, so it is refused, not used as the CA.
    (fleet.keys_path / "device-ca.key").write_bytes(
        (fleet.keys_path / "root-ca.key").read_bytes())
    with pytest.raises(BadFleet, match="holds the root-ca key, not the device-ca key"):
        fleet.device_ca_token(PASSPHRASE)


def test_attack_absurd_kdf_parameters_refused_before_deriving() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    document = json.loads(seal_key(key, PASSPHRASE, "device-ca"))
    document["kdf"]["n"] = 2**40  # 128 TiB of memory per guess: refused, not tried
    with pytest.raises(BadFleet, match="above the bound"):
        open_key(json.dumps(document).encode(), PASSPHRASE, "device-ca")


@pytest.mark.parametrize(
    "weak",
    ["password1234",  # the one the old `fleet init` accepted (12 characters)
     "password12345678", "P@ssw0rd!2024!!", "dragondragon99", "qwertyuiop12345",
     "1234567890123456", "abcdefghijklmnop", "aaaaaaaaaaaaaaaaaaaa", "abcabcabcabcabc",
     "Welcome2024!!!!"],
)
def test_attack_weak_passphrase_refused_with_the_rule(tmp_path: Path, weak: str) -> None:
    with pytest.raises(WeakPassphrase, match=r"too weak: .*rule: at least 14 characters"):
        Fleet.init(tmp_path / "f", weak.encode())
    assert not (tmp_path / "f").exists()
    result = CliRunner().invoke(cli, ["fleet", "init", str(tmp_path / "g")],
                                env={**CLI_SECRETS, "TINYWARD_UPDATE_PASSPHRASE": weak})
    assert result.exit_code == 2 and "update passphrase is too weak" in result.output
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("good", ["correct horse battery staple", "xK9#mP2$vL8@nQ4",
                                  "tinyward-bench-passphrase", "Tr0ub4dor&3xyzzy"])
def test_reasonable_passphrases_accepted(good: str) -> None:
    from tinyward.fleet.passphrase import weakness

    assert weakness(good) is None
    assert len(good) >= MIN_CHARS


# -- old fleets -------------------------------------------------------------------------


OLD_PASSPHRASE = b"the old single fleet passphrase"


def _old_fleet(directory: Path) -> dict[str, ec.EllipticCurvePrivateKey]:
    """A fleet as the old `fleet init` wrote it: one passphrase, PKCS#8 PBKDF2 PEM keys.
    Returns its private keys, to check the migration kept them."""
    ca = directory / "ca"
    ca.mkdir(parents=True, mode=0o700)
    (directory / "devices").mkdir(mode=0o700)
    keys = {n: ec.generate_private_key(ec.SECP256R1())
            for n in ("root-ca", "device-ca", "server", "update-signing")}
    root = make_root_ca(keys["root-ca"], NOW)
    certs = {
        "root-ca": root,
        "device-ca": make_device_ca(keys["device-ca"].public_key(), root, keys["root-ca"], NOW),
        "server": make_server_certificate(keys["server"].public_key(), ["localhost"], root,
                                          keys["root-ca"], NOW),
    }
    for name, cert in certs.items():
        (ca / f"{name}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for name, key in keys.items():
        (ca / f"{name}.key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(OLD_PASSPHRASE)))
    (ca / "update-signing.pub.pem").write_bytes(keys["update-signing"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (directory / "fleet.json").write_text(json.dumps({
        "format": "tinyward-fleet/1", "fleet_id": fleet_id_of(root),
        "server_names": ["localhost"], "created": NOW.isoformat()}))
    return keys


def test_attack_old_pbkdf2_fleet_refused_with_a_migration_hint(tmp_path: Path) -> None:
    _old_fleet(tmp_path / "old")
    with pytest.raises(OldFleetFormat, match=r"PBKDF2 with 2,048 iterations.*fleet migrate"):
        Fleet.open(tmp_path / "old")
    for args in (["fleet", "show", str(tmp_path / "old")],
                 ["fleet", "serve", str(tmp_path / "old"), "--port", "0"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code != 0 and "tinyward fleet migrate" in result.output


def test_migrate_moves_every_key_under_its_own_secret(tmp_path: Path) -> None:
    keys = _old_fleet(tmp_path / "old")
    env = {**CLI_SECRETS, "TINYWARD_FLEET_PASSPHRASE": OLD_PASSPHRASE.decode()}
    result = CliRunner().invoke(cli, ["fleet", "migrate", str(tmp_path / "old")], env=env)
    assert result.exit_code == 0, result.output
    fleet = Fleet.open(tmp_path / "old")
    assert not list((fleet.directory / "ca").glob("*.key.pem"))  # the PBKDF2 copies are gone
    assert _scalar(keys["device-ca"]) == _scalar(
        open_key((fleet.keys_path / "device-ca.key").read_bytes(), PASSPHRASE, "device-ca"))
    assert fleet.update_signing_token(UPDATE_PASSPHRASE).public_key() == \
        keys["update-signing"].public_key()
    with pytest.raises(WrongPassphrase):
        fleet.device_ca_token(OLD_PASSPHRASE)
    server_ssl_context(fleet, SERVER_PASSPHRASE)
    bundle = fleet.enroll(request_pem(), PASSPHRASE)
    assert fleet.verify_device_certificate(bundle.certificate("tls"), "tls")
    assert bundle.server_pins == fleet.server_pins and len(fleet.server_pins) == 2  # roll-over


def test_migrate_wrong_old_passphrase_changes_nothing(tmp_path: Path) -> None:
    _old_fleet(tmp_path / "old")
    before = sorted(p.name for p in (tmp_path / "old" / "ca").iterdir())
    with pytest.raises(WrongPassphrase, match="old fleet passphrase does not open"):
        Fleet.migrate(tmp_path / "old", b"not it at all, no", PASSPHRASE, UPDATE_PASSPHRASE, None)
    assert sorted(p.name for p in (tmp_path / "old" / "ca").iterdir()) == before
    assert not (tmp_path / "old" / "keys").exists()


# -- rotation ----------------------------------------------------------------------------


def _handshake(fleet: Fleet, cert_pem: str, key: ec.EllipticCurvePrivateKey,
               folder: Path) -> bool:
    """A real TLS 1.3 handshake (memory BIOs) of a device against the server's context."""
    (folder / "c.pem").write_text(cert_pem)
    (folder / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(fleet.root_ca_path)
    client_ctx.load_cert_chain(folder / "c.pem", folder / "k.pem")
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ssl_context(fleet).wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):  # bounded: a TLS 1.3 handshake needs 2-3 flights
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["server"]:
            try:  # TLS 1.3: the server reads the client's certificate after its Finished
                client.write(b"x")
                s_in.write(c_out.read())
                server.read(1)
            except ssl.SSLError:
                return False
            return True
    return False


def test_rotate_device_ca_keeps_old_devices_until_the_old_ca_is_retired(
    fleet: Fleet, tmp_path: Path
) -> None:
    old_keys = device_keys()
    old_bundle = fleet.enroll(request_pem(old_keys), PASSPHRASE, now=LATER)
    old_device = old_bundle.certificate("tls")
    old_label = device_ca_label(fleet.device_ca)
    rotated = fleet.rotate_device_ca(fleet.root_ca_token(PASSPHRASE), PASSPHRASE, now=LATER)
    assert rotated.device_ca != fleet.device_ca
    assert [device_ca_label(c) for c in rotated.retiring_device_cas] == [old_label]
    new_device = rotated.enroll(request_pem(), PASSPHRASE, now=LATER).certificate("tls")
    new_device.verify_directly_issued_by(rotated.device_ca)
    assert rotated.verify_device_certificate(old_device, "tls", LATER)  # still trusted
    assert rotated.verify_device_certificate(new_device, "tls", LATER)
    tls_pem, tls_key = old_bundle.certificates["tls"], old_keys["tls"]
    assert _handshake(rotated, tls_pem, tls_key, tmp_path)  # the server takes it too
    retired = rotated.retire_device_ca(old_label)
    with pytest.raises(UntrustedCertificate):
        retired.verify_device_certificate(old_device, "tls", LATER)
    assert retired.verify_device_certificate(new_device, "tls", LATER)
    assert not _handshake(retired, tls_pem, tls_key, tmp_path)


def test_retire_unknown_device_ca_refused(fleet: Fleet) -> None:
    with pytest.raises(BadFleet, match="no retiring device CA"):
        fleet.retire_device_ca("../../etc")


def test_attack_the_server_secret_does_not_open_the_next_server_key(fleet: Fleet) -> None:
    """The next key is sealed under the CA passphrase, not the server's: whoever took the
    server and its passphrase (and found the key file) still cannot open it."""
    data = (fleet.keys_path / "server-next.key").read_bytes()
    with pytest.raises(WrongPassphrase):
        open_key(data, SERVER_PASSPHRASE, "server-next")
    with pytest.raises(BadFleet):  # nor is it a server key: the purpose is bound
        open_key(data, PASSPHRASE, "server")
    key = open_key(data, PASSPHRASE, "server-next")
    from tinyward.fleet.profiles import spki_sha256
    assert spki_sha256(key.public_key()) == fleet.server_next_spki_sha256


def test_rotate_server_key_promotes_the_next_key_and_makes_a_fresh_one(fleet: Fleet) -> None:
    old_pin, old_key = fleet.server_spki_sha256, fleet.server_key_path.read_bytes()
    next_pin = fleet.server_next_spki_sha256
    assert next_pin is not None and next_pin != old_pin
    rotated = fleet.rotate_server_key(fleet.root_ca_token(PASSPHRASE), SERVER_PASSPHRASE,
                                      ca_passphrase=PASSPHRASE)
    assert rotated.server_spki_sha256 == next_pin  # the pin every bundle carried
    assert rotated.server_next_spki_sha256 not in (None, old_pin, next_pin)
    assert rotated.server_pins == (next_pin, rotated.server_next_spki_sha256)
    assert rotated.server_key_path.name == "server.key"  # now sealed
    assert not (fleet.directory / "server" / "server.key.pem").exists()
    assert old_key not in rotated.server_key_path.read_bytes()
    rotated.server_certificate.verify_directly_issued_by(rotated.root_ca)
    server_ssl_context(rotated, SERVER_PASSPHRASE)
    with pytest.raises(Misuse):
        server_ssl_context(rotated)  # sealed now: the passphrase is needed


def test_rotate_server_key_with_a_wrong_ca_passphrase_changes_nothing(fleet: Fleet) -> None:
    before = {p: p.read_bytes() for p in fleet.directory.rglob("*") if p.is_file()}
    with pytest.raises(WrongPassphrase):
        fleet.rotate_server_key(fleet.root_ca_token(PASSPHRASE), None,
                                ca_passphrase=b"not the CA passphrase at all")
    assert {p: p.read_bytes() for p in fleet.directory.rglob("*") if p.is_file()} == before


def test_rotate_server_key_stopped_before_the_fresh_next_key_is_finished_by_running_again(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinyward.fleet import pki

    next_pin = fleet.server_next_spki_sha256

    def crash(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(pki, "_write_next_server_key", crash)
    with pytest.raises(OSError):
        fleet.rotate_server_key(fleet.root_ca_token(PASSPHRASE), None, ca_passphrase=PASSPHRASE)
    monkeypatch.undo()
    half = Fleet.open(fleet.directory)
    assert half.server_spki_sha256 == next_pin  # promoted; the next pin is still the old one
    assert half.server_pins == (next_pin,)  # bundles do not carry the same pin twice
    server_ssl_context(half)  # the server runs with the promoted key
    done = half.rotate_server_key(half.root_ca_token(PASSPHRASE), None, ca_passphrase=PASSPHRASE)
    assert done.server_spki_sha256 == next_pin  # not promoted twice
    assert done.server_next_spki_sha256 not in (None, next_pin)


def test_rotate_server_key_discarding_the_next_key_makes_a_brand_new_one(fleet: Fleet) -> None:
    old = fleet.server_pins
    rotated = fleet.rotate_server_key(fleet.root_ca_token(PASSPHRASE), None,
                                      ca_passphrase=PASSPHRASE, discard_next=True)
    assert not set(rotated.server_pins) & set(old)


def test_a_fleet_made_before_roll_over_gets_its_next_key(fleet: Fleet) -> None:
    (fleet.keys_path / "server-next.key").unlink()
    (fleet.directory / "ca" / "server-next.pub.pem").unlink()
    old = Fleet.open(fleet.directory)
    assert old.server_next_spki_sha256 is None and old.server_pins == (old.server_spki_sha256,)
    bundle = old.enroll(request_pem(), PASSPHRASE, now=LATER)
    assert json.loads(bundle.to_json())["format"] == "tinyward-device-bundle/1"
    with pytest.raises(WrongPassphrase):
        old.make_next_server_key(SERVER_PASSPHRASE)
    made = old.make_next_server_key(PASSPHRASE)
    assert made.server_next_spki_sha256 is not None
    assert made.bundle(bundle.device_id).server_pins == made.server_pins
    with pytest.raises(BadFleet, match="already has a next server key"):
        made.make_next_server_key(PASSPHRASE)


def test_fleet_bundle_is_made_again_with_todays_pins(fleet: Fleet) -> None:
    from tinyward.fleet.errors import RevokedDevice, UnknownDevice

    first = fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    assert fleet.bundle(first.device_id) == first  # nothing new issued
    rotated = fleet.rotate_device_ca(fleet.root_ca_token(PASSPHRASE), PASSPHRASE, now=LATER)
    rotated = rotated.rotate_server_key(rotated.root_ca_token(PASSPHRASE), None,
                                        ca_passphrase=PASSPHRASE, now=LATER)
    again = rotated.bundle(first.device_id)
    assert again.server_pins == rotated.server_pins
    assert again.server_spki_sha256 == first.server_next_spki_sha256
    assert again.device_ca_pem == first.device_ca_pem  # the CA that issued it (retiring now)
    assert DeviceBundle.from_json(again.to_json()) == again
    with pytest.raises(UnknownDevice):
        rotated.bundle("0" * 64)
    rotated.revoke(first.device_id)
    with pytest.raises(RevokedDevice):
        rotated.bundle(first.device_id)


def test_renew_server_certificate_keeps_the_pin(fleet: Fleet) -> None:
    renewed = fleet.renew_server_certificate(fleet.root_ca_token(PASSPHRASE), now=LATER)
    assert renewed.server_spki_sha256 == fleet.server_spki_sha256
    assert renewed.server_certificate.not_valid_after_utc > \
        fleet.server_certificate.not_valid_after_utc
    renewed.server_certificate.verify_directly_issued_by(renewed.root_ca)
    server_ssl_context(renewed)  # the unchanged key still matches


def test_rotation_commands_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    assert runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")]).exit_code == 0
    before = Fleet.open(tmp_path / "f")
    result = runner.invoke(cli, ["fleet", "rotate-device-ca", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    label = device_ca_label(before.device_ca)
    show = runner.invoke(cli, ["fleet", "show", str(tmp_path / "f")])
    assert f"retiring CA:   {label}" in show.output and "scrypt n=" in show.output
    result = runner.invoke(cli, ["fleet", "retire-device-ca", str(tmp_path / "f"), label])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["fleet", "renew-server-cert", str(tmp_path / "f")])
    assert result.exit_code == 0 and before.server_spki_sha256.hex() in result.output
    result = runner.invoke(cli, ["fleet", "rotate-server-key", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    after = Fleet.open(tmp_path / "f")
    assert after.server_spki_sha256.hex() in result.output
    assert after.server_spki_sha256 != before.server_spki_sha256
    assert not after.retiring_device_cas


def test_init_writes_the_offline_keys_elsewhere(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    offline = tmp_path / "media" / "fleet-keys"
    result = runner.invoke(cli, ["fleet", "init", str(tmp_path / "f"), "--keys", str(offline)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "f" / "keys").exists()
    assert sorted(p.name for p in offline.iterdir()) == [
        "device-ca.key", "root-ca.key", "server-next.key", "update-signing.key"]
    assert offline.stat().st_mode & 0o777 == 0o700
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    result = runner.invoke(cli, ["fleet", "enroll", str(tmp_path / "f"), str(request),
                                 "--keys", str(offline)])
    assert result.exit_code == 0, result.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    refused = runner.invoke(cli, ["fleet", "init", str(tmp_path / "g"), "--keys",
                                  str(tmp_path / "busy")])
    assert refused.exit_code != 0 and "not empty" in refused.output
    assert not (tmp_path / "g").exists()


def test_enroll_with_offline_keys_folder(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    assert runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")]).exit_code == 0
    offline = tmp_path / "usb-stick"
    os.rename(tmp_path / "f" / "keys", offline)  # the keys leave the fleet folder
    request = tmp_path / "enroll.csr.pem"
    request.write_bytes(request_pem())
    missing = runner.invoke(cli, ["fleet", "enroll", str(tmp_path / "f"), str(request)])
    assert missing.exit_code != 0 and "--keys" in missing.output
    result = runner.invoke(cli, ["fleet", "enroll", str(tmp_path / "f"), str(request),
                                 "--keys", str(offline)])
    assert result.exit_code == 0, result.output
    assert re.search(r"enrolled device [0-9a-f]{64}", result.output)
    provisioned = runner.invoke(cli, ["device", "provision", str(tmp_path / "d"), "--fleet",
                                      str(tmp_path / "f"), "--keys", str(offline),
                                      "--readout", "none"])
    assert provisioned.exit_code == 0, provisioned.output


def test_provision_with_a_wrong_ca_passphrase_leaves_no_device(tmp_path: Path) -> None:
    runner = CliRunner(env=CLI_SECRETS)
    assert runner.invoke(cli, ["fleet", "init", str(tmp_path / "f")]).exit_code == 0
    result = runner.invoke(cli, ["device", "provision", str(tmp_path / "d"), "--fleet",
                                 str(tmp_path / "f"), "--readout", "none"],
                           env={"TINYWARD_CA_PASSPHRASE": SERVER_PASSPHRASE.decode()})
    assert result.exit_code != 0 and "does not open" in result.output
    assert not (tmp_path / "d").exists()


def test_rotation_and_bundle_refresh_through_the_cli(tmp_path: Path) -> None:
    from tinyward.trust.device import Device

    runner = CliRunner(env=CLI_SECRETS)
    fleet_dir, device_dir = str(tmp_path / "f"), str(tmp_path / "d")
    init = runner.invoke(cli, ["fleet", "init", fleet_dir])
    before = Fleet.open(tmp_path / "f")
    assert before.server_next_spki_sha256 is not None
    assert before.server_next_spki_sha256.hex() in init.output
    assert runner.invoke(cli, ["device", "provision", device_dir, "--fleet", fleet_dir,
                               "--readout", "none"]).exit_code == 0
    device_id = Device.open(tmp_path / "d").device_id
    rotated = runner.invoke(cli, ["fleet", "rotate-server-key", fleet_dir])
    assert rotated.exit_code == 0, rotated.output
    assert "devices provisioned before accept it" in rotated.output
    after = Fleet.open(tmp_path / "f")
    assert Device.open(tmp_path / "d").fleet_trust().pins == before.server_pins
    assert after.server_spki_sha256 in before.server_pins  # the device accepts it as it is
    bundle = tmp_path / "refresh.bundle.json"
    written = runner.invoke(cli, ["fleet", "bundle", fleet_dir, device_id, "-o", str(bundle)])
    assert written.exit_code == 0, written.output
    again = runner.invoke(cli, ["device", "install", device_dir, str(bundle)])
    assert again.exit_code != 0 and "--refresh" in again.output
    wrong = runner.invoke(cli, ["device", "install", device_dir, str(bundle), "--new-pins"])
    assert wrong.exit_code != 0 and "--new-pins goes with --refresh" in wrong.output
    refreshed = runner.invoke(cli, ["device", "install", device_dir, str(bundle), "--refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    assert Device.open(tmp_path / "d").fleet_trust().pins == after.server_pins
    show = runner.invoke(cli, ["fleet", "show", fleet_dir])
    assert f"next pin:      {after.server_next_spki_sha256.hex()}" in show.output  # type: ignore[union-attr]
