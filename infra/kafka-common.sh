# shellcheck shell=bash
# Kafka helpers shared by infra/kafka.sh, infra/kafka-cluster.sh and infra/kafka-secure.sh;
# sourced after infra/common.sh, with `root` set. A node is a folder holding server.properties,
# log4j2.properties, data/, logs/ and kafka.pid; every node runs kafka.Kafka in its own JVM.

# One jar folder for every Kafka of a checkout: resolved once from Maven Central.
kafka_libs="${TIPSTREAM_STATE_DIR:-$root/.local}/kafka/libs"

fetch_jars() {
  if [ -f "$kafka_libs/.complete" ] && cmp -s "$root/infra/kafka/pom.xml" "$kafka_libs/.complete"; then return; fi
  command -v mvn >/dev/null || die "need mvn (apt-get install maven) to resolve the broker jars from Maven Central"
  command -v java >/dev/null || die "need java 17 or later (apt-get install openjdk-17-jre-headless)"
  log "resolving broker jars from Maven Central (infra/kafka/pom.xml)"
  rm -rf "$kafka_libs"; mkdir -p "$kafka_libs"
  mvn -q -B -Dstyle.color=never -f "$root/infra/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$kafka_libs" >&2 \
    || die "mvn could not resolve infra/kafka/pom.xml (network, or ~/.m2/settings.xml)"
  cp "$root/infra/kafka/pom.xml" "$kafka_libs/.complete"
}

# java_run NODE_DIR HEAP CLASS ARGS...: runs a Kafka class with the node's logging (exec).
java_run() {
  local node="$1" heap="$2"; shift 2
  # shellcheck disable=SC2086
  exec java $heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$node/log4j2.properties" \
    -cp "$kafka_libs/*" "$@"
}

# kafka_tool CLASS ARGS...: a Kafka command-line tool (kafka-topics, kafka-metadata-quorum...),
# logging warnings to stderr only.
kafka_tool() {
  java -Xmx256m -Dlog4j2.level=warn -Dlog4j2.configurationFile="$root/infra/kafka/log4j2-tools.properties" \
    -cp "$kafka_libs/*" "$@"
}

write_log4j() {
  local node="$1"
  mkdir -p "$node/logs"
  cat > "$node/log4j2.properties" <<CFG
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $node/logs/server.log
appender.file.filePattern = $node/logs/server.log.%i
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

node_pid() { cat "$1/kafka.pid" 2>/dev/null || true; }
node_running() { local pid; pid="$(node_pid "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# node_cluster_id NODE_DIR: the cluster id written by `kafka-storage format`, or nothing.
node_cluster_id() { sed -n 's/^cluster.id=//p' "$1/data/meta.properties" 2>/dev/null || true; }

# format_node NODE_DIR HEAP CLUSTER_ID [FORMAT ARGS...]: once, before the first start.
format_node() {
  local node="$1" heap="$2" cluster_id="$3"; shift 3
  [ -f "$node/data/meta.properties" ] && return 0
  log "formatting storage in $node/data"
  mkdir -p "$node/data"
  (java_run "$node" "$heap" kafka.tools.StorageTool format -t "$cluster_id" -c "$node/server.properties" "$@") \
    > "$node/logs/format.log" 2>&1 || { show_log "$node/logs/format.log" 15; die "kafka-storage format failed; see $node/logs/format.log"; }
}

new_cluster_id() { (java_run "$1" "-Xmx128m" kafka.tools.StorageTool random-uuid); }

# launch_node NODE_DIR HEAP: starts the broker in the background; records its pid.
launch_node() {
  local node="$1" heap="$2"
  printf '%s\n' "$(log_size "$node/logs/server.log")" > "$node/logs/.start-offset"
  (java_run "$node" "$heap" kafka.Kafka "$node/server.properties") > "$node/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$node/kafka.pid"
}

# node_failed NODE_DIR WHY: the log lines of this start, the log paths, and exit.
node_failed() {
  local node="$1" why="$2"
  show_log "$node/logs/server.log" 25 "$(cat "$node/logs/.start-offset" 2>/dev/null || echo 0)"
  if [ -s "$node/logs/stdout.log" ]; then show_log "$node/logs/stdout.log" 10; fi
  die "$why; server log: $node/logs/server.log"
}

# wait_node NODE_DIR ADDRESS [MIN_BROKERS]: until the broker answers as a member of its own
# cluster (not some other broker on the port) with at least MIN_BROKERS brokers registered.
wait_node() {
  local node="$1" address="$2" min="${3:-1}" cluster_id
  cluster_id="$(node_cluster_id "$node")"
  local deadline=$((SECONDS + ${TIPSTREAM_KAFKA_WAIT:-90}))
  while [ $SECONDS -lt $deadline ]; do
    node_running "$node" || node_failed "$node" "broker exited during startup"
    if python3 "$root/infra/kafka_ready.py" "$address" --cluster-id "$cluster_id" --min-brokers "$min" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  node_failed "$node" "broker did not answer a metadata request on $address within ${TIPSTREAM_KAFKA_WAIT:-90} s (TIPSTREAM_KAFKA_WAIT)"
}

# stop_node NODE_DIR: SIGTERM, then SIGKILL after 30 s.
stop_node() {
  local node="$1" pid
  if ! node_running "$node"; then rm -f "$node/kafka.pid"; return 1; fi
  pid="$(node_pid "$node")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid still running after 30 s, killing"; kill -KILL "$pid"; fi
  rm -f "$node/kafka.pid"
}

# kill_node NODE_DIR: SIGKILL, the way a machine or a JVM dies.
kill_node() {
  local node="$1" pid
  if ! node_running "$node"; then rm -f "$node/kafka.pid"; return 1; fi
  pid="$(node_pid "$node")"
  kill -KILL "$pid"
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$node/kafka.pid"
}
