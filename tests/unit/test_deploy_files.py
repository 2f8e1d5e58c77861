"""The deployment files are consistent with the repository and with the app."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents_bridge.settings import Settings
from app.policy.config import load_policy
from app.topic_specs import owned_topics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
ALERT_TESTS = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())


def _worker_env() -> dict[str, str]:
    env: dict[str, str] = COMPOSE["services"]["worker"]["environment"]
    return env


def test_compose_has_the_whole_stack() -> None:
    assert "version" not in COMPOSE, "the Compose specification has no version key"
    assert set(COMPOSE["services"]) == {
        "kafka",
        "create-topics",
        "worker",
        "kafka-exporter",
        "prometheus",
        "grafana",
    }
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


def _exported() -> str:
    from app.metrics import Metrics

    return Metrics().exposition().decode()


def _check_metrics(expr: str, where: str, exported: str) -> None:
    for metric in re.findall(r"trc_[a-z_]+", expr):
        family = metric.removesuffix("_bucket")  # a histogram's series
        assert f"# TYPE {family} " in exported, (
            f"{where} uses {metric}, which the app does not export"
        )


def test_the_dashboard_queries_metrics_the_app_exports() -> None:
    exported = _exported()
    dashboard: dict[str, Any] = json.loads(
        (ROOT / "deploy/grafana/dashboards/trc.json").read_text()
    )
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            _check_metrics(target["expr"], panel["title"], exported)


def test_the_alert_rules_use_metrics_the_app_exports() -> None:
    exported = _exported()
    for rule in ALERTS["groups"][0]["rules"]:
        _check_metrics(rule["expr"], rule["alert"], exported)


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in ALERTS["groups"][0]["rules"]}
    wanted = {
        "kill rate": 'trc_commands_issued_total{kind="KILL"}',
        "detection latency p99": "histogram_quantile(0.99",
        "consumer lag": "kafka_consumergroup_lag",
        "dead-letter growth": "trc_dead_letters_total",
        "silent agents": 'detector="silent_agent"',
        "rejected commands": "trc_command_rejections_total",
    }
    for what, needle in wanted.items():
        assert any(needle in expr for expr in exprs.values()), f"no alert on {what}"


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in ALERT_TESTS["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in ALERTS["groups"][0]["rules"]}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"
    assert (fires | quiet) - alerts == set(), "tests of alerts that do not exist"


promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")


def _promtool(*args: str) -> None:
    done = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
    )
    assert done.returncode == 0, done.stdout + done.stderr


@promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_promtool_accepts_the_scrape_configs(config: str) -> None:
    _promtool("check", "config", config)


@promtool
def test_promtool_accepts_the_alert_rules() -> None:
    _promtool("check", "rules", "alerts.yml")


@promtool
def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    _promtool("test", "rules", "alerts_test.yml")


def test_create_topics_script_creates_what_the_app_owns(tmp_path: Path) -> None:
    """The script runs against a stand-in kafka-topics.sh that records its calls."""
    calls = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    env = {
        **os.environ,
        "KAFKA_TOPICS": str(stub),
        "BOOTSTRAP": "kafka:9092",
        "PARTITIONS": "12",
        "REPLICATION": "3",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/create-topics.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    created: dict[str, list[str]] = {}
    for line in calls.read_text().splitlines():
        if "--create" in line:
            words = line.split()
            created[words[words.index("--topic") + 1]] = words
    specs = {spec.name: spec for spec in owned_topics(12)}
    assert set(created) == set(specs)
    for name, spec in specs.items():
        words = created[name]
        assert words[words.index("--partitions") + 1] == str(spec.partitions), name
        assert words[words.index("--replication-factor") + 1] == "3", name
        configs = {words[i + 1] for i, w in enumerate(words) if w == "--config"}
        assert {f"{k}={v}" for k, v in spec.config.items()} <= configs, name
