# Builder of an environment root with a [conda] layer: the plain root (mkenv.sh), then
# nix-support/nixsnake-env.json gains the conda prefix's bin on PATH after the
# environment's own bin (nix packages win; conda's stay reachable as
# $CONDA_PREFIX/bin/NAME) and the conda part of the build (nix-support/nixsnake-conda.json:
# activation variables, warnings). conda's binaries expect the glibc loader at
# /lib64/ld-linux-x86-64.so.2, which every image has (mkenv.sh).
. "$mkenv"
[ -n "$loader" ] || { echo "nixsnake: [conda] needs a glibc loader path for $system" >&2; exit 1; }
info="$out/nix-support/nixsnake-env.json"
line=$(cat "$info")
head="{\"path\": [\"$out/bin\"]"
rest=${line#"$head"}
if [ "$rest" = "$line" ]; then echo "nixsnake: unexpected $info: $line" >&2; exit 1; fi
conda=$(tr -d '\n' < "$condaPrefix/nix-support/nixsnake-conda.json")
printf '{"path": ["%s", "%s"]%s, "conda": %s}\n' \
  "$out/bin" "$condaPrefix/bin" "${rest%\}}" "$conda" > "$info"
echo "$condaPrefix" >> "$out/nix-support/nixsnake-paths"
