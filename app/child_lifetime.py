"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

__all__ = ["die_with_parent", "terminate"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when its parent dies, even by SIGKILL.

    Linux only (prctl); elsewhere a no-op. Tied to the thread that started the
    child, so start children from a long-lived thread.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``grace_s``; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)
    return process.returncode
