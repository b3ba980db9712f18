"""What an eavesdropper sees of an update download: record sizes, through the real link.

A device reports through a recording loopback proxy (what a passive observer on the path
sees: each TLS record's direction and size) to the real fleet server while it is idle,
then while it downloads a target, then idle again. Every report carries a fetch request
and every answer is one fixed-size frame, so the records are the same sizes with and
without the download. The control switches the frames' padding off (``unsafe_unpadded``):
then the download shows in the answer sizes at once. Timing, the other half, is measured
statistically by ``tinyward bench update`` (no timed assertion here).
"""

from __future__ import annotations

import bisect
import threading
import time
from pathlib import Path

from tinyward.bench.update import LoggingChannel
from tinyward.fleet.delivery import ChunkServer, DeliveryConfig
from tinyward.fleet.pki import Fleet
from tinyward.lab.proxy import TCPProxy
from tinyward.lab.tufrepo import PRODUCT, TufRepo
from tinyward.link.client import LinkConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig
from tinyward.link.shaper import ShaperConfig
from tinyward.trust.device import Device
from tinyward.update.client import UpdateClient
from tinyward.update.meta import Offer, Version

from ..link.liveserver import LiveFleetServer

PASSPHRASE = b"traffic-tests-passphrase"
APPLICATION_DATA = 23
INTERVAL = 0.1


def _record(tmp_path: Path, unpadded: bool) -> dict[tuple[bool, bool], set[int]]:
    """Sizes of the device's records, keyed by (upstream, during a download)."""
    fleet = Fleet.init(tmp_path / "fleet", PASSPHRASE)
    device = Device.init(tmp_path / "device")
    device.install(fleet.enroll(device.enrolment_request, PASSPHRASE))
    repo = TufRepo(tmp_path / "repo")
    path = repo.add_target("detector", "1.1.0", bytes(range(256)) * 40)  # 10 KiB
    repo.publish()
    got: list[object] = []
    client = UpdateClient(device_id=device.device_id, trusted_root=repo.root_bytes,
                          product_class=PRODUCT, workdir=tmp_path / "device" / "update",
                          on_verified=lambda *args: got.append(args))
    channel = LoggingChannel(client.channel)
    delivery = ChunkServer(repo.dir, DeliveryConfig(unsafe_unpadded=unpadded))
    with LiveFleetServer(fleet, delivery=delivery) as server:
        proxy = TCPProxy(("127.0.0.1", server.port), record=True)
        runner = DeviceRunner(device, proxy.url, RunnerConfig(
            shaper=ShaperConfig(interval=INTERVAL),
            link=LinkConfig(unsafe_unpadded_frames=unpadded)),
            fetch=channel, update_status=client.status)
        runner.link.connect()
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for _ in range(300):  # idle for ten reports (at most 30 s)
                if len(channel.sent) >= 10:
                    break
                time.sleep(0.1)
            client.offer(Offer("detector", path, Version(1, 1, 0)))
            client.join(120)
            settled = len(channel.sent)
            for _ in range(300):  # and ten more
                if len(channel.sent) >= settled + 10:
                    break
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(30)
            proxy.close()
    assert len(got) == 1, client.status()  # the download happened
    # One connection for everything, reports and update alike: never a second channel.
    assert {record.connection for record in proxy.records} == {1}
    assert sum(not idle for _, idle in channel.sent) >= 10
    # Each record belongs to the last exchange the device began before it; records before
    # the first (the handshake's, the session tickets) and after the last are not reports.
    times = [when for when, _ in channel.sent]
    sizes: dict[tuple[bool, bool], set[int]] = {}
    for record in proxy.records:
        i = bisect.bisect_right(times, record.time) - 1
        if i < 0 or i == len(times) - 1 or record.content_type != APPLICATION_DATA:
            continue
        downloading = not channel.sent[i][1]
        sizes.setdefault((record.upstream, downloading), set()).add(record.length)
    return sizes


def test_record_sizes_are_the_same_with_and_without_an_update(tmp_path: Path) -> None:
    sizes = _record(tmp_path, unpadded=False)
    # Upstream: the request head (with its fixed-width fetch header) and the report.
    assert sizes[(True, True)] == sizes[(True, False)]
    assert len(sizes[(True, False)]) == 2
    # Downstream: one frame, one size, chunk or filler.
    assert sizes[(False, True)] == sizes[(False, False)]
    assert len(sizes[(False, False)]) == 1


def test_control_unpadded_frames_show_the_download(tmp_path: Path) -> None:
    sizes = _record(tmp_path, unpadded=True)
    assert sizes[(False, True)] != sizes[(False, False)]
    assert max(sizes[(False, True)]) > max(sizes[(False, False)]) + 500
