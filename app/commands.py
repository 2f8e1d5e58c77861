"""Control commands: built from policy decisions, sent on a dedicated producer."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from agents_bridge.clock import now_us
from agents_bridge.codec import Record, codec
from agents_bridge.topics import CONTROL

__all__ = ["CommandPublisher", "command_key", "kill_command"]

_COMMAND = "trc.ControlCommand"


def kill_command(
    target_type: str, target_id: str, reason: str, *, issuer: str, anomaly_id: str | None = None
) -> Record:
    """A KILL ControlCommand with a fresh idempotency id."""
    return {
        "command_id": uuid.uuid4().hex,
        "kind": "KILL",
        "target_type": target_type,
        "target_id": target_id,
        "reason": reason,
        "issuer": issuer,
        "issued_at": now_us(),
        "expires_at": None,
        "anomaly_id": anomaly_id,
    }


def command_key(command: Record) -> bytes:
    """Compaction key: the target, so the latest command per target survives."""
    return f"{command['target_type']}:{command['target_id']}".encode()


class CommandPublisher:
    """Sends commands on ``trc.control`` with its own producer and connection.

    The kill path never waits behind the event traffic of the worker's main producer.
    """

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            acks="all",
            linger_ms=0,
            client_id=self._client_id,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, command: Record) -> None:
        """Send and wait for the broker's acknowledgement."""
        if self._producer is None:
            raise RuntimeError("CommandPublisher.publish() before start()")
        await self._producer.send_and_wait(
            CONTROL, codec.encode(_COMMAND, command), key=command_key(command)
        )
