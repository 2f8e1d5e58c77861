"""A detection worker in a child process, started and stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from app.child_lifetime import die_with_parent, terminate

__all__ = ["WorkerProcess", "WorkerStartError", "cpu_seconds"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerStartError(RuntimeError):
    """The worker exited or did not become ready in time; the message has its log tail."""


class WorkerProcess:
    """Runs ``trc worker`` with ``TRC_*`` settings from ``env`` and waits for /readyz.

    ``module``: what ``python -m`` runs instead (a benchmark's baseline app).
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        module: tuple[str, ...] = ("app.cli", "worker"),
    ) -> None:
        self.env = env
        self.log_path = log_path
        self._command = [sys.executable, "-m", *module]
        self.web_port = int(env.get("TRC_WEB_PORT", "6066"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self._process = subprocess.Popen(
            self._command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            preexec_fn=die_with_parent,
        )
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise WorkerStartError(
                    f"worker exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=1) as response:
                    if json.load(response).get("ready"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or answering 503 while it joins the group
            time.sleep(0.2)
        raise WorkerStartError(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        """The value of one unlabelled sample on ``/metrics`` (0 before it is exported)."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
        return 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM for a clean leave of the group; SIGKILL after ``timeout``."""
        process, self._process = self._process, None
        return terminate(process, timeout) if process is not None else None

    def kill(self) -> None:
        """SIGKILL: the crash case, with no clean leave."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
