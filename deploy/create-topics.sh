#!/bin/bash
# Creates the topics the cluster owns; idempotent (--if-not-exists).
set -euo pipefail
topics=/opt/kafka/bin/kafka-topics.sh
create() {
  "$topics" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$1" "${@:2}"
}
create trc.control --partitions "$PARTITIONS" --config cleanup.policy=compact \
  --config min.compaction.lag.ms=0 --config segment.ms=3600000
create trc.anomalies --partitions "$PARTITIONS" --config retention.ms=604800000
create trc.deadletter --partitions 1 --config retention.ms=1209600000
"$topics" --bootstrap-server "$BOOTSTRAP" --list
