"""The sandboxed side: ``python -I -B -c BOOT PACKAGE_PARENT IN_FD OUT_FD`` (see sandbox.py).

Started by :mod:`tinyward.app.sandbox`. Before any application code is imported it:

1. reads its configuration (the first message on IN_FD);
2. pre-imports what it needs (numpy, cbor2, libseccomp) while files are still readable;
3. sets resource limits (address space, CPU seconds, open files, processes, file size 0,
   no core dumps);
4. sets ``PR_SET_NO_NEW_PRIVS``;
5. applies Landlock: read-only beneath the app folder, Python's paths and system
   libraries; no writes anywhere; no TCP; signals scoped;
6. drops to an unprivileged uid/gid (when started as root) — directories of Python that
   the new uid cannot search (e.g. a pyenv under /root) are reached through directory
   handles opened before the drop, so nothing is made readable that was not already;
7. loads the seccomp allowlist;
8. reports what it applied — before the app runs, so the report cannot be forged by it;
9. imports the app, calls ``factory(model_paths)``, says ready, then serves frames.

A protection that cannot be applied is reported as inactive with the reason; the parent
decides whether to go on (see ``SandboxConfig.required``).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import resource
import sys
from pathlib import Path
from typing import Any

import cbor2
import numpy as np  # noqa: F401

from tinyward.app import _landlock
from tinyward.app.protocol import (
    MessageDecoder,
    MessageEncoder,
    decode_frame,
    encode_message,
    read_message_fd,
    write_all,
)
from tinyward.app.sandbox import allowed_read_paths

_PR_SET_NO_NEW_PRIVS = 38


def _limits(cfg: dict[str, Any]) -> tuple[bool, str]:
    wanted = {
        resource.RLIMIT_AS: cfg["memory_bytes"],
        resource.RLIMIT_CPU: cfg["cpu_seconds"],
        resource.RLIMIT_NOFILE: cfg["max_open_files"],
        resource.RLIMIT_NPROC: cfg["max_processes"],
        resource.RLIMIT_FSIZE: 0,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_MSGQUEUE: 0,
    }
    try:
        for which, value in wanted.items():
            # CPU: SIGXCPU at the soft limit, so the core can tell it from its own SIGKILL;
            # the kernel's SIGKILL at the hard limit one second later is the backstop.
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))
    except (OSError, ValueError) as error:
        return False, f"setrlimit failed: {error}"
    mib = cfg["memory_bytes"] // (1 << 20)
    return True, (
        f"memory {mib} MiB, CPU {cfg['cpu_seconds']} s, {cfg['max_open_files']} open files, "
        f"{cfg['max_processes']} processes, no file writes, no core dumps"
    )


def _no_new_privs() -> tuple[bool, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False, f"prctl failed: {os.strerror(ctypes.get_errno())}"
    return True, "set: exec cannot gain privileges (setuid binaries, file capabilities)"


def _drop_uid(uid: int | None, gid: int | None) -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, f"not started as root: runs as the caller's uid {os.geteuid()}"
    if uid is None or gid is None:
        return False, "disabled by configuration (unsafe_keep_uid)"
    # Directory handles for Python's paths, opened while still root (see module docstring).
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in sys.path if os.path.isdir(p)}
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as error:
        return False, f"setresuid failed: {error}"
    try:
        os.setresuid(0, 0, 0)
        return False, "uid 0 could be regained after the drop"
    except PermissionError:
        pass
    remapped = {}
    for path, fd in handles.items():
        try:
            os.listdir(path)
            os.close(fd)
        except PermissionError:
            remapped[path] = f"/proc/self/fd/{fd}"
    if remapped:
        sys.path[:] = [remapped.get(p, p) for p in sys.path]
        for module in list(sys.modules.values()):
            paths = getattr(module, "__path__", None)
            if isinstance(paths, list):
                paths[:] = [_remap(p, remapped) for p in paths]
        sys.path_importer_cache.clear()
    note = f" ({len(remapped)} Python dirs via pre-opened handles)" if remapped else ""
    return True, f"uid {uid}, gid {gid}, no supplementary groups{note}"


def _filesystem_isolation(secrets: list[str], report: list[list[object]]) -> tuple[bool, str]:
    """Try to open every secret path now, as the app would: any success is a refusal.

    Landlock or the separate uid must be in force as well, so that files created later
    (new records in the device folder) are covered too: Landlock by path, the uid by the
    device's 0600/0700 modes.
    """
    active = {str(name) for name, on, _ in report if on}
    by = [name for name in ("landlock", "separate uid") if name in active]
    readable = []
    for path in secrets:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            continue  # EACCES/EPERM: denied, as it must be; ENOENT: nothing to read
        os.close(fd)
        readable.append(path)
    if readable:
        more = f" and {len(readable) - 1} more" if len(readable) > 1 else ""
        return False, f"the app could read {readable[0]}{more}"
    if not by:
        return False, "neither Landlock nor a separate uid is in force"
    return True, f"{len(secrets)} secret paths tried, none readable; by {' and '.join(by)}"


def _remap(path: str, remapped: dict[str, str]) -> str:
    for old, new in remapped.items():
        if path == old or path.startswith(old + os.sep):
            return new + path[len(old) :]
    return path


def _fds_and_env(keep: set[int]) -> list[list[object]]:
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    # One fd is the listing itself; 0-2 are /dev/null.
    extra = [fd for fd in fds if fd not in keep | {0, 1, 2} and _is_open(fd)]
    env = sorted(os.environ)
    return [
        ["inherited fds", not extra, f"only the two pipe ends (extra: {extra})" if extra
         else "only the two pipe ends; stdin/stdout/stderr are /dev/null"],
        ["scrubbed environment", len(env) <= 8, f"{len(env)} variables: {', '.join(env)}"],
    ]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def main() -> None:
    in_fd, out_fd = int(sys.argv[1]), int(sys.argv[2])
    decoder = MessageDecoder(1 << 20)
    cfg = read_message_fd(in_fd, decoder, None)["cfg"]
    decoder.max_message = cfg["max_message"]
    folder = cfg["folder"]

    report = _fds_and_env({in_fd, out_fd})
    seccomp_filter = None
    seccomp_note = ""
    if cfg["seccomp"]:
        try:
            from tinyward.app import _seccomp

            seccomp_filter = _seccomp.build_filter()
            seccomp_note = _seccomp.describe()
        except (ImportError, OSError, RuntimeError) as error:
            seccomp_note = f"libseccomp unavailable: {error}"
    else:
        seccomp_note = "disabled by configuration (unsafe_no_seccomp)"

    active, note = _limits(cfg)
    report.append(["resource limits", active, note])
    active, note = _no_new_privs()
    report.append(["no_new_privs", active, note])
    if cfg["landlock"]:
        try:
            report.append(
                [
                    "landlock",
                    True,
                    _landlock.restrict_to_read_only(allowed_read_paths(folder, sys.path)),
                ]
            )
        except OSError as error:
            report.append(["landlock", False, str(error)])
    else:
        report.append(["landlock", False, "disabled by configuration (unsafe_no_landlock)"])
    active, note = _drop_uid(cfg["uid"], cfg["gid"])
    report.append(["separate uid", active, note])
    report.append(["filesystem isolation", *_filesystem_isolation(cfg.get("secrets", []), report)])
    os.chdir(folder)
    os.umask(0o077)
    if seccomp_filter is not None:
        try:
            seccomp_filter.load()
            report.append(["seccomp", True, seccomp_note])
        except OSError as error:
            report.append(["seccomp", False, f"seccomp_load failed: {error}"])
    else:
        report.append(["seccomp", False, seccomp_note])
    write_all(out_fd, encode_message({"p": report}))
    if cfg.get("probe"):
        return  # `tinyward app inspect`: report the protections, run no app code

    # From here on, application code runs: nothing below is trusted by the parent.
    sys.path.insert(0, folder)
    module = importlib.import_module(cfg["module"])
    factory = getattr(module, cfg["callable"])
    app = factory([Path(m) for m in cfg["models"]])
    write_all(out_fd, encode_message({"ready": True}))

    dtype, shape = cfg["dtype"], tuple(cfg["shape"])
    process = app.process
    encoder = MessageEncoder()
    while True:
        try:
            msg = read_message_fd(in_fd, decoder, None)
        except EOFError:
            return
        seq, frame = decode_frame(msg, dtype, shape)
        result = process(frame)
        try:
            out = encoder.encode({"r": seq, "v": result})
        except (TypeError, ValueError, cbor2.CBOREncodeError) as error:
            encoder = MessageEncoder()  # the failed encode may have left bytes behind
            out = encode_message({"r": seq, "bad": f"{type(error).__name__}: {error}"[:200]})
        write_all(out_fd, out)


if __name__ == "__main__":
    main()
