"""A tinyward device in the lab as an assessment target, each protection switchable.

The lab (:mod:`tinyward.lab.testbed`) runs a real fleet server on its fleet host and real
``tinyward device run`` processes on the LAN. :class:`LabDevice` brings one up with two
devices of the same build: ``device-1`` runs (the network probes look at it: its address,
every TCP port) and ``device-2``, stopped, is the second unit the manufacturer lends the
lab (ETSI TS 103 701 lets a test lab have several samples), whose folder the probes that
run the device's own code use (pin-mitm, hostile-app, traffic-analysis, attestation): a
running device's folder is locked by its process.

For tier 3 the device is described as its manufacturer would: its application
(:data:`APP_MANIFEST`, which both devices run) for leakage; device-1 watches its own
traffic with a network model the lab trains on it, and on-device-detection reads
device-1's reports from the fleet's store; the lent unit, run air-gapped, signs its mode,
and its local readout (enrolled afresh just before) is the air-gapped probe's.

The assessment runs inside the LAN attacker's namespace (``ip netns exec <prefix>-atklan``,
as ``target.py`` demands for a lab address) by ``python -m tinyward.lab.assesslab SPEC
OUT``, a JSON spec in, the verdicts and tier out.

:data:`WEAKENINGS` are the protections switched off one at a time, each a real
weakening of the real code path, never reachable from a default:

- ``debug-port``: device-1 restarted with ``device run --unsafe-debug-port`` (hidden): an
  HTTPS status port, TLS 1.3, no login (``link/debugport.py``);
- ``unpinned``: the device command runs ``device run --unsafe-no-pin`` (hidden): the
  link checks the CA chain but not the server key pin (``LinkConfig.unsafe_unpinned``);
- ``default-pin``: the lent unit's local readout enrolled (``device readout-enrol --pin
  --set-pin``) with 12345678, the same on every unit, as a vendor ships it;
- ``unshaped``: the device's runner with ``RunnerConfig.unsafe_unshaped`` (one report per
  event, sent at once) in the traffic probe's capture;
- ``steering-app``: the application source with ``unsafe_inline_feed`` (frames fed
  inside the report loop, so the application's latency reaches the report timing);
- ``cert-optional``: the fleet server restarted with ``fleet serve
  --unsafe-client-cert-optional`` (hidden): its device listener, the device's uplink,
  lets a client without a certificate finish the TLS handshake and reach HTTP
  (``ssl.CERT_OPTIONAL``; a certificate that is sent is still verified).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "WEAKENINGS", "LabDevice", "Weakening", "main", "run_spec"]

#: What the manufacturer declares for the lab's device (a date far enough ahead).
DESCRIPTION = ('format = "tinyward-target/1"\nname = "tinyward device (lab)"\n'
               'vendor = "tinyward"\nsecurity_contact = "security@tinyward.example"\n'
               'support_end = 2035-12-31\nproduct_class = "ml-sensor"\n')
DEBUG_PORT = 8022
#: The lab device's application (a people counter: count 0..999 and a state, 60 results
#: a minute): device-1 runs it (``device run --app``), and it is the leakage probe's manifest.
APP_MANIFEST = Path(__file__).resolve().parent / "_lab_app" / "sensor.toml"


@dataclass(frozen=True)
class Weakening:
    """One protection switched off: its name, the probes whose input it changes (the
    others' evidence is the full device's), and what it does to the device."""

    name: str
    probes: tuple[str, ...]
    device_args: tuple[str, ...] = ()  # device-1's extra `device run` arguments
    command_args: tuple[str, ...] = ()  # the pin probe's device command's extra arguments
    traffic: Mapping[str, Any] = field(default_factory=dict)  # TrafficAnalysis options
    readout_pin: str | None = None  # the lent unit's readout enrolled with this PIN
    fleet_args: tuple[str, ...] = ()  # the fleet server's extra `fleet serve` arguments


_NETWORK = ("port-scan", "tls-config", "credentials", "preauth-exhaustion")
WEAKENINGS: dict[str, Weakening] = {w.name: w for w in (
    Weakening("debug-port", _NETWORK, device_args=("--unsafe-debug-port", str(DEBUG_PORT))),
    Weakening("unpinned", ("pin-mitm",), command_args=("--unsafe-no-pin",)),
    Weakening("default-pin", ("port-scan", "credentials"), readout_pin="12345678"),
    Weakening("unshaped", ("traffic-analysis",),
              traffic={"unsafe_unshaped": True, "phases": ("events",)}),
    Weakening("steering-app", ("traffic-analysis",),
              traffic={"unsafe_inline_feed": True, "phases": ("app",)}),
    Weakening("cert-optional", _NETWORK, fleet_args=("--unsafe-client-cert-optional",)),
)}


def run_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Assess as ``spec`` says (run inside the lab namespace); the verdicts and tier."""
    from tinyward.assess.probes.replay import ReplaySpec
    from tinyward.assess.probes.traffic import TrafficAnalysis
    from tinyward.assess.run import all_probes, assess
    from tinyward.assess.target import load_description, make_target

    target = make_target(
        address=spec["address"], netns=spec["netns"], device_dir=Path(spec["device_dir"]),
        description=load_description(spec["description"]),
        client_cert=tuple(Path(p) for p in spec["client_cert"]),  # type: ignore[arg-type]
        device_command=tuple(spec["device_command"]),
        mitm_cert=tuple(Path(p) for p in spec["mitm_cert"]),  # type: ignore[arg-type]
        uplink_address=spec["uplink_address"], uplink_port=spec["uplink_port"],
        attest_command=tuple(spec["attest_command"]),
        fleet_dir=Path(spec["fleet_dir"]) if spec.get("fleet_dir") else None,
        app_manifest=Path(spec["app"]) if spec.get("app") else None,
        fleet_store=spec.get("fleet_store"),
        airgap_command=tuple(spec["airgap_command"]) if spec.get("airgap_command") else None,
        airgap_cert=Path(spec["airgap_cert"]) if spec.get("airgap_cert") else None,
        readout_command=tuple(spec["readout_command"]) if spec.get("readout_command")
        else None,
        replay=ReplaySpec(Path(spec["replay"]).read_bytes(), spec["uplink_port"])
        if spec.get("replay") else None)
    traffic = dict(spec["traffic"])
    if "phases" in traffic:
        traffic["phases"] = tuple(traffic["phases"])
    probes = [TrafficAnalysis(seconds=spec.get("traffic_seconds", 60.0), **traffic)
              if p.name == "traffic-analysis" else p for p in all_probes()]
    if spec.get("watched_dir"):  # the running, watched unit's reports (module doc)
        probes = [_Adjusted(p, device_dir=Path(spec["watched_dir"]))
                  if p.name == "on-device-detection" else p for p in probes]
    if spec.get("readout_enrol"):  # the air-gapped readout met as shipped (module doc)
        probes = [_Adjusted(p, before=tuple(spec["readout_enrol"]))
                  if p.name == "air-gapped" else p for p in probes]
    if spec.get("only"):
        probes = [p for p in probes if p.name in spec["only"]]
    result = assess(target, probes=probes,
                    seconds_per_probe=spec.get("seconds_per_probe", 240.0),
                    progress=lambda name, ev: print(
                        f"{name}: " + ", ".join(f"{e.requirement} {e.verdict}" for e in ev),
                        file=sys.stderr, flush=True))
    return {"probes": list(result.probes_run),
            "verdicts": {i: {"verdict": e.verdict, "probe": e.probe, "text": e.text}
                         for i, e in result.verdicts.items()}}


class _Adjusted:
    """A probe run on the lab's target with one thing adjusted: another device folder
    (on-device-detection reads the reports of the *running* unit, device-1, while the
    others use the lent unit's folder), or a command run first (the lent unit's readout
    enrolled afresh, as shipped: the probes before left it locked out)."""

    def __init__(self, probe: Any, *, device_dir: Path | None = None,
                 before: tuple[str, ...] = ()) -> None:
        self.probe, self.device_dir, self.before = probe, device_dir, before
        self.name, self.kind = probe.name, probe.kind

    def run(self, target: Any, context: Any, budget: Any) -> Any:
        import dataclasses

        if self.before:
            done = subprocess.run(list(self.before), capture_output=True, text=True,
                                  timeout=120, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{self.before[:4]} failed: {done.stderr[-500:]}")
        if self.device_dir is not None:
            target = dataclasses.replace(target, device_dir=self.device_dir)
        return self.probe.run(target, context, budget)


class LabDevice:
    """The lab with a tinyward device to assess (see the module doc). Root and the lab's
    tools (iproute2, dnsmasq, nmap) are needed; use as a context manager."""

    def __init__(self, folder: Path, prefix: str = "twas",
                 train_seconds: float = 90.0) -> None:
        from tinyward.lab.testbed.lab import Lab
        from tinyward.lab.testbed.plan import make_plan

        self.folder = folder
        # detect: device-1 watches its own traffic (``--watch eth0 --net-model M``, a model
        # the lab trains on its benign traffic for ``train_seconds``) for on-device-detection;
        # every device runs the lab's application (``--app``) for leakage. 90 s, not the
        # lab's 20: a 20 s model (122 vectors, 30 calibration scores) raised net.anomaly
        # every ~10 s through a whole assessment, and on-device-detection never saw the
        # quiet stretch it needs; 90 s gives the ~120 calibration scores a rate needs.
        self.lab = Lab(make_plan(2, prefix), folder, interval=1.0, detect=True,
                       train_seconds=train_seconds, updates=True,
                       device_options=("--app", str(APP_MANIFEST)),
                       # The traffic probe runs a device at 0.1 s, ten times the schedule
                       # the fleet's per-device rate limit allows it (docs/assessment.md).
                       fleet_options=("--rate", "1000", "--burst", "1000"))
        self.files = folder / "assess"

    def __enter__(self) -> LabDevice:
        from tinyward.assess.attacks.certificates import server_credentials_wrong_key
        from tinyward.lab.simdevice import SimulatedDevice

        self.lab.up()
        try:
            self.lab.wait_reporting(1, timeout=120)
            self.lab.stop_device("device-2")  # the lent unit: its folder is the probes'
            self.files.mkdir(parents=True, exist_ok=True)
            fleet_dir = self.folder / "fleet"
            fleet_host = self.lab.plan.host("fleet").address
            secret = self.lab._ca_secret
            self.mitm = server_credentials_wrong_key(self.files / "mitm", fleet_dir, secret,
                                                     names=("127.0.0.1", "localhost",
                                                            fleet_host))
            # The manufacturer's test credential (TS 103 701's IXIT): a device certificate
            # of this fleet, so the uplink's listener (it demands one) can be examined.
            from tinyward.fleet.pki import Fleet

            fleet = Fleet.open(fleet_dir)
            self.credential = SimulatedDevice.enrolled(fleet, secret)
            self.client_cert = self.credential.write_tls_files(self.files)
        except BaseException:
            self.lab.down()
            raise
        return self

    def _readout(self, role: str, pin: str | None = None) -> None:
        """Enrol ``role``'s local readout with a PIN: its own random one, or ``pin`` (the
        default-PIN weakening), through the real ``device readout-enrol``."""
        done = subprocess.run(self._readout_argv(role, pin), capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"readout-enrol failed: {done.stderr[-500:]}")

    def _readout_argv(self, role: str, pin: str | None = None) -> list[str]:
        argv = [sys.executable, "-m", "tinyward", "device", "readout-enrol",
                str(self.folder / role), "--pin"]
        return [*argv, "--set-pin", pin] if pin is not None else argv

    def __exit__(self, *exc: object) -> None:
        self.lab.down()

    def spec(self, weakening: Weakening | None = None, *,
             only: tuple[str, ...] = (), traffic_seconds: float = 60.0) -> dict[str, Any]:
        device = self.folder / "device-2"
        py = sys.executable
        command = [py, "-m", "tinyward", "device", "run", str(device), "--server", "{server}",
                   "--interval", "0.5", "--duration", "2", "--backoff-max", "0.5"]
        if weakening is not None:
            command += list(weakening.command_args)
        return {
            "address": self.lab.plan.host("device-1").address,
            "netns": self.lab.plan.host("attacker-lan").netns,
            "device_dir": str(device), "description": DESCRIPTION,
            "client_cert": [str(p) for p in self.client_cert],
            "device_command": command, "mitm_cert": [str(p) for p in self.mitm],
            "uplink_address": self.lab.plan.host("fleet").address,
            "uplink_port": int(self.lab.server_url.rsplit(":", 1)[1]),
            "attest_command": [py, "-m", "tinyward", "device", "attest", str(device),
                               "--nonce", "{nonce}", "-o", "{out}"],
            "fleet_dir": str(self.folder / "fleet"),  # failure-reporting, outage-recovery
            "app": str(APP_MANIFEST),  # leakage: the application device-1 runs
            # on-device-detection: the fleet's store, read for device-1's reports
            "fleet_store": str(self.folder / "fleet" / "reports.db"),
            "watched_dir": str(self.folder / "device-1"),
            # air-gapped: the lent unit run air-gapped signs its mode; its readout
            "airgap_command": [py, "-m", "tinyward", "device", "run", str(device),
                               "--air-gapped", "--duration", "1", "--attest-nonce", "{nonce}",
                               "--attest-out", "{out}"],
            "airgap_cert": str(device / "certs" / "attestation.crt.pem"),
            "readout_command": [py, "-m", "tinyward", "device", "readout", str(device)],
            "readout_enrol": self._readout_argv("device-2",
                                                weakening.readout_pin if weakening else None),
            "traffic": dict(weakening.traffic) if weakening is not None else {},
            "traffic_seconds": traffic_seconds,
            "only": list(only or (weakening.probes if weakening is not None else ())),
        }

    def assess(self, weakening: Weakening | None = None, *, name: str = "full",
               timeout: float = 900.0, **options: Any) -> dict[str, Any]:
        """One assessment from the LAN attacker's namespace (``weakening``: its probes
        only, device-1 restarted with its arguments and back after)."""
        from tinyward.lab.testbed import net

        spec = self.spec(weakening, **options)
        spec_path = self.files / f"{name}.spec.json"
        out = self.files / f"{name}.json"
        if weakening is None:  # a capture the fleet has not seen (made, never sent)
            capture = self.files / f"{name}.capture"
            capture.write_bytes(self.credential.report(timestamp=int(time.time())))
            spec["replay"] = str(capture)
        spec_path.write_text(json.dumps(spec))
        if weakening is not None and weakening.device_args:
            self.lab.restart_device("device-1", weakening.device_args)
            time.sleep(3)  # its listener is up once the process has started
        if weakening is not None and weakening.fleet_args:
            self.lab.restart_fleet(weakening.fleet_args)  # returns once it listens
        # Every assessment meets the lent unit's readout as shipped: the last one's
        # lockout probe left it locked, and re-enrolling resets it (its own random PIN,
        # or the weakening's vendor PIN).
        self._readout("device-2", weakening.readout_pin if weakening is not None else None)
        try:
            with open(self.files / f"{name}.log", "wb") as log:
                done = subprocess.run(net.ns_command(spec["netns"], [
                    sys.executable, "-m", "tinyward.lab.assesslab", str(spec_path), str(out)]),
                    stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        finally:
            if weakening is not None and weakening.device_args:
                self.lab.restart_device("device-1")
            if weakening is not None and weakening.fleet_args:
                self.lab.restart_fleet()
        if done.returncode != 0:
            raise RuntimeError(f"the assessment failed ({done.returncode}): "
                               + (self.files / f"{name}.log").read_text()[-2000:])
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(run_spec(spec), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
