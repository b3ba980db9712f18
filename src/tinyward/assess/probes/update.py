"""update-tamper (live): forged, rolled-back, frozen, replayed, oversized and truncated
updates are refused, the running version stays, and a genuine newer update is accepted
(I-UPD-2).

A tinyward device folder (``device.json``): the probe runs the update client a tinyward
device runs (:class:`tinyward.update.client.UpdateClient`: python-tuf's stock ngclient
``Updater``, then the signed custom metadata's checks) with the folder's device ID and
product class, and serves it, as the fleet does, from a TUF repository the probe owns
(:class:`tinyward.lab.tufrepo.TufRepo`) through the fleet's own chunk server
(:class:`tinyward.fleet.delivery.ChunkServer`), one fixed-size frame per exchange. The
link itself is not in the path (its own probes test it): the probe hands each frame to the
client's channel as the report loop would.

The client is anchored on the probe's root, not the folder's: a device trusts its
fleet's root, for which only the fleet can sign, and the genuine update (the control)
must be signed by a key the client trusts. So this tests the device's update *client*
(the manufacturer's test keys, as ETSI TS 103 701 lets an IXIT supply them), not which
root the device holds (``update-trust`` reads that).

Each case is a fresh repository and client, the device "running" :data:`RUNNING` of the
``model`` component. What reaches the A/B agent (``on_verified``) is recorded: only a
genuine update may. Cases:

- ``genuine``: a newer version, correctly signed: must be accepted (the control: if it is
  not, the refusals show nothing and the verdict is not-tested);
- ``forged-key``: targets signed by a key the root does not delegate;
  ``below-threshold``: by one of the two targets keys a root requires (one key stolen);
- ``wrong-product``: a newer version, correctly signed, for another product class;
- ``mix-and-match``: an older signed targets file served under the newer one's version;
- ``rollback``: an older version, correctly signed; ``rollback-hidden``: the same, offered
  as a newer version (the offer is unsigned);
- ``frozen``: a correctly signed timestamp that has expired (indefinite freeze);
- ``replayed-metadata``: after a genuine update, the previous timestamp served again;
- ``oversized``: a target longer than its signed length (endless data);
- ``truncated``: a target shorter than its signed length;
- ``substituted``: a target of the signed length with other bytes.

Pass: the genuine update accepted and every attack refused, nothing of it handed over,
the running version unchanged. Fail: any attack handed over (its case named). A case that
neither settled nor was handed over within its time is not-tested.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "update-tamper"
COMPONENT = "model"
RUNNING = "1.1.0"
NEWER = "1.2.0"
OLDER = "1.0.0"
PAYLOAD = 3000  # bytes: three chunks, so a truncation or an excess shows mid-file
SECONDS_PER_CASE = 30.0
EXCHANGE_PAUSE = 0.002  # seconds between exchanges (the report loop's interval, shortened)
SETTLED = ("staged", "rejected", "failed")

#: case -> what it does (the evidence's words)
CASES: dict[str, str] = {
    "genuine": "a newer version, correctly signed (the control)",
    "forged-key": "targets signed by a key the root does not delegate",
    "rollback": "an older version, correctly signed",
    "rollback-hidden": "an older signed version offered as a newer one",
    "below-threshold": "targets signed by one of the two keys the root requires",
    "wrong-product": "a newer version, correctly signed, for another product class",
    "mix-and-match": "the signed targets of an older snapshot under the newer one's name",
    "frozen": "a correctly signed timestamp that expired an hour ago",
    "replayed-metadata": "after a genuine update, an older timestamp served again",
    "oversized": "a target 50,000 bytes longer than its signed length",
    "truncated": "a target cut to half its signed length",
    "substituted": "a target of its signed length with other bytes",
}


@dataclass(frozen=True)
class Case:
    """One case's outcome: ``outcome`` is "accepted" (handed to the agent), "refused"
    (with the client's ``code``) or "no answer"; the installed version before and after."""

    name: str
    outcome: str
    code: str = ""
    before: str = RUNNING
    after: str = RUNNING

    def text(self) -> str:
        moved = f", running {self.before} -> {self.after}" if self.before != self.after else \
            f", still running {self.after}"
        code = f" ({self.code})" if self.code else ""
        return f"{self.name}: {self.outcome}{code}{moved}"


def verdict(cases: list[Case], context: Context, where: str = "") -> list[Evidence]:
    """From the cases (pure)."""
    if not cases:
        return for_all(context, NAME, "not-tested", "live", "no case ran")
    listed = "; ".join(c.text() for c in cases)
    control = [c for c in cases if c.name == "genuine"]
    attacks = [c for c in cases if c.name != "genuine"]
    taken = [c for c in attacks if c.outcome == "accepted" or c.after != c.before]
    if taken:
        return for_all(context, NAME, "fail", "live",
                       f"the device's update client took {len(taken)} tampered update(s): "
                       f"{', '.join(c.name for c in taken)} ({listed})", where)
    if not control or control[0].outcome != "accepted" or control[0].after != NEWER:
        return for_all(context, NAME, "not-tested", "live",
                       "the genuine newer update was not accepted, so the refusals show "
                       f"nothing (the probe's repository did not reach the client): {listed}",
                       where)
    missing = [c for c in CASES if c != "genuine" and
               not any(a.name == c and a.outcome == "refused" for a in attacks)]
    if missing:
        return for_all(context, NAME, "not-tested", "live",
                       f"not every attack was refused in time ({', '.join(missing)}): {listed}",
                       where)
    return for_all(context, NAME, "pass", "live",
                   f"a genuine newer update accepted and {len(attacks)} tampered ones refused, "
                   f"the running version kept: {listed}", where)


# -- the I/O: one repository and one client per case -----------------------------------------

#: (device_id, trusted root, product class, workdir, on_verified, installed) -> a client with
#: ``channel``, ``status()``, ``busy``, ``last_error``, ``close()`` (UpdateClient's shape).
ClientFactory = Callable[..., Any]


def tinyward_client(**kw: Any) -> Any:
    from tinyward.update.client import UpdateClient, UpdateClientConfig

    return UpdateClient(**kw, config=UpdateClientConfig(chunk_timeout=5.0, max_misses=3,
                                                        retry_after=3600.0))


@dataclass
class _Run:
    """One case: the repository, the client, the offer, and what reached the agent."""

    device_id: str
    product_class: str
    scratch: Path
    make_client: ClientFactory
    installed: dict[str, Any] = field(default_factory=dict)
    got: list[str] = field(default_factory=list)
    targets_threshold: int = 1

    def __post_init__(self) -> None:
        from tinyward.lab.tufrepo import TufRepo
        from tinyward.update.meta import Version

        self.repo = TufRepo(self.scratch / "repo", targets_threshold=self.targets_threshold)
        self.installed[COMPONENT] = Version.parse(RUNNING)
        self.client = self.make_client(
            device_id=self.device_id, trusted_root=self.repo.root_bytes,
            product_class=self.product_class, workdir=self.scratch / "client",
            on_verified=self._verified, installed=self.installed.get)
        self.offer: Any = None

    def _verified(self, component: str, path: Path, meta: Any, length: int,
                  hashes: Any) -> None:
        # The A/B agent's place: the version the device runs moves only here.
        self.got.append(f"{component} {meta.version}")
        self.installed[component] = meta.version

    def publish(self, version: str, data: bytes | None = None, *,
                product_class: str | None = None, **kw: Any) -> Any:
        from tinyward.update.meta import Offer, Version

        path = self.repo.add_target(COMPONENT, version, data or bytes(
            i % 251 for i in range(PAYLOAD)), product_class=product_class or self.product_class)
        self.repo.publish(**kw)
        return Offer(COMPONENT, path, Version.parse(version))

    def deliver(self, offer: Any, seconds: float) -> str:
        """Offer ``offer`` through the chunk server until the client settles; its outcome."""
        from tinyward.fleet.delivery import ChunkServer
        from tinyward.link import chunks

        self.offer = offer
        before = len(self.got), self.client.last_error
        server = ChunkServer(self.repo.dir, offers=lambda device_id, installed: self.offer)
        deadline = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            request = self.client.channel.request()
            versions = {k: str(v) for k, v in self.installed.items() if v is not None}
            body = server.answer(self.device_id, request.header(), seq, installed=versions)
            self.client.channel.answer(request, chunks.decode_frame(body))
            if (len(self.got), self.client.last_error) != before and \
                    self.client.status()["state"] in SETTLED and not self.client.busy:
                break
            time.sleep(EXCHANGE_PAUSE)
        self.offer = None
        if len(self.got) > before[0]:
            return "accepted"
        if self.client.last_error is not before[1] and self.client.last_error is not None:
            return "refused"
        return "no answer"


def _case(name: str, run: _Run, seconds: float) -> Case:
    """Set the repository up for ``name`` and deliver it (the attacks of
    ``tests/update/test_delivery_attacks.py``, as a probe)."""
    from securesystemslib.signer import CryptoSigner

    from tinyward.update.meta import Offer, Version

    if name == "replayed-metadata":
        saved = run.repo.metadata("timestamp.json").read_bytes()  # before the genuine one
        first = run.publish(NEWER)
        run.deliver(first, seconds / 2)
        offer = run.publish("1.3.0")
        run.repo.metadata("timestamp.json").write_bytes(saved)  # the older timestamp again
        before = str(run.installed[COMPONENT])
    else:
        before = RUNNING
        if name == "genuine":
            offer = run.publish(NEWER)
        elif name == "forged-key":
            offer = run.publish(NEWER, targets_signer=CryptoSigner.generate_ed25519())
        elif name == "below-threshold":  # the run's repository wants two targets keys
            offer = run.publish(NEWER, targets_signer=run.repo.targets_signers[1])
        elif name == "wrong-product":
            other = "door-sensor" if run.product_class != "door-sensor" else "pump-sensor"
            offer = run.publish(NEWER, product_class=other)
        elif name == "mix-and-match":
            older = run.repo.metadata("1.targets.json").read_bytes()  # signed, no target
            offer = run.publish(NEWER)  # 2.targets.json, named by snapshot 2
            run.repo.metadata("2.targets.json").write_bytes(older)
        elif name == "rollback":
            offer = run.publish(OLDER)
        elif name == "rollback-hidden":
            signed = run.publish(OLDER)
            offer = Offer(signed.component, signed.target_path, Version.parse(NEWER))
        elif name == "frozen":
            offer = run.publish(NEWER, timestamp_expires=datetime.now(UTC).replace(
                microsecond=0) - timedelta(hours=1))
        else:
            offer = run.publish(NEWER)
            file = run.repo.target_file(offer.target_path)
            data = file.read_bytes()
            if name == "oversized":
                file.write_bytes(data + bytes(50_000))
            elif name == "truncated":
                file.write_bytes(data[:len(data) // 2])
            elif name == "substituted":
                file.write_bytes(b"EVIL" + data[4:])
            else:
                raise ValueError(f"unknown case {name!r}")
    outcome = run.deliver(offer, seconds)
    status = run.client.status()
    return Case(name, outcome, str(status.get("why", "")) if outcome == "refused" else "",
                before, str(run.installed[COMPONENT]))


def run_cases(device_id: str, product_class: str, budget: Budget,
              make_client: ClientFactory = tinyward_client,
              names: tuple[str, ...] = tuple(CASES),
              seconds_per_case: float = SECONDS_PER_CASE) -> list[Case]:
    """Every case within the budget (each its own repository, client and scratch folder).
    Stops after a genuine update that was not accepted: nothing after it could pass."""
    cases: list[Case] = []
    for name in names:
        if cases and cases[0].name == "genuine" and cases[0].outcome != "accepted":
            break
        seconds = min(seconds_per_case, budget.left())
        if seconds < 1 or not budget.spend():
            break
        with tempfile.TemporaryDirectory(prefix="tinyward-update-probe-") as scratch:
            run = _Run(device_id, product_class, Path(scratch), make_client,
                       targets_threshold=2 if name == "below-threshold" else 1)
            try:
                cases.append(_case(name, run, seconds))
            finally:
                run.client.close()
    return cases


class UpdateTamper:
    name = NAME
    kind = "live"

    def __init__(self, *, make_client: ClientFactory = tinyward_client,
                 seconds_per_case: float = SECONDS_PER_CASE) -> None:
        # ``make_client``: the update client under test (the tests' controls pass weaker
        # ones).
        self.make_client = make_client
        self.seconds_per_case = seconds_per_case

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        from tinyward.errors import TinywardError
        from tinyward.lab.tufrepo import PRODUCT

        folder = target.device_dir
        if folder is None or not (folder / "device.json").is_file():
            return for_all(context, NAME, "not-tested", "live",
                           "needs a tinyward device folder: the probe runs its update client "
                           "against a repository the probe controls (other devices' update "
                           "clients cannot be driven yet)")
        from tinyward.trust.device import Device

        try:
            device = Device.open(folder)
        except TinywardError as error:
            return for_all(context, NAME, "not-tested", "live", f"the device folder: {error}")
        product = PRODUCT  # not provisioned by a fleet with updates: the lab's class
        with contextlib.suppress(TinywardError):
            product = device.product_class() or PRODUCT
        from tinyward.assess.probes.outage import quiet_device_logs

        with quiet_device_logs():
            cases = run_cases(device.device_id, product, budget, self.make_client,
                              seconds_per_case=self.seconds_per_case)
        where = f"{folder} (update client, probe's TUF repository, product {product})"
        control_failed = cases and cases[0].name == "genuine" and \
            cases[0].outcome != "accepted"
        if len(cases) < len(CASES) and not control_failed and \
                not any(c.outcome == "accepted" and c.name != "genuine" for c in cases):
            return for_all(context, NAME, "not-tested", "live",
                           f"the budget ran out after {len(cases)} of {len(CASES)} cases: "
                           + "; ".join(c.text() for c in cases), where)
        return verdict(cases, context, where)


__all__ = ["CASES", "Case", "UpdateTamper", "run_cases", "tinyward_client", "verdict"]
