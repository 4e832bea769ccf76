#!/usr/bin/env bash
# A three-broker Apache Kafka cluster (KRaft) on 127.0.0.1, no Docker: nodes 1, 2 and 3 each run
# broker and controller in one JVM, the three controllers are the quorum voters, and the defaults are
# a production cluster's: replication factor 3, min.insync.replicas 2 (internal topics too), no
# automatic topic creation, no unclean leader election.
# Usage: infra/kafka-cluster.sh start|stop|status      the whole cluster (idempotent)
#        infra/kafka-cluster.sh kill NODE             SIGKILL one broker (a machine dying)
#        infra/kafka-cluster.sh stop NODE             stop one broker cleanly
#        infra/kafka-cluster.sh restart NODE          start a killed or stopped broker again
#        infra/kafka-cluster.sh describe [TOPIC]      partitions, leaders and in-sync replicas
#        infra/kafka-cluster.sh bootstrap             print the service's TIPSTREAM_KAFKA_URL
#
# Settings:
#   TIPSTREAM_CLUSTER_BASE_PORT  node N listens on BASE+N-1 and its controller on BASE+N+2
#                                (default 19092: brokers 19092-19094, controllers 19095-19097)
#   TIPSTREAM_CLUSTER_HEAP       JVM heap flags of each node (default -Xms128m -Xmx512m)
#   TIPSTREAM_KAFKA_WAIT         seconds to wait for a node to answer (default 90)
#   TIPSTREAM_STATE_DIR          local state (default <repo>/.local); nodes in $STATE/kafka-cluster/node-N
# The service uses it with TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
# (`infra/kafka-cluster.sh bootstrap` prints it for the chosen base port).
set -euo pipefail
component=kafka-cluster
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/common.sh
. "$root/infra/common.sh"
# shellcheck source=infra/kafka-common.sh
. "$root/infra/kafka-common.sh"
state="${TIPSTREAM_STATE_DIR:-$root/.local}/kafka-cluster"
base="${TIPSTREAM_CLUSTER_BASE_PORT:-19092}"
heap="${TIPSTREAM_CLUSTER_HEAP:--Xms128m -Xmx512m}"
nodes=(1 2 3)

broker_port() { echo $((base + $1 - 1)); }
controller_port() { echo $((base + $1 + 2)); }
node_dir() { echo "$state/node-$1"; }
bootstrap() {
  local n out=""
  for n in "${nodes[@]}"; do out="${out:+$out,}127.0.0.1:$(broker_port "$n")"; done
  echo "$out"
}
voters() {
  local n out=""
  for n in "${nodes[@]}"; do out="${out:+$out,}$n@127.0.0.1:$(controller_port "$n")"; done
  echo "$out"
}

write_config() {
  local n="$1" dir; dir="$(node_dir "$n")"
  mkdir -p "$dir/data"
  write_log4j "$dir"
  cat > "$dir/server.properties" <<CFG
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
# Topics are created by the service with its settings, as on a production cluster.
auto.create.topics.enable=false
# A killed broker is declared gone after 6 s, not 9 s, so a fault scenario moves on sooner.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
# Tests start workers one after the other; a joining consumer should not wait 3 s for peers.
group.initial.rebalance.delay.ms=0
CFG
}

cluster_id() {
  if [ ! -f "$state/cluster.id" ]; then
    mkdir -p "$state"
    new_cluster_id "$(node_dir 1)" > "$state/cluster.id"
  fi
  cat "$state/cluster.id"
}

check_node() {
  case "${1:-}" in
    1|2|3) ;;
    *) die "NODE must be 1, 2 or 3 (got '${1:-}')" ;;
  esac
}

# launch N: start node N when it is not running; does not wait.
launch() {
  local n="$1" dir; dir="$(node_dir "$n")"
  if node_running "$dir"; then log "node $n already running (pid $(node_pid "$dir")) on 127.0.0.1:$(broker_port "$n")"; return 1; fi
  local hint="another Kafka holds it: stop it, or move the cluster with TIPSTREAM_CLUSTER_BASE_PORT (now $base; ports BASE..BASE+5)"
  require_free_port "$(broker_port "$n")" "node $n broker" "$hint"
  require_free_port "$(controller_port "$n")" "node $n controller" "$hint"
  write_config "$n"
  format_node "$dir" "$heap" "$(cluster_id)"
  log "starting node $n on 127.0.0.1:$(broker_port "$n") (controller $(controller_port "$n"), log $dir/logs/server.log)"
  launch_node "$dir" "$heap"
}

start() {
  fetch_jars
  mkdir -p "$(node_dir 1)/logs"; write_log4j "$(node_dir 1)"
  local n started=()
  for n in "${nodes[@]}"; do if launch "$n"; then started+=("$n"); fi; done
  # The controllers elect a leader once two voters are up; every node then registers its broker.
  for n in "${started[@]}"; do wait_node "$(node_dir "$n")" "127.0.0.1:$(broker_port "$n")" 3; done
  log "ready: 3 brokers, cluster $(cluster_id), TIPSTREAM_KAFKA_URL=kafka://$(bootstrap)"
}

restart() {
  check_node "$1"
  fetch_jars
  if launch "$1"; then
    wait_node "$(node_dir "$1")" "127.0.0.1:$(broker_port "$1")" 3
    log "node $1 back (pid $(node_pid "$(node_dir "$1")")); its replicas catch up and rejoin the ISR"
  fi
}

stop() {
  local n
  if [ -n "${1:-}" ]; then
    check_node "$1"
    if stop_node "$(node_dir "$1")"; then log "node $1 stopped"; else log "node $1 not running"; fi
    return 0
  fi
  # All at once: a broker's controlled shutdown needs a controller majority, so stopping the
  # nodes one after the other leaves the last one waiting for a quorum that is gone.
  local pids=() pid
  for n in "${nodes[@]}"; do
    if node_running "$(node_dir "$n")"; then pids+=("$(node_pid "$(node_dir "$n")")"); kill -TERM "${pids[-1]}"; fi
  done
  if [ "${#pids[@]}" = 0 ]; then log "not running"; return 0; fi
  for _ in $(seq 1 60); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid still running after 30 s, killing"; kill -KILL "$pid"; fi
  done
  for n in "${nodes[@]}"; do rm -f "$(node_dir "$n")/kafka.pid"; done
  log "stopped ${#pids[@]} node(s)"
}

kill_cmd() {
  check_node "$1"
  local dir pid; dir="$(node_dir "$1")"; pid="$(node_pid "$dir")"
  if kill_node "$dir"; then log "node $1 killed (SIGKILL, pid $pid)"; else log "node $1 not running"; fi
}

status() {
  local n dir up=0
  for n in "${nodes[@]}"; do
    dir="$(node_dir "$n")"
    if node_running "$dir"; then
      up=$((up + 1))
      echo "node $n running (pid $(node_pid "$dir")) on 127.0.0.1:$(broker_port "$n"), controller $(controller_port "$n")"
    else
      echo "node $n stopped"
    fi
  done
  if [ "$up" = 0 ]; then echo "kafka cluster stopped"; return 1; fi
  python3 "$root/infra/kafka_ready.py" "$(bootstrap)" --print | sed 's/^/registered: /' || true
  # The quorum as the controllers see it: leader, voters, follower lag.
  local c=""
  for n in "${nodes[@]}"; do node_running "$(node_dir "$n")" && c="${c:+$c,}127.0.0.1:$(controller_port "$n")"; done
  kafka_tool org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-controller "$c" describe --status \
    | grep -E 'LeaderId|LeaderEpoch|HighWatermark|MaxFollowerLag|CurrentVoters' || true
  [ "$up" = 3 ]
}

describe() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" --describe ${1:+--topic "$1"}
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  kill) kill_cmd "${2:-}" ;;
  restart) restart "${2:-}" ;;
  describe) describe "${2:-}" ;;
  bootstrap) echo "kafka://$(bootstrap)" ;;
  *) echo "usage: $0 start|stop [NODE]|status|kill NODE|restart NODE|describe [TOPIC]|bootstrap" >&2; exit 2 ;;
esac
