#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/reliability/test_report_browser.py).
#
#   launchers/chromium.sh     install Chromium if it is missing (as root); print its path
#
# Playwright launches this binary (executable_path) instead of downloading its own browser,
# which nothing here may do. Only the path goes to stdout (its last line) so callers can do
# CHROMIUM=$(chromium.sh | tail -n1); logs and apt-get output go to stderr.
set -euo pipefail

PROG=$(basename -- "$0")
BINARY=/usr/bin/chromium

usage() {
  echo "usage: $PROG" >&2
  exit 2
}

die() {
  echo "error: $*" >&2
  exit 1
}

log() { echo "$PROG: $*" >&2; }

ensure_chromium() {
  [[ -x $BINARY ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "Chromium is not installed and installing it needs root (apt-get install chromium)"
  log "Chromium not found; installing it with apt-get"
  # noninteractive: no debconf prompts on a headless machine.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  apt-get install -y --no-install-recommends chromium >&2 || die "apt-get install chromium failed"
  [[ -x $BINARY ]] || die "chromium installed but $BINARY is missing"
  # A browser that cannot even print its version would fail every test in a confusing way.
  "$BINARY" --version >&2 || die "$BINARY --version failed"
}

[[ $# -eq 0 ]] || usage
ensure_chromium
echo "$BINARY"
