"""A child process that runs one agent and then hangs, to be killed with SIGKILL.

Usage: python -m tests.integration.silent_agent <bootstrap> <agent_id>
"""

from __future__ import annotations

import sys
import threading

from agents_bridge import Monitor, load_settings


def main() -> None:
    bootstrap, agent_id = sys.argv[1], sys.argv[2]
    monitor = Monitor(load_settings(bootstrap_servers=bootstrap, heartbeat_interval_s=0.3))
    monitor.start()
    run = monitor.run(agent_id).__enter__()
    run.step("think")
    monitor.flush()
    print("ready", flush=True)
    threading.Event().wait()  # busy forever; the heartbeat thread keeps beating


if __name__ == "__main__":
    main()
