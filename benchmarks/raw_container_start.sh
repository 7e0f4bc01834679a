#!/bin/sh
# The floor of a container start, for the job-start benchmark: mount the SIF's squashfs
# partition with squashfuse, run CMD under bubblewrap with the image as the read-only
# root (plus /proc, /dev, a /tmp), unmount. No environment set-up, no binds, no checks:
# what any squashfuse+bwrap runtime must do at the least.
#   sh raw_container_start.sh IMAGE CMD [ARG...]
set -eu
img=$1
shift
mnt=$(mktemp -d "${TMPDIR:-/tmp}/nixsnake-bench-start.XXXXXX")
squashfuse_ll -o offset=32768 "$img" "$mnt"
rc=0
bwrap --ro-bind "$mnt" / --proc /proc --dev /dev --tmpfs /tmp "$@" || rc=$?
fusermount3 -u "$mnt" 2>/dev/null || fusermount -u "$mnt"
rmdir "$mnt"
exit "$rc"
