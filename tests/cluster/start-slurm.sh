#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (controller and compute node on localhost),
# for the cluster tests and for trying the SLURM profile. Needs root; no systemd.
#   tests/cluster/start-slurm.sh [--install]    # --install: apt-get the Debian packages first
# Stop it with tests/cluster/stop-slurm.sh. Logs: /var/log/slurm/.
set -euo pipefail

if [[ "${1:-}" == "--install" ]] && ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
for program in munged slurmctld slurmd sbatch; do
  command -v "$program" >/dev/null || { echo "start-slurm: $program not found (run with --install)" >&2; exit 1; }
done

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, 1 GB kept back

# munge: the shared key that authenticates every SLURM message
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
# a munged still shutting down (stop-slurm.sh just ran) is waited for, then started afresh
for _ in $(seq 1 20); do
  [[ -S /run/munge/munge.socket.2 ]] && pgrep -x munged >/dev/null && break
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  sleep 0.5
done

# a GPU GRES needs device files (a count-only GPU is dropped): two stand-ins for /dev/nvidia*
for number in 0 1; do
  [[ -e /dev/fakegpu$number ]] || mknod /dev/fakegpu$number c 1 3  # behaves as /dev/null
done

# the config must sit at /etc/slurm/slurm.conf: the executor plugin strips SLURM_* variables
# (SLURM_CONF included) inside jobs, and srun there would not find another path
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=dlworkflow
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# no accounting database: Snakemake asks squeue, which forgets a job MinJobAge s after it ends
MinJobAge=300
ReturnToService=2
SlurmdTimeout=60
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
NodeName=$host Name=gpu File=/dev/fakegpu[0-1]
CONF

pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c   # -c: forget jobs of an earlier run
slurmd

for _ in $(seq 1 60); do
  state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
  if [[ "$state" == idle* ]]; then
    echo "start-slurm: node $host idle ($cpus CPUs, ${memory} MB, gpu:2)"
    exit 0
  fi
  if [[ "$state" == down* || "$state" == drain* ]]; then
    scontrol update nodename="$host" state=resume 2>/dev/null || true
  fi
  sleep 1
done
echo "start-slurm: the node did not become idle; see /var/log/slurm/" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
