"""The examples/ agents run as documented (``python examples/x.py``) against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = ["langgraph_agent.py", "openai_agents_agent.py", "otel_agent.py", "plain_agent.py"]


def run_example(
    script: str, bootstrap_servers: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TRC_BOOTSTRAP_SERVERS=bootstrap_servers)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_looping_example_is_killed_by_the_engine(
    script: str, bootstrap_servers: str, worker: WorkerProcess
) -> None:
    done = run_example(script, bootstrap_servers, "--loop")
    assert done.returncode == 0, f"{script} --loop:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "killed after 3" in done.stdout, done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_healthy_example_answers(
    script: str, bootstrap_servers: str, worker: WorkerProcess
) -> None:
    done = run_example(script, bootstrap_servers)
    assert done.returncode == 0, f"{script}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "killed" not in done.stdout, done.stdout
