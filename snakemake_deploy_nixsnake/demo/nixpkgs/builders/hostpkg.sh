# A host package (demo/hostpkgs.py): directory trees, single files and shared libraries
# imported from the host (already store paths: $trees, $files, $libs are "dest src"
# lines, dest relative to $out), laid out under $out. Then, in this order:
#  1. $patches ("file offset old new" lines): compiled-in search paths of host
#     directories are overwritten with same-length names of directories that do not
#     exist (checked before and after; before re-linking, the offsets are the host file's);
#  2. every ELF file in $elfs and every copied library is re-linked onto the demo glibc:
#     interpreter $interpreter (programs only), RUNPATH $rpath (@out@ = $out);
#  3. symlinks that leave the store or dangle are removed;
#  4. nix-support/propagated-build-inputs lists $propagated (like nixpkgs);
#  5. $postInstallScript is sourced, $postInstall evaluated, $check evaluated.
set -eu -o pipefail
mkdir -p "$out"
while read -r dest src; do
  [ -n "$dest" ] || continue
  [ -d "$src" ] || { echo "imported tree $src is missing" >&2; exit 1; }
  mkdir -p "$out/$dest"
  cp -R "$src/." "$out/$dest/"
done <<END
${trees:-}
END
chmod -R u+w "$out"
while read -r dest src; do
  [ -n "$dest" ] || continue
  [ -f "$src" ] || { echo "imported file $src is missing" >&2; exit 1; }
  mkdir -p "$out/$(dirname "$dest")"
  rm -f "$out/$dest"
  cp -L "$src" "$out/$dest"
  chmod u+w "$out/$dest"
done <<END
${files:-}
${libs:-}
END

# 1. search paths
[ -z "${patches:-}" ] || while read -r file offset old new; do
  [ -n "$file" ] || continue
  f="$out/$file"
  [ "${#old}" = "${#new}" ] || { echo "patch of $file at $offset changes the length" >&2; exit 1; }
  cur=$(dd if="$f" bs=1 skip="$offset" count="${#old}" 2>/dev/null)
  [ "$cur" = "$old" ] || { echo "$file: expected '$old' at byte $offset, found '$cur'" >&2; exit 1; }
  printf '%s' "$new" | dd of="$f" bs=1 seek="$offset" conv=notrunc 2>/dev/null
  [ "$(dd if="$f" bs=1 skip="$offset" count="${#new}" 2>/dev/null)" = "$new" ] || { echo "patching $file failed" >&2; exit 1; }
done < "$patches"

# 2. re-linking
rp=$(printf '%s' "$rpath" | sed "s|@out@|$out|g")
relink() {
  f="$out/$1"
  [ -f "$f" ] && [ ! -L "$f" ] || { echo "ELF file $1 is missing" >&2; exit 1; }
  if "$patchelf" --print-interpreter "$f" > /dev/null 2>&1; then
    "$patchelf" --set-interpreter "$interpreter" "$f"
  fi
  "$patchelf" --set-rpath "$rp" "$f"
  [ "$("$patchelf" --print-rpath "$f")" = "$rp" ] || { echo "patchelf did not set the RUNPATH of $1" >&2; exit 1; }
}
while IFS= read -r f; do
  [ -n "$f" ] || continue
  relink "$f"
done <<END
${elfs:-}
END
while read -r dest _src; do
  [ -n "$dest" ] || continue
  relink "$dest"
done <<END
${libs:-}
END

# 3. links out of the store (or to nothing) would read the host, or fail
find "$out" -type l | while IFS= read -r l; do
  t=$(readlink "$l")
  case "$t" in
    "$NIX_STORE"/*) ;;
    /*) echo "removing $l -> $t (outside the store)" >&2; rm "$l" ;;
    *) [ -e "$l" ] || { echo "removing dangling $l -> $t" >&2; rm "$l"; } ;;
  esac
done

# 4. dependencies, the nixpkgs way
if [ -n "${propagated:-}" ]; then
  mkdir -p "$out/nix-support"
  echo $propagated > "$out/nix-support/propagated-build-inputs"
fi

# 5.
[ -z "${postInstallScript:-}" ] || . "$postInstallScript"
[ -z "${postInstall:-}" ] || eval "$postInstall"
[ -z "${check:-}" ] || eval "$check"
