"""replay (live): the same captured request, sent twice, is not accepted twice (I-REPLAY-1).

The user supplies a capture the server has not seen yet (``--replay FILE``: a request body
the device made, e.g. a signed report), the port and path to post it to, and the test
client certificate if the listener demands one. The probe posts the bytes twice (two
attempts, each with a timeout). Pass: the first accepted (2xx), the second refused.
Fail: the second accepted too. Both refused: not-tested (the capture was stale or is
refused for another reason, so nothing about replays was shown).
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path

from tinyward.assess.attacks.clients import post_bytes
from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, cut_off, for_all
from tinyward.assess.target import Target
from tinyward.link.client import REPORT_CONTENT_TYPE, REPORTS_PATH

NAME = "replay"


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: the captured body, where to post it and as what."""

    body: bytes
    port: int
    path: str = REPORTS_PATH
    content_type: str = REPORT_CONTENT_TYPE
    tls: bool = True


def verdict(address: str, spec: ReplaySpec, first: int | None, second: int | None,
            context: Context) -> list[Evidence]:
    """From the two HTTP statuses (None: no answer) (pure)."""
    where = f"tcp://{address}:{spec.port}{spec.path}"

    def ok(status: int | None) -> bool:
        return status is not None and 200 <= status < 300

    if first is None or second is None:
        return for_all(context, NAME, "not-tested", "live",
                       f"no HTTP answer from {where} (first {first}, second {second})")
    if ok(first) and ok(second):
        return for_all(context, NAME, "fail", "live",
                       f"the same {len(spec.body)} bytes were accepted twice "
                       f"(HTTP {first}, then HTTP {second})", where)
    if ok(first):
        return for_all(context, NAME, "pass", "live",
                       f"first accepted (HTTP {first}); the same bytes again refused "
                       f"(HTTP {second})", where)
    return for_all(context, NAME, "not-tested", "live",
                   f"the capture was refused both times (HTTP {first}, {second}): a stale "
                   "capture or refused for another reason, so replays were not shown")


def post(address: str, spec: ReplaySpec, client_cert: tuple[Path, Path] | None,
         timeout: float) -> int | None:
    if spec.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the replay, not the server, is under test
        if client_cert is not None:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            address, spec.port, context=context, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(address, spec.port, timeout=timeout)
    try:
        # The whole exchange within ``timeout``: a socket timeout alone bounds each read,
        # and a device answering a byte at a time would hold the probe for ever.
        with cut_off(connection, timeout) as cut:
            status = post_bytes(connection, spec.path, spec.body, spec.content_type)[0]
            return None if cut.fired else status
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None


class Replay:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        spec = target.replay
        if spec is None or target.address is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no captured request to replay (--replay FILE --replay-port N)")
        timeout = min(10.0, max(1.0, budget.left()))
        # A capture of the device's uplink goes to its fleet server (the device itself
        # listens nowhere): the server named as its uplink, when the ports agree.
        address = target.uplink[0] if target.uplink is not None and \
            spec.port == target.uplink[1] else target.address
        first = post(address, spec, target.client_cert, timeout) \
            if budget.spend() else None
        second = post(address, spec, target.client_cert, timeout) \
            if budget.spend() else None
        return verdict(address, spec, first, second, context)


__all__ = ["Replay", "ReplaySpec", "post", "verdict"]
