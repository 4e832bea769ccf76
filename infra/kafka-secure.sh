#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) that only speaks TLS, with a throwaway CA, no Docker:
#   SASL_SSL on TIPSTREAM_SECURE_KAFKA_PORT (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN), and
#   SSL with a required client certificate on the next port (mutual TLS).
# The CA, the broker and client certificates (openssl, keytool), the SCRAM users (written at
# `kafka-storage format --add-scram`, as KRaft wants) and the passwords are made at the first start;
# the client settings go to $STATE/kafka-secure/client.env (SASL_SSL) and client-mtls.env (SSL):
#   set -a; . .local/kafka-secure/client.env; set +a     # or `source` it: the lines are `export`s
# Usage: infra/kafka-secure.sh start|stop|status|env    (idempotent; env prints client.env)
#
# Settings:
#   TIPSTREAM_SECURE_KAFKA_PORT  SASL_SSL listener (default 19192); SSL (mTLS) listener is PORT+1,
#                                the controller (PLAINTEXT, loopback, same JVM) PORT+2
#   TIPSTREAM_SECURE_KAFKA_USER  the service's user (default tipstream); the broker's own is `admin`
#   TIPSTREAM_KAFKA_HEAP, TIPSTREAM_KAFKA_WAIT, TIPSTREAM_STATE_DIR: as for infra/kafka.sh
# Variables written to client.env, for the service (and infra/kafka_ready.py, infra/kafka_check.py):
#   TIPSTREAM_KAFKA_URL, TIPSTREAM_KAFKA_SECURITY_PROTOCOL, TIPSTREAM_KAFKA_SASL_MECHANISM,
#   TIPSTREAM_KAFKA_SASL_USERNAME, TIPSTREAM_KAFKA_SASL_PASSWORD, TIPSTREAM_KAFKA_SSL_CAFILE
#   (client-mtls.env: TIPSTREAM_KAFKA_SSL_CERTFILE and TIPSTREAM_KAFKA_SSL_KEYFILE instead of SASL)
# Removing $STATE/kafka-secure (stopped) starts over with a new CA, new users and new passwords.
set -euo pipefail
component=kafka-secure
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/common.sh
. "$root/infra/common.sh"
# shellcheck source=infra/kafka-common.sh
. "$root/infra/kafka-common.sh"
node="${TIPSTREAM_STATE_DIR:-$root/.local}/kafka-secure"
tls="$node/tls"
port="${TIPSTREAM_SECURE_KAFKA_PORT:-19192}"
ssl_port=$((port + 1))
controller_port=$((port + 2))
user="${TIPSTREAM_SECURE_KAFKA_USER:-tipstream}"
heap="${TIPSTREAM_KAFKA_HEAP:--Xms256m -Xmx1g}"
store_password="" admin_password="" user_password=""  # set by secrets()

# Passwords: random, made once, kept in $node/secrets.env (0600).
secrets() {
  mkdir -p "$node"
  if [ ! -f "$node/secrets.env" ]; then
    umask 077
    {
      echo "store_password=$(openssl rand -hex 16)"
      echo "admin_password=$(openssl rand -hex 16)"
      echo "user_password=$(openssl rand -hex 16)"
    } > "$node/secrets.env"
    umask 022
  fi
  # shellcheck disable=SC1091
  . "$node/secrets.env"
}

# A CA, a broker certificate for 127.0.0.1 and localhost signed by it, a client certificate for
# mutual TLS, and the PKCS12 stores the broker reads.
make_certificates() {
  [ -f "$tls/truststore.p12" ] && return 0
  command -v openssl >/dev/null || die "need openssl (apt-get install openssl)"
  command -v keytool >/dev/null || die "need keytool (Java 17)"
  log "generating a throwaway CA and certificates in $tls"
  rm -rf "$tls"; mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -keyout ca.key -out ca.pem \
      -subj "/CN=tipstream throwaway CA" -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile broker.ext -out broker.pem
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=$user"
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile client.ext -out client.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -out broker.p12 -passout "pass:$store_password"
    keytool -importcert -noprompt -alias ca -file ca.pem -storetype PKCS12 \
      -keystore truststore.p12 -storepass "$store_password"
    rm -f ./*.csr ./*.ext ./*.srl
  ) > "$node/tls.log" 2>&1 || { show_log "$node/tls.log" 15; die "certificate generation failed; see $node/tls.log"; }
  chmod 0600 "$tls"/*.key
}

write_config() {
  mkdir -p "$node/data"
  write_log4j "$node"
  local scram="org.apache.kafka.common.security.scram.ScramLoginModule"
  local plain="org.apache.kafka.common.security.plain.PlainLoginModule"
  cat > "$node/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=SASL_SSL://127.0.0.1:$port,SSL://127.0.0.1:$ssl_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$port,SSL://127.0.0.1:$ssl_port
controller.listener.names=CONTROLLER
# The controller listener is loopback, in the same JVM; every client connection is TLS.
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram required username="admin" password="$admin_password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$scram required;
listener.name.sasl_ssl.plain.sasl.jaas.config=$plain required username="admin" password="$admin_password" user_admin="$admin_password" user_$user="$user_password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$store_password
ssl.key.password=$store_password
ssl.truststore.type=PKCS12
ssl.truststore.location=$tls/truststore.p12
ssl.truststore.password=$store_password
ssl.endpoint.identification.algorithm=https
listener.name.ssl.ssl.client.auth=required
log.dirs=$node/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
CFG
  chmod 0600 "$node/server.properties"
}

write_client_env() {
  umask 077  # passwords inside; the shell ends soon after
  cat > "$node/client.env" <<ENV
# The SASL_SSL broker of infra/kafka-secure.sh (throwaway CA and passwords).
export TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:$port
export TIPSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export TIPSTREAM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export TIPSTREAM_KAFKA_SASL_USERNAME=$user
export TIPSTREAM_KAFKA_SASL_PASSWORD=$user_password
export TIPSTREAM_KAFKA_SSL_CAFILE=$tls/ca.pem
ENV
  cat > "$node/client-mtls.env" <<ENV
# The SSL listener of infra/kafka-secure.sh: TLS with a client certificate, no SASL.
export TIPSTREAM_KAFKA_URL=kafka://127.0.0.1:$ssl_port
export TIPSTREAM_KAFKA_SECURITY_PROTOCOL=SSL
export TIPSTREAM_KAFKA_SSL_CAFILE=$tls/ca.pem
export TIPSTREAM_KAFKA_SSL_CERTFILE=$tls/client.pem
export TIPSTREAM_KAFKA_SSL_KEYFILE=$tls/client.key
ENV
  # The same for the Java tools (kafka-topics --command-config, kafka-acls ...).
  cat > "$node/client.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$user_password";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
}

# kafka_ready.py against the SASL_SSL listener with the client's own settings: TLS and the login.
ready_check() {
  (
    # shellcheck disable=SC1091
    . "$node/client.env"
    python3 "$root/infra/kafka_ready.py" "127.0.0.1:$port" --cluster-id "$(node_cluster_id "$node")" "$@"
  )
}

start() {
  if node_running "$node"; then log "already running (pid $(node_pid "$node")) on 127.0.0.1:$port (SASL_SSL), $ssl_port (SSL)"; return 0; fi
  local hint="another process holds it: choose other ports with TIPSTREAM_SECURE_KAFKA_PORT (now $port; uses PORT..PORT+2)"
  require_free_port "$port" "SASL_SSL listener" "$hint"
  require_free_port "$ssl_port" "SSL listener" "$hint"
  require_free_port "$controller_port" "controller" "$hint"
  fetch_jars
  secrets
  make_certificates
  write_config
  write_client_env
  if [ ! -f "$node/data/meta.properties" ]; then
    log "formatting storage with SCRAM users admin and $user"
    format_node "$node" "$heap" "$(new_cluster_id "$node")" --standalone \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]" \
      --add-scram "SCRAM-SHA-512=[name=$user,password=$user_password]" \
      --add-scram "SCRAM-SHA-256=[name=$user,password=$user_password]"
  fi
  log "starting on 127.0.0.1:$port (SASL_SSL) and $ssl_port (SSL, client certificate), log $node/logs/server.log"
  launch_node "$node" "$heap"
  local deadline=$((SECONDS + ${TIPSTREAM_KAFKA_WAIT:-90}))
  until ready_check 2>/dev/null; do
    node_running "$node" || node_failed "$node" "broker exited during startup"
    [ $SECONDS -lt $deadline ] || { ready_check --print || true; node_failed "$node" "no SCRAM-SHA-512 login over TLS on 127.0.0.1:$port"; }
    sleep 1
  done
  log "ready (pid $(node_pid "$node")); client settings in $node/client.env (SASL_SSL) and $node/client-mtls.env (SSL)"
}

stop() { if stop_node "$node"; then log "stopped"; else log "not running"; fi; }

status() {
  if ! node_running "$node"; then echo "kafka-secure stopped"; return 1; fi
  echo "kafka-secure running (pid $(node_pid "$node")) on 127.0.0.1:$port (SASL_SSL), $ssl_port (SSL); client settings $node/client.env"
  ready_check --print | sed 's/^/SCRAM-SHA-512 login over TLS: /'
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) cat "$node/client.env" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
