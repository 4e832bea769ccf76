#!/usr/bin/env bash
# Run Prometheus' promtool, installing Debian's `prometheus` package (which ships it) when it is
# missing and we are root, the way infra/postgres.sh installs PostgreSQL.
# Usage: infra/monitoring/promtool.sh ARGS...     e.g. check rules infra/monitoring/prometheus-rules.yml
# Exit 3 (and one line saying why) when promtool cannot be had: tests skip on that code only.
set -euo pipefail
component=promtool
# shellcheck source=../common.sh
source "$(dirname "$0")/../common.sh"

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no promtool, and not root with apt-get to install it (apt-get install prometheus)"
    exit 3
  fi
  log "installing Debian's prometheus package (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  # The package's service is not wanted: policy-rc.d 101 keeps apt from starting it.
  policy=/usr/sbin/policy-rc.d made=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made=1
  fi
  status=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >&2 || status=$?
  [ -z "$made" ] || rm -f "$policy"
  [ "$status" = 0 ] || { log "apt-get install prometheus failed"; exit 3; }
  command -v promtool >/dev/null 2>&1 || { log "the prometheus package brought no promtool"; exit 3; }
fi
exec promtool "$@"
