"""Landlock on its own, in a forked child: read beneath the rule, nothing else."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

from tests.conftest import needs
from tinyward.app import _landlock

pytestmark = needs(_landlock.abi_version() >= 1, "no Landlock in this kernel")


def _attempts(allowed: Path, outside: Path) -> dict[str, str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            _landlock.restrict_to_read_only([str(allowed)])
            out = {}
            for name, action in [
                ("read inside", lambda: (allowed / "ok.txt").read_text()),
                ("list inside", lambda: os.listdir(allowed)),
                ("write inside", lambda: (allowed / "new.txt").write_text("x")),
                ("read outside", lambda: (outside / "key").read_text()),
                ("list outside", lambda: os.listdir(outside)),
            ]:
                try:
                    action()
                    out[name] = "ok"
                except OSError as error:
                    out[name] = os.strerror(error.errno or 0)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def test_read_only_beneath_the_rule_and_nothing_outside(tmp_path):
    allowed, outside = tmp_path / "app", tmp_path / "device"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok.txt").write_text("fine")
    (outside / "key").write_text("secret")
    got = _attempts(allowed, outside)
    denied = os.strerror(13)  # EACCES
    assert got == {
        "read inside": "ok",
        "list inside": "ok",
        "write inside": denied,
        "read outside": denied,
        "list outside": denied,
    }
    assert not (allowed / "new.txt").exists()
