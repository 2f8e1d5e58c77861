"""Control commands: built, signed and sent on a dedicated producer, with an audit trail."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from agents_bridge.clock import now_us
from agents_bridge.codec import Record, codec
from agents_bridge.command_gate import KINDS, TARGET_TYPES, target_key
from agents_bridge.settings import Settings
from agents_bridge.signing import CommandSigner
from agents_bridge.topics import AUDIT, CONTROL

__all__ = ["CommandPublisher", "SentCommand", "audit_record", "command_key", "new_command"]

_log = logging.getLogger(__name__)

_COMMAND = "trc.ControlCommand"
_AUDIT = "trc.AuditRecord"
_SENDER_HOPS = 3
"""Event-loop turns aiokafka's sender task takes to write a queued request (measured,
aiokafka 0.14: always 3). A caller that keeps the loop busy would hold the command back."""


def new_command(
    kind: str,
    target_type: str,
    target_id: str,
    reason: str,
    *,
    issuer: str,
    anomaly_id: str | None = None,
    expires_at: int | None = None,
) -> Record:
    """An unsigned ControlCommand with a fresh idempotency id; ValueError names bad input."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target_type {target_type!r} must be one of {', '.join(TARGET_TYPES)}")
    if target_type == "all":
        target_id = "*"
    elif not target_id:
        raise ValueError(f"a {target_type} command needs the {target_type} id")
    return {
        "command_id": uuid.uuid4().hex,
        "kind": kind,
        "target_type": target_type,
        "target_id": target_id,
        "reason": reason,
        "issuer": issuer,
        "issued_at": now_us(),
        "expires_at": expires_at,
        "anomaly_id": anomaly_id,
        "key_id": None,
        "signature": None,
    }


def command_key(command: Record) -> bytes:
    """Compaction key: the target, so the latest command per target survives."""
    return target_key(command["target_type"], command["target_id"]).encode()


def audit_record(entry: str, **fields: object) -> Record:
    """One line of the audit trail (``issued``, ``cleared``, ``ack``, ``rejected``)."""
    return {"record_id": uuid.uuid4().hex, "entry": entry, "at": now_us(), **fields}


class SentCommand(NamedTuple):
    """A signed command on its way to the broker."""

    command: Record
    acknowledged: asyncio.Future[Any]


class CommandPublisher:
    """Signs and sends commands on ``trc.control`` with its own producer and connection.

    The kill path never waits behind the event traffic of the worker's main
    producer. Each command and each tombstone is also written to ``trc.audit``.
    """

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._signer = CommandSigner(settings.signing_keys.get_secret_value())
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            acks="all",
            linger_ms=0,
            client_id=self._client_id,
            **self._settings.kafka_security(),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("CommandPublisher used before start()")
        return self._producer

    async def send(self, command: Record) -> SentCommand:
        """Sign and send ``command`` without waiting: :meth:`confirm` waits for the broker.

        Several commands sent before any is confirmed wait for their
        acknowledgements together, not one after the other.
        """
        signed = self._signer.sign(command)
        acknowledged = await self._started().send(
            CONTROL, codec.encode(_COMMAND, signed), key=command_key(signed)
        )
        # On the wire now, not after the caller's next await (unless a request to that
        # broker is in flight: aiokafka sends one at a time, the next on its answer).
        for _ in range(_SENDER_HOPS):
            await asyncio.sleep(0)
        return SentCommand(signed, acknowledged)

    async def confirm(self, sent: SentCommand) -> Record:
        """Wait for the broker's acknowledgement (raises if it refused), then audit it."""
        await sent.acknowledged
        signed = sent.command
        # Not waited for: the kill is out; the audit line must not delay what follows.
        await self.audit(
            audit_record(
                "issued",
                command_id=signed["command_id"],
                kind=signed["kind"],
                target_type=signed["target_type"],
                target_id=signed["target_id"],
                issuer=signed["issuer"],
                reason=signed["reason"],
            ),
            wait=False,
        )
        return signed

    async def publish(self, command: Record) -> Record:
        """Sign, send and wait for the broker's acknowledgement; returns what was sent."""
        return await self.confirm(await self.send(command))

    async def clear(self, target_type: str, target_id: str, *, issuer: str, reason: str) -> None:
        """Send a tombstone: nothing stands for the target any more."""
        key = target_key(target_type, target_id)
        await self._started().send_and_wait(CONTROL, None, key=key.encode())
        await self.audit(
            audit_record(
                "cleared",
                target_type=target_type,
                target_id=target_id,
                issuer=issuer,
                reason=reason,
            )
        )

    async def audit(self, record: Record, *, wait: bool = True) -> None:
        """Append ``record`` to the audit trail.

        With ``wait`` a failed send raises (the caller reports it); without, the
        record is only queued and any failure, queueing included, is logged: the
        caller's own work (a command already sent) does not fail for it.
        """
        try:
            sent = await self._started().send(
                AUDIT, codec.encode(_AUDIT, record), key=(record.get("command_id") or "").encode()
            )
        except Exception as exc:
            if wait:
                raise
            _log.error("an audit record was not written: %s", exc)
            return
        if wait:
            await sent
        else:
            sent.add_done_callback(_log_failure)


def _log_failure(sent: asyncio.Future[object]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        _log.error("an audit record was not written: %s", sent.exception())
