"""Baselines: p95 of normal runs per agent type becomes policy thresholds."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

from app.baseline import percentile, profile_tasks, thresholds
from app.policy.config import parse_policy


def _task(
    agent_type: str, steps: int, tokens_per_step: int, status: str = "ok", seconds: float = 10.0
) -> list[dict[str, Any]]:
    task_id = uuid.uuid4().hex
    base = {
        "agent_id": "a",
        "agent_type": agent_type,
        "task_id": task_id,
        "correlation_id": task_id,
    }
    events = [
        {**base, "event_id": uuid.uuid4().hex, "event_type": "task_start", "emitted_at": 1_000_000}
    ]
    for step in range(1, steps + 1):
        at = 1_000_000 + int(step / steps * seconds * 1_000_000)
        events.append(
            {
                **base,
                "event_id": uuid.uuid4().hex,
                "event_type": "step_start",
                "step_index": step,
                "emitted_at": at,
            }
        )
        events.append(
            {
                **base,
                "event_id": uuid.uuid4().hex,
                "event_type": "llm_call",
                "step_index": step,
                "prompt_tokens": tokens_per_step,
                "completion_tokens": 0,
                "cost_usd": 0.001,
                "emitted_at": at,
            }
        )
    events.append(
        {
            **base,
            "event_id": uuid.uuid4().hex,
            "event_type": "task_end",
            "status": status,
            "emitted_at": 1_000_000 + int(seconds * 1_000_000),
        }
    )
    return events


def _fleet() -> list[dict[str, Any]]:
    events = []
    for i in range(40):  # normal runs need 8-12 steps
        events += _task("support-bot", 8 + i % 5, 100)
    events += _task("support-bot", 90, 100, status="killed")  # a runaway: not normal
    for _ in range(5):
        events += _task("rare-bot", 3, 50)
    return events


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(range(1, 101)), 95) == 95


def test_thresholds_follow_the_p95_of_normal_runs_only() -> None:
    overrides = thresholds(profile_tasks(_fleet()), headroom=1.5, min_tasks=20)
    assert set(overrides) == {"support-bot"}, "rare-bot has too few runs for a threshold"
    steps = overrides["support-bot"]["steps"]
    assert steps["warn"] == 12  # p95 of 8..12; the 90-step killed run is ignored
    assert steps["kill"] == 18
    assert overrides["support-bot"]["budget"]["task_tokens"] == 1800
    assert overrides["support-bot"]["duration"]["max_s"] == 15.0
    parse_policy({"agent_types": overrides})  # the result is a valid policy


def test_trc_baseline_writes_a_policy_file_from_an_export(tmp_path: Path) -> None:
    export = tmp_path / "events.jsonl"
    export.write_text("\n".join(json.dumps(e) for e in _fleet()))
    out = tmp_path / "policy.toml"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "baseline", "--file", str(export), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "thresholds for 1 agent type(s)" in done.stderr
    assert "profiling" in done.stderr  # the progress bar
    policy = tomllib.loads(out.read_text())
    assert policy["agent_types"]["support-bot"]["steps"] == {"warn": 12, "kill": 18}
