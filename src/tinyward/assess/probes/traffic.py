"""traffic-analysis (live): an eavesdropper on the device's uplink learns nothing, even
when the device's own application tries to steer the timing (C-TRAFFIC-1).

For a tinyward device folder enrolled in a fleet whose server the user names
(``--uplink-port N``: the fleet server's device port on the target's address), the probe
runs the device's own link (its keys, its shaper) through a loopback TCP proxy that
records each TLS record's time, direction and size: what a passive observer on the path
sees. Two bounded phases (``PHASE_SECONDS`` each, at a 0.1 s report interval so that a
short run holds a few hundred intervals):

- **events**: random sensor events (about half the intervals hold one); the observer
  must tell intervals with an event from quiet ones;
- **hostile app**: a sandboxed application that, in slots whose secret bit is 1, takes
  60 % of its frame period per frame (``bench/_latency_app``); the observer must tell the
  1-slots from the 0-slots.

The observer is ``tinyward bench shaping``'s classifier (a random forest on per-interval
record counts, bytes, the largest record and the first record's offset; ROC AUC under
cross-validation), and the same classifier on shuffled labels gives the chance range on
this many intervals. Per phase: AUC <= 0.55 and not above the chance range passes;
AUC > 0.55 and above the chance range fails; anything else (one of the two only) is
not-tested: a longer run decides. Both phases must pass. The machine's load reaches the
timing (docs/link.md, "a busy device"): run the assessment on a quiet machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "traffic-analysis"
PHASE_SECONDS = 60.0
INTERVAL = 0.1
MAX_AUC = 0.55
NULL_SHUFFLES = 10
#: Fewer intervals than this in a phase decide nothing (60 s at 0.1 s gives 599).
MIN_INTERVALS = 500
#: A fail needs the AUC this many null standard deviations above 0.5 (one-sided
#: p ~ 0.0002: a device that leaks nothing fails by chance about once in 4,000 phases).
Z_FAIL = 3.5


@dataclass(frozen=True)
class Phase:
    """One phase's figures: the observer's AUC, its chance range (shuffled labels), the
    number of intervals it judged."""

    name: str
    auc: float
    chance: tuple[float, float]
    intervals: int
    note: str = ""
    positives: int = 0  # intervals labelled 1 (0: half of them, for older callers)

    @property
    def null_sd(self) -> float:
        """The AUC's standard deviation when the traffic says nothing (the Mann-Whitney
        null: sqrt((n1 + n0 + 1) / (12 n1 n0)))."""
        n1 = self.positives or self.intervals // 2
        n0 = self.intervals - n1
        if n1 <= 0 or n0 <= 0:
            return 1.0
        return math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))

    @property
    def fail_above(self) -> float:
        return max(MAX_AUC, 0.5 + Z_FAIL * self.null_sd)

    def text(self) -> str:
        return (f"{self.name}: AUC {self.auc:.3f} (chance {self.chance[0]:.3f}-"
                f"{self.chance[1]:.3f}, {self.intervals} intervals of {INTERVAL} s; "
                f"fails above {self.fail_above:.3f})")


def phase_verdict(phase: Phase) -> str:
    """fail, pass or not-tested for one phase (pure). The rule (docs/assessment.md),
    fixed before the runs it reports: fewer than MIN_INTERVALS intervals decide nothing;
    AUC <= 0.55 passes; AUC above 0.55, above 0.5 + 3.5 null standard deviations *and*
    above every shuffled-label run fails; in between is not-tested (a longer run, or a
    quieter machine, decides)."""
    if phase.intervals < MIN_INTERVALS:
        return "not-tested"
    if phase.auc <= MAX_AUC:
        return "pass"
    if phase.auc > phase.fail_above and phase.auc > phase.chance[1]:
        return "fail"
    return "not-tested"


def verdict(phases: list[Phase], context: Context, where: str = "") -> list[Evidence]:
    """Every phase must pass; any fail fails (pure)."""
    if not phases:
        return for_all(context, NAME, "not-tested", "live", "no phase ran")
    verdicts = [phase_verdict(p) for p in phases]
    parts = "; ".join(p.text() + (f" [{p.note}]" if p.note else "") for p in phases)
    if "fail" in verdicts:
        return for_all(context, NAME, "fail", "live",
                       f"the eavesdropper tells them apart (AUC above {MAX_AUC}, above "
                       f"{Z_FAIL} null standard deviations and above chance): {parts}",
                       where)
    if len(phases) == 2 and set(verdicts) == {"pass"}:
        return for_all(context, NAME, "pass", "live",
                       f"the eavesdropper learns nothing (AUC <= {MAX_AUC}): "
                       f"{parts}", where)
    return for_all(context, NAME, "not-tested", "live",
                   f"inconclusive (an AUC above {MAX_AUC} but not beyond doubt, fewer than "
                   f"{MIN_INTERVALS} intervals, or a phase missing): "
                   f"{parts}", where)


def with_context(features: Any) -> Any:
    """The observer's view of interval k widened to k-1 .. k+3 (pure). ``bench/shaping.py``
    gives each row interval k and k+1; an eavesdropper holds the whole trace, and a device
    that sends late (an unshaped one under load) shows an event one to three intervals
    after it happened. The rows at the ends get zeros where the trace has nothing."""
    import numpy as np

    own = features[:, :6]
    n = len(own)

    def shifted(by: int) -> Any:
        out = np.zeros_like(own)
        if by > 0:
            out[:n - by] = own[by:]
        else:
            out[-by:] = own[:n + by]
        return out

    return np.hstack([features, shifted(2), shifted(3), shifted(-1)])


def chance(features: Any, labels: Any, seed: int) -> tuple[float, float]:
    from tinyward.bench.shaping import _null_aucs

    nulls = _null_aucs(features, labels, seed, n=NULL_SHUFFLES)
    return (min(nulls), max(nulls))


def events_phase(device: Any, port: int, seconds: float, seed: int,
                 unsafe_unshaped: bool = False, host: str = "127.0.0.1") -> Phase:
    """Random events, the device's own link through a recording proxy."""
    import numpy as np

    from tinyward.bench.shaping import _auc, _features
    from tinyward.lab.proxy import TCPProxy
    from tinyward.link.client import LinkConfig
    from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
    from tinyward.link.shaper import ShaperConfig

    rate = math.log(2) / INTERVAL  # about half of the intervals hold an event
    proxy = TCPProxy((host, port), record=True)
    try:
        runner = DeviceRunner(device, proxy.url, RunnerConfig(
            shaper=ShaperConfig(interval=INTERVAL), unsafe_unshaped=unsafe_unshaped,
            link=LinkConfig(backoff_initial=0.05, backoff_max=0.5)), SimulatedSensor(rate, seed))
        runner.link.connect()
        start = time.monotonic()
        sensor = SimulatedSensor(rate, seed, start=start)
        runner.source = sensor
        runner.run(duration=seconds)
    finally:
        proxy.close()
    n = int(seconds / INTERVAL) - 1
    labels = np.zeros(n, dtype=int)
    for t in sensor.times:
        k = math.floor((t - start) / INTERVAL)
        if 0 <= k < n:
            labels[k] = 1
    if labels.sum() < 10 or labels.sum() > n - 10:
        return Phase("random events", 0.5, (0.5, 0.5), 0, "too few events of one kind")
    features = with_context(_features(proxy.records, start, INTERVAL, n))
    return Phase("random events", _auc(features, labels, seed),
                 chance(features, labels, seed), n, positives=int(labels.sum()))


def app_phase(device: Any, port: int, seconds: float, seed: int,
              unsafe_inline_feed: bool = False, host: str = "127.0.0.1") -> Phase:
    """The latency-modulating sandboxed application as the device's source."""
    from tinyward.bench.shaping import _auc, _hostile_phase
    from tinyward.link.client import LinkConfig
    from tinyward.link.shaper import ShaperConfig

    captured: dict[str, Any] = {}
    result = _hostile_phase(device, port, ShaperConfig(interval=INTERVAL),
                            LinkConfig(backoff_initial=0.05, backoff_max=0.5), seconds,
                            INTERVAL, seed, unsafe_inline_feed, keep=captured, host=host)
    features = with_context(captured["features"])
    return Phase("application steering its latency", _auc(features, captured["labels"], seed),
                 chance(features, captured["labels"], seed),
                 len(captured["labels"]),
                 f"{result.bits_right} of {result.bits} secret bits recovered",
                 positives=int(sum(captured["labels"])))


class TrafficAnalysis:
    name = NAME
    kind = "live"

    def __init__(self, *, seconds: float = PHASE_SECONDS, unsafe_unshaped: bool = False,
                 unsafe_inline_feed: bool = False,
                 phases: tuple[str, ...] = ("events", "app")) -> None:
        # ``unsafe_*``: the controls (shaping off; an application that can steer timing).
        # ``phases``: a control that weakens one phase runs only that one (a missing phase
        # can never pass: the verdict is then fail or not-tested).
        self.phases = phases
        self.seconds = seconds
        self.unsafe_unshaped = unsafe_unshaped
        self.unsafe_inline_feed = unsafe_inline_feed

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        import ipaddress

        from tinyward.errors import TinywardError

        device_dir = target.device_dir
        uplink = target.uplink
        if uplink is not None and not ipaddress.ip_address(uplink[0]).is_loopback \
                and target.netns is None:
            return for_all(context, NAME, "not-tested", "live",
                           "the uplink capture runs the device's link on this machine: its "
                           "fleet server must be on loopback or in the lab namespace")
        if device_dir is None or not (device_dir / "device.json").is_file() or uplink is None:
            return for_all(context, NAME, "not-tested", "live",
                           "needs a tinyward device folder and its fleet server's device port "
                           "(--uplink-port N) to capture the uplink")
        from tinyward.trust.device import Device

        try:
            device = Device.open(device_dir)
        except TinywardError as error:
            return for_all(context, NAME, "not-tested", "live", f"the device folder: {error}")
        # Each phase and its classifier; a budget that cannot hold the phases shortens
        # them (and fewer than MIN_INTERVALS intervals then decide nothing).
        seconds = min(self.seconds, budget.left() / (1.25 * len(self.phases)))
        if int(seconds / INTERVAL) - 1 < MIN_INTERVALS:
            # Fewer intervals decide nothing under the rule: do not run a phase for nothing.
            need = 1.25 * len(self.phases) * (MIN_INTERVALS + 1) * INTERVAL
            return for_all(context, NAME, "not-tested", "live",
                           f"the time budget ({budget.seconds:.0f} s) holds phases of "
                           f"{seconds:.0f} s, fewer than the {MIN_INTERVALS} intervals that "
                           f"decide: give --seconds-per-probe {need:.0f} or more")
        if not budget.spend():
            return for_all(context, NAME, "not-tested", "live", "the attempt budget is spent")
        where = f"tcp://{uplink[0]}:{uplink[1]}"
        try:
            phases = []
            if "events" in self.phases:
                phases.append(events_phase(device, uplink[1], seconds, 7,
                                           self.unsafe_unshaped, uplink[0]))
            if "app" in self.phases:
                phases.append(app_phase(device, uplink[1], seconds, 7,
                                        self.unsafe_inline_feed, uplink[0]))
        except TinywardError as error:  # not enrolled, server refused the device, ...
            return for_all(context, NAME, "not-tested", "live",
                           f"the device's link did not run: {error}", where)
        return verdict(phases, context, where)


__all__ = ["MAX_AUC", "Phase", "TrafficAnalysis", "app_phase", "events_phase", "phase_verdict",
           "verdict"]
