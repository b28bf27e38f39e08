#!/usr/bin/env bash
# Stops what tests/cluster/start-slurm.sh started (jobs still queued are cancelled).
set -uo pipefail
command -v scancel >/dev/null && scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
pkill -x slurmd
pkill -x slurmctld
pkill -x munged
for _ in $(seq 1 20); do  # gone before a start-slurm.sh that may follow
  pgrep -x munged >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null \
    || break
  sleep 0.5
done
exit 0
