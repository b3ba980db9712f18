"""Signed updates in a running device: the update client (delivery, TUF) joined to the
A/B slot agent (apply, trial, accept or revert), with one status for the reports.

``tinyward device run`` builds one :class:`DeviceUpdates` when the device's bundle carries
an update root and a product class::

    updates = DeviceUpdates.for_device(device, link=..., on_accepted=...)   # on_start() done
    runner = DeviceRunner(..., fetch=updates.channel, update_status=updates.status)

- the agent's ``on_start()`` runs first (power-cut recovery), before anything is started;
- a target TUF verified goes to ``agent.apply(...)`` in the client's thread (the report loop
  never waits for a trial); ``on_accepted(component)`` is called after an acceptance, so the
  caller restarts the app from :meth:`UpdateAgent.active_content` and signs a new token;
- :meth:`status` is the report's ``upd``: the client's while it downloads or after it
  refused (``downloading``, ``rejected``, ``failed``), the agent's once it has the target
  (``staged``, ``trial``, ``accepted``, ``reverted``, ``failed``, ``rejected``), always with
  the installed versions (``ver``) and the target (``tgt``) when known.

The installed versions are read from the agent's sealed record only in the thread that
applies (and at start), and kept here: the report thread never reads protected storage
while an update writes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tinyward.errors import Misuse
from tinyward.update.agent import Outcome, UpdateAgent
from tinyward.update.client import UpdateClient, UpdateClientConfig
from tinyward.update.health import HealthCheck, TrialConfig
from tinyward.update.meta import COMPONENTS, TargetMeta, Version

log = logging.getLogger("tinyward.update")

#: client states during which the client, not the agent, says where the update is
_CLIENT_STATES = frozenset({"downloading", "rejected", "failed"})


class DeviceUpdates:
    """One device's update client and agent, joined (see module docstring)."""

    def __init__(self, agent: UpdateAgent, make_client: Callable[[DeviceUpdates],
                 UpdateClient | None],
                 on_accepted: Callable[[str], None] | None = None) -> None:
        self.agent = agent
        self._on_accepted = on_accepted
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        # Power-cut recovery first: an interrupted trial reverts, an interrupted download
        # fails, before anything runs from the slots.
        start = agent.on_start()
        self._versions = self._read_versions()
        self._agent_status = self._with_target(dict(start))
        client = make_client(self)
        if client is None:
            raise Misuse("the device has no update root or product class")
        self.client = client
        self.channel = client.channel

    @classmethod
    def for_device(cls, device: Any, *, link: Callable[[], bool] | None = None,
                   on_accepted: Callable[[str], None] | None = None,
                   trial: TrialConfig | None = None, slots_dir: Path | None = None,
                   client_config: UpdateClientConfig | None = None) -> DeviceUpdates | None:
        """The updates of a provisioned device, or None when its bundle carries no update
        root or product class. ``link``: the health check's "the link reaches the fleet".
        Raises what :meth:`UpdateAgent.for_device` and :meth:`UpdateAgent.on_start` raise
        (``UnsafeSlots``, ``SlotCorrupt``)."""
        root_of = getattr(device, "update_trusted_root", None)
        class_of = getattr(device, "product_class", None)
        if not (callable(root_of) and root_of()) or not (callable(class_of) and class_of()):
            return None
        agent = UpdateAgent.for_device(
            device, health=HealthCheck(trial or TrialConfig(), link=link), slots_dir=slots_dir)

        def make_client(updates: DeviceUpdates) -> UpdateClient | None:
            return UpdateClient.for_device(device, updates._apply, installed=updates.installed,
                                           config=client_config)

        return cls(agent, make_client, on_accepted)

    # -- what the reports say ---------------------------------------------------------------

    def installed(self, component: str) -> Version | None:
        """The confirmed installed version (kept: no storage read from the report thread)."""
        with self._lock:
            text = self._versions.get(component)
        return Version.parse(text) if text is not None else None

    def status(self) -> dict[str, Any]:
        """The report's ``upd`` (see module docstring)."""
        client = self.client.status()
        if client["state"] == "downloading" and self._download_started is None:
            self._download_started = time.monotonic()  # for the log: delivery time
        elif client["state"] in ("rejected", "failed"):
            self._download_started = None
        if client["state"] in _CLIENT_STATES:
            return client  # its "ver" comes from installed(): the agent's versions
        with self._lock:
            status = dict(self._agent_status)
            status["ver"] = dict(self._versions)
        return status

    # -- the hand-over --------------------------------------------------------------------

    def _apply(self, component: str, path: Path, meta: TargetMeta, length: int,
               hashes: Mapping[str, str]) -> None:
        """The client's ``on_verified``, in its thread: stage, switch, trial, accept or
        revert. The agent's own state while it works is read from its state machine."""
        target = {component: str(meta.version)}
        verified_at = time.monotonic()
        started, self._download_started = self._download_started, None
        with self._lock:
            self._agent_status = {"state": "staged", "tgt": target}
            self._applying = True
        watch = threading.Thread(target=self._watch, args=(target,), daemon=True,
                                 name="tinyward-update-watch")
        watch.start()
        try:
            outcome = self.agent.apply(component, path, meta, length, hashes)
        finally:
            with self._lock:
                self._applying = False
            watch.join(2.0)
        versions = self._read_versions()
        status: dict[str, Any] = {"state": outcome.state, "tgt": target}
        if outcome.why is not None:
            status["why"] = outcome.why
        with self._lock:
            self._versions = versions
            self._agent_status = status
            self.outcomes.append(outcome)
        delivered = "" if started is None else f"delivered in {verified_at - started:.1f} s, "
        log.warning("update of %s to %s: %s%s (%s%d B, applied in %.2f s, trial %.2f s)",
                    component, meta.version, outcome.state,
                    f" ({outcome.why})" if outcome.why else "", delivered, length,
                    time.monotonic() - verified_at, outcome.trial_s)
        if outcome.state == "accepted" and self._on_accepted is not None:
            try:
                self._on_accepted(component)
            except Exception:
                log.exception("restarting after the accepted update of %s failed", component)

    _applying = False
    _download_started: float | None = None

    def _watch(self, target: dict[str, str]) -> None:
        """While the agent applies, follow its machine's state (staged, trial) for the
        reports; bounded by the apply itself."""
        event = threading.Event()
        while True:
            with self._lock:
                if not self._applying:
                    return
                state = self.agent.machine.state.value
                if state in ("staged", "trial"):
                    self._agent_status = {"state": state, "tgt": target}
            event.wait(0.05)

    def _read_versions(self) -> dict[str, str]:
        versions = {}
        for component in COMPONENTS:
            version = self.agent.installed(component)
            if version is not None:
                versions[component] = str(version)
        return versions

    def _with_target(self, status: dict[str, Any]) -> dict[str, Any]:
        machine = self.agent.machine
        if machine.component is not None and machine.version is not None:
            status["tgt"] = {machine.component: str(machine.version)}
        return status

    def close(self) -> None:
        self.client.close()


__all__ = ["DeviceUpdates"]
