"""A real Prometheus scrapes a real worker while a looping agent is killed.

Prometheus (Debian's ``prometheus`` package) runs on a free loopback port with
the project's own alert rules (deploy/prometheus/alerts.yml), scrapes a worker
of its own every second, and the test reads the outcome through Prometheus's
HTTP API: the kill counter, the detection-latency histogram, the firing alert.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from agents_bridge import AgentKilled, Monitor, load_settings
from app.child_lifetime import die_with_parent, terminate
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS, free_port
from tests.integration.conftest import unique, worker_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="the prometheus server is not on PATH (apt-get install prometheus)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "deploy/prometheus/alerts.yml"
T = TypeVar("T")


class PrometheusServer:
    """``prometheus`` on 127.0.0.1 with a config written for this test; stopped by PID."""

    def __init__(self, config: dict[str, Any], workdir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = log_path
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout_s: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or 503 while it loads
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, 10.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer; fails on an API error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url(f"/api/v1/{path}{query}"), timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


async def poll(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, within_s: float = 30.0
) -> T:
    """``probe()`` (in a thread) until ``done`` holds; fails naming ``what`` and the last answer."""
    deadline = time.monotonic() + within_s
    seen: T = await asyncio.to_thread(probe)
    while not done(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {within_s:.0f} s; last answer: {seen!r}")
        await asyncio.sleep(0.25)
        seen = await asyncio.to_thread(probe)
    return seen


@pytest.fixture(scope="module")
def scraped_worker(quiet_broker: str) -> Iterator[WorkerProcess]:
    """A worker of this module only: its counters start at zero."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = worker_env(quiet_broker)
    with WorkerProcess(env, ARTIFACTS / f"worker-{env['TRC_APP_ID']}.log") as process:
        yield process


@pytest.fixture
def prometheus(scraped_worker: WorkerProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [
            {
                # The job name the alert rules (TrcWorkerDown) and the dashboard expect.
                "job_name": "trc-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{scraped_worker.web_port}"]}],
            }
        ],
    }
    server = PrometheusServer(config, tmp_path, ARTIFACTS / f"prometheus-{tmp_path.name}.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


EQUIVALENT_ARGS: list[Any] = [
    {"query": "refund policy", "limit": 5},
    '{ "limit": 5,   "query": "refund policy" }',
    {"limit": 5, "query": "refund policy"},
]


async def _run_looping_agent(monitor: Monitor) -> AgentKilled:
    calls: list[int] = []

    async def looping_agent() -> None:
        async with monitor.run(unique("prom-looper")) as run:
            for args in EQUIVALENT_ARGS * 3:
                run.step("search")
                run.tool_call("kb_search", args)
                calls.append(1)
                if len(calls) == 3:
                    await asyncio.Event().wait()  # a model call that never returns

    try:
        await asyncio.wait_for(looping_agent(), timeout=30)
    except AgentKilled as killed:
        assert len(calls) == 3, "the kill must land before the 4th equivalent call"
        return killed
    pytest.fail("the looping agent was never killed")


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


async def test_prometheus_scrapes_the_kill_and_fires_the_kill_alert(
    prometheus: PrometheusServer, scraped_worker: WorkerProcess, quiet_broker: str
) -> None:
    target = f"127.0.0.1:{scraped_worker.web_port}"

    # Prometheus loaded every rule of the project's file, and scrapes the worker.
    groups = prometheus.api("rules")["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    shipped = {
        r["alert"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]
    }
    assert loaded == shipped, f"rules loaded {sorted(loaded)}, file has {sorted(shipped)}"
    await poll(
        lambda: prometheus.query(f'up{{job="trc-worker",instance="{target}"}}'),
        lambda result: bool(result) and _value(result[0]) == 1,
        "the worker scraped successfully (up == 1)",
    )
    # Metrics of the worker are in Prometheus before anything happened ...
    before = await poll(
        lambda: prometheus.query(f'trc_detection_latency_seconds_count{{instance="{target}"}}'),
        bool,
        "the detection latency histogram before the kill",
    )
    assert _value(before[0]) == 0
    # ... and no kill yet: the alert below can only come from this test's kill.
    kills = prometheus.query(f'trc_commands_issued_total{{kind="KILL",instance="{target}"}}')
    assert [_value(k) for k in kills] == [0], "the counter exists from the start, at 0"
    assert prometheus.alerts("TrcAgentKilled") == []

    with Monitor(load_settings(bootstrap_servers=quiet_broker)) as monitor:
        killed = await _run_looping_agent(monitor)
    assert killed.command["kind"] == "KILL"

    kills = await poll(
        lambda: prometheus.query(f'trc_commands_issued_total{{kind="KILL",instance="{target}"}}'),
        lambda result: bool(result) and _value(result[0]) >= 1,
        "trc_commands_issued_total{kind=KILL} >= 1 in Prometheus",
    )
    assert kills[0]["metric"]["job"] == "trc-worker"

    count = await poll(
        lambda: prometheus.query(f'trc_detection_latency_seconds_count{{instance="{target}"}}'),
        lambda result: bool(result) and _value(result[0]) >= 1,
        "a detection latency observation in Prometheus",
    )
    buckets = prometheus.query(f'trc_detection_latency_seconds_bucket{{instance="{target}"}}')
    bounds = {sample["metric"]["le"] for sample in buckets}
    assert "+Inf" in bounds and len(bounds) > 2, f"histogram buckets: {sorted(bounds)}"
    assert max(_value(s) for s in buckets) == _value(count[0])
    latency_sum = prometheus.query(f'trc_detection_latency_seconds_sum{{instance="{target}"}}')
    assert 0 < _value(latency_sum[0]) < 30, "detection latency of the kill, in seconds"
    # The dashboard's and the alert's p99 expression yields a number for it.
    p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (rate(trc_detection_latency_seconds_bucket[1m])))"
    )
    assert p99 and math.isfinite(_value(p99[0])) and _value(p99[0]) > 0, p99

    firing = await poll(
        lambda: prometheus.alerts("TrcAgentKilled"),
        lambda alerts: any(a["state"] == "firing" for a in alerts),
        "the TrcAgentKilled alert firing",
    )
    alert = next(a for a in firing if a["state"] == "firing")
    assert alert["labels"]["instance"] == target
    assert alert["labels"]["kind"] == "KILL"
    assert alert["labels"]["severity"] == "warning"
    assert "killed a runaway agent" in alert["annotations"]["summary"]
    # The worker stayed healthy throughout.
    assert prometheus.alerts("TrcWorkerDown") == []
