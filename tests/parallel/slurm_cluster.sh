#!/usr/bin/env bash
# A real Slurm cluster on loopback for tests: slurmctld and one slurmd per "node", all state in DIR.
#   slurm_cluster.sh start DIR [NODES]   prints the path of slurm.conf (export it as SLURM_CONF)
#   slurm_cluster.sh stop DIR
# Needs root (slurmd runs jobs as their users), Debian's slurm-wlm and munge. Exit code 77 when they are missing,
# so callers can skip with that reason.
set -euo pipefail

command=${1:?usage: slurm_cluster.sh start|stop DIR [NODES]}
dir=${2:?usage: slurm_cluster.sh start|stop DIR [NODES]}

stop_cluster() {
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

if [ "$command" = stop ]; then
  stop_cluster
  exit 0
fi

for tool in slurmctld slurmd munged sbatch scontrol; do
  command -v "$tool" >/dev/null 2>&1 || { echo "slurm_cluster: $tool is not installed (slurm-wlm, munge)" >&2; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "slurm_cluster: needs root to run slurmd" >&2; exit 77; }

nodes=${3:-2}
mkdir -p "$dir"/state "$dir"/spool "$dir"/log "$dir"/run

# munge: one key for the machine, the daemon shared by every test cluster.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
fi
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  munged --force >/dev/null 2>&1 || sudo -u munge munged --force >/dev/null 2>&1 || true
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host=$(hostname -s)
cpus=$(nproc)
ctld_port=$(free_port)
conf="$dir/slurm.conf"
{
  echo "ClusterName=mugvtest"
  echo "SlurmctldHost=${host}(127.0.0.1)"
  echo "SlurmctldPort=${ctld_port}"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  echo "ProctrackType=proctrack/linuxproc"
  echo "TaskPlugin=task/none"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_Core"
  echo "MpiDefault=none"
  echo "SlurmUser=root"
  echo "SlurmdUser=root"
  echo "ReturnToService=2"
  echo "MinJobAge=600"
  echo "StateSaveLocation=$dir/state"
  echo "SlurmdSpoolDir=$dir/spool/%n"
  echo "SlurmctldPidFile=$dir/run/slurmctld.pid"
  echo "SlurmdPidFile=$dir/run/slurmd-%n.pid"
  echo "SlurmctldLogFile=$dir/log/slurmctld.log"
  echo "SlurmdLogFile=$dir/log/slurmd-%n.log"
  echo "AccountingStorageType=accounting_storage/none"
  echo "JobCompType=jobcomp/none"
  names=""
  for i in $(seq "$nodes"); do
    echo "NodeName=n$i NodeHostname=${host} NodeAddr=127.0.0.1 Port=$(free_port) CPUs=${cpus} RealMemory=2000 State=UNKNOWN"
    names="${names:+$names,}n$i"
  done
  echo "PartitionName=debug Nodes=${names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
} >"$conf"

export SLURM_CONF="$conf"
slurmctld -f "$conf"
for i in $(seq "$nodes"); do
  mkdir -p "$dir/spool/n$i"
  slurmd -f "$conf" -N "n$i"
done

# Ready when every node is idle.
for _ in $(seq 150); do
  idle=$(sinfo -h -N -o '%T' 2>/dev/null | grep -c '^idle' || true)
  [ "$idle" = "$nodes" ] && { echo "$conf"; exit 0; }
  sleep 0.2
done
echo "slurm_cluster: nodes did not become idle; logs in $dir/log" >&2
sinfo -N >&2 || true
tail -n 20 "$dir"/log/*.log >&2 || true
stop_cluster
exit 1
