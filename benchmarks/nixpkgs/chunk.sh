# Copy an imported chunk of host files ($src, a store path) to $out/files/, keeping their
# paths. Fails loudly (set -o pipefail) instead of caching a short copy.
set -eu -o pipefail
mkdir -p "$out"
cp -R "$src" "$out/files"
n=$(find "$out/files" -type f | wc -l)
[ "$n" = "$count" ] || { echo "copied $n files, expected $count" >&2; exit 1; }
