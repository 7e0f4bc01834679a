# Copy a list of host files ($files: absolute paths without whitespace) to $out/files/,
# keeping their paths. Fails loudly (set -o pipefail) instead of caching a short copy.
set -eu -o pipefail
mkdir -p "$out/files"
cd /
# shellcheck disable=SC2086 # word splitting of the path list is intended
tar -cf - $files | tar -xf - -C "$out/files"
n=$(find "$out/files" -type f | wc -l)
want=$(for f in $files; do echo "$f"; done | wc -l)
[ "$n" = "$want" ] || { echo "copied $n files, expected $want" >&2; exit 1; }
