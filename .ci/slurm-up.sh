#!/usr/bin/env bash
# Bring up a one-node SLURM test cluster on this machine (Debian 12, slurm-wlm 22.05, root).
#
# What it does (idempotent: safe to run any number of times):
#   1. checks that slurmctld, slurmd, munged and the client tools are installed
#      (this script installs nothing; .ci/run does `apt-get install slurm-wlm munge`);
#   2. creates PLACEHOLDER files /dev/nvidia0 and /dev/nvidia1 if absent. They are empty
#      regular files, NOT GPUs: gres.conf needs a File= per GPU for the scheduler to count
#      and bind them, so `--gres=gpu:N` jobs can be scheduled on a machine without a GPU.
#      Nothing can run CUDA code on them. SLURM sets neither SLURM_JOB_GPUS nor
#      CUDA_VISIBLE_DEVICES for such jobs on this rig;
#   3. writes /etc/slurm/slurm.conf and /etc/slurm/gres.conf (one node = this host,
#      CPUs=$(nproc), RealMemory from /proc/meminfo minus a margin, Gres=gpu:2, partition
#      `main` Default=YES). If a file's content changed, running daemons are restarted;
#   4. creates a munge key if missing, starts munged, slurmctld and slurmd if not running;
#   5. resumes the node and waits (bounded) until sinfo shows it idle and a trivial batch
#      job has completed.
#
# Environment knobs: SLURM_UP_TIMEOUT (seconds per wait, default 60).
set -euo pipefail

TIMEOUT=${SLURM_UP_TIMEOUT:-60}
CONF_DIR=/etc/slurm
HOST=$(hostname -s)  # the name slurmd registers under
PARTITION=main

say() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
    die "must run as root (writes /etc/slurm, starts daemons)"
fi

# --- 1. tools -------------------------------------------------------------------------
missing=()
for tool in slurmctld slurmd munged munge unmunge scontrol sinfo sbatch squeue; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        missing+=("$tool")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    die "missing: ${missing[*]} (install with: apt-get install -y slurm-wlm munge)"
fi
export PATH="$PATH:/usr/sbin:/sbin"
say "tools present ($(slurmd -V))"

# --- 2. placeholder GPU device files ---------------------------------------------------
for dev in /dev/nvidia0 /dev/nvidia1; do
    if [ -e "$dev" ]; then
        say "$dev exists (left as is)"
    else
        # Placeholder for the scheduler only: an empty regular file, not a GPU device.
        touch "$dev"
        say "created placeholder $dev (empty file for SLURM's gres.conf, NOT a GPU)"
    fi
done

# --- 3. configuration ------------------------------------------------------------------
ncpus=$(nproc)
mem_total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Leave a margin (10%, at least 512 MB) so slurmd never finds less memory than configured.
margin=$(( mem_total_mb / 10 ))
if [ "$margin" -lt 512 ]; then margin=512; fi
real_mem=$(( mem_total_mb - margin ))
if [ "$real_mem" -lt 256 ]; then real_mem=256; fi

# slurmd finds its NodeName from the short host name; if that name does not resolve,
# give the controller and node an explicit loopback address instead.
ctld_host=$HOST
node_addr=""
if ! getent hosts "$HOST" >/dev/null 2>&1; then
    ctld_host="${HOST}(127.0.0.1)"
    node_addr=" NodeAddr=127.0.0.1"
    say "host name '$HOST' does not resolve: using 127.0.0.1 for controller and node"
fi

mkdir -p "$CONF_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm

slurm_conf=$(cat <<EOF
# Written by nixsnake .ci/slurm-up.sh: a one-node test cluster. Do not edit by hand.
ClusterName=nixsnake-ci
SlurmctldHost=${ctld_host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# Use the configured node values even if the hardware probe disagrees (never drain).
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Keep finished jobs visible to squeue for an hour: without accounting (sacct is off),
# snakemake-executor-plugin-slurm reads job states from squeue.
MinJobAge=3600
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=${HOST}${node_addr} CPUs=${ncpus} RealMemory=${real_mem} Gres=gpu:2 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
)

gres_conf=$(cat <<EOF
# Written by nixsnake .ci/slurm-up.sh. /dev/nvidia0 and /dev/nvidia1 are PLACEHOLDER
# files created by that script so the scheduler can count two GPUs; they are not GPUs.
NodeName=${HOST} Name=gpu File=/dev/nvidia[0-1]
EOF
)

changed=0
write_if_changed() {  # path content
    local path=$1 content=$2
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        say "$path unchanged"
    else
        printf '%s\n' "$content" > "$path.tmp"
        mv "$path.tmp" "$path"
        changed=1
        say "wrote $path"
    fi
}
write_if_changed "$CONF_DIR/slurm.conf" "$slurm_conf"
write_if_changed "$CONF_DIR/gres.conf" "$gres_conf"
say "node ${HOST}: CPUs=${ncpus} RealMemory=${real_mem} (MemTotal ${mem_total_mb} MB) Gres=gpu:2"

# --- 4. munge --------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    say "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
    say "munged already running"
else
    if command -v runuser >/dev/null 2>&1; then
        runuser -u munge -- munged
    else
        munged --force
    fi
    for _ in $(seq 1 20); do munge_ok && break; sleep 0.5; done
    munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
    say "started munged"
fi

# --- 5. slurm daemons ------------------------------------------------------------------
pidfile() { echo "/run/slurm/$1.pid"; }
running() {  # name: alive per its pid file (written by the daemon itself)
    local f; f=$(pidfile "$1")
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}
stop() {  # name: stop the daemon by the pid in its pid file, never by name
    local f pid; f=$(pidfile "$1")
    if running "$1"; then
        pid=$(cat "$f")
        kill -TERM "$pid" || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
        say "stopped $1 (pid $pid; configuration changed)"
    fi
}
if [ "$changed" = 1 ]; then
    stop slurmd
    stop slurmctld
fi

if running slurmctld; then
    say "slurmctld already running"
else
    slurmctld
    say "started slurmctld"
fi
for _ in $(seq 1 "$TIMEOUT"); do scontrol ping >/dev/null 2>&1 && break; sleep 1; done
scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"

if running slurmd; then
    say "slurmd already running"
else
    slurmd
    say "started slurmd"
fi

# --- 6. node up, trivial job -----------------------------------------------------------
node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }
state=""
for i in $(seq 1 "$TIMEOUT"); do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        *drain*|*down*|*fail*|unknown*|"")
            # A node drained by an earlier run, or not yet registered: resume it.
            if [ $((i % 5)) = 1 ]; then
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            fi
            ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated|completing) say "node $HOST is $state" ;;
    *) die "node $HOST is '${state}' after ${TIMEOUT}s: $(scontrol show node "$HOST" | grep -i reason || true)" ;;
esac

out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
if ! timeout "$TIMEOUT" sbatch --wait --quiet -N1 -p "$PARTITION" -t 1 -o "$out" --wrap 'echo ok' ; then
    die "trivial batch job did not complete within ${TIMEOUT}s"
fi
grep -qx ok "$out" || die "trivial batch job produced no 'ok' (got: $(cat "$out"))"
say "trivial job completed in $(( $(date +%s) - start ))s"
sinfo
say "cluster ready: partition '$PARTITION', node '$HOST' with gpu:2 (placeholder devices)"
