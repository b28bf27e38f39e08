#!/usr/bin/env bash
# Stops what tests/cluster/start-slurm.sh started (jobs still queued are cancelled).
set -uo pipefail
command -v scancel >/dev/null && scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
pkill -x slurmd
pkill -x slurmctld
pkill -x munged
exit 0
