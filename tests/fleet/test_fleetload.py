"""The load generator of `bench fleetload` and the balancer settings it relies on (issue 17).

No timing is asserted: these check that reports signed ahead are the ones sent, in order,
and that the shipped HAProxy configuration limits new sessions and keeps a marked-down
node's sessions (the two changes that stopped the reconnect churn, docs/scaling.md).
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs
from tinyward.trust.report import decode_report, verify_report

HAPROXY = "/usr/sbin/haproxy"
needs_haproxy = needs(Path(HAPROXY).exists(), "needs haproxy (scripts/install-system-deps.sh)")


@pytest.fixture(scope="module")
def enrolled() -> Iterator[tuple[Path, list, list]]:
    from tinyward.bench.fleetload import PASSPHRASE, enrol
    from tinyward.fleet.pki import Fleet

    with tempfile.TemporaryDirectory(prefix="tinyward-fleetload-") as tmp:
        fleet = Fleet.init(Path(tmp) / "fleet", PASSPHRASE)
        sims, contexts = enrol(fleet, 3, 1.0, Path(tmp) / "tls")
        yield fleet.directory, sims, contexts


def test_reports_signed_ahead_are_sent_in_order_then_signed_when_due(
        enrolled: tuple[Path, list, list]) -> None:
    from tinyward.bench.fleetload import _Device, presign

    _, sims, contexts = enrolled
    device = _Device(sims[0], contexts[0])
    presign([device], 2)
    key = sims[0].keys["report"].public_key()
    ahead = list(device.presigned)
    assert [verify_report(r, key).seq for r in ahead] == [1, 2]
    assert device.report(1) == ahead[0] and device.report(2) == ahead[1]
    before = int(time.time())
    third = device.report(3)  # none left: signed now, dated now
    report = verify_report(third, key)
    assert report.seq == 3 and report.timestamp >= before
    assert decode_report(third).device_id == sims[0].device_id


def _frontend_rate_limit(stats: Path) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(stats))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "devices" and row.get("svname") == "FRONTEND":
            return row["rate_lim"]
    raise AssertionError(f"no devices frontend in {lines[:3]}")


@needs_haproxy
def test_the_balancer_limits_new_sessions_to_what_the_nodes_can_handshake(
        enrolled: tuple[Path, list, list], tmp_path: Path) -> None:
    """TINYWARD_LB_NEW_PER_SECOND reaches HAProxy's `rate-limit sessions` (the frontend's
    rate_lim), and the shipped file no longer cuts a marked-down node's sessions."""
    from tinyward.bench.fleetload_cluster import SHIPPED_CONFIG, Cluster

    text = "\n".join(line.split("#")[0] for line in SHIPPED_CONFIG.read_text().splitlines())
    assert "shutdown-sessions" not in text
    fleet_dir, _, _ = enrolled
    with Cluster(fleet_dir, f"sqlite:///{tmp_path / 'r.db'}", tmp_path, nodes=1,
                 new_per_second=7) as cluster:
        assert _frontend_rate_limit(cluster.stats_socket(0)) == "7"
