"""Children that do not outlive their parent, including a parent that dies mid-fork."""

from __future__ import annotations

import os
import signal
import subprocess

from gateway.lifetimes import _set_parent_death_signal, die_with_parent


def test_child_of_a_parent_gone_before_prctl_ends_itself() -> None:
    # as if the parent had died between fork and prctl: the child's parent pid is not
    # the one recorded before the fork
    child = subprocess.Popen(
        ["sleep", "30"],
        preexec_fn=lambda: _set_parent_death_signal(signal.SIGKILL, os.getppid() + 1),
    )
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_child_of_a_living_parent_runs() -> None:
    child = subprocess.Popen(["sleep", "30"], preexec_fn=die_with_parent(signal.SIGKILL))
    try:
        # Popen returns once the child exec'd or died: it is running sleep
        with open(f"/proc/{child.pid}/cmdline", "rb") as cmdline:
            assert cmdline.read().split(b"\0")[0] == b"sleep"
    finally:
        child.kill()
        child.wait()
