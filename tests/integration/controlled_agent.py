"""An agent process that works step by step until a command halts it.

Usage: python -m tests.integration.controlled_agent <bootstrap> <agent_id> <carrier json>
Prints ``started <task_id>`` once its first step is out, then ``halted <command_id>``.
"""

from __future__ import annotations

import json
import sys
import time

from agents_bridge import AgentKilled, Monitor, load_settings


def main() -> None:
    bootstrap, agent_id, carrier = sys.argv[1:]
    with Monitor(load_settings(bootstrap_servers=bootstrap)) as monitor:
        try:
            carrier_headers = json.loads(carrier) or None
            # An agent type the test worker's policy lets take hundreds of steps.
            with monitor.run(agent_id, agent_type="long-runner", carrier=carrier_headers) as run:
                for step in range(600):
                    run.step(f"work {step}")
                    if step == 0:
                        assert monitor.flush(10)
                        print(f"started {run.task_id}", flush=True)
                    time.sleep(0.05)  # the agent's own work between steps
        except AgentKilled as exc:
            print(f"halted {exc.command['command_id']}", flush=True)
        assert monitor.flush(10)


if __name__ == "__main__":
    main()
