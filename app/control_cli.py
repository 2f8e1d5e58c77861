"""``trc kill|pause|resume|rollback|clear|audit``: operator commands, like kubectl.

Commands go through the worker's authenticated command API (so the signing key
stays in the cluster); ``trc audit`` reads the audit trail from the broker.
Exit codes: 0 done, 1 refused or not found, 2 usage, 3 service or broker down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from agents_bridge.codec import Record
from agents_bridge.settings import Settings, load_settings
from agents_bridge.topics import AUDIT
from app.observe_cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, server_url, table

__all__ = ["add_commands", "audit_rows"]

_TARGETS = ("agent", "task", "chain")


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.all:
        return "all", "*"
    for name in _TARGETS:
        value = getattr(args, name)
        if value:
            return name, value
    raise SystemExit("error: name a target: --agent, --task, --chain or --all")


def _call(method: str, url: str, token: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}


def _command(args: argparse.Namespace) -> int:
    settings = load_settings()
    server = server_url(args)
    target_type, target_id = _target(args)
    token = settings.api_token.get_secret_value()
    try:
        if args.kind == "CLEAR":
            status, answer = _call(
                "DELETE", f"{server}/api/commands/{target_type}/{target_id}", token, None
            )
        else:
            body: dict[str, Any] = {
                "kind": args.kind,
                "target_type": target_type,
                "target_id": target_id,
                "reason": args.reason,
                "force": args.force,
            }
            if args.expires_in:
                body["expires_in_s"] = args.expires_in
            status, answer = _call("POST", f"{server}/api/commands", token, body)
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: the trc service at {server} does not answer ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    if status >= 400:
        print(f"error: {answer.get('error', answer)}", file=sys.stderr)
        return EXIT_UNREACHABLE if status == 503 else EXIT_NOT_FOUND
    if args.output == "json":
        print(json.dumps(answer))
    elif args.kind == "CLEAR":
        print(f"{target_type}/{target_id} cleared")
    else:
        print(f"{args.kind.lower()} {target_type}/{target_id} issued: {answer['command_id']}")
    return EXIT_OK


def audit_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Commands in issue order, each with its acknowledgements and rejections. Pure."""
    rows: dict[str, dict[str, Any]] = {}
    orphans: list[dict[str, Any]] = []
    for record in records:
        entry = record["entry"]
        if entry in ("issued", "cleared"):
            key = record.get("command_id") or record["record_id"]
            rows[key] = {
                "at": record["at"],
                "command_id": record.get("command_id"),
                "kind": record.get("kind") or "CLEAR",
                "target": f"{record.get('target_type')}/{record.get('target_id')}",
                "issuer": record.get("issuer", ""),
                "reason": record.get("reason", ""),
                "acks": [],
                "rejections": [],
            }
            continue
        row = rows.get(record.get("command_id") or "")
        outcome = {
            "agent_id": record.get("agent_id"),
            "task_id": record.get("task_id"),
            "status": record.get("status"),
            "latency_ms": record.get("latency_ms"),
        }
        if row is None:
            orphans.append({"at": record["at"], "command_id": record.get("command_id"), **outcome})
        else:
            row["acks" if entry == "ack" else "rejections"].append(outcome)
    for row in rows.values():
        latencies = [a["latency_ms"] for a in row["acks"] if a["latency_ms"] is not None]
        row["median_latency_ms"] = statistics.median(latencies) if latencies else None
    return list(rows.values()) + [dict(o, kind="?", target="(unknown command)") for o in orphans]


async def _read_audit(settings: Settings, timeout_s: float) -> list[Record]:
    from app.recordings import read_records

    records = await read_records(
        settings.bootstrap_servers,
        lambda topic: topic == AUDIT,
        "trc.AuditRecord",
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_security(),
    )
    return sorted(records, key=lambda r: r["at"])


def _audit(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    settings = load_settings()
    try:
        records = asyncio.run(_read_audit(settings, args.timeout))
    except (KafkaError, OSError, TimeoutError) as exc:
        print(
            f"error: the broker at {settings.bootstrap_servers} does not answer ({exc})",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    rows = audit_rows(records)
    if args.output == "json":
        print(json.dumps(rows))
        return EXIT_OK
    if not rows:
        print("no commands yet", file=sys.stderr)
        return EXIT_NOT_FOUND
    header = ("TIME", "COMMAND", "KIND", "TARGET", "ISSUER", "ACKS", "REJECTED", "LATENCY")
    table(
        header,
        (
            (
                datetime.fromtimestamp(row["at"] / 1e6, UTC).strftime("%H:%M:%S"),
                (row.get("command_id") or "-")[:12],
                row["kind"],
                row["target"],
                row.get("issuer", ""),
                len(row.get("acks", [])),
                len(row.get("rejections", [])),
                f"{row['median_latency_ms']:.1f} ms"
                if row.get("median_latency_ms") is not None
                else "-",
            )
            for row in rows
        ),
        sys.stdout,
    )
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the control subcommands on the ``trc`` parser's subparsers."""
    for kind, text in (
        ("kill", "halt at once; stays stopped until resumed or cleared"),
        ("pause", "block at the next step boundary until resumed"),
        ("resume", "lift a pause or a standing kill"),
        ("rollback", "halt, undo registered writes in reverse, escalate the rest"),
        ("clear", "remove what stands for a target (tombstone)"),
    ):
        parser = commands.add_parser(kind, help=text)
        target = parser.add_mutually_exclusive_group(required=True)
        for name in _TARGETS:
            target.add_argument(f"--{name}", metavar="ID", help=f"one {name}")
        target.add_argument("--all", action="store_true", help="every agent")
        parser.add_argument("--reason", default="operator request")
        parser.add_argument("--force", action="store_true", help="send to an unseen target")
        parser.add_argument("--expires-in", type=float, metavar="S", help="lapse after S seconds")
        parser.add_argument("--server", help="worker URL (default http://TRC_WEB_HOST:PORT)")
        parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
        parser.set_defaults(func=_command, kind=kind.upper())

    audit = commands.add_parser("audit", help="every command with its acks and latencies")
    audit.add_argument("-o", "--output", choices=("table", "json"), default="table")
    audit.add_argument("--timeout", type=float, default=10.0, help="broker timeout (s)")
    audit.set_defaults(func=_audit)
