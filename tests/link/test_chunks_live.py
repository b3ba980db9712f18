"""The chunk protocol through the real link and the real fleet server: the same answer size
for a new report, a report sent again, and a malformed fetch request; the report is stored
in every case."""

from __future__ import annotations

import http.client
import time

from tests.link.conftest import World
from tests.link.liveserver import LiveFleetServer
from tinyward.link import chunks
from tinyward.link.client import REPORT_CONTENT_TYPE, ReportLink, ServerURL, device_context
from tinyward.trust import report as codec


def _report(device, seq: int) -> bytes:
    return codec.encode_report(codec.Report(device.device_id, seq, int(time.time())),
                               device.signer("report"), 1024)


def test_new_report_and_replay_get_frames_of_one_size(world: World) -> None:
    device = world.device("d")
    with LiveFleetServer(world.fleet) as server:
        context, pin = device_context(device)
        link = ReportLink(ServerURL.parse(server.url), context, pin)
        try:
            first = link.exchange(_report(device, 1), chunks.FetchRequest(bytes(32), 0))
            again = link.exchange(_report(device, 1))  # the acknowledgement was "lost"
        finally:
            link.close()
        assert first[0] == again[0] == 1
        assert first[1] is not None and again[1] is not None
        assert first[1].status == chunks.NOT_FOUND  # this fleet has no repository
        assert again[1].error == "replay" and again[1].status == chunks.IDLE
        assert server.stored[device.device_id] == [1]


def test_a_malformed_fetch_request_still_stores_the_report(world: World) -> None:
    device = world.device("d")
    with LiveFleetServer(world.fleet) as server:
        context, _ = device_context(device)
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
        try:
            conn.request("POST", "/v1/reports", body=_report(device, 1), headers={
                "Content-Type": REPORT_CONTENT_TYPE, chunks.FETCH_HEADER: "../../etc/passwd"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200
        assert response.getheader("Content-Type") == chunks.CHUNK_CONTENT_TYPE
        frame = chunks.decode_frame(body)
        assert frame.status == chunks.BAD_REQUEST and frame.stored_seq == 1
        assert server.stored[device.device_id] == [1]
