"""Start, or restart, a server process and return once its port accepts (the
``--restart-command`` the lockout-restart tests hand the probe).

    python restarter.py PIDFILE PORT -- ARGV...

A process named in PIDFILE is stopped first (SIGTERM, then SIGKILL after 20 s), and the
port must stop accepting; ARGV then starts in its own session, its pid goes to PIDFILE.
Bounded: at most 20 s to stop, 30 s to come up; exit 1 otherwise.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(pidfile: Path, port: int) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while accepts(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    if accepts(port):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    pidfile, port, dashes, *command = argv
    assert dashes == "--" and command
    stop(Path(pidfile), int(port))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    Path(pidfile).write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return 1
        if accepts(int(port)):
            return 0
        time.sleep(0.1)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
