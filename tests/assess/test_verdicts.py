"""The pure verdict rules of every probe and the tier evaluation: an untested requirement
is never passed, a partial scan never passes, the worst evidence wins."""

from __future__ import annotations

import datetime as dt
import json
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyward.assess import registry
from tinyward.assess.evidence import Evidence, complete, evaluate
from tinyward.assess.model import load_model
from tinyward.assess.probes import credentials, declared, portscan, tlsconfig
from tinyward.assess.probes.base import Context
from tinyward.assess.run import all_probes
from tinyward.assess.target import Description
from tinyward.errors import Misuse

MODEL = load_model()


def _ctx() -> Context:
    return Context(MODEL)


NMAP = """<?xml version="1.0"?><nmaprun scanner="nmap">
<scaninfo type="connect" protocol="tcp" numservices="{n}" services="1-65535"/>
<host><status state="up" reason="user-set"/><address addr="127.0.0.1" addrtype="ipv4"/>
<ports><extraports state="closed" count="{closed}"/>{ports}</ports></host></nmaprun>"""
PORT = '<port protocol="tcp" portid="{p}"><state state="open" reason="syn-ack"/></port>'


def test_nmap_xml_open_ports_fail_and_a_full_empty_scan_passes() -> None:
    scan = portscan.parse_nmap_xml(NMAP.format(n=65535, closed=65533,
                                               ports=PORT.format(p=22) + PORT.format(p=8080)))
    assert scan.open_ports == (22, 8080) and scan.scanned == 65535 and scan.host_up
    (evidence,) = portscan.verdict(scan, "127.0.0.1", _ctx())
    assert evidence.requirement == "C-SURF-1" and evidence.verdict == "fail"
    assert "22, 8080" in evidence.text
    empty = portscan.parse_nmap_xml(NMAP.format(n=65535, closed=65535, ports=""))
    assert portscan.verdict(empty, "127.0.0.1", _ctx())[0].verdict == "pass"


def test_a_partial_scan_with_nothing_open_is_not_tested_never_passed() -> None:
    partial = portscan.parse_nmap_xml(NMAP.format(n=100, closed=100, ports=""))
    (evidence,) = portscan.verdict(partial, "127.0.0.1", _ctx())
    assert evidence.verdict == "not-tested" and "all 65535" in evidence.text


def test_nmap_output_that_is_not_xml_is_refused() -> None:
    with pytest.raises(portscan.BadScan):
        portscan.parse_nmap_xml("Starting Nmap")


def test_tls_verdicts() -> None:
    ctx = _ctx()
    strong = tlsconfig.PortTLS(443, "tls", {"tls_1_3": ("TLS_AES_128_GCM_SHA256",)})
    assert tlsconfig.verdict("127.0.0.1", [strong], ctx)[0].verdict == "pass"
    old = tlsconfig.PortTLS(443, "tls", {"tls_1_0": ("TLS_RSA_WITH_AES_128_CBC_SHA",),
                                         "tls_1_3": ("TLS_AES_128_GCM_SHA256",)})
    assert tlsconfig.port_problems(old) == ["TLS 1.0 accepted"]
    (evidence,) = tlsconfig.verdict("127.0.0.1", [strong, old], ctx)
    assert evidence.verdict == "fail" and "TLS" in evidence.text
    weak12 = tlsconfig.PortTLS(443, "tls", {"tls_1_2": (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256")})
    assert tlsconfig.verdict("127.0.0.1", [weak12], ctx)[0].verdict == "fail"
    plain = tlsconfig.PortTLS(80, "plaintext")
    assert tlsconfig.verdict("127.0.0.1", [strong, plain], ctx)[0].verdict == "fail"
    unknown = tlsconfig.PortTLS(8443, "unknown", note="client certificate required")
    assert tlsconfig.verdict("127.0.0.1", [strong, unknown], ctx)[0].verdict == "not-tested"
    assert tlsconfig.verdict("127.0.0.1", [], ctx)[0].verdict == "not-tested"


def test_a_service_that_speaks_first_is_not_tls() -> None:
    assert tlsconfig.classify_banner(b"weakcam login: ") == "plaintext"
    assert tlsconfig.classify_banner(b"220 ftp ready\r\n") == "plaintext"
    # SSH is encrypted: never failed as plaintext, never passed as TLS.
    assert tlsconfig.classify_banner(b"SSH-2.0-OpenSSH_9.2\r\n") == "ssh"
    assert tlsconfig.classify_banner(b"") is None


def test_tls12_suite_rules() -> None:
    assert tlsconfig.strong_tls12_suite("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256")
    assert not tlsconfig.strong_tls12_suite("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
    assert not tlsconfig.strong_tls12_suite("TLS_RSA_WITH_AES_256_GCM_SHA384")


def test_handshake_errors_tell_plaintext_from_unknown() -> None:
    error = ssl.SSLError(1, "wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    assert tlsconfig.classify_handshake(error) == "plaintext"
    assert tlsconfig.classify_handshake(ConnectionResetError()) == "unknown"
    assert tlsconfig.classify_handshake(None) == "tls"


def test_credentials_verdicts() -> None:
    ctx = _ctx()
    found = credentials.LoginFinding(23, "telnet", 3, ("root", "root"))
    (evidence,) = credentials.verdict("127.0.0.1", [found], True, ctx)
    assert evidence.verdict == "fail" and "'root'/'root'" in evidence.text
    refused = credentials.LoginFinding(23, "telnet", 20)
    assert credentials.verdict("127.0.0.1", [refused], True, ctx)[0].verdict == "pass"
    assert credentials.verdict("127.0.0.1", [refused], False, ctx)[0].verdict == "not-tested"
    form = credentials.LoginFinding(80, "http-form")
    assert credentials.verdict("127.0.0.1", [refused, form], True, ctx)[0].verdict == \
        "not-tested"
    assert credentials.verdict("127.0.0.1", [], True, ctx)[0].verdict == "pass"


def test_login_answers_and_http_classification() -> None:
    assert credentials.telnet_logged_in(b"\r\nWelcome to cam\r\n# ")
    assert not credentials.telnet_logged_in(b"\r\nLogin incorrect\r\ncam login: ")
    assert not credentials.telnet_logged_in(b"")
    assert credentials.classify_http(
        b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n\r\n") == "http-basic"
    assert credentials.classify_http(
        b"HTTP/1.1 200 OK\r\n\r\n<input type=password name=p>") == "http-form"
    assert credentials.classify_http(b"HTTP/1.1 200 OK\r\n\r\nhello") == "none"
    assert credentials.classify_http(b"SSH-2.0-OpenSSH") == "unknown"
    assert len(credentials.default_credentials()) >= credentials.MAX_ATTEMPTS


def test_declarations() -> None:
    ctx, today = _ctx(), dt.date(2026, 12, 2)
    assert declared.contact_verdict(None, ctx)[0].verdict == "not-tested"
    bare = Description("x")
    assert declared.contact_verdict(bare, ctx)[0].verdict == "fail"
    assert declared.support_verdict(bare, today, ctx)[0].verdict == "fail"
    full = Description("x", security_contact="https://x.example/security",
                       support_end=dt.date(2030, 1, 1))
    (contact,) = declared.contact_verdict(full, ctx)
    assert contact.verdict == "pass" and contact.kind == "declaration"
    assert declared.support_verdict(full, today, ctx)[0].verdict == "pass"
    ended = Description("x", support_end=dt.date(2020, 1, 1))
    assert declared.support_verdict(ended, today, ctx)[0].verdict == "fail"


def _pass(requirement_id: str) -> Evidence:
    r = MODEL.requirement(requirement_id)
    return Evidence(r.id, "pass", r.evidence, r.probe, "seen")


def test_a_requirement_without_evidence_is_not_tested_and_blocks_its_tier() -> None:
    tier1 = [r.id for r in MODEL.for_tier(1)]
    verdicts = complete(MODEL, [_pass(i) for i in tier1[:-1]])
    assert verdicts[tier1[-1]].verdict == "not-tested"
    result = evaluate(MODEL, verdicts)
    assert result.level == 0 and [e.requirement for e in result.blocking] == [tier1[-1]]
    result = evaluate(MODEL, complete(MODEL, [_pass(i) for i in tier1]))
    assert result.level == 1 and result.blocking
    assert all(e.requirement in {r.id for r in MODEL.for_tier(2)} for e in result.blocking)
    everything = evaluate(MODEL, complete(MODEL, [_pass(r.id) for r in MODEL.requirements]))
    assert everything.level == 3 and not everything.blocking


@given(st.dictionaries(st.sampled_from([r.id for r in MODEL.requirements]),
                       st.sampled_from(["pass", "fail", "not-tested"])))
def test_the_tier_is_the_highest_whose_requirements_all_pass(verdicts: dict[str, str]) -> None:
    evidence = [Evidence(i, v, "live", "p", "t") for i, v in verdicts.items()]
    result = evaluate(MODEL, complete(MODEL, evidence))
    passed = {i for i, v in verdicts.items() if v == "pass"}
    for r in MODEL.for_tier(result.level):
        assert r.id in passed
    if result.level < 3:
        assert any(r.id not in passed for r in MODEL.for_tier(result.level + 1))


def test_the_worst_evidence_for_a_requirement_wins() -> None:
    r = MODEL.requirement("C-SURF-1")
    good = Evidence(r.id, "pass", "live", "port-scan", "none open")
    untested = Evidence(r.id, "not-tested", "live", "port-scan", "half")
    bad = Evidence(r.id, "fail", "live", "port-scan", "22 open")
    assert complete(MODEL, [good, untested])[r.id].verdict == "not-tested"
    assert complete(MODEL, [good, bad, untested])[r.id].verdict == "fail"
    with pytest.raises(Misuse):
        Evidence(r.id, "maybe", "live", "p", "t")
    with pytest.raises(Misuse):
        Evidence(r.id, "pass", "live", "p", " ")


def test_the_registry_lists_exactly_the_probes_that_run() -> None:
    assert {p.name: p.kind for p in all_probes()} == dict(registry.PROBES)
    names = {r.probe for r in MODEL.requirements}
    assert set(registry.PROBES) <= names


def _pem_key(encrypted: bool) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(b"pw") if encrypted else \
        serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def test_a_private_key_in_the_clear_in_the_device_folder_fails_identity(tmp_path) -> None:
    from tinyward.assess.probes import static
    from tinyward.assess.probes.base import Budget

    from .tlsservice import self_signed

    cert, key = self_signed(tmp_path)  # writes an unencrypted key next to the cert
    (evidence,) = static.identity_verdict(static.walk(tmp_path, Budget()), _ctx())
    assert evidence.verdict == "fail" and "tls.key" in evidence.text
    key.write_bytes(_pem_key(encrypted=True))  # sealed: no longer in the clear
    (evidence,) = static.identity_verdict(static.walk(tmp_path, Budget()), _ctx())
    assert evidence.verdict == "pass" and "CN=127.0.0.1" in evidence.text
    assert "not compared" in evidence.text
    cert.unlink()
    (evidence,) = static.identity_verdict(static.walk(tmp_path, Budget()), _ctx())
    assert evidence.verdict == "not-tested"


def test_a_tuf_root_in_the_device_folder_passes_update_trust(tmp_path) -> None:
    from tinyward.assess.probes import static
    from tinyward.assess.probes.base import Budget

    (evidence,) = static.update_verdict(static.walk(tmp_path, Budget()), _ctx())
    assert evidence.verdict == "not-tested"
    metadata = tmp_path / "update" / "metadata"
    metadata.mkdir(parents=True)
    root = {"signed": {"_type": "root", "keys": {"k1": {}}, "roles": {"root": {
        "threshold": 1, "keyids": ["k1"]}}}, "signatures": []}
    (metadata / "root.json").write_text(json.dumps(root))
    (evidence,) = static.update_verdict(static.walk(tmp_path, Budget()), _ctx())
    assert evidence.verdict == "pass" and "threshold 1" in evidence.text
    root["signed"]["keys"] = {}
    (metadata / "root.json").write_text(json.dumps(root))
    assert static.update_verdict(static.walk(tmp_path, Budget()), _ctx())[0].verdict == "fail"


def test_the_folder_walk_is_bounded_and_never_follows_links(tmp_path, monkeypatch) -> None:
    from tinyward.assess.probes import static
    from tinyward.assess.probes.base import Budget

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pem").write_bytes(_pem_key(encrypted=False))
    device = tmp_path / "device"
    device.mkdir()
    (device / "link.pem").symlink_to(outside / "secret.pem")
    (device / "dirlink").symlink_to(outside)
    facts = static.walk(device, Budget())
    assert facts.clear_keys == []
    monkeypatch.setattr(static, "MAX_FILES", 3)
    for i in range(5):
        (device / f"f{i}").write_text("x")
    facts = static.walk(device, Budget())
    assert facts.truncated and facts.files == 3
    assert static.identity_verdict(facts, _ctx())[0].verdict == "not-tested"
