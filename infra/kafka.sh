#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) on 127.0.0.1, no Docker.
# The jars come from Maven Central through infra/kafka/pom.xml and are cached in $STATE/kafka/libs.
# Usage: infra/kafka.sh start|stop|status            (idempotent)
#
# Settings:
#   TIPSTREAM_KAFKA_URL              the broker the service uses (default kafka://127.0.0.1:9092); its
#                                    port is the default of TIPSTREAM_KAFKA_PORT
#   TIPSTREAM_KAFKA_PORT             listener port of the local broker (default: from the URL, 9092)
#   TIPSTREAM_KAFKA_CONTROLLER_PORT  its KRaft controller port (default 9093)
#   TIPSTREAM_EXTERNAL_KAFKA         1: TIPSTREAM_KAFKA_URL is someone else's Kafka (another local one,
#                                    a cluster): start nothing, only check that it answers a Metadata
#                                    request (with the TIPSTREAM_KAFKA_SECURITY_PROTOCOL, _SSL_* and
#                                    _SASL_* settings, see infra/kafka_ready.py); stop/status leave it alone
#   TIPSTREAM_KAFKA_HEAP             JVM heap flags (default -Xms256m -Xmx1g)
#   TIPSTREAM_KAFKA_WAIT             seconds to wait for the broker to answer (default 90)
#   TIPSTREAM_STATE_DIR              local state (default <repo>/.local); this script uses $STATE/kafka
set -euo pipefail
component=kafka
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/common.sh
. "$root/infra/common.sh"
# shellcheck source=infra/kafka-common.sh
. "$root/infra/kafka-common.sh"
node="${TIPSTREAM_STATE_DIR:-$root/.local}/kafka"
url="${TIPSTREAM_KAFKA_URL:-kafka://127.0.0.1:9092}"
external="${TIPSTREAM_EXTERNAL_KAFKA:-0}"
url_port=9092
case "$url" in
  kafka://127.0.0.1:*|kafka://localhost:*) url_port="${url##*:}" ;;
esac
port="${TIPSTREAM_KAFKA_PORT:-$url_port}"
controller_port="${TIPSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
heap="${TIPSTREAM_KAFKA_HEAP:--Xms256m -Xmx1g}"

write_config() {
  mkdir -p "$node/data"
  write_log4j "$node"
  cat > "$node/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$node/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# One broker: a joining consumer should not wait the default 3 s for peers that never come.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
CFG
}

check_external() {
  local out
  if out="$(python3 "$root/infra/kafka_ready.py" "$url" --print 2>&1)"; then
    log "external Kafka answers at $url ($out)"
  else
    die "external Kafka at $url (TIPSTREAM_EXTERNAL_KAFKA=1) does not answer: $out"
  fi
}

start() {
  if [ "$external" = 1 ]; then check_external; return; fi
  case "$url" in
    kafka://127.0.0.1:*|kafka://localhost:*)
      [ "$url_port" = "$port" ] || log "warning: TIPSTREAM_KAFKA_PORT=$port but the service's TIPSTREAM_KAFKA_URL is $url" ;;
    *) die "TIPSTREAM_KAFKA_URL is $url; the local broker listens on 127.0.0.1 only: set TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:PORT, or TIPSTREAM_EXTERNAL_KAFKA=1 to use that Kafka" ;;
  esac
  if node_running "$node"; then log "already running (pid $(node_pid "$node")) on 127.0.0.1:$port"; return 0; fi
  local hint="to use that broker set TIPSTREAM_EXTERNAL_KAFKA=1 and TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:$port; to run ours beside it choose other ports, e.g. TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:19092 TIPSTREAM_KAFKA_CONTROLLER_PORT=19093"
  require_free_port "$port" "Kafka listener, TIPSTREAM_KAFKA_PORT" "$hint"
  require_free_port "$controller_port" "Kafka controller, TIPSTREAM_KAFKA_CONTROLLER_PORT" "$hint"
  fetch_jars
  write_config
  if [ ! -f "$node/data/meta.properties" ]; then
    format_node "$node" "$heap" "$(new_cluster_id "$node")" --standalone
  fi
  log "starting on 127.0.0.1:$port (log $node/logs/server.log)"
  launch_node "$node" "$heap"
  wait_node "$node" "127.0.0.1:$port"
  log "ready (pid $(node_pid "$node")) on 127.0.0.1:$port"
}

stop() {
  if [ "$external" = 1 ]; then log "external Kafka at $url (TIPSTREAM_EXTERNAL_KAFKA=1): not ours to stop"; return 0; fi
  if stop_node "$node"; then log "stopped"; else log "not running"; fi
}

status() {
  if [ "$external" = 1 ]; then check_external 2>&1 | sed 's/^kafka: //'; return "${PIPESTATUS[0]}"; fi
  if node_running "$node"; then echo "kafka running (pid $(node_pid "$node")) on 127.0.0.1:$port"; else echo "kafka stopped"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
