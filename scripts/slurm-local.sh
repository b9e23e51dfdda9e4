#!/usr/bin/env bash
# A real Slurm cluster on this machine, for the tests of `voxplan slurm` (tests/slurm.rs) and of multi-node
# training: Debian's slurmctld, slurmd, slurm-client and munge, two nodes (n1, n2: two slurmd instances on
# 127.0.0.1), each with two fake GPUs (GRES on character devices, copies of /dev/null), as measured and
# described in ../shared/reference/slurm.md.
#
# Usage: scripts/slurm-local.sh start DIR   installs the packages if missing (apt-get, needs root), writes
#                                           DIR/etc/slurm.conf, starts munged, slurmctld and both slurmd,
#                                           waits until both nodes are idle; prints SLURM_CONF=...
#        scripts/slurm-local.sh stop DIR    stops the daemons it started (by their pid files)
#        scripts/slurm-local.sh status DIR
# `start` on a running cluster only checks it. A missing package that cannot be installed is an error with
# its reason: the Slurm tests fail, they never skip.
set -euo pipefail
action=${1:?usage: slurm-local.sh start|stop|status DIR}
dir=$(realpath -m "${2:?usage: slurm-local.sh start|stop|status DIR}")
conf="$dir/etc/slurm.conf"
host=$(hostname -s)
export SLURM_CONF="$conf"

need_packages() {
  local missing=()
  for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "slurm-local: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-local: the Slurm packages are missing and this user cannot install them (apt-get needs root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || { echo "slurm-local: apt-get update failed" >&2; exit 1; }
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
    || { echo "slurm-local: apt-get install of the Slurm packages failed" >&2; exit 1; }
}

# Whether the daemon whose pid file is $1 runs (a zombie left by a daemon that died does not count).
alive() {
  [ -f "$1" ] || return 1
  local state
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$(cat "$1")/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

running() {
  alive "$dir/run/slurmctld.pid" || return 1
  for n in n1 n2; do alive "$dir/run/slurmd-$n.pid" || return 1; done
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [ -f /etc/munge/munge.key ] || { echo "slurm-local: /etc/munge/munge.key is missing" >&2; exit 1; }
  install -d -o munge -g munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "slurm-local: munged did not start" >&2
  exit 1
}

write_config() {
  mkdir -p "$dir"/{etc,state,spool,run,log,dev}
  for g in 0 1 2 3; do
    [ -c "$dir/dev/gpu$g" ] || mknod -m 666 "$dir/dev/gpu$g" c 1 3
  done
  local mem_mib
  mem_mib=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 / 2 }' /proc/meminfo)
  cat >"$conf" <<EOF
ClusterName=voxplan-ci
SlurmctldHost=$host
SlurmctldPort=16817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
KillWait=10
GresTypes=gpu
NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=17001-17002 CPUs=4 RealMemory=$mem_mib Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$dir/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=n1 Name=gpu File=$dir/dev/gpu[0-1]
NodeName=n2 Name=gpu File=$dir/dev/gpu[2-3]
EOF
}

case "$action" in
  start)
    need_packages
    start_munge
    if running; then
      sinfo -h >/dev/null && { echo "SLURM_CONF=$conf"; exit 0; }
    fi
    # Another checkout's cluster holds the ports this one would use: say so instead of timing out.
    other=$(pgrep -af "slurmctld -f" 2>/dev/null | grep -v -F -- "-f $conf" | head -n 1 || true)
    if [ -n "$other" ]; then
      echo "slurm-local: another local cluster is running ($other); stop it first with" \
        "scripts/slurm-local.sh stop <its directory, the folder above etc/slurm.conf>" >&2
      exit 1
    fi
    write_config
    /usr/sbin/slurmctld -f "$conf"
    for n in n1 n2; do /usr/sbin/slurmd -N "$n" -f "$conf"; done
    for _ in $(seq 200); do
      idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle" { n++ } END { print n + 0 }')
      # Our own daemons, not another cluster answering on the same ports.
      [ "$idle" -ge 2 ] && running && { echo "SLURM_CONF=$conf"; exit 0; }
      sleep 0.1
    done
    echo "slurm-local: the nodes did not become idle; logs in $dir/log" >&2
    sinfo -N >&2 || true
    exit 1
    ;;
  stop)
    for f in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid"; do
      [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    ;;
  status)
    running && sinfo -N
    ;;
  *)
    echo "usage: slurm-local.sh start|stop|status DIR" >&2
    exit 2
    ;;
esac
