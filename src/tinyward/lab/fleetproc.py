"""Start `tinyward fleet serve` in its own process and learn its URL (demo and benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tinyward.cli.fleet_secrets import NOT_FOR_THE_SERVER, SERVER


def server_environment(passphrase: bytes | None) -> dict[str, str]:
    """This process's environment for a `fleet serve` child: without any CA or update
    secret (which it refuses), with the server passphrase when the server key is sealed."""
    refused = {role.env for role in NOT_FOR_THE_SERVER} | {SERVER.env}
    env = {k: v for k, v in os.environ.items() if k not in refused}
    if passphrase is not None:
        env[SERVER.env] = passphrase.decode()
    return env


def start_fleet_server(fleet_dir: Path, passphrase: bytes | None, host: str = "127.0.0.1",
                       port: int = 0, extra: tuple[str, ...] = (),
                       timeout: float = 30.0, announced: list[str] | None = None,
                       wrap: Callable[[list[str]], list[str]] | None = None,
                       ) -> tuple[subprocess.Popen[str], str]:
    """Run the fleet server; return the process and its ``https://host:port`` URL
    (``announced``, if given, gets the server's announcement line: the admin port).

    ``passphrase`` is the *server* passphrase (None for a server key kept in clear); it
    goes through the environment of the child only (never argv, never a file). Raises
    RuntimeError if the server does not announce itself in time. ``wrap`` rewrites the
    argv (the lab runs the server inside a network namespace with it).
    """
    env = server_environment(passphrase)
    argv = [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet_dir), "--host", host,
            "--port", str(port), "--admin-port", "0", *extra]
    proc = subprocess.Popen(
        wrap(argv) if wrap is not None else argv,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    assert proc.stdout is not None
    url = ""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line.strip())
        found = re.search(r"listening on (https://\S+?)(\s|$)", line)
        if found:
            url = found.group(1)
            if announced is not None:
                announced.append(line.strip())
            break
        if time.monotonic() > deadline:
            break
    if not url:
        proc.kill()
        raise RuntimeError("the fleet server did not start: " + " | ".join(seen[-5:]))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, url
