"""One running instance per device folder (trust/instance.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinyward.trust.instance import DeviceBusy, InstanceLock, running_instance

HOLDER = textwrap.dedent(
    """
    import sys, time
    from tinyward.trust.instance import InstanceLock
    with InstanceLock(sys.argv[1], "air-gapped") as lock:
        lock.record(protections=("seccomp", "landlock"))
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_lock_held_by_another_process_refuses_and_reports_its_record(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        running = running_instance(tmp_path)
        assert running is not None and running.pid == holder.pid
        assert running.mode == "air-gapped" and running.protections == ("seccomp", "landlock")
        with pytest.raises(DeviceBusy), InstanceLock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.wait(timeout=30)
    assert running_instance(tmp_path) is None  # the stale record is not believed
    with InstanceLock(tmp_path):
        pass


def test_a_second_holder_in_the_same_process_is_refused_unless_lent(tmp_path: Path) -> None:
    with InstanceLock(tmp_path), pytest.raises(DeviceBusy), InstanceLock(tmp_path):
        pass
    with InstanceLock(tmp_path, "air-gapped", lend=True) as outer:
        with InstanceLock(tmp_path) as inner:
            inner.record(protections=("seccomp",))
        assert outer.protections == ("seccomp",)
        running = running_instance(tmp_path)
        assert running is not None and running.mode == "air-gapped"
    assert running_instance(tmp_path) is None


def test_no_lock_file_means_not_running(tmp_path: Path) -> None:
    assert running_instance(tmp_path) is None
