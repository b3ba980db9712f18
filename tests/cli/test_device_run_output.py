"""What `device run` shows while it runs, and when it says the run failed (no server or
clock needed: the progress reader is fed the runner's counters by hand)."""

from __future__ import annotations

from tinyward.cli.device_run import RunProgress, WatchedSource, run_failure, status_line
from tinyward.link.runner import RunStats, SimulatedSensor


def _progress(stats: RunStats, acked: list[int], latest: list[dict[str, object] | None],
              ) -> tuple[RunProgress, list[str]]:
    lines: list[str] = []
    progress = RunProgress(stats, lambda: acked[0], verbose=True, live=False,
                           echo=lines.append, latest=lambda: latest[0])
    return progress, lines


def test_verbose_shows_each_report_its_acknowledgement_and_results() -> None:
    stats, acked, latest = RunStats(), [0], [None]
    progress, lines = _progress(stats, acked, latest)
    progress.poll()
    assert lines == []  # nothing happened, nothing said
    stats.generated, stats.last_seq = 1, 1
    latest[0] = {"people": 3, "confidence": 0.87654}
    progress.poll()
    assert lines == ["result: people=3, confidence=0.8765", "report #1 made and queued"]
    acked[0] = 1
    progress.poll()
    assert lines[-1] == "report #1 delivered and acknowledged by the server"
    stats.generated, stats.last_seq = 4, 4
    stats.last_error = "cannot reach https://127.0.0.1:9: refused"
    progress.poll()
    assert lines[-2:] == ["report #2..#4 made and queued",
                          "not delivered: cannot reach https://127.0.0.1:9: refused"]
    acked[0] = 4
    progress.poll()
    assert lines[-1] == "report #2..#4 delivered and acknowledged by the server"
    assert not any("{" in line for line in lines)  # never a Python repr


def test_status_line_fits_and_names_the_trouble() -> None:
    stats = RunStats(generated=12, last_seq=40, last_error="the server refuses this device")
    line = status_line(stats, 37)
    assert line.startswith("newest report #40, acknowledged up to #37, 12 made this run")
    assert line.endswith("| the server refuses this device")


def test_run_failure_rules() -> None:
    assert run_failure(RunStats(generated=3, delivered=3)) is None
    assert run_failure(RunStats()) is None  # stopped before the first report: not a failure
    nothing = run_failure(RunStats(generated=3, last_error="cannot reach it"))
    assert nothing is not None and nothing.startswith("no report was delivered (3 made")
    revoked = run_failure(RunStats(generated=5, delivered=2,
                                   refusals={"ServerRefused": 3},
                                   last_error="403 'revoked'"))
    assert revoked is not None and "403 'revoked'" in revoked


def test_watched_source_passes_everything_through() -> None:
    inner = SimulatedSensor(rate=50.0, seed=1)
    watched = WatchedSource(inner)
    assert watched.next_time() == inner.next_time()
    results = []
    for step in range(200):
        results += watched.take(step * 0.05)
    assert results and watched.latest == results[-1] and watched.taken == len(results)
