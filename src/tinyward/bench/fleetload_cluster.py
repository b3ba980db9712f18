"""Several `tinyward fleet serve` nodes behind the real HAProxy, on loopback (bench, tests).

Each node is its own process group (``start_new_session``), so ``kill -9`` of a node takes
its workers with it, as a machine that dies would. HAProxy runs the configuration shipped
in ``deploy/haproxy/haproxy.cfg`` unchanged; only its environment differs (ports, the
fleet's root certificate, the stats socket), which is how the file is meant to be used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinyward.errors import TinywardError
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import server_environment

#: The configuration shipped in the repository (a source checkout).
SHIPPED_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "haproxy" / "haproxy.cfg"
#: Nodes the shipped configuration names (node1, node2).
CONFIG_NODES = 2


class ClusterError(TinywardError):
    """A node or the load balancer did not start, or answered nonsense."""


def free_port() -> int:
    """A TCP port free on loopback now (the node binds it with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One fleet server node: its ports stay the same across restarts."""

    name: str
    port: int
    admin_port: int
    log: Path
    process: subprocess.Popen[str] | None = None
    pids: list[int] = field(default_factory=list)  # the node and its workers, when started

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NodeOptions:
    """What every node is started with (`tinyward fleet serve` options)."""

    workers: int = 1
    max_connections: int = 12_000
    max_handshakes: int = 1_024
    extra: tuple[str, ...] = ()


class Cluster:
    """``nodes`` fleet servers sharing ``db_url``, and HAProxy in front (``start()``)."""

    def __init__(self, fleet_dir: Path, db_url: str, folder: Path, nodes: int = 2,
                 options: NodeOptions | None = None, config: Path = SHIPPED_CONFIG, *,
                 balancers: int = 1, balancer_maxconn: int = 5_000,
                 per_source: int | None = None, new_per_second: int = 600) -> None:
        if not 1 <= nodes <= CONFIG_NODES:
            raise ClusterError(f"the shipped HAProxy configuration names {CONFIG_NODES} nodes; "
                               f"asked for {nodes}")
        self.fleet_dir, self.db_url, self.folder = fleet_dir, db_url, folder
        self.options = options or NodeOptions()
        self.config = config
        self.nodes = [Node(f"node{i + 1}", free_port(), free_port(), folder / f"node{i + 1}.log")
                      for i in range(nodes)]
        # Several balancers (each in front of every node, as a pair would be for
        # availability) when one cannot hold the connections: HAProxy needs two file
        # descriptors per device, and the hard limit here is what it is.
        self.ports = [free_port() for _ in range(balancers)]
        self.port = self.ports[0]
        self.balancer_maxconn = balancer_maxconn
        #: HAProxy's cap of concurrent connections per device address (default: maxconn,
        #: since every simulated device comes from 127.0.0.1).
        self.per_source = per_source or balancer_maxconn
        #: New connections each HAProxy lets through per second (``rate-limit sessions``).
        self.new_per_second = new_per_second
        self.balancers: list[subprocess.Popen[bytes]] = []

    @property
    def balancer(self) -> subprocess.Popen[bytes] | None:
        return self.balancers[0] if self.balancers else None

    def stats_socket(self, index: int = 0) -> Path:
        return self.folder / f"haproxy{index + 1}.sock"

    # -- nodes ----------------------------------------------------------------------------

    def start_node(self, node: Node, timeout: float = 60.0) -> None:
        """Start ``node`` and wait until it announces that it listens."""
        opts = self.options
        caps = (str(opts.max_connections), str(opts.max_handshakes))
        command = [sys.executable, "-m", "tinyward", "fleet", "serve", str(self.fleet_dir),
                   "--host", "127.0.0.1", "--port", str(node.port),
                   "--admin-port", str(node.admin_port), "--db", self.db_url,
                   "--workers", str(opts.workers), "--max-connections", caps[0],
                   "--max-handshakes", caps[1],
                   # Behind the balancer every device comes from its address: the
                   # per-address caps are HAProxy's (deploy/haproxy/haproxy.cfg).
                   "--max-connections-per-ip", caps[0], "--max-handshakes-per-ip", caps[1],
                   "--update-refresh", "43200", *opts.extra]
        with node.log.open("a") as log:
            node.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True,
                env=server_environment(None), start_new_session=True)
        if node.process.stdout is None:  # stdout=PIPE above: never
            raise ClusterError(f"{node.name}: no pipe to read its announcement from")
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and node.process.poll() is None:
            line = node.process.stdout.readline()
            if "listening on" in line:
                break
        if "listening on" not in line:
            self.kill_node(node)
            raise ClusterError(f"{node.name} did not start: "
                               f"{node.log.read_text()[-1500:] if node.log.exists() else ''}")
        node.pids = self.pids_of(node)

    def kill_node(self, node: Node) -> None:
        """``kill -9`` the node's whole process group (its workers too), and reap it."""
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(30)
        if node.process.stdout is not None:
            node.process.stdout.close()

    def stop_node(self, node: Node) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it has not gone in 30 s."""
        if node.process is None or node.process.poll() is not None:
            return
        node.process.terminate()
        try:
            node.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill_node(node)

    @staticmethod
    def pids_of(node: Node) -> list[int]:
        """The node's process and its workers (children), by /proc."""
        if node.process is None:
            return []
        root = node.process.pid
        found = [root]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int(_stat_fields(int(entry.name))[1]) == root:  # field 4: ppid
                        found.append(int(entry.name))
        return found

    # -- the balancer ---------------------------------------------------------------------

    def balancer_env(self, index: int = 0) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TINYWARD_")}
        env.update({
            "TINYWARD_LB_BIND": f"127.0.0.1:{self.ports[index]}",
            "TINYWARD_FLEET_ROOT": str(Fleet.open(self.fleet_dir).root_ca_path),
            "TINYWARD_LB_STATS": str(self.stats_socket(index)),
            "TINYWARD_LB_MAXCONN": str(self.balancer_maxconn),
            # Every simulated device connects from 127.0.0.1.
            "TINYWARD_LB_PER_SOURCE": str(self.per_source),
            "TINYWARD_LB_RATE_SOURCE": str(10 * self.balancer_maxconn),
            "TINYWARD_LB_NEW_PER_SECOND": str(self.new_per_second),
        })
        for i in range(CONFIG_NODES):
            # A node not started here points at a port nobody listens on: marked down.
            node = self.nodes[i] if i < len(self.nodes) else Node("", free_port(), free_port(),
                                                                  self.folder / "unused")
            env[f"TINYWARD_NODE{i + 1}"] = f"127.0.0.1:{node.port}"
            env[f"TINYWARD_NODE{i + 1}_ADMIN"] = str(node.admin_port)
        return env

    def start_balancer(self, timeout: float = 30.0) -> None:
        """Start HAProxy (``-db``: foreground; one per port) and wait until every one sees
        every node up."""
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise ClusterError("haproxy is not installed (scripts/install-system-deps.sh)")
        if not self.config.exists():
            raise ClusterError(f"no HAProxy configuration at {self.config} (a source checkout "
                               "has deploy/haproxy/haproxy.cfg)")
        for index in range(len(self.ports)):
            log = (self.folder / f"haproxy{index + 1}.log").open("a")
            self.balancers.append(subprocess.Popen(
                [haproxy, "-db", "-f", str(self.config)], env=self.balancer_env(index),
                stdout=log, stderr=log, start_new_session=True))
            log.close()
        self.wait_for(lambda stats: all(stats.get(n.name, ("",))[0] == "UP"
                                        for n in self.nodes if n.alive), timeout,
                      "HAProxy did not see every node up")

    def stats(self) -> dict[str, tuple[str, int, int]]:
        """Per node: (status, current sessions, total sessions) from every HAProxy's
        stats socket (``show stat``): sessions summed, the worst status."""
        merged: dict[str, tuple[str, int, int]] = {}
        for index in range(len(self.balancers)):
            for name, (status, current, total) in self._stats(index).items():
                old = merged.get(name, ("UP", 0, 0))
                merged[name] = (old[0] if status == "UP" else status, old[1] + current,
                                old[2] + total)
        return merged

    def marked_down(self) -> dict[str, int]:
        """Per node: how often any HAProxy marked it down (``chkdown``: failed health
        checks; with ``on-marked-down shutdown-sessions`` each one cuts every session)."""
        found: dict[str, int] = {}
        for index in range(len(self.balancers)):
            for name, row in self._rows(index).items():
                found[name] = found.get(name, 0) + int(row.get("chkdown") or 0)
        return found

    def _stats(self, index: int) -> dict[str, tuple[str, int, int]]:
        return {name: (row["status"].split(" ")[0], int(row["scur"] or 0),
                       int(row["stot"] or 0)) for name, row in self._rows(index).items()}

    def _rows(self, index: int) -> dict[str, dict[str, str]]:
        """The ``show stat`` rows of the nodes in HAProxy ``index``, by node name."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket(index)))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if len(data) > 1 << 20:
                    break
        lines = data.decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            raise ClusterError(f"HAProxy's stats socket answered {data[:200]!r}")
        header = lines[0][2:].split(",")
        column = {name: i for i, name in enumerate(header)}
        found = {}
        for line in lines[1:]:
            row = line.split(",")
            if len(row) == len(header) and row[column["pxname"]] == "nodes" \
                    and row[column["svname"]].startswith("node"):
                found[row[column["svname"]]] = dict(zip(header, row, strict=True))
        return found

    def wait_for(self, condition: object, timeout: float, what: str) -> None:
        """Poll :meth:`stats` every 0.2 s until ``condition(stats)`` (bounded)."""
        deadline = time.monotonic() + timeout
        last: dict[str, tuple[str, int, int]] = {}
        while time.monotonic() < deadline:
            for index, balancer in enumerate(self.balancers):
                if balancer.poll() is not None:
                    raise ClusterError("HAProxy exited: " + (
                        self.folder / f"haproxy{index + 1}.log").read_text()[-1500:])
            with contextlib.suppress(OSError, ClusterError):
                last = self.stats()
                if callable(condition) and condition(last):
                    return
            time.sleep(0.2)
        raise ClusterError(f"{what} within {timeout:g} s (last: {last})")

    # -- all ------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            for node in self.nodes:
                self.start_node(node)
            self.start_balancer()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)
        for balancer in self.balancers:
            if balancer.poll() is None:
                balancer.terminate()
                try:
                    balancer.wait(30)
                except subprocess.TimeoutExpired:
                    balancer.kill()
                    balancer.wait(30)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 onwards."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (/proc/PID/stat utime, stime; gone
    processes count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(pid)
            total += (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15
    return total


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes (/proc/PID/statm; gone processes count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total

