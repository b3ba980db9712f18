"""A/B slots: where update targets are written, checked again, and switched to.

Layout (``slots_dir``; :func:`default_slots_dir` is ``<device dir>.slots``, beside the
device folder and not in it)::

    <component>/a/target     the target's bytes exactly as TUF verified them
    <component>/a/app/       app only: the archive, extracted (sensor.toml, code, models)
    <component>/b/...        the other slot

Which slot is active, which versions the slots hold and whether the active one is on
trial is the **slot record** (:class:`SlotRecord`), kept with the update state in one
sealed record of the device's protected storage (``update.slots``). Writing that record
is the switch: protected storage writes a temporary file, fsyncs it, renames it over the
old one and fsyncs the folder (``_fsutil.atomic_write``), so after a power cut the
device reads the old pointer or the new one, never a mix; and since the record is
authenticated and rollback-checked, nobody with the disk can point the device back at
the older slot.

Rules this module keeps:

- A write goes only to the *inactive* slot (:meth:`Slots.write` refuses the active one);
  the running version is never touched before the switch.
- Before the switch the slot is read again (:meth:`Slots.verify`): the stored target's
  length and every hash TUF gave (SHA-256 required), and for an app, that the extracted
  tree is exactly the archive's files (the same measurement, computed from each side).
- An app archive is checked entry by entry before anything is extracted from it, and
  extracted safely (:mod:`tinyward.update.archive`).
- Every file and folder written is fsynced before the switch, so a switched-to slot
  survives a power cut whole.

The slot folders must be traversable by the sandbox's user for an app to run from them,
and nobody but the core may change them: the sandbox treats the device folder (0700) as
secret, so the slots live beside it. :func:`check_safe_folder` refuses a slots folder
that is a symbolic link, group- or world-writable, owned by another user, or below a
folder someone else could change (a sticky one like ``/tmp`` excepted); whoever could
write there could swap a slot between its check and the switch, or change an app during
its trial. :meth:`Slots.lock` holds the folder's ``flock`` while an update is applied,
so two processes never write the slots at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from tinyward._fsutil import fsync_directory
from tinyward.errors import Misuse
from tinyward.trust.errors import MeasurementError
from tinyward.trust.measurement import measurement_digest
from tinyward.update.archive import (
    ArchiveLimits,
    archive_measurement,
    extract_app,
    make_dir,
    write_new,
)
from tinyward.update.errors import BadArchive, SlotCorrupt, TooLong, UnsafeSlots, UpdateBusy
from tinyward.update.meta import COMPONENTS, Version

SLOT_NAMES = ("a", "b")
TARGET_FILE = "target"
APP_FOLDER = "app"
_CHUNK = 64 * 1024


# ---- the slot record (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class SlotInfo:
    """What one slot holds: the version, the target's SHA-256 and the content's
    measurement (:mod:`tinyward.trust.measurement`), both hex."""

    version: Version
    sha256: str
    measurement: str

    def to_json(self) -> dict[str, str]:
        return {"version": str(self.version), "sha256": self.sha256,
                "measurement": self.measurement}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SlotInfo:
        return cls(Version.parse(value["version"]), str(value["sha256"]),
                   str(value["measurement"]))


@dataclass(frozen=True)
class ComponentSlots:
    """One component's two slots: which is active (None: never installed), what each
    holds, and whether the active one is on trial."""

    active: str | None = None
    slots: Mapping[str, SlotInfo] = field(default_factory=dict)
    trial: bool = False

    @property
    def inactive(self) -> str:
        return "b" if self.active == "a" else "a"

    @property
    def version(self) -> Version | None:
        """The active slot's version (None if nothing is installed)."""
        return self.slots[self.active].version if self.active is not None else None

    def without(self, slot: str) -> ComponentSlots:
        if slot == self.active:
            raise Misuse(f"slot {slot!r} is active; it is never emptied")
        return replace(self, slots={k: v for k, v in self.slots.items() if k != slot})

    def switched(self, slot: str, info: SlotInfo) -> ComponentSlots:
        """Active on ``slot`` (holding ``info``), on trial."""
        return ComponentSlots(slot, {**self.slots, slot: info}, trial=True)

    def confirmed(self) -> ComponentSlots:
        return replace(self, trial=False)

    def reverted(self) -> ComponentSlots:
        """Back to the other slot (None when there was nothing before), trial over."""
        back = self.inactive if self.inactive in self.slots else None
        return ComponentSlots(back, dict(self.slots), trial=False)


@dataclass(frozen=True)
class SlotRecord:
    """Every component's slots, and the update state machine's record, in one value (one
    atomic write switches a slot *and* records the trial)."""

    components: Mapping[str, ComponentSlots] = field(default_factory=dict)
    update: Mapping[str, Any] = field(default_factory=lambda: {"state": "idle"})
    #: the slots folder the versions were written to (absolute): another is refused
    root: str | None = None

    def get(self, component: str) -> ComponentSlots:
        return self.components.get(component, ComponentSlots())

    def with_component(self, component: str, slots: ComponentSlots) -> SlotRecord:
        return replace(self, components={**self.components, component: slots})

    def to_json(self) -> dict[str, Any]:
        return {"components": {name: {"active": c.active, "trial": c.trial,
                                      "slots": {k: v.to_json() for k, v in c.slots.items()}}
                               for name, c in self.components.items()},
                "update": dict(self.update),
                **({"root": self.root} if self.root is not None else {})}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SlotRecord:
        """Raises ValueError if malformed (it is sealed by the device: a bug, not input)."""
        try:
            components = {}
            for name, c in value["components"].items():
                if name not in COMPONENTS or c["active"] not in (None, *SLOT_NAMES):
                    raise ValueError(f"bad component entry {name!r}")
                slots = {k: SlotInfo.from_json(v) for k, v in c["slots"].items()
                         if k in SLOT_NAMES}
                if c["active"] is not None and c["active"] not in slots:
                    raise ValueError(f"{name}: the active slot holds nothing")
                components[name] = ComponentSlots(c["active"], slots, bool(c["trial"]))
            root = value.get("root")
            if root is not None and not isinstance(root, str):
                raise ValueError("root is not text")
            return cls(components, dict(value["update"]), root)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a slot record: {error!r}") from None


# ---- the slots on disk ------------------------------------------------------------------


class Slots:
    """The slot folders of one device (the record lives in protected storage, with the
    agent)."""

    def __init__(self, root: Path, limits: ArchiveLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or ArchiveLimits()

    def lock(self) -> int:
        """Create the slots folder if needed, check it (:func:`check_safe_folder`) and take
        its ``flock``; return the descriptor (close it to unlock).

        Raises:
            UnsafeSlots: others could change the folder.
            UpdateBusy: another process (or another agent) is applying an update here.
        """
        if not os.path.lexists(self.root):
            make_dir(self.root)
        check_safe_folder(self.root)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:  # swapped for a link since the check
            raise UnsafeSlots(f"cannot open the slots folder {self.root}: {error}") from None
        try:
            _check_own_folder(self.root, os.fstat(fd))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UpdateBusy(f"another process is applying an update in {self.root}") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def folder(self, component: str, slot: str) -> Path:
        if component not in COMPONENTS or slot not in SLOT_NAMES:
            raise Misuse(f"no slot {component}/{slot}")
        return self.root / component / slot

    def content(self, component: str, slot: str) -> Path:
        """What runs from the slot: the app folder, or the target file itself."""
        folder = self.folder(component, slot)
        return folder / APP_FOLDER if component == "app" else folder / TARGET_FILE

    def write(self, component: str, slots: ComponentSlots, target: Path, length: int) -> str:
        """Write ``target`` into the inactive slot of ``component``; return the slot name.

        The file is copied first (at most ``length`` bytes are accepted), then, for an
        app, extracted *from the copy*. Nothing is fsynced-and-trusted until
        :meth:`verify`. Raises :class:`TooLong`, :class:`BadArchive`, ``OSError``.
        """
        slot = slots.inactive
        if slot == slots.active:  # cannot happen; the running version is sacred
            raise Misuse("refusing to write the active slot")
        self.discard(component, slot)
        folder = self.folder(component, slot)
        make_dir(self.root)
        make_dir(self.root / component)
        make_dir(folder)
        _copy_exactly(Path(target), folder / TARGET_FILE, length)
        if component == "app":
            extract_app(folder / TARGET_FILE, folder / APP_FOLDER, self.limits)
        fsync_directory(folder)
        fsync_directory(folder.parent)
        return slot

    def verify(self, component: str, slot: str, version: Version, length: int,
               hashes: Mapping[str, str]) -> SlotInfo:
        """Read the slot again and check it against TUF's length and hashes; return what
        the slot record will say about it. Raises :class:`SlotCorrupt`."""
        folder = self.folder(component, slot)
        target = folder / TARGET_FILE
        sha256 = check_file(target, length, hashes)
        content = self.content(component, slot)
        try:
            measured = measurement_digest([content])
            if component == "app":
                expected = archive_measurement(target, self.limits)
                if not hmac.compare_digest(measured, expected):
                    raise SlotCorrupt(f"the app extracted in slot {component}/{slot} is not "
                                      "the archive TUF verified (a file was changed or added)")
        except (MeasurementError, BadArchive, OSError) as error:
            raise SlotCorrupt(f"slot {component}/{slot} cannot be read back: {error}") from None
        return SlotInfo(version, sha256, measured.hex())

    def measure(self, component: str, slot: str) -> str:
        """The content's measurement now (hex). Raises :class:`MeasurementError`."""
        return measurement_digest([self.content(component, slot)]).hex()

    def discard(self, component: str, slot: str) -> None:
        """Empty a slot (the caller never passes the active one)."""
        folder = self.folder(component, slot)
        if folder.exists() or folder.is_symlink():
            if folder.is_symlink() or not folder.is_dir():
                folder.unlink()
            else:
                shutil.rmtree(folder)
            fsync_directory(folder.parent)


def default_slots_dir(device_dir: Path) -> Path:
    """``<device dir>.slots``: beside the device folder (whose contents the app's sandbox
    may not read), on the same file system, so that an app can run from its slot."""
    device_dir = Path(os.path.abspath(device_dir))
    return device_dir.with_name(device_dir.name + ".slots")


def check_safe_folder(path: Path) -> None:
    """Refuse (:class:`UnsafeSlots`) a slots folder anyone but the core could change: a
    symbolic link, not a folder, owned by another user, group- or world-writable; or one
    below a folder (on its path as given or as resolved) that is not owned by root or
    this user, or that others may write without the sticky bit."""
    path = Path(os.path.abspath(path))
    try:
        info = os.lstat(path)
    except OSError as error:
        raise UnsafeSlots(f"the slots folder {path} cannot be checked: {error}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeSlots(f"the slots folder {path} is a symbolic link; give the folder itself")
    _check_own_folder(path, info)
    for parent in dict.fromkeys([*path.parents, *Path(os.path.realpath(path)).parents]):
        try:
            above = os.stat(parent)
        except OSError as error:
            raise UnsafeSlots(f"{parent}, above the slots, cannot be checked: {error}") from None
        if above.st_uid not in (0, os.geteuid()):
            raise UnsafeSlots(f"{parent}, above the slots folder, belongs to another user "
                              f"(uid {above.st_uid}), who could replace the slots")
        if above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
            raise UnsafeSlots(f"{parent}, above the slots folder, may be written by others "
                              f"(mode {stat.S_IMODE(above.st_mode):o}): they could replace "
                              "the slots")


def _check_own_folder(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeSlots(f"the slots folder {path} is not a folder")
    if info.st_uid != os.geteuid():
        raise UnsafeSlots(f"the slots folder {path} belongs to uid {info.st_uid}, not to "
                          "the core")
    if info.st_mode & 0o022:
        raise UnsafeSlots(f"the slots folder {path} may be written by others (mode "
                          f"{stat.S_IMODE(info.st_mode):o}); it must be 0755 or stricter")


def check_file(path: Path, length: int, hashes: Mapping[str, str]) -> str:
    """Check a file's length and hashes (TUF's ``length`` and ``hashes``); return its
    SHA-256 (hex). Fail closed: a SHA-256 is required; every other algorithm hashlib
    guarantees is checked too, and an unknown one is refused. Raises :class:`SlotCorrupt`.
    """
    if "sha256" not in hashes:
        raise SlotCorrupt("the target's metadata has no sha256 hash; refusing to trust it")
    unknown = set(hashes) - hashlib.algorithms_guaranteed
    if unknown:
        raise SlotCorrupt(f"unknown hash algorithms in the target's metadata: {sorted(unknown)}")
    digests = {name: hashlib.new(name) for name in hashes}
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                size += len(chunk)
                if size > length:
                    break
                for digest in digests.values():
                    digest.update(chunk)
    except OSError as error:
        raise SlotCorrupt(f"cannot read {path}: {error.strerror}") from None
    if size != length:
        raise SlotCorrupt(f"{path} is {'longer' if size > length else 'shorter'} than the "
                          f"{length} bytes TUF verified")
    for name, digest in digests.items():
        if not hmac.compare_digest(digest.hexdigest(), str(hashes[name]).lower()):
            raise SlotCorrupt(f"{path} does not match its {name} hash (corrupted in the slot)")
    return digests["sha256"].hexdigest()


# ---- copying a target ------------------------------------------------------------------


def _copy_exactly(source: Path, dest: Path, length: int) -> None:
    """Copy at most ``length`` bytes; a longer or shorter source is :class:`TooLong`."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TooLong(f"{source} is not a regular file")
        write_new(dest, _Limited(src, length), length)
        if src.read(1):
            raise TooLong(f"the target is longer than the {length} bytes its metadata says")


class _Limited:
    """A stream that gives at most ``limit`` bytes and calls a short source ``TooLong``."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.left = stream, limit

    def read(self, n: int, /) -> bytes:
        chunk = self.stream.read(min(n, self.left))
        self.left -= len(chunk)
        if not chunk and self.left:
            raise TooLong(f"the target is shorter than its metadata says ({self.left} bytes "
                          "missing)")
        return chunk
