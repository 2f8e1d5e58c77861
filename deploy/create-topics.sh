#!/bin/bash
# Creates the topics the cluster owns, as the workers would (app/topic_specs.py);
# idempotent (--if-not-exists). On Kubernetes with Strimzi, deploy/k8s/kafka/
# declares the same topics as KafkaTopic resources.
#   BOOTSTRAP=host:9092 PARTITIONS=12 [REPLICATION=3] [COMMAND_CONFIG=client.properties]
set -euo pipefail
topics=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}
replication=${REPLICATION:-1}
extra=()
if [[ -n "${COMMAND_CONFIG:-}" ]]; then extra=(--command-config "$COMMAND_CONFIG"); fi
create() {
  "$topics" --bootstrap-server "$BOOTSTRAP" "${extra[@]}" --create --if-not-exists \
    --replication-factor "$replication" --topic "$1" "${@:2}"
}
days() { echo $(($1 * 24 * 3600 * 1000)); }
create trc.control --partitions "$PARTITIONS" --config cleanup.policy=compact \
  --config min.compaction.lag.ms=0 --config segment.ms=3600000
create trc.anomalies --partitions "$PARTITIONS" --config retention.ms="$(days 7)"
create trc.deadletter --partitions 1 --config retention.ms="$(days 14)"
create trc.checkpoints --partitions "$PARTITIONS" --config retention.ms="$(days 30)"
create trc.escalations --partitions 1 --config retention.ms="$(days 30)"
create trc.audit --partitions 1 --config cleanup.policy=delete --config retention.ms="$(days 30)"
"$topics" --bootstrap-server "$BOOTSTRAP" "${extra[@]}" --list
