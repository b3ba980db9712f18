"""Server CPU per report when devices send ONE report per request, old code against new.

A measuring aid (docs/scaling.md, "Where the 2 ms per single-report request goes"), not
a test: one `fleet serve` node (no HAProxy) over one SQLite file, N simulated devices
(bench/fleetload.py's device loop: a held mutual-TLS connection, one signed report per
request on a schedule), and the node started again for each variant, alternating, on the
same devices and database. Prints per variant the handshake CPU per device and the
server CPU per acknowledged report (whole process and per thread, user/system).

    PYTHONPATH=src python scripts/ab_single_report.py DEVICES INTERVAL WINDOW \
        base=/tmp/old/src,new=src,base=/tmp/old/src,new=src

Each variant's node runs with PYTHONPATH set to its source tree (export the old one with
`git archive REV src | tar -x -C /tmp/old`). Everything on loopback; bounded in time.
The devices' reports are signed before each variant's run (device-side work) and the
generator runs on uvloop, as `bench fleetload` does; its CPU per report is printed too.
PYSPY=PREFIX records the node with py-spy over each window (PREFIX-VARIANT-N.txt, the
collapsed stacks; py-spy's own CPU is on the same cores, so compare CPU without it).
"""

from __future__ import annotations

import asyncio
import collections
import glob
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinyward.bench import fleetload as fl
from tinyward.bench.fleetload_cluster import Cluster, Node, NodeOptions, cpu_seconds
from tinyward.fleet.runner import event_loop_factory


def thread_cpu(pids: list[int]) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                fields = Path(task, "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            tid = task.rsplit("/", 1)[1]
            out[tid + " user"] += int(fields[11]) / tick
            out[tid + " sys"] += int(fields[12]) / tick
    return out


def main() -> None:
    count, interval, window = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    # NAME=SRC[:asyncio][:live]: the node's source tree; the generator on asyncio's loop
    # instead of uvloop, and signing each report when due instead of before the run
    # (the generator as it was before 2 Dec 2026).
    variants = [tuple(item.split("=", 1)) for item in sys.argv[4].split(",")]
    fl.raise_fd_limit(2 * count + 4096)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm") as keys, \
            tempfile.TemporaryDirectory() as data:
        fleet = fl.Fleet.init(Path(keys) / "fleet", fl.PASSPHRASE)
        sims, contexts = fl.enrol(fleet, count, interval, Path(keys) / "tls")
        url = f"sqlite:///{data}/reports.db"
        config = fl.LoadConfig(devices=count, interval=interval, duration=window, nodes=1,
                               storm="none")
        devices = [fl._Device(sim, ctx) for sim, ctx in zip(sims, contexts, strict=True)]
        fl.shrink_tls_read_buffer()
        for index, (name, spec) in enumerate(variants):
            root, *flags = spec.split(":")
            os.environ["PYTHONPATH"] = str(Path(root).resolve())
            folder = Path(data) / f"run{index}"
            folder.mkdir()
            cluster = Cluster(fleet.directory, url, folder, 1,
                              NodeOptions(max_connections=count + 1000, max_handshakes=1024))
            node = cluster.nodes[0]
            cluster.start_node(node)
            cluster.ports = [node.port]
            run = fl._Run(config, devices, cluster, lambda _t: None)
            for device in devices:
                device.reader = device.writer = None
            for device in devices:
                device.presigned.clear()
            if "live" not in flags:
                fl.presign(devices, int((window + 2 * interval) // interval) + 2)

            spy_out = f"{os.environ.get('PYSPY')}-{name}-{index}.txt"

            async def drive(run: fl._Run = run, node: Node = node, cluster: Cluster = cluster,
                            spy_out: str = spy_out) -> tuple[float, float, int]:
                loop = asyncio.get_running_loop()
                pids = cluster.pids_of(node)
                before = cpu_seconds(pids)
                gate = asyncio.Semaphore(64)

                async def connect(device: fl._Device) -> None:
                    async with gate:
                        await run.connect(device)

                await asyncio.gather(*(connect(device) for device in devices))
                handshake = (cpu_seconds(pids) - before) / count
                start = loop.time()
                run.stop_reports_at = start + interval + window
                run.deadline = run.stop_reports_at + 5
                tasks = [asyncio.create_task(run.device_loop(
                    device, start + random.random() * interval)) for device in devices]  # noqa: S311
                await asyncio.sleep(interval)
                run.counting = True
                spy = None
                if os.environ.get("PYSPY"):
                    spy = subprocess.Popen(  # noqa: S603 - our own pid and paths
                        ["py-spy", "record", "--format", "raw", "--nonblocking", "-r", "200",  # noqa: S607
                         "-d", str(int(window)), "-p", str(pids[0]), "-o", spy_out],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                threads0, cpu0, acks0 = thread_cpu(pids), cpu_seconds(pids), run.acks_in_window
                gen0 = time.process_time()
                await asyncio.sleep(window)
                threads1, cpu1, acks1 = thread_cpu(pids), cpu_seconds(pids), run.acks_in_window
                gen1 = time.process_time()
                if spy is not None:
                    spy.wait(60)
                run.counting = False
                await asyncio.gather(*tasks)
                for device in devices:
                    run.drop(device)
                acks = max(1, acks1 - acks0)
                print("  per thread, ms/report:", {k: round((threads1[k] - threads0[k]) * 1e3
                                                            / acks, 3) for k in threads1
                                                   if threads1[k] > threads0[k]})
                print(f"  load generator {(gen1 - gen0) * 1e3 / acks:.3f} ms/report; "
                      f"{acks / window:.0f} acks/s; load {os.getloadavg()[0]:.1f}")
                return handshake, (cpu1 - cpu0) / acks, acks

            loop_factory = asyncio.new_event_loop if "asyncio" in flags else event_loop_factory()
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                handshake, per_report, acks = runner.run(drive())
            cluster.stop_node(node)
            results.setdefault(name, []).append(per_report)
            print(f"{name}: handshake {handshake * 1e3:.2f} ms, per report "
                  f"{per_report * 1e3:.3f} ms over {acks} acks; refused {run.refused}, "
                  f"drops {run.drops}", flush=True)
    for name, values in results.items():
        print(name, " ".join(f"{value * 1e3:.3f}" for value in values))
    names = list(results)
    if len(names) == 2:
        old, new = names
        print(f"{new}/{old} per report:", [round(b / a, 3) for a, b in
                                           zip(results[old], results[new], strict=False)],
              "ratio of medians", round(statistics.median(results[new])
                                        / statistics.median(results[old]), 3))


if __name__ == "__main__":
    main()
