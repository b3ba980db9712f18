"""Several fleet server nodes over one database (issue 17): what must hold when devices
move between nodes, and the real HAProxy in front (deploy/haproxy/haproxy.cfg)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs
from tests.fleet.serverkit import Running, start_running
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.runner import ServerThread, server_ssl_context
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import SQLiteStore
from tinyward.trust.report import Report

A = "aa" * 32


def _r(device: str, seq: int) -> tuple[Report, bytes]:
    return Report(device, seq, 1000 + seq), b"signed-%d" % seq


def test_a_node_that_opens_and_closes_the_database_loses_no_acked_report_of_another(
        tmp_path: Path) -> None:
    """Node 1 holds the database (its ingest connection and its admin reader); node 2 starts
    (its check opens and closes a connection). SQLite deletes the WAL when the *last*
    connection closes, and judges "last" by POSIX locks, which a process loses on every
    descriptor of the file it closes: node 1's reader used to open and close the database
    file itself (to make it 0600), so node 2's close deleted the WAL under node 1, whose
    later commits (acknowledged) went to a deleted file and were lost to everyone else."""
    path = tmp_path / "reports.db"
    node1 = SQLiteStore(path)
    reader = node1.reader()
    subprocess.run([sys.executable, "-c", "import sys\nfrom tinyward.fleet.store import "
                    "SQLiteStore\nSQLiteStore(sys.argv[1]).close()", str(path)], check=True)
    assert node1.append(A, [_r(A, 1)], received_at=5) == 1  # acknowledged
    fresh = sqlite3.connect(path)  # another node, or the operator
    assert fresh.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 1
    fresh.close()
    reader.close()
    node1.close()


# -- a device that moves between nodes (two servers over one database, in process) ----------

MOVING = ServerConfig(rate_per_second=0.001, burst=3)


@pytest.fixture(params=[ServerConfig()], ids=["default"])
def two_nodes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Running, int]]:
    """Node A (serverkit's server) and node B: its own FleetServer, caches, token buckets
    and SQLite connection, over the same database file, as a second process would be."""
    a = start_running(tmp_path, ("mover",), request.param)
    b_server = FleetServer(FleetDirectory(a.fleet), SQLiteStore(a.store.path), request.param)
    b = ServerThread(b_server, server_ssl_context(a.fleet))
    try:
        yield a, b.port
    finally:
        b.stop()
        a.server.stop()


def test_attack_replay_through_a_node_that_has_not_seen_the_device_lately(
        two_nodes: tuple[Running, int]) -> None:
    """The device reports 1-2 on node A, 3 on node B, then an old report (2) and the
    current one (3) are sent again through node A, whose cached last sequence number is
    still 2. The store checks the sequence inside the commit's transaction: nothing is
    stored twice, and the device is told what is stored (3)."""
    a, b_port = two_nodes
    sent = [a.report("mover", seq=seq) for seq in (1, 2, 3)]
    assert a.post("mover", sent[0]) == (200, {"stored_seq": 1})
    assert a.post("mover", sent[1]) == (200, {"stored_seq": 2})
    status, answer = a.request("POST", "/v1/reports", device="mover", body=sent[2],
                               headers={"Content-Type": "application/cose"}, port=b_port)
    assert (status, answer) == (200, {"stored_seq": 3})
    for again in (sent[1], sent[2]):
        status, answer = a.post("mover", again)
        assert status in (200, 409) and answer["stored_seq"] == 3
    assert a.store.count_reports(a.devices["mover"].device_id) == 3
    assert a.store.last_seq(a.devices["mover"].device_id) == 3


@pytest.mark.parametrize("two_nodes", [MOVING], ids=["burst3"], indirect=True)
def test_a_device_that_moves_gets_one_token_bucket_per_node(
        two_nodes: tuple[Running, int]) -> None:
    """Token buckets are per node (per worker): a device that has spent its burst on node
    A and moves gets node B's full burst, and no more (docs/scaling.md: N nodes give a
    device up to N bursts; its steady rate stays its own on each)."""
    a, b_port = two_nodes

    def post(port: int | None) -> int:
        body = a.report("mover")
        return a.request("POST", "/v1/reports", device="mover", body=body,
                         headers={"Content-Type": "application/cose"},
                         port=port)[0]

    a_port = a.server.port
    assert [post(a_port) for _ in range(4)] == [200, 200, 200, 429]
    assert [post(b_port) for _ in range(4)] == [200, 200, 200, 429]
    assert post(a_port) == 429  # node A's bucket is still empty


# -- the real HAProxy in front of real `fleet serve` processes --------------------------------

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = needs(Path(HAPROXY).exists(),
                      "needs haproxy (scripts/install-system-deps.sh)")


@needs_haproxy
def test_the_shipped_haproxy_config_is_valid(tmp_path: Path) -> None:
    from tinyward.bench.fleetload_cluster import SHIPPED_CONFIG

    root = tmp_path / "root.pem"
    root.write_text("")  # `haproxy -c` loads the CA file: an empty one is refused
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.init(tmp_path / "fleet", b"tinyward-test-passphrase")
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "TINYWARD_FLEET_ROOT": str(fleet.root_ca_path),
           "TINYWARD_LB_STATS": str(tmp_path / "stats.sock")}
    checked = subprocess.run([HAPROXY, "-c", "-f", str(SHIPPED_CONFIG)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The same file with a broken line is refused: the check above checks something.
    broken = tmp_path / "broken.cfg"
    broken.write_text(SHIPPED_CONFIG.read_text().replace("balance leastconn",
                                                         "balance nosuchalgorithm"))
    refused = subprocess.run([HAPROXY, "-c", "-f", str(broken)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0


@pytest.fixture(scope="module")
def enrolled() -> Iterator[tuple[Path, list, list]]:
    from tinyward.bench.fleetload import PASSPHRASE, enrol
    from tinyward.fleet.pki import Fleet

    with tempfile.TemporaryDirectory(prefix="tinyward-nodes-") as tmp:
        fleet = Fleet.init(Path(tmp) / "fleet", PASSPHRASE)
        sims, contexts = enrol(fleet, 50, 1.0, Path(tmp) / "tls")
        yield fleet.directory, sims, contexts


@needs_haproxy
def test_kill_9_of_one_node_under_load_loses_nothing_acknowledged_and_its_devices_move(
        enrolled: tuple[Path, list, list], tmp_path: Path) -> None:
    """50 devices report every second through HAProxy to two nodes over one database;
    node1 is killed with SIGKILL under load. Its devices reconnect through the balancer to
    node2 (while node1 is down, node2 holds all 50), every acknowledged report is in the
    store, none twice, none missing below the highest stored one."""
    from tinyward.bench.fleetload import LoadConfig, run_fleetload

    fleet_dir, sims, contexts = enrolled
    config = LoadConfig(devices=50, interval=1.0, duration=4.0, nodes=2, storm="one",
                        after_storm=60.0, drain=30.0)
    result = run_fleetload(config, sims, contexts, fleet_dir, tmp_path / "run")
    assert result.sessions_before["node1"] > 0 and result.sessions_before["node2"] > 0
    assert sum(result.sessions_before.values()) == 50
    assert result.storm_devices == result.sessions_before["node1"]  # node1's, cut
    assert result.recovered
    assert result.sessions_while_down == {"node1": 0, "node2": 50}
    assert result.acknowledged > 50 and result.unacknowledged_at_end == 0
    assert result.lost_acknowledged == 0
    assert result.duplicates == 0 and result.gaps == 0
    assert result.stored == result.acknowledged + result.stored_not_acknowledged
    assert result.exactly_once


@needs_haproxy
def test_kill_9_of_every_node_then_restart_everyone_comes_back_exactly_once(
        enrolled: tuple[Path, list, list], tmp_path: Path) -> None:
    """The reconnect storm: both nodes killed under load and restarted; every device is
    cut, comes back through the balancer, and every report is stored exactly once."""
    from tinyward.bench.fleetload import LoadConfig, run_fleetload

    fleet_dir, sims, contexts = enrolled
    config = LoadConfig(devices=50, interval=1.0, duration=3.0, nodes=2, storm="all",
                        restart_after=1.0, after_storm=60.0, drain=30.0)
    result = run_fleetload(config, sims, contexts, fleet_dir, tmp_path / "run")
    assert result.storm_devices == 50 and result.recovered
    assert result.lost_acknowledged == 0 and result.duplicates == 0 and result.gaps == 0
    assert result.unacknowledged_at_end == 0 and result.exactly_once


@needs_haproxy
def test_attack_many_connections_from_one_address_are_capped_by_the_balancer(
        enrolled: tuple[Path, list, list], tmp_path: Path) -> None:
    """Behind an L4 balancer the nodes see only its address, so the per-address cap is the
    balancer's (TINYWARD_LB_PER_SOURCE in the shipped config): with a cap of 2, a third
    connection from the same address is closed before any TLS, while the first two are
    served."""
    import http.client

    from tinyward.bench.fleetload_cluster import Cluster

    fleet_dir, sims, contexts = enrolled
    with Cluster(fleet_dir, f"sqlite:///{tmp_path / 'r.db'}", tmp_path, nodes=1,
                 per_source=2) as cluster:
        held = []
        for sim, context in zip(sims[:2], contexts[:2], strict=True):
            connection = http.client.HTTPSConnection("127.0.0.1", cluster.port,
                                                     context=context, timeout=30)
            connection.connect()
            held.append((sim, connection))
        third = http.client.HTTPSConnection("127.0.0.1", cluster.port, context=contexts[2],
                                            timeout=30)
        with pytest.raises((ConnectionError, OSError)):
            third.connect()
        for sim, connection in held:
            body = sim.report(seq=1, timestamp=int(time.time()))
            connection.request("POST", "/v1/reports", body=body,
                               headers={"Content-Type": "application/cose"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()
            connection.close()
