# shellcheck shell=bash
# Helpers shared by infra/postgres.sh and the infra/kafka*.sh scripts; sourced, never run.
# Each script sets `component` (the prefix of its log lines) before sourcing this file.

log() { printf '%s: %s\n' "${component:-infra}" "$*" >&2; }
die() { log "$*"; exit 1; }

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT, or a listener
# on any address holds PORT (ss sees it even when it refuses loopback connections).
port_in_use() {
  local port="$1"
  if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
    return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# port_owner PORT: "pid 123: /usr/bin/java -cp ..." of the listener on PORT, or "pid unknown"
# (another user's process, as a normal user, or no ss).
port_owner() {
  local port="$1" pid="" cmd=""
  if command -v ss >/dev/null 2>&1; then
    pid="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*pid=\([0-9][0-9]*\).*/\1/p' | head -n 1)"
  fi
  if [ -z "$pid" ]; then echo "pid unknown"; return; fi
  if [ -r "/proc/$pid/cmdline" ]; then cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c 1-160)"; fi
  echo "pid $pid: ${cmd:-?}"
}

# require_free_port PORT WHAT HINT: stop with one clear message when PORT is taken.
require_free_port() {
  local port="$1" what="$2" hint="$3"
  if port_in_use "$port"; then
    die "port $port ($what) is in use by another process ($(port_owner "$port")); $hint"
  fi
}

# log_size FILE: its size in bytes now (0 when missing), to show only what a start appends.
log_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# show_log FILE [LINES] [FROM_BYTE]: the error lines and the tail of a server log written since
# FROM_BYTE, and where the log is.
show_log() {
  local file="$1" lines="${2:-25}" from="${3:-0}" text errors
  if [ ! -s "$file" ]; then log "no log at $file"; return 0; fi
  text="$(tail -c +"$((from + 1))" "$file")"
  if [ -z "$text" ]; then log "nothing new in $file"; return 0; fi
  errors="$(printf '%s\n' "$text" | grep -E 'ERROR|FATAL|PANIC|Exception' | tail -n 8 || true)"
  if [ -n "$errors" ]; then log "error lines of $file:"; printf '%s\n' "$errors" >&2; fi
  log "last $lines lines of $file:"
  printf '%s\n' "$text" | tail -n "$lines" >&2
}

# short_hash TEXT: 12 hex characters naming a checkout (or state folder) in a shared place.
short_hash() { printf '%s' "$1" | sha256sum | cut -c 1-12; }
