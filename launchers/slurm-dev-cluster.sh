#!/usr/bin/env bash
# Throwaway single-node Slurm cluster (with accounting) for tests and local use.
#
#   launchers/slurm-dev-cluster.sh up [STATE_DIR]      install if needed, start; prints "ready: PARTITION NODES CPUS"
#   launchers/slurm-dev-cluster.sh down [STATE_DIR]    stop what `up` started, restore /etc/slurm, remove STATE_DIR
#   launchers/slurm-dev-cluster.sh status [STATE_DIR]  list its daemons; exit 0 only if all are alive
#
# STATE_DIR (default /var/tmp/clipscale-slurm) holds everything: munge key/socket, the MariaDB
# datadir, Slurm state/spool, logs, daemon PIDs and the backup of /etc/slurm/*.conf.
# Needs root: the configs must live in /etc/slurm, where sbatch/sacct (and submitit) look.
# Ports 6817-6819 are fixed, so only one such cluster can run per host.
set -euo pipefail

PROG=$(basename -- "$0")
DEFAULT_DIR=/var/tmp/clipscale-slurm
CLUSTER=clipscale
ACCOUNT=clipscale
PARTITION=debug
PORTS=(6817 6818 6819) # slurmctld, slurmd, slurmdbd
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
BINARIES=(munged munge mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sinfo sacct sacctmgr squeue scancel)
CONF_FILES=(slurm.conf slurmdbd.conf)
# Client tools (sacctmgr's slurmdbd connection included) only use munge's default socket.
MUNGE_SOCK=/run/munge/munge.socket.2
# Stop order: compute first, the databases last (slurmctld flushes to slurmdbd on exit).
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=10
# Written first by `up`; `down` refuses to rm -rf a non-empty STATE_DIR without it.
MARKER=.clipscale-slurm
# First line of the slurm.conf we write: tells a later `up` (and `down`) whose configs are in /etc/slurm.
CONF_TAG="# clipscale slurm-dev-cluster state_dir="

usage() {
  echo "usage: $PROG up|down|status [STATE_DIR]" >&2
  exit 2
}

die() {
  echo "error: $*" >&2
  exit 1
}

log() { echo "$PROG: $*" >&2; }

# Fields 3 (state) and 22 (start time) of /proc/PID/stat; comm may hold spaces, so cut after ')'.
proc_field() {
  local pid=$1 n=$2 rest
  rest=$(sed -E 's/^.*\) //' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $rest ]] || return 1
  awk -v n=$((n - 2)) '{print $n}' <<<"$rest"
}

# True if PID is a live (non-zombie) process; a zombie has already exited.
pid_alive() {
  local state
  state=$(proc_field "$1" 3) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# STATE_DIR/pids/NAME holds "PID STARTTIME"; the start time guards against a reused PID.
daemon_pid() {
  local dir=$1 name=$2 pid start
  read -r pid start 2>/dev/null <"$dir/pids/$name" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ $(proc_field "$pid" 22) == "$start" ]] || return 1
  echo "$pid"
}

# True if something listens on TCP PORT (any address, v4 or v6); no ss/netstat needed.
port_listening() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p {f = 1} END {exit !f}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

free_port() {
  local p i
  for i in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    port_listening "$p" || { echo "$p"; return 0; }
  done
  return 1
}

ensure_packages() {
  local b missing=0
  for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null 2>&1 || missing=1
  done
  ((missing)) || return 0
  log "installing ${PACKAGES[*]} with apt-get"
  # noninteractive: no debconf prompts on a headless machine.
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: slurm-wlm and recommends pull ~40 plugin packages we do not need.
  if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2; then
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2 || die "apt-get install ${PACKAGES[*]} failed"
  fi
}

# The state dir named in /etc/slurm/slurm.conf's tag line, if a dev cluster wrote it.
conf_owner() {
  local line
  line=$(head -n1 /etc/slurm/slurm.conf 2>/dev/null || true)
  [[ $line == "$CONF_TAG"* ]] && echo "${line#"$CONF_TAG"}"
}

# Start NAME in the foreground of its own session so its PID is ours to record and it
# survives the caller; fds go to the log so `$(PROG up)` does not wait on the daemon.
start_daemon() {
  local dir=$1 name=$2 pid
  shift 2
  (cd / && exec setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1) &
  pid=$!
  # setsid execs (no fork) when not a process-group leader, so $! is the daemon itself.
  sleep 0.1
  pid_alive "$pid" || die "$name exited at once: $(tail -n3 "$dir/log/$name.out" 2>/dev/null | tr '\n' ' ')"
  echo "$pid $(proc_field "$pid" 22)" >"$dir/pids/$name"
}

# Poll CMD until it succeeds (deadline, not a count: CMD itself may take seconds),
# failing fast if daemon NAME died meanwhile.
wait_for() {
  local dir=$1 name=$2 timeout=$3 what=$4 end=$((SECONDS + $3))
  shift 4
  while ((SECONDS < end)); do
    "$@" >/dev/null 2>&1 && return 0
    daemon_pid "$dir" "$name" >/dev/null ||
      die "$name died while waiting for $what: $(tail -n3 "$dir/log/$name.out" 2>/dev/null | tr '\n' ' ')"
    sleep 0.2
  done
  die "$what not ready after ${timeout}s (see $dir/log/$name.out)"
}

stop_daemon() {
  local dir=$1 name=$2 pid i
  pid=$(daemon_pid "$dir" "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "$name PID $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "could not stop $name PID $pid"
  return 1
}

any_daemon_alive() {
  local name
  for name in "${DAEMONS[@]}"; do
    daemon_pid "$1" "$name" >/dev/null && return 0
  done
  return 1
}

# Stop what `up` started in DIR, put /etc/slurm and /etc/hosts back, remove DIR.
teardown() {
  local dir=$1 name f ids i failed=0
  if daemon_pid "$dir" slurmctld >/dev/null; then
    # Cancel jobs first so their slurmstepd/job processes do not outlive slurmd.
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [[ -n $ids ]]; then
      # shellcheck disable=SC2086
      timeout 10 scancel $ids 2>/dev/null || true
      for ((i = 0; i < STOP_TIMEOUT_S * 5; i++)); do
        [[ -z $(timeout 5 squeue -h -o %A 2>/dev/null || true) ]] && break
        sleep 0.2
      done
    fi
  fi
  for name in "${DAEMONS[@]}"; do
    stop_daemon "$dir" "$name" || failed=1
  done
  ((failed)) && die "some daemons of $dir would not stop; left $dir in place"
  # Restore only configs that are still ours (another cluster's configs are not ours to touch).
  if [[ -d $dir/etc-backup && $(conf_owner || true) == "$dir" ]]; then
    for f in "${CONF_FILES[@]}"; do
      if [[ -e $dir/etc-backup/$f ]]; then
        cp -p -- "$dir/etc-backup/$f" "/etc/slurm/$f"
      else
        rm -f -- "/etc/slurm/$f"
      fi
    done
  fi
  if [[ -e $dir/made-munge-dir ]]; then
    rmdir -- "$(dirname "$MUNGE_SOCK")" 2>/dev/null || true
  elif [[ -s $dir/munge-dir-owner ]]; then
    read -r f i <"$dir/munge-dir-owner"
    chown -- "$f" "$(dirname "$MUNGE_SOCK")" 2>/dev/null || true
    chmod -- "$i" "$(dirname "$MUNGE_SOCK")" 2>/dev/null || true
  fi
  if [[ -s $dir/hosts-line ]]; then
    # Rewrite in place: /etc/hosts is often a bind mount that sed -i (rename) cannot replace.
    f=$(grep -vxF -f "$dir/hosts-line" /etc/hosts || true)
    printf '%s\n' "$f" >/etc/hosts
  fi
  rm -rf -- "$dir" || die "could not remove $dir"
}

state_dir_arg() {
  local dir
  dir=$(realpath -m -- "${1:-$DEFAULT_DIR}")
  # Paths go unquoted into Slurm/MariaDB configs and unix socket names (<108 bytes).
  [[ $dir != *[[:space:],=]* ]] || die "STATE_DIR must not contain whitespace, ',' or '=': $dir"
  ((${#dir} <= 80)) || die "STATE_DIR path too long for unix sockets: $dir"
  [[ $dir != / ]] || die "STATE_DIR must not be /"
  echo "$dir"
}

write_configs() {
  local dir=$1 host=$2 dbport=$3 dbpass=$4 cpus mem
  cpus=$(nproc)
  mem=$(slurmd -C 2>/dev/null | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
  [[ $mem =~ ^[0-9]+$ ]] || die "could not read RealMemory from 'slurmd -C'"
  # Leave 10 % headroom: slurmd drains a node that reports less memory than configured.
  mem=$((mem * 9 / 10))
  mkdir -p /etc/slurm
  cat >/etc/slurm/slurm.conf <<EOF
$CONF_TAG$dir
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${PORTS[0]}
SlurmdPort=${PORTS[1]}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job otherwise waits ~121 s before it may start again.
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${PORTS[2]}
StateSaveLocation=$dir/slurmctld
SlurmdSpoolDir=$dir/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 644 /etc/slurm/slurm.conf
  # slurmdbd refuses a config that is not mode 600 and owned by SlurmUser (root here).
  (umask 077 && cat >/etc/slurm/slurmdbd.conf <<EOF
$CONF_TAG$dir
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=${PORTS[2]}
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$dbport
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
  )
  chown root:root /etc/slurm/slurmdbd.conf
  chmod 600 /etc/slurm/slurmdbd.conf
}

cmd_up() {
  local host owner p f dbport dbpass sock end ready out state="" nodes cpus
  # Globals, not locals: the EXIT trap below must see it.
  dir=$(state_dir_arg "${1:-}")
  [[ $(id -u) -eq 0 ]] || die "must run as root (it writes /etc/slurm and starts the daemons)"
  ensure_packages
  PATH=$PATH:/usr/sbin:/sbin

  owner=$(conf_owner || true)
  # A cluster whose daemons all died with their machine (a reboot, a restored snapshot) left
  # its state behind: take that down first instead of asking for a manual `down`.
  for p in "$owner" "$dir"; do
    if [[ -n $p && -e $p/$MARKER ]] && ! any_daemon_alive "$p"; then
      log "$p is left from a dev cluster whose daemons are all gone; taking it down first"
      teardown "$p"
    fi
  done
  owner=$(conf_owner || true)
  if [[ -n $owner && ! -e $owner ]]; then
    # Its state dir (and with it the backup of the configs it replaced) is gone: the tagged
    # configs are orphans of ours.
    log "/etc/slurm holds the configs of a dev cluster whose state dir $owner is gone; removing them"
    for f in "${CONF_FILES[@]}"; do
      [[ $(head -n1 "/etc/slurm/$f" 2>/dev/null) == "$CONF_TAG"* ]] && rm -f -- "/etc/slurm/$f"
    done
    owner=""
  fi
  [[ -z $owner ]] || die "a dev cluster is already up or was not taken down (state dir $owner); run '$PROG down $owner' first"
  for p in "${PORTS[@]}"; do
    port_listening "$p" && die "TCP port $p is in use (another Slurm on this host?); Slurm dev cluster needs ports ${PORTS[*]}"
  done
  # `down` removes STATE_DIR wholesale, so never adopt a directory that holds anything else.
  if [[ -e $dir && (! -d $dir || -n $(ls -A -- "$dir")) ]]; then
    die "$dir exists and is not an empty directory; run '$PROG down $dir' or pick another STATE_DIR"
  fi
  mkdir -p -- "$dir" || die "cannot create $dir"
  : >"$dir/$MARKER"

  # On failure, stop anything we started and undo what we changed, so nothing leaks.
  # shellcheck disable=SC2317
  cleanup_up() {
    local rc=$?
    if ((rc != 0)); then
      # Keep the logs of a failed start where the caller can read them.
      if [[ -d $dir/log ]]; then
        rm -rf "$dir.failed-logs" && cp -r "$dir/log" "$dir.failed-logs" 2>/dev/null &&
          echo "logs of the failed start: $dir.failed-logs" >&2
      fi
      (teardown "$dir") >/dev/null 2>&1 || echo "error: cleanup after failed up was incomplete; run '$PROG down $dir'" >&2
    fi
    return "$rc"
  }
  trap cleanup_up EXIT

  mkdir -p "$dir"/{pids,log,run,munge,mysql,slurmctld,slurmd,etc-backup}
  chmod 755 "$dir"
  chmod 700 "$dir/munge"

  host=$(hostname -s)
  if ! getent hosts "$host" >/dev/null; then
    # slurmd looks itself up by short hostname in slurm.conf.
    echo "127.0.0.1 $host" >"$dir/hosts-line"
    cat "$dir/hosts-line" >>/etc/hosts
  fi

  for f in "${CONF_FILES[@]}"; do
    [[ -e /etc/slurm/$f ]] && cp -p -- "/etc/slurm/$f" "$dir/etc-backup/$f"
  done
  dbport=$(free_port) || die "could not find a free TCP port for MariaDB"
  dbpass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  write_configs "$dir" "$host" "$dbport" "$dbpass"

  # The default socket is shared by the whole host: never take over a live munged.
  if munge -n -S "$MUNGE_SOCK" >/dev/null 2>&1; then
    die "a munged already serves $MUNGE_SOCK; stop it first (this cluster runs its own munged there)"
  fi
  if [[ ! -d $(dirname "$MUNGE_SOCK") ]]; then
    mkdir -p "$(dirname "$MUNGE_SOCK")"
    : >"$dir/made-munge-dir"
  fi
  # munged refuses a socket directory owned by anyone but the user it runs as ("Socket is
  # insecure: invalid ownership"), and Debian's own munge service leaves /run/munge to the
  # munge user: take it for root while the cluster is up, and give it back on `down`.
  stat -c '%U:%G %a' "$(dirname "$MUNGE_SOCK")" >"$dir/munge-dir-owner"
  chown root:root "$(dirname "$MUNGE_SOCK")"
  chmod 755 "$(dirname "$MUNGE_SOCK")"
  # munged insists on a root-owned key when run as root; the packaged one belongs to munge.
  install -m 600 -o root -g root /etc/munge/munge.key "$dir/munge/munge.key"
  sock=$MUNGE_SOCK
  start_daemon "$dir" munged munged -F --key-file="$dir/munge/munge.key" --socket="$sock" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/seed"
  wait_for "$dir" munged 10 "munged" bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

  # A private MariaDB: own datadir and port, no /etc/mysql options, gone with STATE_DIR.
  mariadb-install-db --no-defaults --datadir="$dir/mysql" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >"$dir/log/mariadb-install.out" 2>&1 ||
    die "mariadb-install-db failed: $(tail -n3 "$dir/log/mariadb-install.out" | tr '\n' ' ')"
  start_daemon "$dir" mariadbd mariadbd --no-defaults --user=root --datadir="$dir/mysql" \
    --socket="$dir/run/mysqld.sock" --pid-file="$dir/run/mysqld.pid" --port="$dbport" \
    --bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin --log-error="$dir/log/mariadb.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0
  wait_for "$dir" mariadbd 30 "MariaDB" mariadb --no-defaults -S "$dir/run/mysqld.sock" -u root -e 'SELECT 1'
  mariadb --no-defaults -S "$dir/run/mysqld.sock" -u root >&2 <<EOF || die "creating slurm_acct_db failed"
CREATE DATABASE slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

  start_daemon "$dir" slurmdbd slurmdbd -D
  wait_for "$dir" slurmdbd 30 "slurmdbd" timeout 5 sacctmgr -n list cluster
  # Register before slurmctld starts, so it finds its cluster and the root association.
  if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >&2 || die "sacctmgr add cluster $CLUSTER failed"
  fi
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=dev organization=clipscale >&2 ||
    die "sacctmgr add account $ACCOUNT failed"
  sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >&2 || die "sacctmgr add user root failed"

  start_daemon "$dir" slurmctld slurmctld -D
  wait_for "$dir" slurmctld 30 "slurmctld" timeout 5 sinfo -h
  start_daemon "$dir" slurmd slurmd -D

  end=$((SECONDS + READY_TIMEOUT_S)) ready=0
  while ((SECONDS < end)); do
    state=$(timeout 5 sinfo -h -o %T 2>/dev/null || true)
    [[ $state == idle ]] && timeout 5 sacct -n -X >/dev/null 2>&1 && ready=1 && break
    for f in "${DAEMONS[@]}"; do
      daemon_pid "$dir" "$f" >/dev/null || die "$f died during start-up: $(tail -n3 "$dir/log/$f.out" | tr '\n' ' ')"
    done
    sleep 0.5
  done
  ((ready)) ||
    die "node not idle with working sacct after ${READY_TIMEOUT_S}s (sinfo says '${state:-nothing}'; see $dir/log)"

  out=$(sinfo -h -p "$PARTITION" -o '%P %N %C')
  read -r _ nodes cpus <<<"$out"
  trap - EXIT
  log "up; state in $dir; stop with: $PROG down $dir"
  # %C is allocated/idle/other/total CPUs; report the total.
  echo "ready: $PARTITION $nodes ${cpus##*/}"
}

cmd_down() {
  local dir
  dir=$(state_dir_arg "${1:-}")
  [[ -d $dir ]] || return 0
  [[ $(id -u) -eq 0 ]] || die "must run as root (it restores /etc/slurm and stops root daemons)"
  # rm -rf safety: only delete directories made by `up` (or empty ones).
  if [[ ! -e $dir/$MARKER && -n $(ls -A -- "$dir") ]]; then
    die "$dir was not created by '$PROG up' (no $MARKER); refusing to remove it"
  fi
  PATH=$PATH:/usr/sbin:/sbin
  teardown "$dir"
}

cmd_status() {
  local dir name pid all=0
  dir=$(state_dir_arg "${1:-}")
  for name in "${DAEMONS[@]}"; do
    if pid=$(daemon_pid "$dir" "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"
      all=1
    fi
  done
  return "$all"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $# -lt 2 || -n $2 ]] || usage
case $1 in
  up) cmd_up "${2:-}" ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  *) usage ;;
esac
