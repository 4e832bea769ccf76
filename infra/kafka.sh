#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) on 127.0.0.1, no Docker.
# The jars come from Maven Central through infra/kafka/pom.xml and are cached in .local/kafka/libs.
# Usage: infra/kafka.sh start|stop|status
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${TIPSTREAM_STATE_DIR:-$root/.local}/kafka"
libs="$state/libs"
port="${TIPSTREAM_KAFKA_PORT:-9092}"
controller_port="${TIPSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
pidfile="$state/kafka.pid"
heap="${TIPSTREAM_KAFKA_HEAP:--Xms256m -Xmx1g}"

log() { printf 'kafka: %s\n' "$*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch_jars() {
  if [ -f "$libs/.complete" ] && cmp -s "$root/infra/kafka/pom.xml" "$libs/.complete"; then return; fi
  log "resolving broker jars from Maven Central (infra/kafka/pom.xml)"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -f "$root/infra/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs" >&2
  cp "$root/infra/kafka/pom.xml" "$libs/.complete"
}

write_config() {
  mkdir -p "$state/data" "$state/logs"
  cat > "$state/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data
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
  cat > "$state/log4j2.properties" <<CFG
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $state/logs/server.log
appender.file.filePattern = $state/logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
CFG
}

java_cmd() {
  # shellcheck disable=SC2086
  exec java $heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" \
    -cp "$libs/*" "$@"
}

wait_ready() {
  local deadline=$((SECONDS + ${TIPSTREAM_KAFKA_WAIT:-90}))
  while [ $SECONDS -lt $deadline ]; do
    if ! running; then log "broker exited; see $state/logs/stdout.log"; tail -n 30 "$state/logs/stdout.log" >&2 || true; return 1; fi
    if python3 "$root/infra/kafka_ready.py" "127.0.0.1:$port" 2>/dev/null; then return 0; fi
    sleep 1
  done
  log "broker did not answer a metadata request in time"; return 1
}

start() {
  if running; then log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  fetch_jars
  write_config
  if [ ! -f "$state/data/meta.properties" ]; then
    log "formatting storage in $state/data"
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid)"
    (java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$state/server.properties") \
      > "$state/logs/format.log" 2>&1 || { cat "$state/logs/format.log" >&2; return 1; }
  fi
  log "starting on 127.0.0.1:$port"
  java_cmd kafka.Kafka "$state/server.properties" > "$state/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  wait_ready
  log "ready (pid $(cat "$pidfile"))"
}

stop() {
  if ! running; then rm -f "$pidfile"; log "not running"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "still running after 30 s, killing"; kill -KILL "$pid"; fi
  rm -f "$pidfile"; log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "kafka running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; else echo "kafka stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
