#!/usr/bin/env bash
# A project-owned PostgreSQL cluster on 127.0.0.1 from Debian's package, no Docker.
# Installs the package where it is missing (as root), runs initdb once, starts the server and
# creates the role and database named in TIPSTREAM_DATABASE_URL.
# Usage: infra/postgres.sh start|stop|status            (idempotent)
#
# Settings:
#   TIPSTREAM_DATABASE_URL       postgresql://user:password@127.0.0.1:PORT/db; its port is the port
#                                of the local cluster (default postgresql://tipstream:tipstream@127.0.0.1:5432/tipstream)
#   TIPSTREAM_EXTERNAL_POSTGRES  1: the server of TIPSTREAM_DATABASE_URL is someone else's (another
#                                local PostgreSQL, a managed one): start nothing, only check that the
#                                role can log in to the database; stop and status leave it alone
#   TIPSTREAM_STATE_DIR          local state (default <repo>/.local); this script uses $STATE/postgres
#
# Where the cluster lives. As root, initdb and the server run as the `postgres` user, which must be
# able to traverse every parent folder of the data directory: a clone under /root, or under any
# `mktemp -d` (both 0700), is out of its reach ("could not change directory ... Permission denied").
# So as root the cluster goes in $STATE/postgres when `postgres` can reach that folder, and otherwise
# in /var/lib/tipstream/postgres-<12 hex of sha256 of $STATE/postgres> (owned by postgres, 0700): one
# per checkout and state folder, never shared. The choice is made once, at initdb, and written to
# $STATE/postgres/location, which start, stop and status follow afterwards. `make clean` removes the
# state folder, not a cluster under /var/lib/tipstream: the next initdb finds and reuses it.
# As a normal user the cluster is the user's own, in $STATE/postgres, and nothing runs through runuser.
set -euo pipefail
component=postgres
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=infra/common.sh
. "$root/infra/common.sh"
state="${TIPSTREAM_STATE_DIR:-$root/.local}/postgres"
default_url=postgresql://tipstream:tipstream@127.0.0.1:5432/tipstream
url="${TIPSTREAM_DATABASE_URL:-$default_url}"
external="${TIPSTREAM_EXTERNAL_POSTGRES:-0}"

# postgresql://user:password@host:port/database
rest="${url#*://}"; creds="${rest%%@*}"; hostpart="${rest#*@}"
db_user="${creds%%:*}"; db_pass=""; [ "$creds" != "$db_user" ] && db_pass="${creds#*:}"
hostport="${hostpart%%/*}"; db_name="${hostpart#*/}"; db_name="${db_name%%\?*}"
host="${hostport%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && { host="$hostport"; port=5432; }

is_root() { [ "$(id -u)" = 0 ]; }
# From /, which postgres can enter: psql and pg_ctl complain when the current folder is out of reach.
as_postgres() { if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

# The newest installed server binaries, or nothing.
find_bin() { printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n 1 || true; }

pg_bin() {
  local found; found="$(find_bin)"
  if [ -z "$found" ] || [ ! -x "$found/pg_ctl" ]; then
    is_root || die "no PostgreSQL server binaries in /usr/lib/postgresql; install them (apt-get install postgresql) or use a server you have: TIPSTREAM_EXTERNAL_POSTGRES=1 TIPSTREAM_DATABASE_URL=postgresql://user:password@host:port/db"
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    found="$(find_bin)"
  fi
  echo "$found"
}

# home: the folder holding data/, run/ (the socket) and server.log; see the header.
home_dir() {
  if [ -f "$state/location" ]; then cat "$state/location"; return; fi
  if ! is_root || [ -f "$state/data/PG_VERSION" ]; then echo "$state"; return; fi
  mkdir -p "$state"
  if runuser -u postgres -- test -x "$state" 2>/dev/null; then echo "$state"; return; fi
  echo "/var/lib/tipstream/postgres-$(short_hash "$state")"
}

set_paths() {
  home="$(home_dir)"; data="$home/data"; run="$home/run"; server_log="$home/server.log"
}

running() {
  local bin; bin="$(find_bin)"
  [ -n "$bin" ] && [ -f "$data/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

psql_admin() { as_postgres "$(pg_bin)/psql" -h "$run" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

# An external server: one login with the URL's credentials is the whole check.
check_external() {
  local bin; bin="$(find_bin)"
  if [ -n "$bin" ] && [ -x "$bin/psql" ]; then
    if out="$(PGCONNECT_TIMEOUT=5 "$bin/psql" "$url" -qtAX -c 'SELECT version()' 2>&1)"; then
      log "external server reachable at $host:$port as $db_user, database $db_name (${out%% on *})"
      return 0
    fi
    die "external server at $host:$port (TIPSTREAM_EXTERNAL_POSTGRES=1) rejected the connection or the login of TIPSTREAM_DATABASE_URL: ${out//$'\n'/ }"
  fi
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    log "external server accepts connections at $host:$port (no psql here to try the login)"
    return 0
  fi
  die "external server at $host:$port (TIPSTREAM_EXTERNAL_POSTGRES=1) does not accept connections; check TIPSTREAM_DATABASE_URL"
}

prepare_home() {
  mkdir -p "$state"
  if ! is_root; then mkdir -p "$home" "$run"; return; fi
  if [ "$home" != "$state" ]; then
    install -d -m 0755 /var/lib/tipstream
    log "postgres cannot traverse the folders above $state; the cluster lives in $home"
  fi
  mkdir -p "$home" "$run"
  chown postgres:postgres "$home" "$run"
  chmod 0700 "$home"
  runuser -u postgres -- test -w "$home" \
    || die "the postgres user cannot write $home; make its parent folders traversable (chmod o+x) or run as a normal user"
  if [ "$home" != "$state" ]; then echo "$home" > "$state/location"; fi
}

start() {
  if [ "$external" = 1 ]; then check_external; return; fi
  case "$host" in
    127.0.0.1|localhost) ;;
    *) die "TIPSTREAM_DATABASE_URL names host $host; the local cluster listens on 127.0.0.1 only: use 127.0.0.1, or set TIPSTREAM_EXTERNAL_POSTGRES=1 to use the server at $host" ;;
  esac
  local bin; bin="$(pg_bin)"
  set_paths  # after pg_bin: the package creates the postgres user that home_dir asks
  if ! running; then
    require_free_port "$port" "PostgreSQL" "to use that server set TIPSTREAM_EXTERNAL_POSTGRES=1 and TIPSTREAM_DATABASE_URL=postgresql://USER:PASSWORD@127.0.0.1:$port/DB; to run ours beside it choose another port in TIPSTREAM_DATABASE_URL, e.g. postgresql://$db_user:$db_pass@127.0.0.1:15432/$db_name"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    prepare_home
    log "initdb in $data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 \
      || { show_log "$state/initdb.log" 15; die "initdb failed; full output in $state/initdb.log"; }
  fi
  if running; then
    log "already running on 127.0.0.1:$port (data $data)"
  else
    log "starting on 127.0.0.1:$port (data $data, log $server_log)"
    mkdir -p "$run"; is_root && chown postgres:postgres "$run"
    local before; before="$(log_size "$server_log")"
    # fsync off: a throwaway development cluster; durability comes from the real deployment.
    if ! as_postgres "$bin/pg_ctl" -D "$data" -l "$server_log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$run -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      >"$state/pg_ctl.log" 2>&1; then
      cat "$state/pg_ctl.log" >&2
      show_log "$server_log" 25 "$before"
      die "could not start the server on 127.0.0.1:$port; server log: $server_log"
    fi
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$db_user'")" != 1 ]; then
    log "creating role $db_user"
    psql_admin -c "CREATE ROLE \"$db_user\" LOGIN PASSWORD '$db_pass'"
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != 1 ]; then
    log "creating database $db_name"
    psql_admin -c "CREATE DATABASE \"$db_name\" OWNER \"$db_user\""
  fi
  # Integration tests create a throwaway database each; the role may do so.
  psql_admin -c "ALTER ROLE \"$db_user\" CREATEDB"
  # ... and drop them WITH (FORCE) even while autovacuum works in one: terminating that worker
  # takes pg_signal_backend (a test's teardown otherwise fails now and then).
  psql_admin -c "GRANT pg_signal_backend TO \"$db_user\""
  log "ready: postgresql://$db_user:***@127.0.0.1:$port/$db_name"
}

stop() {
  if [ "$external" = 1 ]; then log "external server at $host:$port (TIPSTREAM_EXTERNAL_POSTGRES=1): not ours to stop"; return 0; fi
  if running; then
    as_postgres "$(find_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    log "stopped (data $data)"
  else
    log "not running"
  fi
}

status() {
  if [ "$external" = 1 ]; then check_external 2>&1 | sed 's/^postgres: //'; return "${PIPESTATUS[0]}"; fi
  if running; then echo "postgres running on 127.0.0.1:$port (data $data)"; else echo "postgres stopped"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) set_paths; stop ;;
  status) set_paths; status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
