"""Interoperability: a stock ``tuf.ngclient.Updater`` reads the fleet's update repository
over plain HTTPS, with no tinyward code on the client side.

The server is Python's ``http.server`` behind an ``ssl`` context on 127.0.0.1, its
certificate issued by a CA made in the test; the client is ngclient with its default
(urllib3) fetcher, trusting that CA through ``SSL_CERT_FILE`` as any OpenSSL client does.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater

from tests.fleet.helpers import SERVER_PASSPHRASE
from tests.fleet.test_update_repo import NEW_ROOT, ROOT_SECRETS, make_repo, update_key
from tinyward.fleet.update_repo import RootChange, UpdateRepository
from tinyward.update.meta import TargetMeta


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it issued: (ca, cert, key)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("interop test CA"))
          .issuer_name(_name("interop test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[tuple[UpdateRepository, str]]:
    """A fleet update repository served over HTTPS on 127.0.0.1: (repository, base URL)."""
    repo = make_repo(tmp_path)
    tls = tmp_path / "tls"
    tls.mkdir()
    ca, cert, key = _tls_files(tls)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = functools.partial(_Quiet, directory=str(repo.base / "repo"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    # The stock client trusts the test CA the way every OpenSSL client can be told to.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        yield repo, f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _stock_updater(base: str, trusted_root: bytes, workdir: Path) -> Updater:
    (workdir / "meta").mkdir(parents=True)
    (workdir / "dl").mkdir()
    return Updater(str(workdir / "meta"), f"{base}/metadata/", str(workdir / "dl"),
                   f"{base}/targets/", bootstrap=trusted_root)


def test_stock_ngclient_downloads_target_over_https(
        https_repo: tuple[UpdateRepository, str], tmp_path: Path) -> None:
    repo, base = https_repo
    model = bytes(range(256)) * 400  # a 100 KB "model file"
    name = repo.add("model", model, version="3.1.4", product_class="pump-sensor",
                    min_tinyward="0.1.0", cohorts=["canary"])
    assert repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed
    client = _stock_updater(base, repo.trusted_root(), tmp_path / "client")
    client.refresh()
    info = client.get_targetinfo(name)
    assert info is not None and info.length == len(model)
    assert info.custom == {"component": "model", "version": "3.1.4",
                           "product_class": "pump-sensor", "min_tinyward": "0.1.0",
                           "devices": [], "cohorts": ["canary"]}
    meta = TargetMeta.from_custom(info.custom)  # the device's own parser agrees
    assert meta.cohorts == ("canary",)
    assert Path(client.download_target(info)).read_bytes() == model


def test_stock_ngclient_follows_root_rotation_over_https(
        https_repo: tuple[UpdateRepository, str], tmp_path: Path) -> None:
    repo, base = https_repo
    first = repo.trusted_root()
    repo.propose_root(RootChange(replace=("root-1", "timestamp-1")), {"root-4": NEW_ROOT},
                      SERVER_PASSPHRASE)
    signers = [repo.offline_signer("root-2", ROOT_SECRETS[1]),
               repo.offline_signer("root-3", ROOT_SECRETS[2])]
    assert repo.sign("root", signers, SERVER_PASSPHRASE).committed
    name = repo.add("config", b"rate=10\n", version="1.0.1", product_class="pump-sensor")
    assert repo.publish([update_key(repo)], SERVER_PASSPHRASE).committed
    client = _stock_updater(base, first, tmp_path / "client")
    client.refresh()
    info = client.get_targetinfo(name)
    assert info is not None
    assert Path(client.download_target(info)).read_bytes() == b"rate=10\n"
    trusted = json.loads((tmp_path / "client" / "meta" / "root.json").read_bytes())
    assert trusted["signed"]["version"] == 2  # the client now trusts the rotated root


def test_https_is_real_untrusted_server_refused(
        https_repo: tuple[UpdateRepository, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: without the test CA the same client cannot even connect."""
    repo, base = https_repo
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "tls" / "server.pem"))
    client = _stock_updater(base, repo.trusted_root(), tmp_path / "client")
    with pytest.raises(tuf_errors.DownloadError):
        client.refresh()
