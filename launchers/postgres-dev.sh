#!/usr/bin/env bash
# Throwaway PostgreSQL server for tests and local use.
#
#   launchers/postgres-dev.sh up [DIR]   start a server; prints its SQLAlchemy URL (last stdout line)
#   launchers/postgres-dev.sh down DIR   stop that server and remove DIR
#
# DIR holds everything: data/ (cluster), server.log, url, pid and the unix socket.
# Only the URL goes to stdout so callers can do URL=$(postgres-dev.sh up | tail -n1).
set -euo pipefail

PROG=$(basename -- "$0")
DB_NAME=clipscale
DB_USER=postgres
# A test opens 200 concurrent writer processes; leave headroom for the harness itself.
MAX_CONNECTIONS=300
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10
# Written first by `up`; `down` refuses to rm -rf a non-empty DIR without it.
MARKER=.clipscale-pg

usage() {
  echo "usage: $PROG up [DIR] | down DIR" >&2
  exit 2
}

die() {
  echo "error: $*" >&2
  exit 1
}

log() { echo "$PROG: $*" >&2; }

# Newest installed major version, e.g. /usr/lib/postgresql/15/bin.
find_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && echo "$d"
}

ensure_postgres() {
  BINDIR=$(find_bindir || true)
  if [[ -z $BINDIR ]]; then
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
    log "PostgreSQL not found; installing it with apt-get"
    # noninteractive: no debconf prompts on a headless machine.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    BINDIR=$(find_bindir || true)
    [[ -n $BINDIR ]] || die "PostgreSQL installed but no /usr/lib/postgresql/*/bin/initdb found"
  fi
  # The server refuses to run as root, so as root we drop to the `postgres` user.
  if [[ $(id -u) -eq 0 ]]; then
    id -u postgres >/dev/null 2>&1 || die "the 'postgres' OS user does not exist"
    SERVER_USER=postgres
  else
    SERVER_USER=$(id -un)
  fi
}

# Run a server binary as the server user; cd / because root's cwd may be unreadable to it.
as_server() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

free_port() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' && return 0
    fi
  done
  # No Python: probe random high ports until one refuses connections.
  local p i
  for i in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# True if PID is a live (non-zombie) process; a zombie has already exited.
pid_alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# True if PID is the postmaster of DIR/data (guards against killing a reused PID).
pid_is_ours() {
  local pid=$1 dir=$2
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data"
}

# PID of DIR's postmaster: postmaster.pid first (authoritative), else what `up` recorded.
server_pid() {
  local dir=$1 f pid
  for f in "$dir/data/postmaster.pid" "$dir/pid"; do
    pid=$(head -n1 "$f" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" && pid_is_ours "$pid" "$dir"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# Stop the server of DIR if one runs; quiet when none does.
stop_server() {
  local dir=$1 pid out="" i
  if [[ -f $dir/data/postmaster.pid ]]; then
    if out=$(as_server "$BINDIR/pg_ctl" -D "$dir/data" -m fast -w -t "$STOP_TIMEOUT_S" stop 2>&1); then
      return 0
    fi
  fi
  # Nothing live (or only a zombie) left from DIR: already stopped.
  pid=$(server_pid "$dir") || return 0
  log "pg_ctl stop did not stop the server; killing PID $pid${out:+ (${out//$'\n'/ })}"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "server PID $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
  # Children of a SIGKILLed postmaster linger until they notice; take them down too.
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "could not stop server PID $pid of $dir"
}

cmd_up() {
  local port attempt url pid i
  # Globals, not locals: the EXIT trap below must see them.
  dir="" created=0 started=0
  ensure_postgres
  if [[ $# -ge 1 ]]; then
    dir=$(realpath -m -- "$1")
    # DIR goes unquoted into pg_ctl -o, which the server splits on whitespace.
    [[ $dir != *[[:space:]]* ]] || die "DIR must not contain whitespace: $dir"
    # Unix socket paths are limited to 107 bytes (".s.PGSQL.NNNNN" included).
    ((${#dir} <= 85)) || die "DIR path too long for a unix socket directory: $dir"
    # `down` removes DIR wholesale, so never adopt a directory that holds anything else.
    if [[ -e $dir && ( ! -d $dir || -n $(ls -A -- "$dir") ) ]]; then
      die "$dir exists and is not an empty directory; run '$PROG down $dir' or pick another DIR"
    fi
    mkdir -p -- "$dir" || die "cannot create $dir"
  else
    dir=$(mktemp -d /tmp/clipscale-pg.XXXXXX) || die "mktemp failed"
    created=1
  fi

  # On failure, stop anything we started and remove a DIR we made, so nothing leaks.
  # shellcheck disable=SC2317
  cleanup_up() {
    local rc=$?
    if ((rc != 0)); then
      ((started)) && stop_server "$dir" >/dev/null 2>&1 || true
      if ((created)); then rm -rf -- "$dir"; elif [[ -s $dir/server.log ]]; then echo "see $dir/server.log" >&2; fi
    fi
    return "$rc"
  }
  trap cleanup_up EXIT

  : >"$dir/$MARKER"
  # The server user must traverse DIR (socket dir) and own data/ (initdb requires it).
  chmod 755 "$dir"
  mkdir -p "$dir/data"
  chmod 700 "$dir/data"
  if [[ $(id -u) -eq 0 ]]; then
    # The server also writes its log and unix socket into DIR itself.
    chown "$SERVER_USER:" "$dir" "$dir/data"
  fi
  as_server test -w "$dir/data" || die "$SERVER_USER cannot write $dir/data (is every parent directory traversable?)"

  log "initdb in $dir/data ($BINDIR)"
  as_server "$BINDIR/initdb" -D "$dir/data" -A trust -U "$DB_USER" --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n3 "$dir/initdb.log" | tr '\n' ' ')"

  # Port may be grabbed between probing and binding; retry with a fresh one.
  for attempt in 1 2 3 4 5; do
    port=$(free_port) || die "could not find a free TCP port"
    started=1
    if as_server "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$READY_TIMEOUT_S" \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=$MAX_CONNECTIONS" start >&2; then
      break
    fi
    # A lost port race leaves no server behind; any other failure may (e.g. -t timeout).
    if ((attempt < 5)) && grep -q "could not bind\|Address already in use" "$dir/server.log" 2>/dev/null; then
      started=0
      log "port $port taken, retrying"
      : >"$dir/server.log"
      continue
    fi
    die "pg_ctl start failed: $(tail -n3 "$dir/server.log" 2>/dev/null | tr '\n' ' ')"
  done

  for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
  ((i < READY_TIMEOUT_S * 10)) || die "server on 127.0.0.1:$port not ready after ${READY_TIMEOUT_S}s (see $dir/server.log)"

  "$BINDIR/createdb" -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB_NAME" >&2 ||
    die "createdb $DB_NAME failed on 127.0.0.1:$port"

  pid=$(head -n1 "$dir/data/postmaster.pid")
  url="postgresql+psycopg://$DB_USER@127.0.0.1:$port/$DB_NAME"
  echo "$url" >"$dir/url"
  echo "$pid" >"$dir/pid"
  trap - EXIT
  log "server PID $pid on 127.0.0.1:$port; stop with: $PROG down $dir"
  echo "$url"
}

cmd_down() {
  local dir
  dir=$(realpath -m -- "$1")
  [[ -d $dir ]] || return 0
  # rm -rf safety: only delete directories made by `up` (or empty ones).
  if [[ ! -e $dir/$MARKER && -n $(ls -A -- "$dir") ]]; then
    die "$dir was not created by '$PROG up' (no $MARKER); refusing to remove it"
  fi
  if [[ -d $dir/data ]]; then
    # Without binaries pg_ctl fails and the kill fallback still stops the server.
    BINDIR=$(find_bindir || echo /nonexistent)
    stop_server "$dir"
  fi
  rm -rf -- "$dir" || die "could not remove $dir"
}

[[ $# -ge 1 ]] || usage
case $1 in
  up)
    [[ $# -le 2 ]] || usage
    shift
    cmd_up "$@"
    ;;
  down)
    [[ $# -eq 2 && -n $2 ]] || usage
    cmd_down "$2"
    ;;
  -h | --help) usage ;;
  *) usage ;;
esac
