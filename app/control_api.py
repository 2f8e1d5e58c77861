"""The command API on the worker's web server: issue, clear and audit control commands.

==================================  ===========================================
``POST /api/commands``              issue: ``{"kind", "target_type",
                                    "target_id", "reason", "expires_in_s"?,
                                    "force"?}`` -> 202 ``{"command_id"}``
``DELETE /api/commands/{type}/{id}``  clear what stands for a target (tombstone)
``GET /api/targets/{type}/{id}``    for peer workers: does this one hold it
==================================  ===========================================

Every call needs ``Authorization: Bearer <TRC_API_TOKEN>``. A target nobody has
seen is refused with 404 unless ``force`` is set: a typo must not read as a
kill that landed. Tasks and chains live on the worker owning their chain's
partition, so a worker that does not hold one asks its peers. Refusals are
counted in ``trc_command_rejections_total``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from agents_bridge.clock import now_us
from agents_bridge.command_gate import TARGET_TYPES
from agents_bridge.settings import Settings
from app.commands import CommandPublisher, new_command
from app.metrics import Metrics

__all__ = ["ControlApi", "KnownTarget"]

_log = logging.getLogger(__name__)

KnownTarget = Callable[[str, str], Awaitable[bool]]
"""(target type, target id) -> whether this deployment has seen it."""


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class ControlApi:
    """Authenticated command issuing for operators, the CLI and the dashboard."""

    def __init__(
        self,
        settings: Settings,
        commands: CommandPublisher,
        metrics: Metrics,
        known_target: KnownTarget,
        known_here: Callable[[str, str], bool],
    ) -> None:
        self._token = settings.api_token.get_secret_value().encode()
        self._commands = commands
        self._metrics = metrics
        self._known_target = known_target
        self._known_here = known_here
        self._issuer = settings.app_id

    def _authorize(self, request: Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._token):
            raise _Refused(401, "unauthorized", "a valid 'Authorization: Bearer <token>' is needed")
        return f"{self._issuer}/api"

    async def issue(self, request: Request) -> dict[str, Any]:
        """Validate, sign and publish one command; raises _Refused with the reason."""
        issuer = self._authorize(request)
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise _Refused(400, "bad_request", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Refused(400, "bad_request", "the body must be a JSON object")
        target_type = str(body.get("target_type", ""))
        target_id = str(body.get("target_id") or ("*" if target_type == "all" else ""))
        expires_in_s = body.get("expires_in_s")
        try:
            command = new_command(
                str(body.get("kind", "")).upper(),
                target_type,
                target_id,
                str(body.get("reason") or "operator request"),
                issuer=f"{issuer}/{body.get('operator') or 'operator'}",
                expires_at=now_us() + int(float(expires_in_s) * 1e6) if expires_in_s else None,
            )
        except ValueError as exc:
            raise _Refused(400, "bad_request", str(exc)) from None
        if (
            target_type != "all"
            and not body.get("force")
            and not await self._known_target(target_type, target_id)
        ):
            raise _Refused(
                404,
                "unknown_target",
                f"unknown {target_type} {target_id!r}: no events from it reached this "
                "deployment (send with force to issue anyway)",
            )
        try:
            signed = await self._commands.publish(command)
        except KafkaError as exc:
            raise _Refused(503, "broker_unavailable", f"the broker did not answer: {exc}") from None
        self._metrics.commands_issued.labels(kind=signed["kind"]).inc()
        _log.warning(
            "%s %s %s issued by %s: %s",
            signed["kind"],
            target_type,
            signed["target_id"],
            signed["issuer"],
            signed["reason"],
        )
        return {
            "command_id": signed["command_id"],
            "kind": signed["kind"],
            "target_type": signed["target_type"],
            "target_id": signed["target_id"],
            "issued_at": signed["issued_at"],
        }

    async def clear(self, request: Request, target_type: str, target_id: str) -> dict[str, Any]:
        issuer = self._authorize(request)
        if target_type not in TARGET_TYPES:
            raise _Refused(
                400, "bad_request", f"target_type must be one of {', '.join(TARGET_TYPES)}"
            )
        try:
            await self._commands.clear(
                target_type, target_id, issuer=issuer, reason="cleared by operator"
            )
        except KafkaError as exc:
            raise _Refused(503, "broker_unavailable", f"the broker did not answer: {exc}") from None
        return {"cleared": f"{target_type}:{target_id}"}

    def register(self, app: faust.App) -> None:
        """Add the command routes to ``app``'s web server."""
        api = self

        async def answer(view: View, work: Awaitable[dict[str, Any]], status: int) -> Response:
            try:
                return view.json(await work, status=status)
            except _Refused as refused:
                api._metrics.command_rejections.labels(reason=refused.reason).inc()
                return view.json(
                    {"error": str(refused), "reason": refused.reason}, status=refused.status
                )

        class CommandsView(View):
            async def post(self, request: Request) -> Response:
                return await answer(self, api.issue(request), 202)

        class TargetView(View):
            async def delete(self, request: Request, target_type: str, target_id: str) -> Response:
                return await answer(self, api.clear(request, target_type, target_id), 200)

        class KnownView(View):
            """For peers: whether this worker's partitions hold a task or chain."""

            async def get(self, request: Request, target_type: str, target_id: str) -> Response:
                return self.json({"known": api._known_here(target_type, target_id)})

        app.page("/api/commands")(CommandsView)
        app.page("/api/targets/{target_type}/{target_id}")(KnownView)
        app.page("/api/commands/{target_type}/{target_id}")(TargetView)
