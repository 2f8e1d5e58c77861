"""One link of a multi-process agent chain: run, then start the next link as a child.

Usage: python -m tests.integration.chain_agent <bootstrap> <suffix> <carrier json> <role> [role...]
"""

from __future__ import annotations

import json
import subprocess
import sys

from agents_bridge import Monitor, load_settings


def main() -> None:
    bootstrap, suffix, carrier, role, *rest = sys.argv[1:]
    with Monitor(load_settings(bootstrap_servers=bootstrap, control_attach_timeout_s=0)) as monitor:
        with monitor.run(f"{role}-{suffix}", carrier=json.loads(carrier) or None) as run:
            run.step(role)
            if rest:  # hand the chain on, through the carrier, to another process
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "tests.integration.chain_agent",
                        bootstrap,
                        suffix,
                        json.dumps(run.carrier()),
                        *rest,
                    ],
                    check=True,
                    timeout=60,
                )
        assert monitor.flush(10)


if __name__ == "__main__":
    main()
