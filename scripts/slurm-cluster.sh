#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for trying `cxrbench evaluate --executor slurm` out and
# for its end-to-end test (tests/executors/test_slurm_cluster.py; CI runs this script before the tests).
#
# Installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server (apt-get, as root), writes a minimal
# /etc/slurm/slurm.conf for this host (proctrack/linuxproc, task/none, select/cons_tres: no cgroups; one
# node with this machine's CPUs and memory as `slurmd -C` reads them, reached at 127.0.0.1; one partition
# "debug"), starts munged, MariaDB + slurmdbd (job accounting, so that `sacct` lists jobs: submitit polls
# job states with sacct), slurmctld and slurmd, and waits until `sinfo` shows the node idle.
#
# Idempotent: a second run finds the packages installed and the daemons up with the same configuration
# and only checks (seconds); when the configuration changed (other CPUs or memory, another host name) it
# restarts the Slurm daemons with the new one. Needs root. Usage: sudo bash scripts/slurm-cluster.sh
# Not for a production cluster: jobs run as the submitting user on this one node; the database listens on
# localhost only.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh: needs root (apt-get, daemons): sudo bash $0" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "slurm-cluster.sh: needs apt-get (Debian / Ubuntu)" >&2; exit 1; }

cluster=cxrbench
host="$(hostname -s)"
conf=/etc/slurm/slurm.conf
dbdconf=/etc/slurm/slurmdbd.conf
step() { printf '==> [%3d s] %s\n' "$SECONDS" "$*"; }

# a daemon is up when its pid file names a live process with that name
alive() {  # NAME PIDFILE
  local pid
  pid="$(cat "$2" 2>/dev/null || true)"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$1" ]
}
stop() {  # NAME PIDFILE: SIGTERM the daemon of the pid file (only that process), wait until it is gone
  alive "$1" "$2" || return 0
  local pid
  pid="$(cat "$2")"
  kill "$pid"
  for _ in $(seq 100); do [ -d "/proc/$pid" ] || return 0; sleep 0.2; done
  echo "slurm-cluster.sh: $1 (pid $pid) did not stop" >&2
  exit 1
}
wait_for() {  # SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
  local secs="$1" what="$2"
  shift 2
  for _ in $(seq "$((secs * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm-cluster.sh: $what did not come up in $secs s" >&2
  return 1
}

step "packages"
pkgs=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for p in "${pkgs[@]}"; do printf '%s %s; ' "$p" "$(dpkg-query -W -f '${Version}' "$p")"; done
echo

step "munge"
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  service munge start >/dev/null
  wait_for 20 munged sh -c 'munge -n | unmunge'
fi
echo "munged up"

step "MariaDB (job accounting)"
if ! mysqladmin ping >/dev/null 2>&1; then
  service mariadb start >/dev/null
  wait_for 60 MariaDB mysqladmin ping
fi
pass="$(sed -n 's/^StoragePass=//p' "$dbdconf" 2>/dev/null || true)"
[ -n "$pass" ] || pass="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
mkdir -p /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /run/slurm
chown slurm:slurm /var/log/slurm /var/lib/slurm/slurmctld
newdbd="$(mktemp)" new="$(mktemp)"
trap 'rm -f "$newdbd" "$new"' EXIT
cat >"$newdbd" <<EOF
# written by cxrbench scripts/slurm-cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$pass
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
EOF

step "slurm.conf for $host"
node="$(slurmd -C | head -1)"  # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. ... RealMemory=..
cat >"$new" <<EOF
# written by cxrbench scripts/slurm-cluster.sh: a single-node cluster without cgroups
ClusterName=$cluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# a cancelled job gets SIGTERM, then SIGKILL this many seconds later (submitit's jobs ignore SIGTERM);
# short here, so that a job cancelled in the end-to-end test dies mid-run (clusters: 30 s by default)
KillWait=2
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
restart=0
if ! cmp -s "$new" "$conf"; then install -m 644 "$new" "$conf"; restart=1; echo "written: $conf"; fi

restart_dbd=0
step "slurmdbd"
if ! cmp -s "$newdbd" "$dbdconf"; then install -m 600 -o slurm -g slurm "$newdbd" "$dbdconf"; restart_dbd=1; fi
if [ "$restart" = 1 ]; then
  stop slurmd /run/slurm/slurmd.pid
  stop slurmctld /run/slurm/slurmctld.pid
fi
if [ "$restart_dbd" = 1 ]; then stop slurmdbd /run/slurm/slurmdbd.pid; fi
if ! alive slurmdbd /run/slurm/slurmdbd.pid; then
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
fi
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$cluster"; then
  sacctmgr -i add cluster "$cluster" >/dev/null
fi
echo "slurmdbd up (cluster $cluster registered)"

step "slurmctld, slurmd"
alive slurmctld /run/slurm/slurmctld.pid || slurmctld
wait_for 60 slurmctld scontrol ping
alive slurmd /run/slurm/slurmd.pid || slurmd
state() { sinfo -h -n "$host" -o %T 2>/dev/null | tr -d '*~#'; }
for _ in $(seq 300); do
  s="$(state)"
  case "$s" in
    idle|mixed|allocated) break ;;
    drained|draining|down|drain|"down"*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
s="$(state)"
case "$s" in
  idle|mixed|allocated) ;;
  *) echo "slurm-cluster.sh: node $host is '$s', not idle; see /var/log/slurm/slurmd.log, slurmctld.log" >&2
     sinfo -R >&2 || true
     exit 1 ;;
esac
sinfo
echo "cluster $cluster up after $SECONDS s: $(sinfo -h -o '%D node, %c CPUs, %m MB' | head -1); sacct lists the jobs"
