"""The orchestration behind ``tinyward demo``: a fleet, its server, devices, live attacks.

Everything is real: a fleet PKI on disk, ``tinyward fleet serve`` in its own process,
``tinyward device run`` processes (inside a private network namespace when we are root),
real TLS, real nmap. The view (``cli/demo.py``) only renders :class:`DemoState`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tinyward.assess.attacks.certificates import (
    client_credentials,
    server_credentials_other_ca,
    server_credentials_wrong_key,
)
from tinyward.assess.attacks.clients import client_with_rogue_certificate, flip_byte, post_as
from tinyward.assess.attacks.listeners import (
    established_connections,
    listening_sockets,
)
from tinyward.assess.attacks.outcome import Outcome
from tinyward.assess.attacks.rogue_server import RogueServer
from tinyward.assess.probes.portscan import ALL_PORTS, BadScan, run_nmap
from tinyward.fleet.pki import MAX_REPORT_INTERVAL, MIN_REPORT_INTERVAL, Fleet
from tinyward.lab.demo_update import PRODUCT
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.link.netns import DeviceNamespace, NamespaceUnavailable
from tinyward.trust import report as codec
from tinyward.trust.device import Device


@dataclass
class DeviceView:
    name: str
    device_id: str
    pid: int | None = None
    status: dict[str, Any] = field(default_factory=dict)
    stored: int = 0


@dataclass
class DemoState:
    """What the live view shows; updated by :class:`Demo` as it goes."""

    folder: Path
    phase: str = "starting"
    server_url: str = ""
    network: str = ""
    devices: list[DeviceView] = field(default_factory=list)
    attacks: list[Outcome] = field(default_factory=list)
    running_attack: str = ""
    log: list[str] = field(default_factory=list)


class Demo:
    """Set up, run, attack and tear down. Use as a context manager."""

    def __init__(self, folder: Path, devices: int = 3, duration: float = 20.0,
                 interval: float = 1.0, use_netns: bool = True) -> None:
        self.folder = Path(folder)
        self.count = devices
        self.duration = duration
        self.interval = interval
        self.state = DemoState(self.folder)
        # One secret per key role, generated, never shown or written: the server gets
        # only its own (the demo's attacker at the server finds no CA key to use).
        self._ca_secret = secrets.token_urlsafe(24).encode()
        self._server_secret = secrets.token_urlsafe(24).encode()
        self._update_secret = secrets.token_urlsafe(24).encode()
        self._updates = False  # the fleet has an update repository (tuf installed)
        self._slots_parent: Path | None = None  # device-1's update slots, removed at close
        self._use_netns = use_netns
        self.ns: DeviceNamespace | None = None
        self._server: subprocess.Popen[str] | None = None
        self._procs: list[subprocess.Popen[str]] = []
        self.fleet: Fleet | None = None
        self.devices: list[Device] = []
        self._lock = threading.Lock()
        self._protections: list[tuple[str, bool, str]] | None = None
        self._probed = False

    # ---- setup -----------------------------------------------------------------------

    def note(self, text: str) -> None:
        # Kept whole (a demo makes a dozen notes): the view prints each one once, in order.
        with self._lock:
            self.state.log.append(text)

    def setup(self) -> None:
        """Network, fleet, server, devices. Raises on any failure (the caller cleans up)."""
        host = "127.0.0.1"
        if self._use_netns:
            try:
                self.ns = DeviceNamespace.create()
                host = self.ns.host_address
                self.state.network = (f"devices in network namespace {self.ns.name} at "
                                      f"{self.ns.device_address}; fleet server at {host}")
            except NamespaceUnavailable as error:
                self.note(f"no network namespace ({error}); devices share loopback")
        if self.ns is None:
            self.state.network = "devices and fleet server on loopback (127.0.0.1)"
        self.state.phase = "creating the fleet"
        names = ["127.0.0.1", "localhost"] + ([host] if host != "127.0.0.1" else [])
        self.fleet = Fleet.init(self.folder / "fleet", self._ca_secret, server_names=names,
                                server_passphrase=self._server_secret,
                                update_passphrase=self._update_secret)
        self.note(f"fleet {self.fleet.fleet_id} created (CA and server passphrases generated, "
                  "not stored)")
        self._update_repository()
        self.state.phase = "starting the fleet server"
        self._start_server(host)
        self.state.phase = "provisioning devices"
        device_ca = self.fleet.device_ca_token(self._ca_secret)  # opened once (scrypt)
        for i in range(self.count):
            device = Device.init(self.folder / f"device-{i + 1}")
            # Declared at the demo's own pace (the server's rate limit follows it), within
            # the bounds a fleet allows.
            schedule = min(max(self.interval, MIN_REPORT_INTERVAL), MAX_REPORT_INTERVAL)
            device.install(self.fleet.enroll(device.enrolment_request, device_ca,
                                             report_interval=schedule,
                                             product_class=PRODUCT if self._updates else None))
            self.devices.append(device)
            self.state.devices.append(DeviceView(f"device-{i + 1}", device.device_id))
        self.note(f"{self.count} devices provisioned: keys made on each device, "
                  "certificates from the fleet's device CA")

    def _update_repository(self) -> None:
        """The fleet's TUF repository for signed updates (one root key for the demo's
        speed; a real fleet keeps 2 of 3), so devices enrolled next carry its root."""
        assert self.fleet is not None
        try:
            from tinyward.fleet.update_repo import UpdateRepository

            UpdateRepository.init(self.fleet.directory,
                                  root_secrets=[secrets.token_urlsafe(24).encode()],
                                  update_signing=self.fleet.update_signing_token(
                                      self._update_secret),
                                  server_secret=self._server_secret, root_threshold=1)
        except ImportError as error:  # python-tuf (an extra) is missing
            self.note(f"no signed updates in this demo ({error})")
            return
        self._updates = True
        self.note("update repository (TUF) made; its root goes into each device's bundle")

    def run_update_steps(self) -> None:
        """Signed updates on device-1's own process: good, tampered, crashing."""
        if not self._updates or self.fleet is None:
            return
        from tinyward.lab.demo_update import UpdateStep

        # The sandbox's user runs the new app from device-1's slots: a folder it can enter
        # (the demo's own may lie under a private one, e.g. --keep in a 0700 folder).
        self._slots_parent = Path(tempfile.mkdtemp(prefix="tinyward-demo-slots-", dir="/tmp"))
        self._slots_parent.chmod(0o755)
        step = UpdateStep(self.fleet.directory, self.devices[0], self.state.server_url,
                          self._update_secret, self._server_secret,
                          self.ns.command if self.ns is not None else (lambda argv: argv),
                          self._slots_parent / "device-1.slots")
        try:
            self._run_steps([
                ("good update installs and attests", lambda name, _: step.good(name), None),
                ("tampered update (bytes changed)", lambda name, _: step.tampered(name), None),
                ("update that crashes on start", lambda name, _: step.crashing(name), None),
            ])
        finally:
            step.stop()

    def _start_server(self, host: str) -> None:
        assert self.fleet is not None
        self._server, self.state.server_url = start_fleet_server(
            self.fleet.directory, self._server_secret, host)
        self.note(f"fleet server listening on {self.state.server_url} (TLS 1.3, client certs)")

    def _people_counter(self, index: int) -> list[str]:
        """``--app``/``--frames`` arguments running the people-counter example on simulated
        doorway traffic, or none (the built-in simulated sensor) outside a source checkout."""
        example = Path(__file__).resolve().parents[3] / "examples" / "people_counter"
        if not (example / "sensor.toml").is_file():
            return []
        try:
            import importlib.util

            spec = importlib.util.spec_from_file_location("tinyward_demo_simulate",
                                                          example / "simulate.py")
            if spec is None or spec.loader is None:
                return []
            simulate = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = simulate  # its dataclasses look themselves up there
            spec.loader.exec_module(simulate)
            # The application's folder must be readable by the sandbox's own uid: copy it
            # into a world-readable folder of the demo.
            shared = self.folder / "apps"
            app = shared / "people_counter"
            if not app.exists():
                shutil.copytree(example, app, ignore=shutil.ignore_patterns("__pycache__"))
                for path in [self.folder, shared, *shared.rglob("*")]:
                    path.chmod(0o755 if path.is_dir() else 0o644)
            reason = _sandbox_cannot_read(app)
            if reason is not None:  # e.g. the demo's folder lies under a private one
                self.note(f"people-counter example not used ({reason}); simulated sensor "
                          "instead")
                return []
            if not self._probed:
                self._probed = True
                self._protections = _sandbox_protections(app / "sensor.toml")
            log = self.folder / f"doorway-{index + 1}.csv"
            episodes = max(4, int(self.duration / 4))
            simulate.write_csv(simulate.simulate(seed=100 + index, episodes=episodes), log)
        except (OSError, ImportError, ValueError, AttributeError) as error:
            self.note(f"people-counter example not used ({error}); simulated sensor instead")
            return []
        return ["--app", str(app / "sensor.toml"), "--frames", str(log)]

    def start_devices(self) -> None:
        self.state.phase = "devices reporting"
        app_args = [self._people_counter(i) for i in range(len(self.devices))]
        if all(app_args):
            self.note("each device runs the people-counter example on simulated doorway "
                      f"traffic, {sandbox_sentence(self._protections)}")
        for index, (view, device) in enumerate(zip(self.state.devices, self.devices, strict=True)):
            argv = [sys.executable, "-m", "tinyward", "device", "run", str(device.directory),
                    "--server", self.state.server_url, "--interval", str(self.interval),
                    "--duration", str(self.duration), "--drain", "10",
                    "--status-file", str(device.directory / "run-status.json"),
                    *app_args[index]]
            if self.ns is not None:
                argv = self.ns.command(argv)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            self._procs.append(proc)
            view.pid = proc.pid
        self.note(f"{self.count} devices running: one {self.interval:g} s report each, "
                  "constant size, outbound only")

    # ---- watching --------------------------------------------------------------------

    def refresh(self) -> None:
        """Read each device's status file and the server's database (nothing before setup)."""
        if self.fleet is None:  # the view is painted from the start; setup() makes the fleet
            return
        counts: dict[str, int] = {}
        db_path = self.fleet.directory / "reports.db"
        if db_path.exists():
            try:
                with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2) as db:
                    counts = dict(db.execute(
                        "SELECT device_id, COUNT(*) FROM reports GROUP BY device_id").fetchall())
            except sqlite3.Error:
                pass
        for view, device in zip(self.state.devices, self.devices, strict=True):
            with contextlib.suppress(OSError, ValueError):
                view.status = json.loads((device.directory / "run-status.json").read_text())
            view.stored = counts.get(view.device_id, view.stored)

    def _stored_blobs(self, device_id: str) -> list[bytes]:
        assert self.fleet is not None
        with sqlite3.connect(f"file:{self.fleet.directory / 'reports.db'}?mode=ro",
                             uri=True, timeout=5) as db:
            return [row[0] for row in db.execute(
                "SELECT signed FROM signed_reports WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
                (device_id,))]

    def _copies(self, blob: bytes) -> int:
        assert self.fleet is not None
        with sqlite3.connect(f"file:{self.fleet.directory / 'reports.db'}?mode=ro",
                             uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM signed_reports WHERE signed = ?",
                                  (blob,)).fetchone()[0])

    # ---- attacks -----------------------------------------------------------------------

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.state.attacks.append(outcome)
            self.state.running_attack = ""

    def run_attacks(self) -> None:
        """Every attack of the issue, one after the other; each outcome is recorded."""
        steps: list[tuple[str, Callable[[str, Any], Outcome], Any]] = [
            # Names fit the demo's table at 80 columns (36 characters at most).
            ("each device's attestation verifies", self._attest, None),
            ("attestation token, one byte flipped", self._attest_attack, "flipped"),
            ("attestation token replayed", self._attest_attack, "replayed"),
            ("token shown to another fleet", self._attest_attack, "foreign"),
            ("client, self-signed certificate", self._rogue_client, "self-signed"),
            ("client, certificate of another CA", self._rogue_client, "other-ca"),
            ("captured report replayed", self._replay, None),
            ("report with one byte flipped", self._flipped, None),
            ("device A posts B's signed report", self._cross_signed, None),
            ("port scan of the devices", self._scan, None),
        ]
        self._run_steps(steps)

    def _run_steps(self, steps: list[tuple[str, Callable[[str, Any], Outcome], Any]]) -> None:
        for name, function, arg in steps:
            self.state.running_attack = name
            try:
                outcome = function(name, arg)
            except Exception as error:  # noqa: BLE001 - an attack that crashed is shown, not hidden
                outcome = Outcome(name, False, f"the attack itself failed: {error!r}",
                                  reason="the attack itself failed")
            self._record(outcome)

    def _attest(self, name: str, _arg: object) -> Outcome:
        """Not an attack: the genuine tokens must verify (so the refusals below mean something)."""
        from tinyward.fleet.attestation import verify_fleet_token

        assert self.fleet is not None
        for device in self.devices:
            nonce = os.urandom(32)
            enrolled, _claims = verify_fleet_token(self.fleet, device.attestation_token(nonce),
                                                   nonce)
            if enrolled.device_id != device.device_id:
                return Outcome(name, False, "a token verified as another device",
                               label="verified", reason="verified as another device")
        return Outcome(name, True, f"{len(self.devices)} tokens verified; the attacks below "
                                   "must be refused", label="verified",
                       reason=f"{len(self.devices)} of {len(self.devices)} tokens verified")

    def _attest_attack(self, name: str, kind: str) -> Outcome:
        from tinyward.errors import BadInput
        from tinyward.fleet.attestation import verify_fleet_token

        assert self.fleet is not None
        nonce = os.urandom(32)
        token = self.devices[0].attestation_token(nonce)
        fleet, check_nonce = self.fleet, nonce
        if kind == "flipped":
            token = flip_byte(token, len(token) // 2)
        elif kind == "replayed":
            check_nonce = os.urandom(32)
        else:
            fleet = Fleet.init(self.folder / "other-fleet", secrets.token_urlsafe(16).encode())
        try:
            verify_fleet_token(fleet, token, check_nonce)
        except BadInput as error:
            words = _TOKEN_REFUSALS.get(type(error).__name__, type(error).__name__)
            return Outcome(name, True, f"refused: {error}", reason=words)
        return Outcome(name, False, "the fleet accepted it", reason="accepted")

    def _host_port(self) -> tuple[str, int]:
        host, port = self.state.server_url.removeprefix("https://").rsplit(":", 1)
        return host, int(port)

    def _a_report(self) -> bytes:
        blobs = self._stored_blobs(self.devices[0].device_id)
        if not blobs:
            raise RuntimeError("device-1 has no stored report yet to capture")
        return blobs[0]

    def _rogue_client(self, name: str, kind: str) -> Outcome:
        assert self.fleet is not None
        host, port = self._host_port()
        cert, key = client_credentials(self.folder / "attacker", kind)
        outcome = client_with_rogue_certificate(
            host, port, self.fleet.root_ca_path.read_bytes(), cert, key, kind, self._a_report())
        return Outcome(name, outcome.refused, outcome.detail, reason=outcome.reason)

    def _replay(self, name: str, _arg: object) -> Outcome:
        captured = self._a_report()
        host, port = self._host_port()
        result = post_as(self.devices[0], host, port, captured, name)
        copies = self._copies(captured)
        return Outcome(name, result.refused and copies == 1,
                       f"{result.detail}; copies stored: {copies} (the original)",
                       reason=result.reason)

    def _flipped(self, name: str, _arg: object) -> Outcome:
        tampered = flip_byte(self._a_report(), -10)  # inside the signature
        host, port = self._host_port()
        result = post_as(self.devices[0], host, port, tampered, name)
        copies = self._copies(tampered)
        return Outcome(name, result.refused and copies == 0,
                       f"{result.detail}; copies stored: {copies}", reason=result.reason)

    def _cross_signed(self, name: str, _arg: object) -> Outcome:
        a, b = self.devices[0], self.devices[1 % len(self.devices)]
        # Names device A (and claims a fresh sequence number) but is signed with B's key.
        forged = codec.encode_report(
            codec.Report(a.device_id, 2**40, int(time.time())), b.signer("report"))
        host, port = self._host_port()
        result = post_as(a, host, port, forged, name)
        copies = self._copies(forged)
        return Outcome(name, result.refused and copies == 0,
                       f"{result.detail}; copies stored: {copies}", reason=result.reason)

    def _device_process(self, device: Device, server: str, duration: float,
                        drain: float = 0.0) -> dict[str, Any]:
        """Run ``tinyward device run`` for this device (in the namespace, if any); its status."""
        status_path = device.directory / "extra-run-status.json"
        status_path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tinyward", "device", "run", str(device.directory),
                "--server", server, "--interval", "0.5", "--duration", str(duration),
                "--drain", str(drain), "--backoff-max", "0.5",
                "--status-file", str(status_path)]
        if self.ns is not None:
            argv = self.ns.command(argv)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + drain + 60,
                              check=False)
        status: dict[str, Any] = json.loads(status_path.read_text())
        status["returncode"] = done.returncode
        return status

    def _mitm(self, name: str, kind: str) -> Outcome:
        """The device's own process, pointed at an impostor, must send it nothing."""
        assert self.fleet is not None
        host = self.ns.host_address if self.ns is not None else "127.0.0.1"
        names = ("127.0.0.1", "localhost", host)
        folder = self.folder / "attacker"
        if kind == "wrong-key":
            cert, key = server_credentials_wrong_key(folder, self.fleet.directory,
                                                     self._ca_secret, names)
            expected, why = "PinMismatch", "the chain is valid; the pin check refused the key"
            words = "not the pinned key: nothing sent"
        else:
            cert, key = server_credentials_other_ca(folder, names)
            expected, why = "ServerRefused", "certificate verification failed at the handshake"
            words = "unknown CA: nothing sent"
        device = self.devices[0]
        with RogueServer(cert, key, host=host) as rogue:
            status = self._device_process(device, rogue.url, duration=3.0)
            time.sleep(0.2)
            received, handshakes = rogue.bytes_received, rogue.handshakes
        attempts = status["refusals"].get(expected, 0)
        # Exit code 1: the run itself says nothing was delivered (docs/cli.md).
        refused = (attempts > 0 and received == 0 and status["returncode"] == 1
                   and status["delivered"] == 0)
        return Outcome(name, refused,
                       f"device-1's own process ran 3 s against it: {status['generated']} reports "
                       f"made and kept queued, {attempts} attempts refused ({why}); handshakes "
                       f"completed: {handshakes}; bytes the impostor received: {received}",
                       reason=words if refused else f"{received} bytes reached the impostor")

    def _redeliver(self, name: str, _arg: object) -> Outcome:
        """Not an attack: what device-1 kept during the MITM reaches the real server."""
        device = self.devices[0]
        before = self._stored_count(device.device_id)
        status = self._device_process(device, self.state.server_url, duration=0.6, drain=15.0)
        after = self._stored_count(device.device_id)
        ok = status["queued"] == 0 and after - before >= status["generated"] > 0
        return Outcome(name, ok, f"{after - before} reports delivered on reconnecting (in "
                                 f"order), {status['queued']} left queued, "
                                 f"{status['dropped_reports']} dropped", label="verified",
                       reason=f"{after - before} delivered, {status['queued']} still queued")

    def _stored_count(self, device_id: str) -> int:
        assert self.fleet is not None
        with sqlite3.connect(f"file:{self.fleet.directory / 'reports.db'}?mode=ro",
                             uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM reports WHERE device_id = ?",
                                  (device_id,)).fetchone()[0])

    def run_mitm_attacks(self) -> None:
        """After the devices' run: point a device's own process at two impostors."""
        self._run_steps([
            ("MITM server: right CA, wrong key", self._mitm, "wrong-key"),
            ("MITM server: another CA", self._mitm, "other-ca"),
            ("kept reports delivered after MITM", self._redeliver, None),
        ])

    def _scan(self, name: str, _arg: object) -> Outcome:
        pids = [p.pid for p in self._procs if p.poll() is None]
        if not pids:
            return Outcome(name, False, "no device process is running to check",
                           reason="no device process to check")
        listeners = listening_sockets(pids)
        connected = sum(established_connections(pid) for pid in pids)
        parts = [(f"{len(pids)} device processes: {len(listeners)} listening sockets, "
                 f"{connected} outbound connections")]
        refused = not listeners and connected > 0
        words = f"{len(listeners)} listening sockets"
        if shutil.which("nmap") is None:
            parts.append("nmap not installed: port scan skipped")
            words += "; nmap missing, not scanned"
        elif self.ns is not None:
            open_ports, summary = _nmap(self.ns.device_address)
            parts.append(f"nmap {self.ns.device_address}: {summary}")
            refused = refused and not open_ports
            words += f"; {len(open_ports)} open ports"
        else:
            open_ports, summary = _nmap("127.0.0.1")
            owners = _port_owners(open_ports)
            mine = [port for port, pid in owners.items() if pid in pids]
            parts.append(f"nmap 127.0.0.1: {summary}; held by a device process: {len(mine)}")
            refused = refused and not mine
            words += f"; {len(mine)} open ports of devices"
        return Outcome(name, refused, "; ".join(parts), reason=words)

    # ---- teardown ----------------------------------------------------------------------

    def wait_devices(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(signal.SIGTERM)
            try:
                self._server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._server.kill()
        if self.ns is not None:
            self.ns.close()
        if self._slots_parent is not None:
            shutil.rmtree(self._slots_parent, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The attestation verifier's refusals (tinyward.fleet.attestation), in plain words.
_TOKEN_REFUSALS = {
    "BadTokenSignature": "signature does not verify",
    "NonceMismatch": "answers an old nonce: a replay",
    "UnknownDevice": "device not enrolled in this fleet",
    "RevokedDevice": "device revoked",
}

#: The sandbox layers the demo names (tinyward.app.sandbox's protections report).
_SHOWN_LAYERS = ("seccomp", "landlock", "separate uid")


def sandbox_sentence(layers: list[tuple[str, bool, str]] | None) -> str:
    """What this host really gives the sandbox (no separate uid without root, no Landlock
    on an old kernel), as the sandbox itself reported it: (name, active, reason) rows."""
    if layers is None:
        return "in its sandbox (its protections could not be read on this host)"
    active = [name for name, on, _ in layers if on and name in _SHOWN_LAYERS]
    missing = [f"{name} ({why})" for name, on, why in layers if not on and name in _SHOWN_LAYERS]
    return (f"in its sandbox: {', '.join(active) or 'none of seccomp, landlock, separate uid'}"
            + (f"; not available here: {'; '.join(missing)}" if missing else ""))


def _sandbox_protections(manifest_path: Path) -> list[tuple[str, bool, str]] | None:
    """What the sandbox can enforce on this host, as it reports it (no app code runs)."""
    from tinyward.app.manifest import load_manifest
    from tinyward.app.sandbox import Sandbox
    from tinyward.errors import TinywardError

    try:
        return [(p.name, p.active, p.reason)
                for p in Sandbox(load_manifest(manifest_path)).probe()]
    except (TinywardError, OSError):
        return None


def _nmap(address: str) -> tuple[tuple[int, ...], str]:
    """The open TCP ports of ``address`` and a summary, by the port-scan probe's nmap run;
    a scan that did not cover every port is an error, never "nothing open"."""
    scan = run_nmap(address, None, seconds=120.0)
    if not scan.host_up or scan.scanned < ALL_PORTS:
        raise BadScan(f"nmap scanned {scan.scanned} of {ALL_PORTS} ports of {address} "
                      f"(host {'up' if scan.host_up else 'down'})")
    return scan.open_ports, f"{len(scan.open_ports)} open of {scan.scanned} TCP ports"


def _port_owners(ports: tuple[int, ...]) -> dict[int, int | None]:
    import psutil

    owners: dict[int, int | None] = {port: None for port in ports}
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in owners:
                owners[conn.laddr.port] = conn.pid
    except psutil.AccessDenied:
        pass
    return owners


def _sandbox_cannot_read(app: Path) -> str | None:
    """Why the sandbox's uid could not read the app folder (as root only), or ``None``."""
    if os.geteuid() != 0:
        return None
    from tinyward.app.sandbox import SandboxConfig
    from tinyward.cli._access import Who, unreadable_by

    try:
        return unreadable_by(app, Who.named(SandboxConfig().user))
    except KeyError:
        return f"no user {SandboxConfig().user!r} for the sandbox"


def make_folder(keep: Path | None) -> Path:
    """The demo's folder: ``keep`` (new or empty) or a fresh temporary one."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="tinyward-demo-"))
    keep = Path(keep)
    if keep.exists() and any(keep.iterdir()):
        from tinyward.errors import StateError

        raise StateError(f"{keep} is not empty; give --keep a new or empty folder")
    keep.mkdir(parents=True, exist_ok=True)
    return keep


__all__ = ["Demo", "DemoState", "DeviceView", "make_folder", "sandbox_sentence"]
