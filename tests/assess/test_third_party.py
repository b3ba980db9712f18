"""Third-party software nobody here wrote, run as a device's service would be.

On loopback: OpenSSL's own `s_server`, in two configurations. The findings must match each
configuration (TLS 1.3 only passes tls-config; a TLS 1.2 CBC suite fails it), and its
one-connection-at-a-time loop is starved by the pre-authentication flood.

In the lab: Debian's lighttpd in a device's namespace, configured deliberately (plain HTTP
behind Basic auth with admin/admin, HTTPS held to one TLS 1.2 CBC suite), assessed by
`tinyward assess run` from the LAN attacker's namespace over every TCP port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tinyward.assess.probes import preauth
from tinyward.assess.probes.preauth import PreauthExhaustion
from tinyward.assess.probes.tlsconfig import TlsConfig
from tinyward.assess.run import assess
from tinyward.assess.target import make_target

from ..conftest import needs
from .tlsservice import self_signed

OPENSSL = shutil.which("openssl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s_server(folder: Path, *options: str) -> Iterator[int]:
    cert, key = self_signed(folder)
    port = _free_port()
    process = subprocess.Popen(
        [str(OPENSSL), "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key), "-www", "-quiet", *options],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("openssl s_server did not start listening within 20 s")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_tls13_only_passes_tls_config(tmp_path: Path) -> None:
    with s_server(tmp_path, "-tls1_3") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)), probes=[TlsConfig()])
    evidence = result.verdicts["C-COMM-1"]
    assert evidence.verdict == "pass", evidence.text
    assert "TLS 1.3 only" in evidence.text


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_with_a_cbc_suite_fails_tls_config(tmp_path: Path) -> None:
    with s_server(tmp_path, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)), probes=[TlsConfig()])
    evidence = result.verdicts["C-COMM-1"]
    assert evidence.verdict == "fail", evidence.text
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in evidence.text


@needs(OPENSSL is not None, "needs openssl")
def test_openssl_s_server_serves_one_client_at_a_time_and_is_starved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preauth, "FLOOD", 8)
    monkeypatch.setattr(preauth, "BOUND", 5.0)  # it never serves while held
    with s_server(tmp_path, "-tls1_3") as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)),
                        probes=[TlsConfig(), PreauthExhaustion()])
    evidence = result.verdicts["A-PREAUTH-1"]
    assert evidence.verdict == "fail", evidence.text


# ---- in the lab: lighttpd (Debian's), configured deliberately, assessed by the CLI ----

LIGHTTPD = shutil.which("lighttpd") or (
    "/usr/sbin/lighttpd" if Path("/usr/sbin/lighttpd").exists() else None)
LAB_OK = os.geteuid() == 0 and shutil.which("ip") is not None and \
    shutil.which("nmap") is not None


def _lighttpd_conf(folder: Path, address: str) -> Path:
    """Plain HTTP on 80 behind Basic auth with the vendor's default admin/admin, and HTTPS
    on 8443 held to TLS 1.2 with one CBC suite: the configuration the findings must match."""
    cert, key = self_signed(folder)
    (folder / "pem").write_bytes(key.read_bytes() + cert.read_bytes())
    (folder / "www").mkdir()
    (folder / "www" / "index.html").write_text("<h1>sensor</h1>\n")
    (folder / "users").write_text("admin:admin\n")
    conf = folder / "lighttpd.conf"
    conf.write_text(f'''
server.modules = ("mod_auth", "mod_authn_file", "mod_openssl")
server.document-root = "{folder / "www"}"
server.bind = "{address}"
server.port = 80
index-file.names = ("index.html")
server.errorlog = "{folder / "error.log"}"
server.max-connections = 1024
auth.backend = "plain"
auth.backend.plain.userfile = "{folder / "users"}"
auth.require = ("/" => ("method" => "basic", "realm" => "sensor", "require" => "valid-user"))
$SERVER["socket"] == "{address}:8443" {{
    ssl.engine = "enable"
    ssl.pemfile = "{folder / "pem"}"
    ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.2", "MaxProtocol" => "TLSv1.2",
                                "CipherString" => "ECDHE-ECDSA-AES128-SHA")
}}
''')
    return conf


@pytest.mark.slow
@needs(LAB_OK, "needs root, iproute2 and nmap (lab namespaces)")
@needs(LIGHTTPD is not None, "needs lighttpd and lighttpd-mod-openssl "
       "(scripts/install-system-deps.sh)")
def test_lighttpd_in_the_lab_gets_findings_that_match_its_configuration(tmp_path: Path) -> None:
    from tinyward.lab.testbed import net
    from tinyward.lab.testbed.plan import make_plan

    plan = make_plan(1, "twtp")
    device, attacker = plan.host("device-1"), plan.host("attacker-lan")
    net.remove_lab(plan.prefix)  # a lab left by an interrupted run
    net.create_lab(plan)
    server = None
    try:
        conf = _lighttpd_conf(tmp_path, device.address)
        server = subprocess.Popen(net.ns_command(device.netns, [str(LIGHTTPD), "-D", "-f",
                                                                str(conf)]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded wait until both ports listen
            listening = subprocess.run(net.ns_command(device.netns, ["ss", "-ltnH"]),
                                       capture_output=True, text=True, timeout=10).stdout
            if f"{device.address}:80 " in listening and f"{device.address}:8443 " in listening:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("lighttpd did not listen within 20 s: "
                                 + (tmp_path / "error.log").read_text()[-500:])
        (tmp_path / "target.toml").write_text(
            'format = "tinyward-target/1"\nname = "lighttpd 1.4 (Debian)"\n')
        done = subprocess.run(net.ns_command(attacker.netns, [
            sys.executable, "-m", "tinyward", "assess", "run", device.address,
            "--netns", attacker.netns, "--describe", str(tmp_path / "target.toml"),
            "--out", str(tmp_path / "report")]), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        net.remove_lab(plan.prefix)
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    found = {r["id"]: r for r in doc["requirements"]}
    # Every TCP port scanned: exactly the two lighttpd was told to open.
    assert found["C-SURF-1"]["verdict"] == "fail"
    assert "2 open TCP port(s)" in found["C-SURF-1"]["evidence"] and \
        "80, 8443" in found["C-SURF-1"]["evidence"]
    # Plain HTTP on 80, and the one CBC suite on 8443.
    comm = found["C-COMM-1"]
    assert comm["verdict"] == "fail"
    assert "port 80 speaks plaintext" in comm["evidence"]
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in comm["evidence"]
    # The default admin/admin behind Basic auth is found (a complete scan).
    assert found["I-CRED-1"]["verdict"] == "fail"
    assert "'admin'/'admin'" in found["I-CRED-1"]["evidence"]
    # Its event loop serves through the flood; the declarations it lacks fail.
    assert found["A-PREAUTH-1"]["verdict"] == "pass", found["A-PREAUTH-1"]["evidence"]
    assert found["G-VDP-1"]["verdict"] == "fail" and found["G-SUP-1"]["verdict"] == "fail"
    assert doc["tier"]["level"] == 0
