#!/usr/bin/env bash
# Stop the one-node SLURM test cluster started by .ci/slurm-up.sh (slurmd, slurmctld,
# munged), each by the pid in its own pid file (never by process name). Leaves
# configuration, state and the placeholder /dev/nvidia* files in place.
# Safe to run when nothing is running.
set -euo pipefail

say() { printf 'slurm-down: %s\n' "$*"; }

stop() {  # name pidfile
    local name=$1 f=$2 pid
    if [ -s "$f" ] && pid=$(cat "$f") && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
        say "stopped $name (pid $pid)"
    else
        say "$name not running (no live pid in $f)"
    fi
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop munged /run/munge/munged.pid
