"""The lab's pure parts: every tool's target inside the lab, bounds, labels, figures."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest

from tinyward.errors import BadInput
from tinyward.lab.testbed import services
from tinyward.lab.testbed.labels import Frame, Window, label_frames
from tinyward.lab.testbed.plan import LAB_NETWORK, OutsideLab, check_target, make_plan
from tinyward.lab.testbed.run import detection_figures
from tinyward.lab.testbed.tools import ATTACK_CLASSES, PROFILES, attack_steps, wordlist

_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


@pytest.mark.parametrize("target", ["8.8.8.8", "127.0.0.1", "10.203.9.9", "10.251.0.2",
                                    "fleet.example.com", "10.203.1.11/24", ""])
def test_attack_target_outside_the_lab_is_refused(target: str) -> None:
    plan = make_plan(1)
    with pytest.raises(OutsideLab):
        check_target(plan, target)


def test_attack_steps_refuse_a_plan_pointing_outside() -> None:
    """A plan whose device (or gateway) lies outside the lab makes no attack at all."""
    plan = make_plan(1)
    for field, value in (("address", "192.0.2.7"), ("gateway", "1.1.1.1")):
        hosts = tuple(dataclasses.replace(h, **{field: value}) if h.role == "device-1" else h
                      for h in plan.hosts)
        bad = dataclasses.replace(plan, hosts=hosts)
        for attack in ATTACK_CLASSES:
            with pytest.raises(OutsideLab):
                attack_steps(bad, PROFILES["quick"], attack, Path("/nonexistent"))


@pytest.mark.parametrize("dashboard", [False, True])
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_tool_targets_only_lab_hosts_and_is_bounded(profile: str, dashboard: bool
                                                         ) -> None:
    plan = make_plan(2)
    allowed = plan.addresses()
    for attack in ATTACK_CLASSES:
        steps = attack_steps(plan, PROFILES[profile], attack, Path("/w"), dashboard=dashboard)
        assert steps, attack
        for step in steps:
            assert step.attack == attack
            assert step.target in allowed
            for address in _ADDRESS.findall(" ".join(step.argv)):
                assert ipaddress.ip_address(address) in LAB_NETWORK, (attack, address)
                assert address in allowed, (attack, address)
            assert 0 < step.timeout <= 60
            argv = list(step.argv)
            tool = argv[0]
            # A bound in the tool's own arguments, besides the runner's timeout.
            bound = {"nmap": "--host-timeout", "hping3": "-c", "slowhttptest": "-l",
                     "tcpreplay": "--limit", "hydra": "-P"}.get(tool)
            if bound is not None:
                assert bound in argv, (attack, argv)
            elif tool == "arpspoof":
                assert step.stop_after is not None and step.stop_after < step.timeout
            else:
                assert "--count" in argv, (attack, argv)
            assert "--flood" not in argv and "--rand-source" not in argv


def test_prefix_and_device_count_are_checked() -> None:
    for prefix in ("", "a", "Abc", "toolongprefix", "tw-lab", "1ab"):
        with pytest.raises(BadInput):
            make_plan(1, prefix)
    for count in (0, 9):
        with pytest.raises(BadInput):
            make_plan(count)


@pytest.mark.parametrize("what", [
    ["tls-flood", "--target", "1.1.1.1", "--port", "443", "--count", "1"],
    ["chatter", "--resolver", "8.8.8.8", "--ntp", "10.203.2.10", "--duration", "1"],
    ["chatter", "--resolver", "10.203.2.10", "--ntp", "162.159.200.1", "--duration", "1"],
])
def test_lab_services_refuse_addresses_outside_the_lab(what: list[str]) -> None:
    with pytest.raises(SystemExit, match="outside the lab"):
        services.main(what)


def test_wordlist_holds_the_password_once_near_the_end() -> None:
    words = wordlist(40, "secret-x")
    assert len(words) == 40 and words.count("secret-x") == 1
    assert words.index("secret-x") > 30


def test_labels_by_attacker_and_its_latest_attack() -> None:
    lan_mac, lan_ip, up_ip = "02:77:00:00:01:42", "10.203.1.66", "10.203.2.66"
    dev_mac, rt_mac = "02:77:00:00:01:0b", "02:77:00:00:01:01"
    dev, fleet = "10.203.1.11", "10.203.2.10"
    lan, up = (lan_mac, lan_ip), ("02:77:00:00:02:42", up_ip)
    frames = [
        Frame(1.0, lan_mac, "33:33:00:00:00:02", ()),  # attacker's host before any attack
        Frame(2.0, dev_mac, rt_mac, (dev, fleet)),  # a report
        Frame(10.5, lan_mac, dev_mac, (lan_ip, dev)),  # scan probe
        Frame(10.6, dev_mac, lan_mac, (dev, lan_ip)),  # the victim's answer
        Frame(10.7, dev_mac, rt_mac, (dev, fleet)),  # a report, during the scan
        Frame(20.5, lan_mac, dev_mac, (fleet, dev)),  # replayed: the attacker's MAC
        Frame(30.5, dev_mac, lan_mac, (dev, fleet)),  # still through the attacker
        Frame(31.0, "02:77:00:00:02:42", "02:77:00:00:02:0a", (up_ip, fleet)),  # TLS flood
    ]
    windows = [Window("nmap-syn", 10.0, 12.0, lan), Window("replay", 20.0, 21.5, lan),
               Window("tls-flood", 30.0, 32.0, up)]
    assert label_frames(frames, windows) == [
        "benign", "benign", "nmap-syn", "nmap-syn", "benign", "replay", "replay",
        "tls-flood"]


def test_detection_figures_from_incidents() -> None:
    windows = [Window("nmap-syn", 100.4, 105.0), Window("syn-flood", 110.0, 115.0),
               Window("replay", 120.0, 125.0)]
    incidents = [(50, {"net.anomaly": 1}), (103, {"net.anomaly": 2}), (104, {"net.novel": 1}),
                 (131, {"net.anomaly": 1})]
    figures = detection_figures(incidents, (0.0, 90.0), windows, 128.0, "--watch",
                                visible={"nmap-syn": True})
    assert figures.delays == {"nmap-syn": pytest.approx(2.6), "syn-flood": None,
                              "replay": None}
    # syn-flood began 6 s after the last nmap-syn incident: a delay there would be suspect
    assert figures.carried == {"nmap-syn": False, "syn-flood": True, "replay": False}
    assert figures.visible == {"nmap-syn": True}
    assert figures.delay_kinds == {"nmap-syn": ["net.anomaly"]}
    assert figures.benign_incidents == 1
    assert figures.false_alarms_per_hour == pytest.approx(40.0)
    off = detection_figures([], (0.0, 90.0), windows, 128.0, None)
    assert off.false_alarms_per_hour is None and set(off.delays.values()) == {None}


def test_lab_reads_only_the_detectors_incidents_from_the_store(tmp_path: Path) -> None:
    """The fleet's own incidents (a quiet device) and report counters are no detections."""
    from tinyward.fleet.store import open_store
    from tinyward.lab.testbed.lab import Lab

    (tmp_path / "fleet").mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'fleet' / 'reports.db'}")
    try:
        store.add_incident("dev-a", "quiet", 100, "no report for 30 s")
        store.add_incident("dev-a", "net.anomaly", 120, "report seq 7", count=2)
        store.add_incident("dev-a", "dropped_reports", 121, "report seq 8")
        store.add_incident("dev-a", "net.novel", 110, "report seq 5")
        store.add_incident("dev-b", "net.anomaly", 90, "report seq 1")
    finally:
        store.close()
    lab = Lab(make_plan(1), tmp_path, device_ids={"device-1": "dev-a"})
    assert lab.incidents("device-1") == [(110, {"net.novel": 1}), (120, {"net.anomaly": 2})]


def test_false_alarm_rate_has_an_exact_poisson_interval() -> None:
    from tinyward.lab.testbed.run import poisson_rate_interval

    lo, hi = poisson_rate_interval(0, 3600.0)
    assert lo == 0.0 and hi == pytest.approx(3.689, abs=1e-3)  # the "rule of 3.7"
    lo, hi = poisson_rate_interval(4, 1800.0)
    assert lo == pytest.approx(1.0899 * 2, rel=1e-3) and hi == pytest.approx(10.2416 * 2,
                                                                               rel=1e-3)
    with pytest.raises(ValueError):
        poisson_rate_interval(1, 0.0)


def test_fleet_side_classes_get_the_fleets_refusals_not_a_delay() -> None:
    windows = [Window("nmap-syn", 100.0, 105.0), Window("slowloris", 110.0, 115.0),
               Window("tls-flood", 120.0, 125.0)]
    incidents = [(101, {"net.novel": 3}), (112, {"net.anomaly": 1})]
    readings = [{"tls_handshake_failed": 2.0}, {"tls_handshake_failed": 2.0},
                {"tls_handshake_failed": 70.0, "connection_cap": 29.0},
                {"tls_handshake_failed": 250.0, "connection_cap": 29.0}]
    figures = detection_figures(incidents, (0.0, 90.0), windows, 130.0, "--watch",
                                visible={"nmap-syn": True, "slowloris": False,
                                         "tls-flood": False}, refusals=readings)
    assert figures.fleet_refusals == {
        "slowloris": {"tls_handshake_failed": 68.0, "connection_cap": 29.0},
        "tls-flood": {"tls_handshake_failed": 180.0}}
    assert figures.window_incidents == {"nmap-syn": 3, "slowloris": 1, "tls-flood": 0}
    assert figures.false_alarms_interval == (0.0, pytest.approx(3.689 * 40, rel=1e-3))
    # a reading that failed ({}) gives no evidence rather than a wrong one
    broken = detection_figures(incidents, (0.0, 90.0), windows, 130.0, "--watch",
                               visible={"slowloris": False, "tls-flood": False},
                               refusals=[{}, {}, {}, {}])
    assert broken.fleet_refusals == {}


def test_default_profile_gives_minutes_of_benign_traffic_and_gaps_past_the_rate_limit() -> None:
    from tinyward.link.watch import IncidentLimits

    default = PROFILES["default"]
    assert default.benign >= 300
    assert default.gap >= 1 / IncidentLimits().per_second + 3  # one refill + reports


def test_too_short_training_is_read_from_the_model_with_the_seconds_it_needs() -> None:
    """The lab reads the threshold code's own warning from the model file (not from any
    attack label) and estimates the training that gives the required scores."""
    import numpy as np

    from tinyward.detect.threshold import Policy, calibrate, required_scores
    from tinyward.lab.testbed.training import calibration_warnings, seconds_needed

    scores = np.random.default_rng(0).exponential(size=100)
    with pytest.warns(UserWarning):
        cal = calibrate(scores, 0.001, policy=Policy(on_insufficient="warn"), what="new peers")
    assert cal.warnings
    model = {"calibration": {"warnings": list(cal.warnings)},
             "fusion": {"classes": [{"calibration": {"warnings": list(cal.warnings)}}]}}
    notes = calibration_warnings(model)
    assert notes == list(cal.warnings)  # found, each once
    assert seconds_needed(notes, 60.0) == 60 * required_scores(0.001) / 100
    enough = calibrate(np.random.default_rng(0).exponential(size=required_scores(0.01)), 0.01,
                       policy=Policy(on_insufficient="warn"))
    assert calibration_warnings({"calibration": {"warnings": list(enough.warnings)}}) == []
    assert seconds_needed([], 60.0) is None


def test_lab_run_takes_train_seconds_and_the_default_profile_trains_300_s() -> None:
    from click.testing import CliRunner

    from tinyward.cli.lab import lab

    assert PROFILES["default"].train == 300
    assert PROFILES["quick"].train < PROFILES["default"].train
    refused = CliRunner().invoke(lab, ["run", "--train-seconds", "1"])
    assert refused.exit_code == 2 and "--train-seconds" in refused.output
