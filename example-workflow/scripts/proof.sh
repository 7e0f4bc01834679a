#!/usr/bin/env bash
# proof.sh RULE TOOL: print evidence (key=value lines) that this command runs inside its
# nixsnake image and not on the host. Every rule of the example workflow calls it.
#   which_TOOL       the rule's main tool: a /nix/store path inside the image
#   which_python     python on PATH: a /nix/store path, or "none" in envs without Python
#   metadata         /.nixsnake/metadata.json exists only inside nixsnake images
#   host_python      the host's /usr/bin/python3 must be invisible in the container
#   image_id         the image's content id (from the metadata; the store's meta file
#                    names the env files it was built from)
#   slurm_job_id, started_*  where and when it ran (the SLURM test compares them with
#                    the images' build times)
set -uo pipefail
rule=$1
tool=$2
echo "rule=$rule"
[ "$tool" = python ] || echo "which_$tool=$(which "$tool" 2>/dev/null || echo none)"
echo "which_python=$(which python 2>/dev/null || echo none)"
if [ -e /.nixsnake/metadata.json ]; then echo "metadata=present"; else echo "metadata=missing"; fi
if [ -e /usr/bin/python3 ]; then echo "host_python=visible"; else echo "host_python=invisible"; fi
image_id=$(grep -o '"image_id": *"[0-9a-f]*"' /.nixsnake/metadata.json 2>/dev/null | head -n1 | cut -d'"' -f4)
echo "image_id=${image_id:-unknown}"
echo "container=${APPTAINER_CONTAINER:-none}"
echo "node=$(uname -n)"
echo "slurm_job_id=${SLURM_JOB_ID:-none}"
echo "started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "started_epoch=$(date +%s)"
