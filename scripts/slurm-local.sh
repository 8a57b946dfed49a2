#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the cluster tests and for trying
# `runner run --executor slurm` by hand: Debian's slurm-wlm and munge, a slurm.conf
# for one node named after the host with its CPUs and memory, then munged, slurmctld
# and slurmd, waiting until `sinfo` shows the node idle.
#
#   sudo bash scripts/slurm-local.sh start     # install (apt), configure, start, wait
#   sudo bash scripts/slurm-local.sh stop      # stop the three daemons
#   bash scripts/slurm-local.sh status         # sinfo and squeue
#
# It writes /etc/slurm/slurm.conf only when there is none or it wrote the one there
# (a real cluster's configuration is never touched). Accounting is off (no slurmdbd),
# so `sacct` answers that it is disabled and runner reads job states from `squeue`.
set -euo pipefail

conf=/etc/slurm/slurm.conf
marker="# written by runner's scripts/slurm-local.sh"
spool=/var/spool/slurm-local
logs=/var/log/slurm-local

die() { echo "slurm-local: $*" >&2; exit 1; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurmctld, slurmd and munged are missing and there is no apt-get to install them (Debian packages slurm-wlm and munge)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } \
    || die "apt-get could not install slurm-wlm and munge"
}

configure() {
  if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
    die "$conf exists and was not written by this script; this machine already has a Slurm configuration, use it"
  fi
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  # What slurmd reports as RealMemory, less a little, so the node never drains for
  # having less memory than configured.
  mem="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)"
  mkdir -p /etc/slurm "$spool/ctld" "$spool/d" "$logs"
  cat > "$conf" <<EOF
$marker
ClusterName=runner-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$spool/ctld
SlurmdSpoolDir=$spool/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
# No cgroups in a container: processes are tracked by their parents.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=defer_batch
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for 10 minutes.
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged
  munge -n | unmunge >/dev/null || die "munged started but does not answer (see /var/log/munge/munged.log)"
}

start() {
  [ "$(id -u)" = 0 ] || die "start needs root (sudo bash $0 start)"
  install
  configure
  start_munge
  pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start; see $logs/slurmctld.log"
  pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start; see $logs/slurmd.log"
  local state=""
  for _ in $(seq 1 60); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
    case "$state" in
      idle|mixed|allocated) echo "slurm-local: node $(hostname -s) is $state"; return ;;
      down*|drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  tail -20 "$logs/slurmctld.log" "$logs/slurmd.log" >&2 || true
  die "the node did not become idle within 60 s (last state: ${state:-none})"
}

stop() {
  for daemon in slurmd slurmctld munged; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 1 20); do
    pgrep -x 'slurmd|slurmctld|munged' >/dev/null || return 0
    sleep 0.5
  done
  die "the daemons did not stop"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue --states=all ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
