# The blob package: share/bench-chunks names every chunk, so the chunks are in its
# closure, and bin/bench-blob prints them. The bin/ entry matters: nixsnake's env root
# only links (and so only keeps in the closure) packages that have a bin/ directory.
set -eu -o pipefail
mkdir -p "$out/share" "$out/bin"
for c in $chunks; do echo "$c"; done > "$out/share/bench-chunks"
printf '#!%s\nexec cat %s/share/bench-chunks\n' "$shell" "$out" > "$out/bin/bench-blob"
chmod 0555 "$out/bin/bench-blob"
