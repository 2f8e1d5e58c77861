"""The settings of a benchmark's worker: its own app id, data directory and policy."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import free_port

__all__ = ["worker_env"]


def worker_env(
    bootstrap_servers: str, workdir: Path, name: str, *, long_tasks: bool = False
) -> dict[str, str]:
    """Environment for a worker named ``name`` (its consumer groups are its own).

    ``long_tasks``: a policy that never kills a task for its step count, for
    benchmarks that run one task of tens of thousands of steps.
    """
    app_id = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    env = {
        "TRC_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TRC_APP_ID": app_id,
        "TRC_WEB_PORT": str(free_port()),
        "TRC_DATA_DIR": str(workdir / f"data-{app_id}"),
    }
    if long_tasks:
        policy = workdir / "long-tasks-policy.toml"
        policy.write_text("[defaults.steps]\nwarn = 100000000\nkill = 200000000\n")
        env["TRC_POLICY_FILE"] = str(policy)
    return env
