"""Integrations without a broker: plain-Python decorators, packaging, missing extras.

:class:`RecordingMonitor` is what the per-framework unit tests use: real
:class:`AgentRun` objects wired to a list instead of the producer.
"""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agents_bridge import AgentKilled, AgentRun, propagation
from agents_bridge.event_frame import FrameExpander
from agents_bridge.integrations import plain
from agents_bridge.integrations._support import OwnedRun, agent_id_from, summarize
from agents_bridge.pricing import PriceTable
from agents_bridge.run import RunSettings
from agents_bridge.validation import InputGuard
from tests.unit.events import SIX_STAGES

ROOT = Path(__file__).resolve().parents[2]


class RecordingMonitor:
    """Opens runs the way a monitor does (parent from context, spawn events), into a list."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        expander = FrameExpander()
        self.runs: list[AgentRun] = []
        self.shared = RunSettings(
            emit=lambda frame: self.events.append(expander.record(frame)),
            on_close=lambda run: None,
            checkpoint=lambda run, command: None,
            guard=InputGuard(True, 2000, None),  # strict: bad input from a mapping fails
            prices=PriceTable.load(None, {"gpt-4o": (2.5, 10.0)}),
            producer_id="p1",
            sequence=itertools.count(1),
        )

    def run(
        self,
        agent_id: str,
        *,
        agent_type: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        parent_agent_id: str | None = None,
        parent_task_id: str | None = None,
        carrier: Mapping[str, str | bytes] | None = None,
    ) -> AgentRun:
        parent = propagation.current()
        task_id = task_id or uuid.uuid4().hex
        run = AgentRun(
            self.shared,
            agent_id=agent_id,
            agent_type=agent_type,
            task_id=task_id,
            correlation_id=correlation_id or (parent.correlation_id if parent else task_id),
            parent_agent_id=parent_agent_id or (parent.agent_id if parent else None),
            parent_task_id=parent_task_id or (parent.task_id if parent else None),
        )
        spawner = next((r for r in self.runs if parent and r.task_id == parent.task_id), None)
        if spawner is not None:
            spawner._event("subagent_spawn", attributes={"child_agent_id": agent_id})
        self.runs.append(run)
        return run

    def of(self, event_type: str, agent_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event_type"] == event_type and (agent_id is None or e["agent_id"] == agent_id)
        ]

    def types(self, agent_id: str | None = None) -> list[str]:
        return [e["event_type"] for e in self.events if agent_id in (None, e["agent_id"])]

    def kill(self, run: AgentRun) -> dict[str, Any]:
        command = kill_command(run.task_id)
        run.apply(command)
        return command


def kill_command(task_id: str) -> dict[str, Any]:
    return {
        "command_id": uuid.uuid4().hex,
        "kind": "KILL",
        "target_type": "task",
        "target_id": task_id,
        "reason": "test kill",
        "issued_at": 1,
    }


def stages(monitor: RecordingMonitor, agent_id: str | None = None) -> list[tuple[str, str]]:
    return [(e["tool_name"], e["tool_stage"]) for e in monitor.of("tool_call", agent_id)]


# -- plain Python ----------------------------------------------------------------------


def test_plain_sync_agent_records_steps_and_tools_at_six_stages() -> None:
    monitor = RecordingMonitor()

    @plain.tool
    def search(query: str, limit: int = 3) -> str:
        return f"{limit} hits for {query}"

    @plain.step("plan")
    def plan() -> str:
        return "search first"

    @plain.agent(monitor, "planner")
    def planner() -> str:
        plan()
        with plain.step("act") as act:
            act.output = search("kafka")
        return "done"

    assert planner() == "done"
    assert monitor.types() == [
        "task_start",
        "step_start",
        "step_end",
        "step_start",
        *["tool_call"] * 6,
        "step_end",
        "task_end",
    ]
    assert [e["action"] for e in monitor.of("step_start")] == ["plan", "act"]
    assert [e["output_summary"] for e in monitor.of("step_end")] == [
        "search first",
        "3 hits for kafka",
    ]
    assert stages(monitor) == [("search", s) for s in SIX_STAGES]
    invoked = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "invoked")
    assert invoked["tool_args_hash"]  # bound to parameter names, defaults applied


def test_plain_tool_arguments_are_bound_to_parameter_names() -> None:
    """Positional and keyword calls with the same values are the same arguments."""
    monitor = RecordingMonitor()

    @plain.tool(name="kb_search")
    def search(query: str, limit: int = 5) -> str:
        return query

    @plain.agent(monitor, "a")
    def agent() -> None:
        search("refund")
        search(query="refund", limit=5)

    agent()
    hashes = {e["tool_args_hash"] for e in monitor.of("tool_call") if e["tool_stage"] == "invoked"}
    assert len(hashes) == 1
    assert {e["tool_name"] for e in monitor.of("tool_call")} == {"kb_search"}


def test_plain_step_error_is_recorded_and_the_step_ends_in_error() -> None:
    monitor = RecordingMonitor()

    @plain.agent(monitor, "a")
    def agent() -> None:
        with plain.step("parse"):
            raise ValueError("bad json")

    with pytest.raises(ValueError):
        agent()
    assert [e["error_type"] for e in monitor.of("error")] == ["ValueError"]
    assert [e["status"] for e in monitor.of("step_end")] == ["error"]
    assert monitor.of("task_end")[0]["status"] == "error"


async def test_plain_async_agent_is_killed_at_the_next_tool_and_subagents_join_the_chain() -> None:
    monitor = RecordingMonitor()
    calls: list[str] = []

    @plain.tool
    async def fetch(url: str) -> str:
        calls.append(url)
        return url

    @plain.agent(monitor, "child")
    async def child() -> str:
        return await fetch("b")

    @plain.agent(monitor, "parent")
    async def parent() -> None:
        await child()
        async with plain.step("decide"):
            await fetch("a")
        monitor.kill(plain.current_run())
        await fetch("never")

    with pytest.raises(AgentKilled):
        await parent()
    assert calls == ["b", "a"]
    parent_task = monitor.of("task_start", "parent")[0]["task_id"]
    child_events = [e for e in monitor.events if e["agent_id"] == "child"]
    assert {e["parent_task_id"] for e in child_events} == {parent_task}
    assert {e["correlation_id"] for e in child_events} == {parent_task}
    assert monitor.of("subagent_spawn", "parent")
    assert monitor.of("task_end", "parent")[0]["status"] == "killed"


def test_current_run_outside_an_agent_says_what_to_do() -> None:
    with pytest.raises(LookupError, match=r"@agent\(monitor"):
        plain.current_run()


def test_use_run_makes_an_open_run_the_current_one() -> None:
    monitor = RecordingMonitor()

    @plain.tool
    def ping() -> str:
        return "pong"

    with monitor.run("manual") as run, plain.use_run(run):
        ping()
    assert [s for _, s in stages(monitor)] == SIX_STAGES


# -- shared pieces ----------------------------------------------------------------------


def test_agent_ids_from_framework_names_are_topic_safe() -> None:
    assert agent_id_from("Support Bot") == "Support-Bot"
    assert agent_id_from("über/agent") == "ber-agent"
    assert agent_id_from("!!!") == "agent"


def test_summaries_are_bounded() -> None:
    assert summarize(None) is None
    assert summarize("short") == "short"
    long = summarize("x" * 500)
    assert long is not None and len(long) == 200 and long.endswith("…")


def test_an_owned_subagent_run_leaves_the_callers_context_alone() -> None:
    monitor = RecordingMonitor()
    with monitor.run("parent") as parent:
        before = propagation.current()
        child = OwnedRun(monitor, "child", parent=parent)
        assert propagation.current() == before
        assert child.run.parent_task_id == parent.task_id
        assert child.run.correlation_id == parent.correlation_id
        child.finish()
        child.finish()  # idempotent
        assert propagation.current() == before
    assert [e["status"] for e in monitor.of("task_end", "child")] == ["ok"]


# -- packaging -------------------------------------------------------------------------


def test_extras_exist_and_the_core_install_does_not_pull_frameworks_in() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    frameworks = ("langchain", "langgraph", "openai-agents", "opentelemetry")
    assert not [d for d in project["dependencies"] if d.startswith(frameworks)]
    assert {d.split("==")[0] for d in extras["langchain"]} == {"langchain-core", "langgraph"}
    assert {d.split("==")[0] for d in extras["openai-agents"]} == {"openai-agents"}
    assert {d.split("==")[0] for d in extras["otel"]} == {
        "opentelemetry-api",
        "opentelemetry-sdk",
    }
    assert all("==" in d for name in ("langchain", "openai-agents", "otel") for d in extras[name])


def test_the_bridge_and_plain_integration_import_no_framework() -> None:
    code = (
        "import sys, agents_bridge, agents_bridge.integrations, agents_bridge.integrations.plain\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'langgraph', 'agents', 'opentelemetry', 'openai')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize(
    ("module", "framework", "command"),
    [
        ("langchain", "langchain_core", "pip install 'total-runtime-control[langchain]'"),
        ("openai_agents", "agents", "pip install 'total-runtime-control[openai-agents]'"),
        ("scripted_model", "agents", "pip install 'total-runtime-control[openai-agents]'"),
        ("otel", "opentelemetry", "pip install 'total-runtime-control[otel]'"),
    ],
)
def test_a_missing_extra_names_the_pip_command(
    module: str, framework: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == framework or m.startswith(framework + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, framework, None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, f"agents_bridge.integrations.{module}", raising=False)
    with pytest.raises(ImportError) as missing:
        importlib.import_module(f"agents_bridge.integrations.{module}")
    assert command in str(missing.value)
    assert f"agents_bridge.integrations.{module}" in str(missing.value)
