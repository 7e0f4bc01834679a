# writeTextFile: $textPath (nix passAsFile) -> $out$destination, optionally executable.
set -eu -o pipefail
target="$out${destination:-}"
mkdir -p "$(dirname "$target")"
cp "$textPath" "$target"
if [ "${executable:-}" = 1 ]; then chmod 0555 "$target"; else chmod 0444 "$target"; fi
[ -z "${checkPhase:-}" ] || eval "$checkPhase"
