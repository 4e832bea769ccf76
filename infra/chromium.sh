#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian's packages, for the console's browser tests
# (tests/integration/test_console.py). Installs `chromium` and `chromium-driver` where missing
# (as root, through apt-get, like infra/postgres.sh installs PostgreSQL); never downloads a
# browser of its own. Idempotent: with /usr/bin/chromium and /usr/bin/chromedriver present it
# only says so.
# Usage: infra/chromium.sh
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium: missing; install the Debian packages chromium and chromium-driver (needs root)" >&2
  exit 1
fi
echo "chromium: installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
