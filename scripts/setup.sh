#!/usr/bin/env bash
# Install what nixsnake and its tests need on a fresh Debian 12 machine (run as root):
# system tools from Debian, then this package (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pkgs=(nix-bin squashfs-tools squashfuse fuse3 bubblewrap siftool busybox-static patchelf git strace slurm-wlm munge)
# the [conda] tests compile a small ELF package with a binary prefix placeholder
pkgs+=(gcc libc6-dev)
# the real tools of the embedded demo package set (docs/demo-package-set.md): samtools,
# bcftools, htslib, R + ggplot2, perl + the Perl modules Ensembl VEP needs
pkgs+=(samtools bcftools tabix libhts3 r-base-core r-cran-ggplot2 perl libbio-perl-perl libdbi-perl libjson-perl
       libset-intervaltree-perl libbio-db-hts-perl libperlio-gzip-perl liblist-moreutils-perl libwww-perl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# compat mode: a plain path entry, so snakemake's plugin discovery (pkgutil.iter_modules)
# sees the snakemake_software_deployment_plugin_nixsnake module
python3 -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat 2>&1 | grep -v -E "^WARNING: (Running pip as|Location)" || true
python3 -c "import snakemake_deploy_nixsnake, snakemake" # fail here if the install did not work
