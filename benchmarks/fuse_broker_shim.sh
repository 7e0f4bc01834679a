#!/bin/sh
# Benchmark-only stand-in for `squashfuse_ll` (put first on PATH while a job is traced).
#
# `strace -f` of a job whose files live on a FUSE mount deadlocks when the same strace
# also traces the FUSE server: strace reads the job's memory, the page fault waits for
# squashfuse, squashfuse waits in a ptrace stop for strace. So the traced job does not
# start squashfuse itself: this shim hands its arguments to the benchmark process
# (benchmarks/suites.py FuseBroker), which runs the real squashfuse_ll outside the
# job's strace (under a strace of its own) and reports the exit status back.
set -eu
d=${NIXSNAKE_BENCH_FUSE_BROKER:?not run by the benchmark}
id=$$
printf '%s\n' "$@" > "$d/$id.tmp"
mv "$d/$id.tmp" "$d/$id.req"
while [ ! -e "$d/$id.done" ]; do sleep 0.005; done
exit "$(cat "$d/$id.done")"
