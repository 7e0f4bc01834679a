# Stand-in for an R package: R cannot be built on this machine, so this only records the
# package name. It is NOT the R package.
set -eu -o pipefail
mkdir -p "$out/library/$rName"
printf 'Package: %s\nVersion: 0.0.0-demo\nDescription: nixsnake demo stand-in; NOT the real R package.\n' \
  "$rName" > "$out/library/$rName/DESCRIPTION"
