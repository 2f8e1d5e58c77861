"""The Kubernetes manifests in deploy/ are valid and agree with the app.

Built-in kinds are validated against the Kubernetes JSON schemas that the
``kubernetes-validate`` package ships (strict: unknown fields are errors);
custom resources (Strimzi, Prometheus Operator, KEDA) against the minimal
schemas in deploy/k8s/schemas/. The kustomizations are resolved here in Python
(every listed file must exist), and rendered with ``kubectl kustomize`` too
where kubectl is installed.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agents_bridge.settings import Settings
from app.policy.config import load_policy
from app.topic_specs import owned_topics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "k8s" / "schemas"
SECRET_EXAMPLE = DEPLOY / "k8s" / "worker" / "secret.example.yaml"
# The oldest and the newest Kubernetes minor the manifests are checked against.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
CUSTOM_SCHEMAS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafkatopic-kafka-v1.json",
    ("kafka.strimzi.io/v1", "KafkaUser"): "kafkauser-kafka-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}

Obj = dict[str, Any]


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    assert path.is_file(), f"{directory.relative_to(ROOT)} has no kustomization.yaml"
    loaded: Obj = yaml.safe_load(path.read_text())
    return loaded


def resolve(directory: Path, seen: set[Path] | None = None) -> Iterator[tuple[Path, Obj]]:
    """Every object a kustomization lists (resources and components), with its file.

    Generators and patches are not applied here (kubectl does that below); the
    files they name must exist all the same.
    """
    seen = set() if seen is None else seen
    kustomization = _kustomization(directory)
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory.relative_to(ROOT)}/kustomization.yaml lists {entry}"
        seen.add(path)
        if path.is_dir():
            yield from resolve(path, seen)
        else:
            for obj in _load_all(path):
                yield path, obj
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get(
        "secretGenerator", []
    ):
        for entry in generator.get("files", []) + generator.get("envs", []):
            source = entry.split("=", 1)[-1]
            assert (directory / source).is_file(), f"{generator['name']} reads missing {source}"


RESOLVED = list(resolve(DEPLOY))
OBJECTS = [obj for _, obj in RESOLVED]


def the(kind: str, name: str | None = None) -> Obj:
    found = [o for o in OBJECTS if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def validate(obj: Obj) -> None:
    """Raise if ``obj`` does not match its schema; an unknown kind is an error too."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CUSTOM_SCHEMAS:
        schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[key]).read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def _id(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# -- structure ---------------------------------------------------------------


def test_every_manifest_is_listed_by_a_kustomization() -> None:
    listed = {path for path, _ in RESOLVED}
    for path in (DEPLOY / "k8s").rglob("*.yaml"):
        if path.name == "kustomization.yaml" or path == SECRET_EXAMPLE:
            continue
        assert path in listed, f"{path.relative_to(ROOT)} is in no kustomization"


def test_the_install_has_every_part() -> None:
    kinds = {o["kind"] for o in OBJECTS}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "KafkaTopic",
        "KafkaUser",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
    }
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names)), "an object is defined twice"
    # Every object names its namespace: no namespace transformer, so the topics
    # can live with the Kafka cluster and the workers in their own namespace.
    for obj in OBJECTS:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace"), f"{_id(obj)} names no namespace"


# -- schemas -----------------------------------------------------------------


@pytest.mark.parametrize("obj", OBJECTS, ids=_id)
def test_every_object_matches_its_schema(obj: Obj) -> None:
    validate(obj)


def test_the_example_secrets_match_their_schema_and_are_placeholders() -> None:
    for secret in _load_all(SECRET_EXAMPLE):
        validate(secret)
        for key, value in secret["stringData"].items():
            if key != "sasl-username":
                assert "CHANGE-ME" in value, f"{key}: the example must hold no usable secret"


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        (
            "StatefulSet",
            lambda o: o["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),
        ),
        (
            "StatefulSet",
            lambda o: o["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="60"),
        ),
        ("PodDisruptionBudget", lambda o: o["spec"].update(maxUnavailable=[1])),
        ("KafkaTopic", lambda o: o["spec"].update(partition=12)),
        ("KafkaTopic", lambda o: o["spec"].update(partitions=0)),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(For="5m")),
        ("ScaledObject", lambda o: o["spec"]["triggers"][0].update(metadata={"lagThreshold": 5})),
        ("TriggerAuthentication", lambda o: o["spec"]["secretTargetRef"][0].pop("key")),
        ("KafkaUser", lambda o: o["spec"]["authorization"]["acls"][0].update(operations=["Eat"])),
    ],
)
def test_the_validation_rejects_a_broken_object(kind: str, break_it: Any) -> None:
    broken = copy.deepcopy(next(o for o in OBJECTS if o["kind"] == kind))
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_kubectl_kustomize_renders_the_same_objects_with_generators_and_patches() -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for obj in rendered:
        validate(obj)

    def ids(objs: list[Obj]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objs}

    generated = {("ConfigMap", "trc-policy"), ("ConfigMap", "trc-grafana-dashboard")}
    assert ids(rendered) == ids(OBJECTS) | generated
    maps = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
    assert maps["trc-policy"]["metadata"]["namespace"] == "trc"
    assert maps["trc-policy"]["data"]["policy.toml"] == (DEPLOY / "policy.toml").read_text()
    # The worker mounts this ConfigMap where TRC_POLICY_FILE points.
    policy_volume = next(v for v in POD["volumes"] if v["name"] == "policy")
    assert policy_volume["configMap"]["name"] == "trc-policy"
    assert Path(worker_env()["TRC_POLICY_FILE"]).name in maps["trc-policy"]["data"]
    dashboard = maps["trc-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["trc.json"] == (DEPLOY / "grafana/dashboards/trc.json").read_text()
    worker = next(o for o in rendered if o["kind"] == "StatefulSet")
    # The autoscaling component hands the replica count to KEDA.
    assert "replicas" not in worker["spec"]
    image = worker["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("total-runtime-control:"), image
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "total-runtime-control"


# -- the worker --------------------------------------------------------------

WORKER = the("StatefulSet", "trc-worker")
POD = WORKER["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
EXAMPLE_SECRETS = {s["metadata"]["name"]: s["stringData"] for s in _load_all(SECRET_EXAMPLE)}


_POD_FIELDS = {"metadata.name": "trc-worker-0", "metadata.namespace": "trc"}


def worker_env() -> dict[str, str]:
    """The container's ``TRC_*`` environment: secrets filled in from the example
    Secret, pod fields and ``$(VAR)`` references resolved as the kubelet does."""
    env: dict[str, str] = {}
    for var in CONTAINER["env"]:
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = _POD_FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = EXAMPLE_SECRETS[ref["name"]][ref["key"]]
    return {name: value for name, value in env.items() if name.startswith("TRC_")}


def mount_path(volume: str) -> Path:
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    return Path(mounts[volume])


def test_the_worker_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_env()
    for name in env:
        field = name.removeprefix("TRC_").lower()
        assert name.startswith("TRC_") and field in Settings.model_fields, f"{name} is no setting"
        monkeypatch.setenv(name, env[name])
    settings = Settings()
    assert settings.production
    assert settings.security_protocol == "SASL_SSL"
    assert settings.table_store == "rocksdb://"
    assert settings.web_host == "0.0.0.0"
    assert settings.canonical_url == "http://trc-worker-0.trc-worker.trc.svc:6066"
    assert settings.data_dir == mount_path("data")
    assert settings.policy_file is not None and settings.policy_file.parent == mount_path("policy")
    assert settings.ssl_cafile is not None and settings.ssl_cafile.parent == mount_path("kafka-ca")
    # The policy the ConfigMap carries is valid.
    load_policy(DEPLOY / settings.policy_file.name)


def test_every_secret_the_manifests_use_is_in_the_example() -> None:
    refs = [
        (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
        for v in CONTAINER["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    ]
    refs += [(r["name"], r["key"]) for r in the("TriggerAuthentication")["spec"]["secretTargetRef"]]
    refs += [(v["secret"]["secretName"], None) for v in POD["volumes"] if "secret" in v]
    for name, key in refs:
        assert name in EXAMPLE_SECRETS, f"secret {name} is not in {SECRET_EXAMPLE.name}"
        assert key is None or key in EXAMPLE_SECRETS[name], f"{name} has no key {key}"
    ssl_cafile = Path(worker_env()["TRC_SSL_CAFILE"])
    assert ssl_cafile.name in EXAMPLE_SECRETS["trc-kafka-ca"]


def test_the_worker_has_probes_resources_and_its_own_volume() -> None:
    port = next(p for p in CONTAINER["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(worker_env()["TRC_WEB_PORT"])
    for probe, path in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ]:
        assert CONTAINER[probe]["httpGet"] == {"path": path, "port": "http"}
    for kind in ("requests", "limits"):
        assert set(CONTAINER["resources"][kind]) == {"cpu", "memory"}
    assert CONTAINER["args"] == ["worker"]
    claims = [c["metadata"]["name"] for c in WORKER["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"]
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert CONTAINER["securityContext"]["readOnlyRootFilesystem"] is True
    assert POD["terminationGracePeriodSeconds"] >= 30


def test_services_budget_and_monitor_select_the_workers() -> None:
    pod_labels = WORKER["spec"]["template"]["metadata"]["labels"]
    assert WORKER["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    headless = the("Service", WORKER["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    for service in [o for o in OBJECTS if o["kind"] == "Service"]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = the("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = the("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # The ServiceMonitor selects only the headless Service, whose name becomes
    # the job label that the alert rules use.
    monitor = the("ServiceMonitor")
    selected = [
        o
        for o in OBJECTS
        if o["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
    ]
    assert selected == [headless]
    assert monitor["spec"]["endpoints"][0]["port"] == headless["spec"]["ports"][0]["name"]
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert f'job="{headless["metadata"]["name"]}"' in alerts


# -- topics ------------------------------------------------------------------


def test_there_is_a_kafka_topic_for_every_topic_the_app_owns() -> None:
    env = worker_env()
    partitions, replicas = int(env["TRC_PARTITIONS"]), int(env["TRC_REPLICATION_FACTOR"])
    topics = {o["metadata"]["name"]: o["spec"] for o in OBJECTS if o["kind"] == "KafkaTopic"}
    owned = {spec.name: spec for spec in owned_topics(partitions)}
    assert set(topics) == set(owned)
    for name, spec in owned.items():
        topic = topics[name]
        assert topic["partitions"] == spec.partitions, name
        assert topic["replicas"] == replicas, name
        config = {key: str(value) for key, value in topic["config"].items()}
        assert spec.config.items() <= config.items(), f"{name}: {config} vs app {spec.config}"
        assert int(config["min.insync.replicas"]) < replicas, f"{name} stops on one broker lost"
    thirty_days = str(30 * 24 * 3600 * 1000)
    assert str(topics["trc.control"]["config"]["cleanup.policy"]) == "compact"
    for name in ("trc.checkpoints", "trc.escalations", "trc.audit"):
        assert str(topics[name]["config"]["retention.ms"]) == thirty_days, name
    assert topics["trc.audit"]["config"]["cleanup.policy"] == "delete"


def test_the_kafka_user_may_use_every_topic_and_group_of_the_app() -> None:
    env = worker_env()
    acls = the("KafkaUser", env["TRC_SASL_USERNAME"])["spec"]["authorization"]["acls"]

    def allowed(kind: str, name: str) -> set[str]:
        ops: set[str] = set()
        for acl in acls:
            resource = acl["resource"]
            if resource["type"] != kind:
                continue
            prefix = resource.get("patternType") == "prefix"
            if name.startswith(resource["name"]) if prefix else resource["name"] == name:
                ops |= set(acl["operations"])
        return ops

    app_id = env["TRC_APP_ID"]
    for topic in [*owned_topics(1), "trc.events.agent-1", f"{app_id}-events-by-chain"]:
        name = topic if isinstance(topic, str) else topic.name
        assert {"Read", "Write", "Create", "Describe"} <= allowed("topic", name), name
    for group in (app_id, f"{app_id}-ingest"):
        assert "Read" in allowed("group", group), group


# -- monitoring and autoscaling ----------------------------------------------


def test_the_prometheus_rule_is_the_alerts_file() -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert the("PrometheusRule")["spec"]["groups"] == alerts["groups"], (
        "deploy/k8s/monitoring/prometheusrule.yaml and deploy/prometheus/alerts.yml differ"
    )


def test_the_autoscaler_watches_both_consumer_groups_of_the_workers() -> None:
    env = worker_env()
    scaled = the("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": WORKER["metadata"]["name"],
    }
    groups = {t["metadata"]["consumerGroup"] for t in scaled["triggers"]}
    assert groups == {env["TRC_APP_ID"], f"{env['TRC_APP_ID']}-ingest"}
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServers"] == env["TRC_BOOTSTRAP_SERVERS"]
        assert (
            trigger["authenticationRef"]["name"] == the("TriggerAuthentication")["metadata"]["name"]
        )
        assert int(trigger["metadata"]["lagThreshold"]) > 0
    # A worker beyond the partition count would sit idle.
    assert 2 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] <= int(env["TRC_PARTITIONS"])
    lag_alert = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert f'consumergroup=~"{env["TRC_APP_ID"]}|{env["TRC_APP_ID"]}-ingest"' in lag_alert
