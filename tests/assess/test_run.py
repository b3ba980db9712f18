"""End to end: a deliberately weak device gets Tier 0 with the right findings; TLS services
pass or fail on their configuration; the reports validate; the HTML renders in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from tinyward.assess import report
from tinyward.assess.run import all_probes, assess
from tinyward.assess.target import load_description, make_target
from tinyward.cli.main import cli

from ..conftest import needs
from .tlsservice import tls_service
from .weakdevice import HTTP_LOGIN, TELNET_LOGIN, weak_device

DATA = Path(__file__).parent / "data"
SARIF_SUBSET = json.loads((DATA / "sarif-2.1.0-subset.schema.json").read_text())
NMAP = shutil.which("nmap") is not None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WEAK_DESCRIPTION = 'format = "tinyward-target/1"\nname = "weakcam"\nvendor = "Nobody"\n'


def _validate(document: object, schema: dict) -> None:
    jsonschema.validate(document, schema,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module", name="weak_run")
def _weak_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    if not NMAP:
        pytest.skip("nmap")  # the tests themselves carry needs(); this only avoids a crash
    out = tmp_path_factory.mktemp("weak")
    (out / "target.toml").write_text(WEAK_DESCRIPTION)
    with weak_device() as weak:
        result = CliRunner().invoke(cli, [
            "assess", "run", "127.0.0.1", "--ports", f"{weak.http_port},{weak.telnet_port}",
            "--describe", str(out / "target.toml"), "--out", str(out / "report"),
            "--seconds-per-probe", "60", "--attempts", "60"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "report" / "report.json").read_text())
    return document, out / "report", result.output


@needs(NMAP, "needs nmap (scripts/install-system-deps.sh)")
def test_weak_device_gets_tier_0_with_the_right_findings(weak_run) -> None:
    document, _, output = weak_run
    assert document["tier"]["level"] == 0
    verdicts = {r["id"]: r for r in document["requirements"]}
    assert verdicts["I-CRED-1"]["verdict"] == "fail"
    assert f"{TELNET_LOGIN[0]!r}/{TELNET_LOGIN[1]!r}" in verdicts["I-CRED-1"]["evidence"]
    assert f"{HTTP_LOGIN[0]!r}/{HTTP_LOGIN[1]!r}" in verdicts["I-CRED-1"]["evidence"]
    assert "(telnet)" in verdicts["I-CRED-1"]["evidence"]
    assert "(http-basic)" in verdicts["I-CRED-1"]["evidence"]
    assert verdicts["C-COMM-1"]["verdict"] == "fail"
    assert verdicts["C-COMM-1"]["evidence"].count("plaintext") == 2
    assert verdicts["C-SURF-1"]["verdict"] == "fail"
    assert verdicts["G-VDP-1"]["verdict"] == "fail"  # described, but no contact stated
    assert verdicts["G-SUP-1"]["verdict"] == "fail"
    # Nothing probed the rest: never passed.
    assert verdicts["I-PIN-1"]["verdict"] == "not-tested"
    # Its threaded servers do serve through a flood of idle connections: that is all.
    assert {r["id"] for r in document["requirements"] if r["verdict"] == "pass"} == \
        {"A-PREAUTH-1"}
    assert {"I-CRED-1", "C-COMM-1", "G-VDP-1", "G-SUP-1"} <= set(document["tier"]["blocking"])
    # progress while probes run
    assert f"[1/{len(all_probes())}] port-scan: C-SURF-1 fail" in output


@needs(NMAP, "needs nmap (scripts/install-system-deps.sh)")
def test_report_json_validates_against_its_shipped_schema(weak_run) -> None:
    document, _, _ = weak_run
    _validate(document, report.schema())
    broken = dict(document, tier={"level": 0, "name": "x", "blocking": ["not an id"]})
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, report.schema())


@needs(NMAP, "needs nmap (scripts/install-system-deps.sh)")
def test_report_sarif_has_the_sarif_2_1_0_structure(weak_run) -> None:
    _, folder, _ = weak_run
    log = json.loads((folder / "report.sarif").read_text())
    _validate(log, SARIF_SUBSET)
    results = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    assert results["I-CRED-1"]["kind"] == "fail" and results["I-CRED-1"]["level"] == "error"
    assert results["I-PIN-1"]["kind"] == "open" and results["I-PIN-1"]["level"] == "none"
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in log["runs"][0]["results"])
    # The subset schema can fail: a fail-kind result's level is checked.
    bad = json.loads(json.dumps(log))
    bad["runs"][0]["results"][1]["kind"] = "pass"
    bad["runs"][0]["results"][1]["level"] = "error"
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad, SARIF_SUBSET)


@needs(NMAP, "needs nmap (scripts/install-system-deps.sh)")
def test_html_report_has_no_script_and_no_external_resource(weak_run) -> None:
    _, folder, _ = weak_run
    page = (folder / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "http://" not in page and "src=" not in page and "<link" not in page
    assert "Tier 0" in page and "I-CRED-1" in page and "How to fix" in page
    assert "default-src 'none'" in page
    datasheet = (folder / "datasheet.md").read_text()
    assert datasheet.startswith("## Security and privacy")
    assert "**Assessed tier:** 0" in datasheet


def test_evidence_text_is_escaped_in_html(tmp_path: Path) -> None:
    description = load_description('format = "tinyward-target/1"\n'
                                   'name = "<script>alert(1)</script>"\n')
    result = assess(make_target(description=description), probes=[])
    page = report.to_html(result)
    assert "<script>" not in page and "&lt;script&gt;" in page


@needs(NMAP, "needs nmap (scripts/install-system-deps.sh)")
@needs(CHROMIUM is not None, "needs chromium (Debian package chromium)")
def test_html_report_renders_in_headless_chromium(weak_run, tmp_path: Path) -> None:
    _, folder, _ = weak_run
    shot = folder / "report.png"
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--window-size=1200,1600", f"--screenshot={shot}",
         (folder / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-500:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a page, not a blank
    # --dump-dom: the badge and the table reach the DOM Chromium built.
    dom = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", (folder / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=False,
                         cwd=tmp_path)
    assert 'id="tier"' in dom.stdout and "Tier 0" in dom.stdout
    assert dom.stdout.count("<tr") >= 21


@pytest.mark.parametrize("weak", [False, True], ids=["tls13", "tls12-cbc"])
def test_tls_config_passes_tls13_and_fails_a_cbc_suite(weak: bool, tmp_path: Path) -> None:
    from tinyward.assess.probes.tlsconfig import TlsConfig

    with tls_service(tmp_path, weak=weak) as port:
        result = assess(make_target(address="127.0.0.1", ports=(port,)), probes=[TlsConfig()])
    evidence = result.verdicts["C-COMM-1"]
    if weak:
        assert evidence.verdict == "fail", evidence.text
        assert "without forward secrecy or AEAD" in evidence.text
    else:
        assert evidence.verdict == "pass", evidence.text
        assert "TLS 1.3 only" in evidence.text
    assert result.tier.level == 0  # one requirement never makes a tier


@pytest.fixture(scope="module", name="fleet")
def _fleet(tmp_path_factory: pytest.TempPathFactory):
    from ..fleet.serverkit import running_server

    yield from running_server(tmp_path_factory, ("a",))


FLEET_DESCRIPTION = ('format = "tinyward-target/1"\nname = "tinyward fleet"\n'
                     'security_contact = "security@tinyward.example"\n'
                     'support_end = 2035-01-01\n')


def test_tinyward_fleet_on_loopback_passes_what_is_tested_and_no_more(fleet,
                                                                      tmp_path: Path) -> None:
    cert, key = fleet.devices["a"].write_tls_files(tmp_path)
    target = make_target(address="127.0.0.1", ports=(fleet.server.port, fleet.admin_port),
                         client_cert=(cert, key),
                         description=load_description(FLEET_DESCRIPTION))
    probes = [p for p in all_probes() if p.name != "port-scan"]  # its ports are named
    result = assess(target, probes=probes)
    verdicts = result.verdicts
    # Both listeners: TLS 1.3 only, AEAD suites (the device listener seen with a device
    # certificate, as the manufacturer's test credential).
    assert verdicts["C-COMM-1"].verdict == "pass", verdicts["C-COMM-1"].text
    assert verdicts["C-COMM-1"].text.count("TLS 1.3 only") == 2
    assert verdicts["G-VDP-1"].verdict == "pass" and verdicts["G-SUP-1"].verdict == "pass"
    # Only two named ports: a login elsewhere was not looked for.
    assert verdicts["I-CRED-1"].verdict == "not-tested"
    passed = {i for i, e in verdicts.items() if e.verdict == "pass"}
    assert passed == {"C-COMM-1", "G-VDP-1", "G-SUP-1", "A-PREAUTH-1"}
    assert result.tier.level == 0  # identity, updates and credentials were not shown


def test_without_a_client_certificate_the_device_listener_is_not_tested(fleet) -> None:
    from tinyward.assess.probes.tlsconfig import TlsConfig

    target = make_target(address="127.0.0.1", ports=(fleet.server.port,))
    evidence = assess(target, probes=[TlsConfig()]).verdicts["C-COMM-1"]
    assert evidence.verdict == "not-tested", evidence.text
    assert "client certificate" in evidence.text


def test_a_tinyward_device_folder_is_assessed_statically(tmp_path: Path) -> None:
    from tinyward.fleet.pki import Fleet
    from tinyward.trust.device import Device

    passphrase = b"assess static folder check"
    fleet = Fleet.init(tmp_path / "fleet", passphrase)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, passphrase))
    (tmp_path / "device" / "target.toml").write_text(FLEET_DESCRIPTION)  # read from the folder
    result = CliRunner().invoke(cli, ["assess", "run", str(tmp_path / "device"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    verdicts = {r["id"]: r for r in document["requirements"]}
    # Its certificates name it; its TLS key file is encrypted, the rest sealed.
    assert verdicts["I-ID-1"]["verdict"] == "pass" and verdicts["I-ID-1"]["kind"] == "static"
    assert "tinyward device" in verdicts["I-ID-1"]["evidence"]
    # The update root is sealed in protected storage: a static check cannot see it.
    assert verdicts["I-UPD-1"]["verdict"] == "not-tested"
    assert verdicts["C-SURF-1"]["verdict"] == "not-tested"  # no address: nothing live
    # The hostile-app battery ran live in this device's own sandbox (its root key the aim).
    assert {r["id"] for r in document["requirements"] if r["verdict"] == "pass"} == \
        {"I-ID-1", "G-VDP-1", "G-SUP-1", "I-APP-1", "I-INPUT-1", "I-UPD-2"}
    # Its update client, against the update-tamper probe's own repository.
    assert verdicts["I-UPD-2"]["kind"] == "live" and "genuine: accepted" in \
        verdicts["I-UPD-2"]["evidence"]
    assert verdicts["I-APP-1"]["kind"] == "live" and "keystore: crash" in \
        verdicts["I-APP-1"]["evidence"]
    _validate(document, report.schema())
