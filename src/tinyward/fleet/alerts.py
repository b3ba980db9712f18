"""Alerts: incidents sent to the operator's sinks (webhook, syslog, a command).

``fleet serve --alert SPEC`` (repeatable), SPEC one of:

- ``webhook:https://HOST/PATH``: POST the alert as JSON, with a timeout. ``http://`` only
  to a loopback address (a receiver on the same machine); anything else needs https,
  verified against the system's CAs, so an alert never crosses a network in clear.
- ``syslog``, ``syslog:HOST:PORT`` (UDP) or ``syslog:/PATH`` (a Unix socket; plain
  ``syslog`` is ``/dev/log``): one line through the standard
  :class:`logging.handlers.SysLogHandler`, facility ``daemon``, severity ``warning``.
- ``command:PATH``: run PATH (no shell, no arguments) with the alert as JSON on stdin and
  a timeout; exit status 0 is success. Its environment holds only ``PATH`` and ``LANG``:
  never the server's passphrase or anything else the server's environment holds.

What an alert holds (:meth:`Alert.payload`): device ID, incident kind, count, the
fleet's receive time, the device's time and report sequence number when a report carried
it, the short evidence text, and how many repeats deduplication folded into it. Never a
secret, and never a report's results (raw sensor conclusions are the device owner's).

How it never hurts ingest:

- :meth:`AlertSender.send` is O(1) and never waits: deduplication and a put into a bounded
  queue per sink (full: the alert is dropped and counted, one log line);
- each sink has its own thread, so a slow or dead sink holds up only itself;
- a failed delivery is logged (one line, no payload) and retried with exponential backoff
  (:data:`RETRY_DELAYS`), then given up; nothing a sink does reaches the server.

Deduplication: the same device and kind within ``window`` seconds of an alert sent make no
new alert; they are counted, and when the window ends with repeats, one more alert says
how many (``repeats``), so a flood of one incident is two alerts per window, not
thousands. Per worker process (``--workers N``: up to N alerts per window).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from logging.handlers import SysLogHandler
from pathlib import Path
from typing import Any, Protocol

from tinyward.errors import BadInput, TinywardError

_log = logging.getLogger("tinyward.fleet.alerts")

#: Seconds before each retry of a failed delivery (then the alert is given up).
RETRY_DELAYS = (1.0, 5.0, 30.0)
DEFAULT_TIMEOUT = 10.0
DEFAULT_WINDOW = 300.0
QUEUE_SIZE = 1000
#: (device, kind) pairs remembered for deduplication; beyond it, expired ones are dropped,
#: and if none has expired, alerts go out undeduplicated (the queues still bound them).
MAX_KEYS = 100_000


class BadAlertSink(BadInput):
    """An ``--alert`` specification that names no sink we can use."""


class DeliveryFailed(TinywardError):
    """One try of a sink failed (the message says why; it never holds the payload)."""


@dataclass(frozen=True)
class Alert:
    """One incident to tell the operator about (see the module's docs for what it holds)."""

    device_id: str
    kind: str
    count: int
    at: float
    device_time: int | None = None
    seq: int | None = None
    evidence: str = ""

    def payload(self, repeats: int = 0) -> dict[str, Any]:
        return {"source": "tinyward", "type": "incident", "device_id": self.device_id,
                "kind": self.kind, "count": self.count, "at": self.at,
                "device_time": self.device_time, "seq": self.seq,
                "evidence": self.evidence[:200], "repeats": repeats}


class Sink(Protocol):
    name: str

    def deliver(self, payload: dict[str, Any]) -> None:
        """Deliver once; raise :class:`DeliveryFailed` (or OSError) on failure."""


class WebhookSink:
    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BadAlertSink(f"webhook needs an https:// URL, not {url!r}")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise BadAlertSink("webhook over http:// only to a loopback address (alerts "
                               "must not cross a network in clear); use https://")
        self.url, self.timeout = url, timeout
        self.name = f"webhook:{parts.scheme}://{parts.hostname}"  # no path: it may be a token
        self._context = ssl.create_default_context() if parts.scheme == "https" else None

    def deliver(self, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tinyward"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,  # noqa: S310
                                        context=self._context) as response:
                response.read(4096)
        except urllib.error.HTTPError as error:
            raise DeliveryFailed(f"HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DeliveryFailed(f"{type(reason).__name__}: {reason}") from None


class _RaisingSysLogHandler(SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        # emit() calls this from its except block: re-raise, so the sender sees a failure
        # (the default prints a traceback to stderr and carries on as if sent).
        raise


class SyslogSink:
    def __init__(self, address: str | tuple[str, int]) -> None:
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.name = f"syslog:{where}"
        self._handler = _RaisingSysLogHandler(address=address,
                                              facility=SysLogHandler.LOG_DAEMON,
                                              socktype=socket.SOCK_DGRAM)
        self._handler.ident = "tinyward: "

    def deliver(self, payload: dict[str, Any]) -> None:
        text = (f"incident kind={payload['kind']} device={payload['device_id']} "
                f"count={payload['count']} repeats={payload['repeats']} "
                f"evidence={payload['evidence']!r}")
        record = logging.LogRecord("tinyward.alert", logging.WARNING, __file__, 0, text,
                                   None, None)
        try:
            self._handler.emit(record)
        except OSError as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None

    def close(self) -> None:
        self._handler.close()


class CommandSink:
    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        found = Path(path)
        if not found.is_absolute():
            raise BadAlertSink(f"command:PATH needs an absolute path, not {path!r}")
        if not (found.is_file() and os.access(found, os.X_OK)):
            raise BadAlertSink(f"{path} is not an executable file")
        self.path, self.timeout = str(found), timeout
        self.name = f"command:{found.name}"

    def deliver(self, payload: dict[str, Any]) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        try:
            done = subprocess.run([self.path], input=json.dumps(payload).encode(),  # noqa: S603
                                  capture_output=True, timeout=self.timeout, env=env,
                                  check=False, shell=False, close_fds=True)
        except subprocess.TimeoutExpired:
            raise DeliveryFailed(f"no exit within {self.timeout:g} s (killed)") from None
        except OSError as error:
            raise DeliveryFailed(f"cannot run: {error.strerror}") from None
        if done.returncode != 0:
            raise DeliveryFailed(f"exit status {done.returncode}")


def parse_sink(spec: str, timeout: float = DEFAULT_TIMEOUT) -> Sink:
    """The sink an ``--alert`` SPEC names. Raises :class:`BadAlertSink`."""
    kind, _, rest = spec.partition(":")
    if kind == "webhook" and rest:
        return WebhookSink(rest, timeout)
    if kind == "command" and rest:
        return CommandSink(rest, timeout)
    if kind == "syslog":
        if not rest:
            return SyslogSink("/dev/log")
        if rest.startswith("/"):
            return SyslogSink(rest)
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadAlertSink(f"syslog:HOST:PORT or syslog:/PATH, not {spec!r}")
        return SyslogSink((host.strip("[]"), int(port)))
    raise BadAlertSink(f"--alert is webhook:URL, syslog[:HOST:PORT|:/PATH] or command:PATH, "
                       f"not {spec!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlertSender:
    """Deduplicates alerts and hands them to one thread per sink (bounded queues).

    ``on_outcome(word)`` counts outcomes (metrics): ``sent``, ``deduplicated``, ``dropped``
    and ``failed`` (one failed try). ``clock`` is the deduplication window's (tests)."""

    def __init__(self, sinks: Sequence[Sink], *, window: float = DEFAULT_WINDOW,
                 queue_size: int = QUEUE_SIZE,
                 retry_delays: Sequence[float] = RETRY_DELAYS,
                 clock: Callable[[], float] = time.monotonic,
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self.sinks = list(sinks)
        self.window, self.clock = window, clock
        self._retry = tuple(retry_delays)
        #: Counts outcomes (the server sets it to its metrics).
        self.on_outcome: Callable[[str], None] = on_outcome or (lambda _: None)
        self._lock = threading.Lock()
        # (device, kind) -> [window start, repeats folded, the last alert folded]
        self._recent: dict[tuple[str, str], list[Any]] = {}
        self._stop = threading.Event()
        self._queues: list[queue.Queue[dict[str, Any]]] = [queue.Queue(queue_size)
                                                          for _ in self.sinks]
        self._threads = [threading.Thread(target=self._run, args=(sink, q), daemon=True,
                                          name=f"alert-{sink.name}")
                         for sink, q in zip(self.sinks, self._queues, strict=True)]
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="alert-window")
        for thread in (*self._threads, self._flusher):
            thread.start()

    def send(self, alert: Alert) -> None:
        """Queue ``alert`` unless deduplication folds it; never blocks."""
        key = (alert.device_id, alert.kind)
        now = self.clock()
        with self._lock:
            recent = self._recent.get(key)
            if recent is not None and now - recent[0] < self.window:
                recent[1] += 1
                recent[2] = alert
                folded = True
            else:
                folded = False
                if recent is None and len(self._recent) >= MAX_KEYS:
                    self._expire(now)
                if recent is not None or len(self._recent) < MAX_KEYS:
                    self._recent[key] = [now, 0, None]
        if folded:
            self.on_outcome("deduplicated")
            return
        self._put(alert.payload())

    def flush(self) -> None:
        """Send the repeat counts of the windows that have ended (the flusher thread calls
        it every second; tests call it directly)."""
        now = self.clock()
        due: list[dict[str, Any]] = []
        with self._lock:
            for key, (start, repeats, last) in list(self._recent.items()):
                if now - start >= self.window:
                    del self._recent[key]
                    if repeats:
                        due.append(last.payload(repeats))
        for payload in due:
            self._put(payload)

    def _expire(self, now: float) -> None:
        for key, (start, repeats, _) in list(self._recent.items()):
            if now - start >= self.window and not repeats:
                del self._recent[key]

    def _put(self, payload: dict[str, Any]) -> None:
        for sink, pending in zip(self.sinks, self._queues, strict=True):
            try:
                pending.put_nowait(payload)
            except queue.Full:
                self.on_outcome("dropped")
                _log.warning("alert to %s dropped: its queue is full (the sink is slow or "
                             "down)", sink.name)

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a bug here must not end alerting
                _log.exception("flushing alert repeats failed")

    def _run(self, sink: Sink, pending: queue.Queue[dict[str, Any]]) -> None:
        while not self._stop.is_set():
            try:
                payload = pending.get(timeout=0.5)
            except queue.Empty:
                continue
            self._deliver(sink, payload)
            pending.task_done()

    def _deliver(self, sink: Sink, payload: dict[str, Any]) -> None:
        for attempt in range(len(self._retry) + 1):
            try:
                sink.deliver(payload)
            except Exception as error:  # noqa: BLE001 - any sink failure: log, retry, go on
                self.on_outcome("failed")
                why = str(error).splitlines()[0] if str(error) else type(error).__name__
                if attempt == len(self._retry):
                    _log.warning("alert to %s failed (%s); given up after %d tries",
                                 sink.name, why, attempt + 1)
                    return
                delay = self._retry[attempt]
                _log.warning("alert to %s failed (%s); retrying in %g s", sink.name, why,
                             delay)
                if self._stop.wait(delay):
                    return
            else:
                self.on_outcome("sent")
                return

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued alert has been delivered or given up (tests, shutdown);
        False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        for pending in self._queues:
            while pending.unfinished_tasks:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        return True

    def close(self) -> None:
        self._stop.set()
        for thread in (*self._threads, self._flusher):
            thread.join(5)
        for sink in self.sinks:
            closer = getattr(sink, "close", None)
            if callable(closer):
                closer()
