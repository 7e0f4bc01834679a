# buildEnv / symlinkJoin: a tree of real directories whose files are symlinks into $paths.
# Only the subtrees in $pathsToLink are linked. A file present in two paths is an error
# unless $ignoreCollisions = 1 (then the first path wins, like nixpkgs' priorities).
set -eu -o pipefail
mkdir -p "$out"
for p in $paths; do
  for sub in $pathsToLink; do
    sub=${sub%/}
    srcdir="$p$sub"
    [ -d "$srcdir" ] || continue
    mkdir -p "$out$sub"
    dirs=$(cd "$srcdir" && find . -mindepth 1 -type d)
    while IFS= read -r d; do
      [ -n "$d" ] || continue
      mkdir -p "$out$sub/$d"
    done <<END
$dirs
END
    files=$(cd "$srcdir" && find . -mindepth 1 ! -type d)
    while IFS= read -r f; do
      [ -n "$f" ] || continue
      f=${f#./}
      t="$out$sub/$f"
      if [ -e "$t" ] || [ -L "$t" ]; then
        if [ "$(readlink "$t")" = "$srcdir/$f" ]; then continue; fi
        if [ "${ignoreCollisions:-}" = 1 ]; then continue; fi
        echo "collision between $(readlink "$t") and $srcdir/$f" >&2
        exit 1
      fi
      ln -s "$srcdir/$f" "$t"
    done <<END
$files
END
  done
done
[ -z "${postBuild:-}" ] || eval "$postBuild"
