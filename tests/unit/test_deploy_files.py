"""The deployment files are consistent with the repository and with the app."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents_bridge.settings import Settings
from app.policy.config import load_policy

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _worker_env() -> dict[str, str]:
    env: dict[str, str] = COMPOSE["services"]["worker"]["environment"]
    return env


def test_compose_has_the_whole_stack() -> None:
    assert "version" not in COMPOSE, "the Compose specification has no version key"
    assert set(COMPOSE["services"]) == {"kafka", "create-topics", "worker", "prometheus", "grafana"}
    assert COMPOSE["services"]["worker"]["deploy"]["replicas"] == 2
    assert COMPOSE["services"]["kafka"]["image"].startswith("apache/kafka:4.")


def test_every_file_compose_mounts_or_builds_exists() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()


def test_the_worker_environment_is_valid_settings() -> None:
    env = {k.removeprefix("TRC_").lower(): v for k, v in _worker_env().items()}
    policy_file = env.pop("policy_file")
    settings = Settings(**env)
    assert settings.bootstrap_servers == "kafka:9092"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in COMPOSE["services"]["worker"]["volumes"]}
    load_policy(ROOT / mounted[policy_file])  # the mounted policy is valid


def test_the_dashboard_queries_metrics_the_app_exports() -> None:
    from app.metrics import Metrics

    exported = Metrics().exposition().decode()
    dashboard: dict[str, Any] = json.loads(
        (ROOT / "deploy/grafana/dashboards/trc.json").read_text()
    )
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"trc_[a-z_]+", target["expr"]):
                family = metric.removesuffix("_bucket")  # a histogram's series
                assert f"# TYPE {family} " in exported, f"{panel['title']} queries unknown {metric}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize(("check", "file"), [("config", "prometheus.yml"), ("rules", "alerts.yml")])
def test_promtool_accepts_the_prometheus_files(check: str, file: str) -> None:
    done = subprocess.run(
        ["promtool", "check", check, str(ROOT / "deploy/prometheus" / file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_use_metrics_the_app_exports() -> None:
    from app.metrics import Metrics

    exported = Metrics().exposition().decode()
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for metric in re.findall(r"trc_[a-z_]+", rule["expr"]):
            family = metric.removesuffix("_bucket")
            assert f"# TYPE {family} " in exported, f"{rule['alert']} uses unknown {metric}"
