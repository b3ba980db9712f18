"""Run the probes against a target, in order, and add up the evidence (the only place
that sequences I/O; the verdicts are pure functions in each probe module)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass

from tinyward.assess.evidence import Evidence, TierResult, complete, evaluate, not_tested
from tinyward.assess.model import Model, load_model
from tinyward.assess.probes.airgap import AirGapped
from tinyward.assess.probes.attest import Attestation
from tinyward.assess.probes.base import Budget, Context, Probe
from tinyward.assess.probes.credentials import Credentials
from tinyward.assess.probes.declared import DisclosureContact, SupportPeriod
from tinyward.assess.probes.detection import OnDeviceDetection
from tinyward.assess.probes.failure import FailureReporting
from tinyward.assess.probes.hostile import HostileApp
from tinyward.assess.probes.leakage import Leakage
from tinyward.assess.probes.lockout import LockoutRestart
from tinyward.assess.probes.outage import OutageRecovery
from tinyward.assess.probes.pinmitm import PinMitm
from tinyward.assess.probes.portscan import PortScan
from tinyward.assess.probes.preauth import PreauthExhaustion
from tinyward.assess.probes.replay import Replay
from tinyward.assess.probes.static import Identity, UpdateTrust
from tinyward.assess.probes.tlsconfig import TlsConfig
from tinyward.assess.probes.traffic import TrafficAnalysis
from tinyward.assess.probes.update import UpdateTamper
from tinyward.assess.target import Target


def all_probes() -> list[Probe]:
    """Every probe, in the order they run (the port scan first: the others use its ports)."""
    return [PortScan(), TlsConfig(), Credentials(), PreauthExhaustion(), PinMitm(), Replay(),
            LockoutRestart(), HostileApp(), TrafficAnalysis(), Attestation(),
            UpdateTamper(), FailureReporting(), OutageRecovery(),
            Leakage(), OnDeviceDetection(), AirGapped(),
            Identity(), UpdateTrust(), DisclosureContact(), SupportPeriod()]


@dataclass(frozen=True)
class Assessment:
    target: Target
    model: Model
    verdicts: dict[str, Evidence]
    tier: TierResult
    started: _dt.datetime
    finished: _dt.datetime
    probes_run: tuple[str, ...]


def assess(target: Target, *, seconds_per_probe: float = 150.0, attempts: int = 200,
           progress: Callable[[str, list[Evidence]], None] | None = None,
           probes: list[Probe] | None = None, model: Model | None = None) -> Assessment:
    """Every probe against ``target``, each with its own budget; one verdict per
    requirement (not-tested where no probe ran); the tier reached."""
    model = model or load_model()
    context = Context(model)
    started = _dt.datetime.now(_dt.UTC)
    found: list[Evidence] = []
    ran = []
    for probe in probes if probes is not None else all_probes():
        try:
            evidence = probe.run(target, context, Budget(seconds_per_probe, attempts))
        except Exception as error:  # noqa: BLE001 - what a hostile device can make a probe raise
            # The device under test chooses its answers: one that trips a probe must not end
            # the assessment (no report at all) nor pass anything. Its requirements are
            # not-tested, naming the error; worst-wins keeps them so.
            evidence = [not_tested(r, f"the {probe.name} probe stopped on an error: "
                                      f"{type(error).__name__}: {error}")
                        for r in model.requirements if r.probe == probe.name]
        found.extend(evidence)
        ran.append(probe.name)
        if progress is not None:
            progress(probe.name, evidence)
    verdicts = complete(model, found)
    return Assessment(target, model, verdicts, evaluate(model, verdicts), started,
                      _dt.datetime.now(_dt.UTC), tuple(ran))


__all__ = ["Assessment", "all_probes", "assess"]
