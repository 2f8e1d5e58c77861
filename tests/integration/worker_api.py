"""Talking to a worker's HTTP API from tests: one call, and a command issued once it can be."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from agents_bridge.settings import DEV_API_TOKEN
from app.worker_process import WorkerProcess


def call(
    worker: WorkerProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = DEV_API_TOKEN,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON answer); error statuses are answers, not exceptions."""
    request = urllib.request.Request(
        worker.url(path),
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def get(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    """A read of the operator API (no token: reads are open)."""
    return call(worker, "GET", path, token=None)


def progress(worker: WorkerProcess) -> str:
    """What the worker has read and processed, for failure messages."""
    names = ("trc_events_ingested_total", "trc_events_processed_total", "trc_agent_topics")
    return ", ".join(f"{name} {worker.metric(name):.0f}" for name in names)


async def issue(
    worker: WorkerProcess, kind: str, target_type: str, target_id: str, **extra: Any
) -> dict[str, Any]:
    """Issue through the API once the worker has seen the target (it refuses unknown ones)."""
    body = {"kind": kind, "target_type": target_type, "target_id": target_id, **extra}
    deadline = time.monotonic() + 20
    while True:
        status, answer = await asyncio.to_thread(call, worker, "POST", "/api/commands", body)
        if status == 202:
            return dict(answer)
        if status != 404 or time.monotonic() > deadline:
            raise AssertionError(
                f"{kind} {target_type} {target_id} refused: {status} {answer}; "
                f"worker: {await asyncio.to_thread(progress, worker)}"
            )
        await asyncio.sleep(0.1)  # the worker has not seen the target's first event yet
