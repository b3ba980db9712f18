"""The demo's signed-update step: a good update installs and attests, a tampered one is
refused, a crashing one reverts (issue 14).

Everything is the real path: the fleet's TUF repository (signed with the fleet's update
key), a rollout, ``tinyward fleet serve`` delivering one chunk per report, and device-1's
own ``tinyward device run`` process verifying, applying, trying and accepting or
reverting. The outcomes are read from the device's status file (what its reports say).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyward.assess.attacks.outcome import Outcome

PRODUCT = "demo-sensor"
#: seconds between device-1's reports during the update step (one chunk each)
INTERVAL = 0.25
#: bound on each step (a few KiB at one 1 KiB chunk per report)
STEP_TIMEOUT = 60.0

_MANIFEST = """[app]
name = "demo_counter"
version = "{version}"
entry = "demo_app:Counter"
models = ["model.json"]

[input]
channels = ["distance_mm"]
sample_rate_hz = 20
dtype = "int16"
frame_shape = [20, 1]

[output]
max_results_per_minute = 60

[output.fields]
count = {{ type = "int", min = 0, max = 999 }}
"""

_GOOD = b'''"""The demo's update: counts frames brighter than its threshold."""
import json


class Counter:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            self.threshold = json.load(f)["threshold"]
        self.count = 0

    def process(self, frame):
        if float(frame.mean()) > self.threshold:
            self.count = min(self.count + 1, 999)
        return {"count": self.count}
'''

_CRASH = b'''"""A bad build: dies as soon as it starts."""
import os


class Counter:
    def __init__(self, model_paths):
        os._exit(3)
'''


def app_archive(version: str, code: bytes) -> bytes:
    """A gzipped tar of a tiny app (``sensor.toml`` at its top): an app update target."""
    files = {"sensor.toml": _MANIFEST.format(version=version).encode(), "demo_app.py": code,
             "model.json": json.dumps({"threshold": 1000}).encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class UpdateStep:
    """Runs the three updates against device-1 (see module docstring)."""

    def __init__(self, fleet_dir: Path, device: Any, server_url: str, update_secret: bytes,
                 server_secret: bytes, command: Callable[[list[str]], list[str]],
                 slots: Path) -> None:
        self.fleet_dir, self.device, self.url = Path(fleet_dir), device, server_url
        self._update_secret, self._server_secret = update_secret, server_secret
        self._command = command
        self._slots = slots
        self._status_file = Path(device.directory) / "update-run-status.json"
        self._token = Path(device.directory).parent / "update-run-token.cbor"
        self._log = Path(device.directory).parent / "update-run.log"
        self._nonce = os.urandom(32)
        self._proc: subprocess.Popen[bytes] | None = None
        self._rollout: str | None = None

    # -- the fleet's side ---------------------------------------------------------------

    def _publish(self, component: str, data: bytes, version: str) -> str:
        from tinyward.fleet.update_repo import UpdateRepository

        repo = UpdateRepository(self.fleet_dir)
        name = repo.add(component, data, version=version, product_class=PRODUCT)
        repo.publish([repo.offline_signer("update-signing", self._update_secret)],
                     self._server_secret)
        return name

    def _offer(self, component: str, version: str, target: str) -> None:
        from tinyward.fleet.rollouts import RolloutBook

        book = RolloutBook(self.fleet_dir)
        if self._rollout is not None:
            book.halt(self._rollout, "the demo's next update")
        self._rollout = book.start(component, version, target, percent=100).rollout_id

    # -- the device's side ----------------------------------------------------------------

    def _start_device(self) -> None:
        self._status_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tinyward", "device", "run", str(self.device.directory),
                "--server", self.url, "--interval", str(INTERVAL), "--duration", "600",
                "--backoff-max", "0.5", "--status-file", str(self._status_file),
                "--slots", str(self._slots), "--attest-nonce", self._nonce.hex(),
                "--attest-out", str(self._token)]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(self._command(argv), stdout=subprocess.DEVNULL,
                                          stderr=log, start_new_session=True)

    def _update_status(self) -> dict[str, Any]:
        try:
            status = json.loads(self._status_file.read_text())
        except (OSError, ValueError):
            return {}
        found: dict[str, Any] = status.get("update") or {}
        return found

    def _wait(self, done: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], float]:
        start = time.monotonic()
        status: dict[str, Any] = {}
        while time.monotonic() - start < STEP_TIMEOUT:
            if self._proc is not None and self._proc.poll() is not None:
                break
            status = self._update_status()
            if done(status):
                break
            time.sleep(0.2)
        return status, time.monotonic() - start

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(30)
        if self._rollout is not None:
            from tinyward.fleet.rollouts import RolloutBook

            RolloutBook(self.fleet_dir).halt(self._rollout, "the demo is over")
            self._rollout = None

    # -- the three steps --------------------------------------------------------------------

    def good(self, name: str) -> Outcome:
        from tinyward.errors import TinywardError
        from tinyward.fleet.attestation import verify_fleet_token
        from tinyward.fleet.pki import Fleet

        self._offer("app", "1.1.0", self._publish("app", app_archive("1.1.0", _GOOD), "1.1.0"))
        self._start_device()
        status, took = self._wait(lambda s: s.get("state") in ("accepted", "rejected",
                                                               "reverted", "failed")
                                  and s.get("tgt") == {"app": "1.1.0"})
        if status.get("state") != "accepted" or status.get("ver", {}).get("app") != "1.1.0":
            return Outcome(name, False, f"device-1 says {status or 'nothing'}",
                           label="installed", reason=f"{status.get('state', 'no answer')} "
                           f"{status.get('why', '')}".strip())
        # The token is signed again after the acceptance: wait for it (bounded).
        version, deadline = None, time.monotonic() + 15
        while version != "1.1.0" and time.monotonic() < deadline:
            try:
                _, claims = verify_fleet_token(Fleet.open(self.fleet_dir),
                                               self._token.read_bytes(), self._nonce)
                version = next((c.version for c in claims.software_components
                                if c.measurement_type == "App"), None)
            except (OSError, ValueError, TinywardError):
                pass
            if version != "1.1.0":
                time.sleep(0.3)
        ok = version == "1.1.0"
        return Outcome(name, ok, f"app 1.1.0 delivered in 1 KiB chunks inside device-1's "
                                 f"reports, tried in its sandbox and accepted in {took:.1f} s; "
                                 f"its attestation token names app {version}",
                       label="installed",
                       reason="accepted; the token attests app 1.1.0" if ok
                       else f"token attests app {version}")

    def tampered(self, name: str) -> Outcome:
        from tinyward.fleet.update_repo import UpdateRepository

        target = self._publish("model", os.urandom(2048), "1.0.0")
        # The attacker with the server's disk changes bytes of the published file.
        stored = next(UpdateRepository(self.fleet_dir).targets_dir.glob(f"*.{target}"))
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        self._offer("model", "1.0.0", target)
        status, _ = self._wait(lambda s: s.get("tgt") == {"model": "1.0.0"}
                               and s.get("state") in ("rejected", "failed", "accepted"))
        ok = (status.get("why") == "bad-download" and "model" not in status.get("ver", {}))
        return Outcome(name, ok, f"device-1 says {status.get('state')} "
                                 f"({status.get('why')}); installed: {status.get('ver')}",
                       reason="hash mismatch: nothing installed" if ok
                       else f"{status.get('state')} {status.get('why', '')}".strip())

    def crashing(self, name: str) -> Outcome:
        from tinyward.trust.device import Device
        from tinyward.update.agent import UpdateAgent
        from tinyward.update.meta import Version

        self._offer("app", "1.2.0", self._publish("app", app_archive("1.2.0", _CRASH), "1.2.0"))
        status, took = self._wait(lambda s: s.get("tgt") == {"app": "1.2.0"}
                                  and s.get("state") in ("accepted", "rejected", "reverted",
                                                         "failed"))
        self.stop()
        counter = UpdateAgent.for_device(Device.open(self.device.directory),
                                         slots_dir=self._slots).counter("app")
        kept = counter == Version(1, 1, 0).as_counter()
        ok = (status.get("state") == "reverted" and status.get("why") == "crashed"
              and status.get("ver", {}).get("app") == "1.1.0" and kept)
        return Outcome(name, ok, f"app 1.2.0 exited on start in its trial: device-1 says "
                                 f"{status.get('state')} ({status.get('why')}) after {took:.1f} "
                                 f"s, runs app {status.get('ver', {}).get('app')}; "
                                 f"anti-rollback counter {'kept' if kept else 'RAISED'}",
                       label="reverted",
                       reason="reverted to 1.1.0, counter kept" if ok
                       else f"{status.get('state')} {status.get('why', '')}".strip())


__all__ = ["PRODUCT", "UpdateStep", "app_archive"]
