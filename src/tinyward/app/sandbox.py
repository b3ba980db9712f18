"""Start an application in a sandboxed child process and talk to it over two pipes.

This is the I/O edge of the app boundary; the policy (what to do when the app
misbehaves) is :mod:`tinyward.app.supervisor`'s, and what the child does to itself before
it imports the app is :mod:`tinyward.app._child`'s.

The child is started with ``close_fds=True`` and ``pass_fds`` = only its two pipe ends,
stdin/stdout/stderr on /dev/null, a scrubbed environment, cwd = the app folder, in its
own session, with ``python -I -B`` (no PYTHON* variables, no user site, the app folder
not on ``sys.path`` until the protections are in place).
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.app.errors import ProtocolError, SandboxError
from tinyward.app.manifest import Manifest
from tinyward.app.protocol import (
    DEFAULT_MAX_MESSAGE,
    MessageDecoder,
    MessageEncoder,
    encode_frame,
    encode_message,
    read_message_fd,
    write_all,
)

_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    # One thread per BLAS/OpenMP pool: the app gets one core's worth of work.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


#: The child runs the very tinyward the core runs (the one measured in attestation
#: tokens), not whichever one ``python -I`` would find installed: its parent folder goes
#: first on the child's ``sys.path``. ``-I`` still keeps PYTHON* variables, the user site
#: and the app folder out.
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)
_CHILD_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from tinyward.app._child import main; main()"
)


#: System folders the app may read (shared libraries that extension modules load).
SYSTEM_READ_PATHS = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache", "/usr/share/zoneinfo",
)


def allowed_read_paths(folder: str, path_entries: list[str]) -> list[str]:
    """Everything the sandboxed app may read (Landlock rules): its folder, Python's path
    entries, the interpreter's lib folder, the tinyward package, system libraries."""
    paths = [folder]
    paths += [p for p in path_entries if p and os.path.isdir(p)]
    paths.append(os.path.join(sys.base_prefix, "lib"))
    paths.append(str(Path(__file__).resolve().parent.parent))  # the tinyward package
    paths += SYSTEM_READ_PATHS
    return list(dict.fromkeys(paths))


#: What must be in force before any application code runs. "filesystem isolation" is
#: Landlock or a separate uid, *and* every secret path tried and found unreadable by the
#: sandboxed process itself (see ``_child._filesystem_isolation``).
DEFAULT_REQUIRED = (
    "seccomp", "resource limits", "no_new_privs", "inherited fds", "filesystem isolation",
)
#: At most this many files beneath the secret paths are tried by the child at start.
MAX_SECRET_PROBES = 2048


@dataclass(frozen=True)
class Protection:
    """One layer of the sandbox, and whether this host provides it."""

    name: str
    active: bool
    reason: str


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of the sandbox, with safe defaults. ``unsafe_*`` switch a layer off (tests)."""

    memory_bytes: int = 1 << 30
    cpu_seconds: int = 3600
    max_open_files: int = 64
    max_processes: int = 256
    frame_deadline_s: float = 1.0
    start_deadline_s: float = 30.0
    max_message: int = DEFAULT_MAX_MESSAGE
    user: str = "nobody"
    #: protections that must be active, or the app is not started (fail closed)
    required: tuple[str, ...] = DEFAULT_REQUIRED
    unsafe_no_landlock: bool = False
    unsafe_no_seccomp: bool = False
    unsafe_keep_uid: bool = False
    #: show the app's stderr (a channel out of the sandbox: for debugging only)
    unsafe_inherit_stderr: bool = False
    #: files and folders the app must not be able to read (e.g. the device's keystore);
    #: refused at start if one of them lies beneath a path the sandbox would allow.
    secret_paths: tuple[Path, ...] = field(default_factory=tuple)


class Sandbox:
    """One run of one application in a child process. Not restartable: make a new one."""

    def __init__(self, manifest: Manifest, config: SandboxConfig | None = None) -> None:
        self.manifest = manifest
        self.config = config or SandboxConfig()
        self.protections: list[Protection] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1
        self._decoder = MessageDecoder(self.config.max_message)
        self._encoder = MessageEncoder()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def probe(self) -> list[Protection]:
        """Start the child, take its protections report, stop it: no app code runs.

        Raises:
            SandboxError: the child could not be started.
        """
        self._check_secret_paths()
        try:
            self._spawn(probe=True)
            report = self._expect(time.monotonic() + self.config.start_deadline_s, "p")
            return _parse_protections(report) + self._core_protections()
        finally:
            self.kill()

    def _core_protections(self) -> list[Protection]:
        return [
            Protection("output contract", True, "every result checked by the core"),
            Protection(
                "per-frame deadline", True, f"{self.config.frame_deadline_s:g} s, then killed"
            ),
        ]

    def start(self) -> list[Protection]:
        """Start the child, wait for its protections report and for the app to be ready.

        Raises:
            SandboxError: a required protection is inactive, a secret path would be
                readable, or the app died / hung / misbehaved before it was ready.
        """
        self._check_secret_paths()
        self._spawn(probe=False)
        deadline = time.monotonic() + self.config.start_deadline_s
        report = self._expect(deadline, "p")
        self.protections = _parse_protections(report) + self._core_protections()
        missing = [p for p in self.protections if p.name in self.config.required and not p.active]
        if missing:
            self.kill()
            raise SandboxError(
                "refusing to run the app without: "
                + "; ".join(f"{p.name} ({p.reason})" for p in missing)
            )
        self._expect(deadline, "ready")
        return self.protections

    def _spawn(self, probe: bool) -> None:
        cfg = self.config
        uid = gid = None
        if not cfg.unsafe_keep_uid and os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(cfg.user)
            except KeyError:
                raise SandboxError(
                    f"user {cfg.user!r} does not exist: create it or set SandboxConfig.user"
                ) from None
            uid, gid = entry.pw_uid, entry.pw_gid
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, our boot code
                [sys.executable, "-I", "-B", "-c", _CHILD_BOOT, _PACKAGE_PARENT,
                 str(to_child_r), str(from_child_w)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if cfg.unsafe_inherit_stderr else subprocess.DEVNULL,
                close_fds=True,
                pass_fds=(to_child_r, from_child_w),
                env=dict(_ENV),
                cwd=self.manifest.folder,
                start_new_session=True,
            )
        except OSError as error:
            os.close(to_child_w)
            os.close(from_child_r)
            raise SandboxError(f"cannot start the sandbox process: {error}") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._to_child, self._from_child = to_child_w, from_child_r
        m = self.manifest
        try:
            self._send_config(m, cfg, uid, gid, probe)
        except OSError as error:
            code = self.kill()
            raise SandboxError(f"the sandbox process died at once (exit {code}): {error}") from None

    def _send_config(
        self, m: Manifest, cfg: SandboxConfig, uid: int | None, gid: int | None, probe: bool
    ) -> None:
        write_all(self._to_child, encode_message({"cfg": {
            "folder": str(m.folder), "module": m.entry_module, "callable": m.entry_callable,
            "models": [str(p) for p in m.models], "dtype": m.input.dtype,
            "shape": list(m.input.frame_shape), "memory_bytes": cfg.memory_bytes,
            "cpu_seconds": cfg.cpu_seconds, "max_open_files": cfg.max_open_files,
            "max_processes": cfg.max_processes, "uid": uid, "gid": gid,
            "landlock": not cfg.unsafe_no_landlock, "seccomp": not cfg.unsafe_no_seccomp,
            "max_message": cfg.max_message, "probe": probe,
            "secrets": secret_probes(cfg.secret_paths),
        }}))

    def _expect(self, deadline: float, key: str) -> Any:
        try:
            msg = read_message_fd(self._from_child, self._decoder, deadline)
        except TimeoutError:
            self.kill()
            raise SandboxError(
                f"the app was not ready within {self.config.start_deadline_s:g} s") from None
        except (EOFError, ProtocolError) as error:
            code = self.kill()
            raise SandboxError(f"the app died while starting (exit {code}): {error}") from None
        if type(msg) is not dict or key not in msg:
            self.kill()
            raise SandboxError(f"unexpected message from the app while starting (wanted {key!r})")
        return msg[key]

    def send_frame(self, seq: int, frame: np.ndarray) -> None:
        """Send one frame (raises OSError, e.g. BrokenPipeError, if the child is gone)."""
        write_all(self._to_child, encode_frame(seq, frame, self._encoder))

    def receive(self, deadline: float) -> Any:
        """The next message from the child.

        Raises:
            TimeoutError: nothing before ``deadline`` (monotonic seconds).
            EOFError: the child closed its end (it exited).
            ProtocolError: the child wrote something that is not a valid message.
        """
        return read_message_fd(self._from_child, self._decoder, deadline)

    @property
    def pending_output(self) -> int:
        """Bytes the child wrote that were not part of an expected message."""
        return self._decoder.pending

    def kill(self) -> int | None:
        """Kill the child (SIGKILL) and reap it; return its exit status (negative: signal)."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                code = self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                code = None
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                os.close(fd)
        self._to_child = self._from_child = -1
        return code

    def terminate_now(self) -> None:
        """SIGKILL the child without reaping it or closing the pipes (safe from another
        thread: whoever owns the sandbox sees EOF and calls :meth:`kill`)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(9)  # Popen checks the child was not reaped (no pid reuse)

    def exit_status(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def _check_secret_paths(self) -> None:
        # The parent's sys.path is a superset of the child's (-I drops the script folder),
        # so this refuses at least everything the child's Landlock rules would allow.
        allowed = [
            Path(p).resolve() for p in allowed_read_paths(str(self.manifest.folder), sys.path)
        ]
        for secret in self.config.secret_paths:
            secret = secret.resolve()
            for path in allowed:
                if secret.is_relative_to(path):
                    raise SandboxError(
                        f"{secret} lies beneath {path}, which the app may read: move it"
                    )
        # A bind mount is a second path that resolve() cannot see: refuse a mount beneath
        # a readable path that shows any part of a secret (Landlock allows it as reached).
        for secret in self.config.secret_paths:
            for alias in mount_aliases(secret.resolve()):
                for path in allowed:
                    if alias.is_relative_to(path):
                        raise SandboxError(f"{secret} is mounted again at {alias}, beneath "
                                           f"{path}, which the app may read: unmount it")
        # A second name (hard link) could sit where the app may read: the child's try on
        # this name would pass while the other stays open. Device files have one name.
        for probe in secret_probes(self.config.secret_paths):
            try:
                info = os.lstat(probe)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise SandboxError(f"{probe} has {info.st_nlink} names (hard links): a secret "
                                   "must have one, or another name may be readable")


def _mounts(text: str) -> list[tuple[str, Path, Path]]:
    """(major:minor, root within its file system, mount point) of each mountinfo line."""
    def unescape(field: str) -> Path:  # mountinfo writes space, tab, \n, \\ as \ooo
        return Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))

    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out.append((fields[2], unescape(fields[3]), unescape(fields[4])))
    return out


def mount_aliases(secret: Path, mountinfo: str | None = None) -> list[Path]:
    """Other paths at which (part of) the resolved ``secret`` is visible: bind mounts of
    its file system whose root overlaps the secret's place in it."""
    live = mountinfo is None
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    mounts = _mounts(mountinfo)
    # the mount the secret is reached through: the longest mount point above it
    home = [m for m in mounts if secret.is_relative_to(m[2])]
    if not home:
        return []
    dev, root, point = max(home, key=lambda m: len(m[2].parts))
    inside = root / secret.relative_to(point)  # the secret's path within its file system
    aliases = []
    for other_dev, other_root, other_point in mounts:
        if other_dev != dev or other_point == point:
            continue
        if inside.is_relative_to(other_root):
            aliases.append(other_point / inside.relative_to(other_root))
        elif other_root.is_relative_to(inside):
            aliases.append(other_point)
    # live: only paths that exist here (a computed alias may be covered by another mount)
    return [a for a in aliases if a != secret and (not live or os.path.lexists(a))]


def secret_probes(secret_paths: tuple[Path, ...], limit: int = MAX_SECRET_PROBES) -> list[str]:
    """The paths the child must fail to open: each secret path and the files and folders
    beneath it (symbolic links skipped: their targets are not secrets), at most ``limit``."""
    out: list[str] = []
    for secret in secret_paths:
        top = Path(secret).resolve()
        out.append(str(top))
        if not top.is_dir():
            continue
        for root, dirs, files in os.walk(top):
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    out.append(path)
            if len(out) >= limit:
                return out[:limit]
    return out


def check_before_start(manifest: Manifest, config: SandboxConfig) -> list[Protection]:
    """Apply every layer in a child that runs no app code; refuse if a required one is off.

    The device calls this once before it starts its application, so that a host that
    cannot isolate the device's files stops the device with an error, instead of an
    application that is refused (and retried) forever.

    Raises:
        SandboxError: a required protection is inactive, or a secret path is readable.
    """
    protections = Sandbox(manifest, config).probe()
    missing = [p for p in protections if p.name in config.required and not p.active]
    if missing:
        raise SandboxError(
            "refusing to start the application without: "
            + "; ".join(f"{p.name} ({p.reason})" for p in missing)
        )
    return protections


def _parse_protections(report: Any) -> list[Protection]:
    # Written by our own child code before the app was imported, so it can be believed;
    # still, parse it strictly.
    if type(report) is not list:
        raise SandboxError("malformed protections report from the child")
    out = []
    for item in report:
        if type(item) is not list or len(item) != 3:
            raise SandboxError("malformed protections report from the child")
        out.append(Protection(str(item[0]), bool(item[1]), str(item[2])))
    return out
