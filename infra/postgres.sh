#!/usr/bin/env bash
# A project-owned PostgreSQL cluster on 127.0.0.1 from Debian's package, no Docker.
# Installs the package where it is missing, runs initdb once under .local/postgres, and creates
# the role and database named in TIPSTREAM_DATABASE_URL. Usage: infra/postgres.sh start|stop|status
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${TIPSTREAM_STATE_DIR:-$root/.local}/postgres"
data="$state/data"
run="$state/run"
url="${TIPSTREAM_DATABASE_URL:-postgresql://tipstream:tipstream@127.0.0.1:5432/tipstream}"

log() { printf 'postgres: %s\n' "$*" >&2; }

# postgresql://user:password@host:port/database
rest="${url#*://}"; creds="${rest%%@*}"; hostpart="${rest#*@}"
db_user="${creds%%:*}"; db_pass="${creds#*:}"
hostport="${hostpart%%/*}"; db_name="${hostpart#*/}"; db_name="${db_name%%\?*}"
port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=5432

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$found" ] || [ ! -x "$found/pg_ctl" ]; then
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    found="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  echo "$found"
}

running() { [ -f "$data/postmaster.pid" ] && as_postgres "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

psql_admin() { as_postgres "$(pg_bin)/psql" -h "$run" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

start() {
  local bin; bin="$(pg_bin)"
  mkdir -p "$state" "$run"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$state" "$run"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb in $data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 || { cat "$state/initdb.log" >&2; exit 1; }
  fi
  if running; then
    log "already running on 127.0.0.1:$port"
  else
    log "starting on 127.0.0.1:$port"
    # fsync off: a throwaway development cluster; durability comes from the real deployment.
    as_postgres "$bin/pg_ctl" -D "$data" -l "$state/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$run -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$db_user'")" != 1 ]; then
    psql_admin -c "CREATE ROLE \"$db_user\" LOGIN PASSWORD '$db_pass'"
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$db_name\" OWNER \"$db_user\""
  fi
  # Integration tests create a throwaway database each; the role may do so.
  psql_admin -c "ALTER ROLE \"$db_user\" CREATEDB"
  log "ready: $url"
}

stop() {
  if running; then as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >&2; log "stopped"; else log "not running"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "postgres running on 127.0.0.1:$port"; else echo "postgres stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
