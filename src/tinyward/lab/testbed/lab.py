"""A lab that is up: its namespaces, a real fleet server, real devices, and the services
of ordinary LAN life (resolver, NTP, the router's login page, the devices' chatter).

:class:`Lab` brings it up (:meth:`Lab.up`) and down (:meth:`Lab.down`); the attack run
lives in :mod:`tinyward.lab.testbed.run`. Every process is started inside a lab
namespace, so removing the namespaces' processes (:func:`~.net.remove_lab`) ends them all.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from tinyward.errors import StateError
from tinyward.lab.fleetproc import start_fleet_server
from tinyward.lab.testbed import net
from tinyward.lab.testbed.plan import LabPlan
from tinyward.lab.testbed.tools import ADMIN_PORT, FLEET_PORT, ROUTER_LOGIN_PORT
from tinyward.lab.testbed.training import calibration_warnings

__all__ = ["Lab", "detection_flag", "state_path"]

#: How long a lab service runs at most when nobody takes the lab down (a day).
SERVICE_LIFETIME = 86400.0
#: The on-device detector's options in `tinyward device run --help` (docs/on-device-detection.md):
#: ``--watch IFACE --net-model MODEL``.
_DETECTION_OPTIONS = ("--watch", "--net-model")
#: How the device's network model is trained on its own benign capture.
TRAIN_ARGS = ("--kind", "mahalanobis-int8", "--novelty", "pair", "--per-class")
STATE_DIR = Path("/run/tinyward-lab")
#: Incident kinds of the on-device detector (link/watch.py INCIDENT_KINDS start so).
DETECTION_KINDS = ("net.", "sensor.")


def state_path(prefix: str) -> Path:
    """Where ``lab up`` records its folder for ``lab down``."""
    return STATE_DIR / f"{prefix}.json"


def detection_flag(ask: subprocess.Popen[str] | None = None) -> str | None:
    """The ``device run`` flag that turns on-device detection on, if this build has one
    (``ask``: a :func:`ask_help` started earlier, so its start-up overlaps other work)."""
    ask = ask or ask_help()
    out, _ = ask.communicate(timeout=60)
    found = all(re.search(rf"{option}\b", out) for option in _DETECTION_OPTIONS)
    return _DETECTION_OPTIONS[0] if found else None


def _dashboard_password(fleet_dir: Path) -> bool:
    """Give the fleet's dashboard a random admin password (never written in clear, not
    in hydra's list) when this build has a dashboard; say whether it has."""
    env = {**os.environ, "TINYWARD_DASHBOARD_PASSWORD": secrets.token_urlsafe(18)}
    done = subprocess.run([sys.executable, "-m", "tinyward", "fleet", "dashboard-password",
                           str(fleet_dir)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    return done.returncode == 0


def ask_help() -> subprocess.Popen[str]:
    """`tinyward device run --help`, started."""
    return subprocess.Popen([sys.executable, "-m", "tinyward", "device", "run", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@dataclass
class Lab:
    """See the module doc. ``folder`` holds the fleet, the devices and the logs."""

    plan: LabPlan
    folder: Path
    interval: float = 1.0
    detect: bool = True
    #: Seconds of device-1's benign traffic captured (and, with detection, trained on).
    train_seconds: float = 20.0
    #: Give the fleet an update repository before enrolling (devices then carry its root
    #: and run their update agent): the assessment lab's update-trust evidence.
    updates: bool = False
    #: More ``fleet serve`` options (the assessment lab raises the per-device report rate
    #: for its traffic probe, which runs a device at 0.1 s).
    fleet_options: tuple[str, ...] = ()
    #: More ``device run`` options for every device (the assessment lab's ``--app``).
    device_options: tuple[str, ...] = ()
    server_url: str = ""
    admin_url: str = ""
    device_ids: dict[str, str] = field(default_factory=dict)
    detection: str | None = None
    #: The fleet's admin listener has a dashboard login (hydra tries it as well).
    dashboard: bool = False
    train_capture: Path | None = None
    net_model: Path | None = None
    #: The trained model's calibration warnings (training too short for its rate).
    train_warnings: list[str] = field(default_factory=list)
    #: When the devices restarted watching (time.time()), for their warm-up.
    watching_since: float | None = None
    #: The fleet's admin bearer token (memory only: the fleet keeps its SHA-256), for
    #: reading ``/metrics`` (the fleet's refusals during attacks aimed at it).
    _admin_token: str = field(default="", repr=False)
    #: The fleet CA's passphrase (memory only), for glue that needs more of the fleet's
    #: credentials while the lab is up (the assessment lab's impostor certificate).
    _ca_secret: bytes = field(default=b"", repr=False)
    _root_ca: Path = field(default=Path("/nonexistent"), repr=False)
    #: The server's passphrase (memory only) and process, to restart it with other
    #: ``fleet serve`` options (:meth:`restart_fleet`).
    _server_secret: bytes = field(default=b"", repr=False)
    _fleet: subprocess.Popen[str] | None = field(default=None, repr=False)
    _devices: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    # ---- processes ------------------------------------------------------------------

    def start(self, role_or_ns: str, argv: list[str], name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside a lab namespace (a host's role or a namespace name), its
        output in ``logs/<name>.log``."""
        netns = self._netns(role_or_ns)
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (closed in down())
        self._logs.append(log)
        # cwd: the lab's folder, where tools leave their files (hydra.restore …).
        proc = subprocess.Popen(net.ns_command(netns, argv), stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=self.folder)
        self._procs.append(proc)
        return proc

    def _netns(self, role_or_ns: str) -> str:
        if role_or_ns in self.plan.namespaces:
            return role_or_ns
        if role_or_ns == "router":
            return self.plan.router
        return self.plan.host(role_or_ns).netns

    # ---- up and down ----------------------------------------------------------------

    def up(self) -> None:
        """Namespaces, fleet, server, devices, services. On failure everything made is
        removed and the error raised."""
        from tinyward.fleet.pki import Fleet
        from tinyward.trust.device import Device

        ask = ask_help() if self.detect else None
        net.create_lab(self.plan)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fleet_host = self.plan.host("fleet")
            # One secret per role, generated here, never written: the server gets its own.
            ca_secret = secrets.token_urlsafe(24).encode()
            server_secret = secrets.token_urlsafe(24).encode()
            self._ca_secret = ca_secret
            fleet = Fleet.init(self.folder / "fleet", ca_secret,
                               server_names=[fleet_host.address, "fleet.lab", "127.0.0.1"],
                               server_passphrase=server_secret,
                               report_interval=self.interval)
            if self.updates:
                from tinyward.fleet.update_repo import UpdateRepository

                # Root keys sealed with random passphrases nobody keeps: the lab's fleet
                # is thrown away with it (no release is ever signed with them).
                UpdateRepository.init(fleet.directory, root_secrets=[
                    secrets.token_urlsafe(24).encode() for _ in range(3)],
                    targets_secrets=[secrets.token_urlsafe(24).encode()],
                    server_secret=server_secret)
            self.dashboard = _dashboard_password(fleet.directory)
            from tinyward.fleet.guards import create_admin_token

            self._admin_token = create_admin_token(fleet.directory)
            self._root_ca = fleet.root_ca_path
            announced: list[str] = []
            self._server_secret = server_secret
            self._start_fleet(announced)
            self.admin_url = f"https://{fleet_host.address}:{ADMIN_PORT}"
            self._services()
            self.detection = detection_flag(ask) if ask is not None else None
            device_ca = fleet.device_ca_token(ca_secret)
            for host in self.plan.devices:
                device = Device.init(self.folder / host.role)
                device.install(fleet.enroll(device.enrolment_request, device_ca,
                                            report_interval=self.interval))
                self.device_ids[host.role] = device.device_id
                self._start_device(host.role)
            if self.detection:
                self._train()
            self._record()
        except BaseException:
            if ask is not None and ask.poll() is None:
                ask.kill()  # the only process of ours outside the lab's namespaces
                ask.wait(timeout=5)
            self.down()
            raise

    def _start_fleet(self, announced: list[str] | None = None,
                     extra: tuple[str, ...] = ()) -> None:
        fleet_host = self.plan.host("fleet")
        self._fleet, self.server_url = start_fleet_server(
            self.folder / "fleet", self._server_secret, fleet_host.address, FLEET_PORT,
            extra=("--admin-host", fleet_host.address, "--admin-port", str(ADMIN_PORT),
                   *self.fleet_options, *extra),
            announced=announced, wrap=lambda argv: net.ns_command(fleet_host.netns, argv))

    def restart_fleet(self, extra: tuple[str, ...] = ()) -> None:
        """Stop the fleet server (SIGTERM: it stops cleanly) and start it again, same
        ports, with ``extra`` ``fleet serve`` options (the assessment lab's controls);
        the devices reconnect by themselves."""
        if self._fleet is not None:
            self._fleet.terminate()
            try:
                self._fleet.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._fleet.kill()
                self._fleet.wait(timeout=5)
        self._start_fleet(extra=extra)

    def _start_device(self, role: str, watch: bool = False, extra: tuple[str, ...] = ()) -> None:
        directory = self.folder / role
        # -P: not the working directory (the lab's folder, the device's parent) on its
        # sys.path: a device running an app refuses a secret beneath a path the app reads.
        argv = [sys.executable, "-P", "-m", "tinyward", "device", "run", str(directory),
                "--server", self.server_url, "--interval", str(self.interval),
                "--status-file", str(directory / "run-status.json"), *self.device_options,
                *extra]
        if watch:
            assert self.net_model is not None
            argv += ["--watch", "eth0", "--net-model", str(self.net_model)]
        self._devices[role] = self.start(role, argv, role)

    def stop_device(self, role: str) -> None:
        """Stop ``role``'s device process (SIGTERM: it stops cleanly)."""
        proc = self._devices.pop(role, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart_device(self, role: str, extra: tuple[str, ...] = ()) -> None:
        """Stop ``role``'s device and start it again with ``extra`` arguments (watching its
        traffic again if the lab's devices watch)."""
        self.stop_device(role)
        self._start_device(role, watch=self.watching_since is not None, extra=extra)

    def capture_device(self, seconds: float, path: Path, role: str = "device-1") -> None:
        """``seconds`` of ``role``'s own traffic (its eth0) into ``path``."""
        proc = self.start(role, ["tcpdump", "-i", "eth0", "-n", "-U", "-w", str(path)],
                          f"tcpdump-{path.stem}")
        time.sleep(seconds)
        proc.send_signal(2)  # SIGINT: tcpdump flushes and closes the file
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _train(self) -> None:
        """The detector's benign phase: device-1's own traffic (reports and chatter)
        captured for ``train_seconds`` and trained on with `tinyward detect train`; then
        every device restarts watching its eth0 with that model (the devices are alike)."""
        self.wait_reporting(1)
        self.train_capture = self.folder / "train-device-1.pcap"
        self.capture_device(self.train_seconds, self.train_capture)
        self.net_model = self.folder / "device-net.json"
        done = subprocess.run([sys.executable, "-m", "tinyward", "detect", "train",
                               str(self.train_capture), *TRAIN_ARGS, "--out",
                               str(self.net_model)],
                              capture_output=True, text=True, timeout=300, check=False)
        (self.folder / "logs" / "detect-train.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise StateError(f"training the device's network model failed: "
                             f"{(done.stderr or done.stdout).strip()[-300:]}")
        self.train_warnings = calibration_warnings(json.loads(self.net_model.read_text()))
        before = self.stored()
        for role, proc in list(self._devices.items()):
            proc.terminate()  # the device stops cleanly on SIGTERM; its queue is kept
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            self._start_device(role, watch=True)
        self.watching_since = time.time()
        self.wait_reporting(2, since=before)

    def _services(self) -> None:
        fleet = self.plan.host("fleet").address
        life = str(SERVICE_LIFETIME)
        py = [sys.executable, "-m", "tinyward.lab.testbed.services"]
        # The lab's resolver: names of the lab only, nothing forwarded anywhere.
        self.start("fleet", [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
            "--conf-file=/dev/null", "--pid-file=", "--bind-interfaces",
            f"--listen-address={fleet}", "--except-interface=lo",
            f"--address=/fleet.lab/{fleet}", f"--address=/time.lab/{fleet}",
            f"--address=/router.lab/{self.plan.host('device-1').gateway}",
            f"--address=/updates.lab/{fleet}"], "dnsmasq")
        self.start("fleet", [*py, "ntp-server", "--address", fleet, "--duration", life], "ntp")
        password = self.folder / "router-password"
        password.write_text(secrets.choice(["sensor-lab-7", "blue-otter-42", "quiet-lamp-9"]))
        password.chmod(0o600)
        self.start("router", [*py, "router-login", "--address",
                              self.plan.host("device-1").gateway, "--port",
                              str(ROUTER_LOGIN_PORT), "--password-file", str(password),
                              "--duration", life], "router-login")
        for index, host in enumerate(self.plan.devices):
            self.start(host.role, [*py, "chatter", "--resolver", fleet, "--ntp", fleet,
                                   "--duration", life, "--seed", str(index + 1)],
                       f"chatter-{host.role}")
        # The LAN attacker forwards what it intercepts (arp-mitm keeps the link up).
        net._sysctl(self.plan.host("attacker-lan").netns, "net.ipv4.ip_forward", "1")

    def _record(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state_path(self.plan.prefix).write_text(json.dumps({
            "folder": str(self.folder), "server": self.server_url, "admin": self.admin_url,
            "devices": self.device_ids, "detection": self.detection}))

    def down(self) -> list[str]:
        """Kill every lab process, delete the namespaces; return their names."""
        removed = net.remove_lab(self.plan.prefix)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self._logs:
            log.close()
        self._procs.clear()
        self._logs.clear()
        state_path(self.plan.prefix).unlink(missing_ok=True)
        return removed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- reading the fleet ----------------------------------------------------------

    def stored(self) -> dict[str, int]:
        """Reports stored per device role."""
        db = self.folder / "fleet" / "reports.db"
        if not db.exists():
            return {}
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                counts = dict(conn.execute(
                    "SELECT device_id, COUNT(*) FROM reports GROUP BY device_id").fetchall())
        except sqlite3.Error:
            return {}
        return {role: int(counts.get(did, 0)) for role, did in self.device_ids.items()}

    def incidents(self, role: str) -> list[tuple[int, dict[str, int]]]:
        """(fleet receive time, detection incident counts) of ``role``'s incidents, oldest
        first, through the fleet's store API (``ReportStore.incidents``). Only the
        detector's kinds count (``net.…``, ``sensor.…``: link/watch.py), not the fleet's
        own (``quiet``) or the counters a report may carry (``dropped_reports`` …)."""
        from tinyward.fleet.store import MAX_INCIDENTS_LISTED, open_store

        store = open_store(f"sqlite:///{self.folder / 'fleet' / 'reports.db'}")
        try:
            rows = store.incidents(self.device_ids[role], limit=MAX_INCIDENTS_LISTED)
        finally:
            store.close()
        found = [(row.at, {row.kind: row.count}) for row in rows
                 if row.kind.startswith(DETECTION_KINDS) and row.count > 0]
        return sorted(found, key=lambda item: item[0])

    def refusals(self) -> dict[str, float]:
        """The fleet's refusal counters by reason (``tinyward_refusals_total`` of its
        ``/metrics``, read from inside the lab, parsed with prometheus_client); {} when
        they cannot be read (said in the figures as "no fleet evidence")."""
        from prometheus_client.parser import text_string_to_metric_families

        fleet = self.plan.host("fleet").address
        argv = [sys.executable, "-m", "tinyward.lab.testbed.services", "metrics", "--target",
                fleet, "--port", str(ADMIN_PORT), "--cafile",
                str(self._root_ca)]
        env = {**os.environ, "TINYWARD_LAB_ADMIN_TOKEN": self._admin_token}
        try:
            done = subprocess.run(net.ns_command(self.plan.host("fleet").netns, argv),
                                  env=env, capture_output=True, text=True, timeout=30,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {}
        if done.returncode != 0:
            return {}
        out: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(done.stdout):
                for sample in family.samples:
                    if sample.name == "tinyward_refusals_total":
                        reason = sample.labels.get("reason", "?")
                        out[reason] = out.get(reason, 0.0) + sample.value
        except ValueError:
            return {}
        return out

    def wait_reporting(self, reports: int = 2, timeout: float = 60.0,
                       since: dict[str, int] | None = None) -> None:
        """Until every device has ``reports`` stored (more than in ``since``). Raises
        StateError after ``timeout``."""
        since = since or {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.stored()
            if counts and all(n - since.get(role, 0) >= reports
                              for role, n in counts.items()):
                return
            time.sleep(0.25)
        raise StateError(f"the lab's devices did not report within {timeout:g} s "
                         f"(stored: {self.stored()}); see {self.folder / 'logs'}")


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
