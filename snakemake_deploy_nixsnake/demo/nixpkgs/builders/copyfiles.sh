# Copy imported host files (already in the store) into a package: $files has
# "dest-relative-to-out store-path" lines. If $rpath is set, each copied ELF file gets
# RUNPATH "$rpath" (with @out@ = $out), set with the demo's $patchelf.
# $links has "link target" lines (relative to $out); $check is evaluated at the end.
set -eu -o pipefail
mkdir -p "$out"
while read -r dest src; do
  [ -n "$dest" ] || continue
  [ -f "$src" ] || { echo "imported file $src is missing" >&2; exit 1; }
  mkdir -p "$out/$(dirname "$dest")"
  cp -L "$src" "$out/$dest"
  chmod 0644 "$out/$dest"
  if [ -n "${rpath:-}" ]; then
    chmod u+w "$out/$dest"
    "$patchelf" --set-rpath "$(echo "$rpath" | sed "s|@out@|$out|g")" "$out/$dest"
  fi
  chmod 0555 "$out/$dest"
done <<END
$files
END
# $patches: a file of "file offset old new" lines: overwrite the string old at byte offset
# with new (same length; checked before and after)
[ -z "${patches:-}" ] || while read -r file offset old new; do
  [ -n "$file" ] || continue
  f="$out/$file"
  [ "${#old}" = "${#new}" ] || { echo "patch of $file at $offset changes the length" >&2; exit 1; }
  cur=$(dd if="$f" bs=1 skip="$offset" count="${#old}" 2>/dev/null)
  [ "$cur" = "$old" ] || { echo "$file: expected '$old' at byte $offset, found '$cur'" >&2; exit 1; }
  chmod u+w "$f"
  printf '%s' "$new" | dd of="$f" bs=1 seek="$offset" conv=notrunc 2>/dev/null
  [ "$(dd if="$f" bs=1 skip="$offset" count="${#new}" 2>/dev/null)" = "$new" ] || { echo "patching $file failed" >&2; exit 1; }
  chmod 0555 "$f"
done < "$patches"
while read -r link target; do
  [ -n "$link" ] || continue
  mkdir -p "$out/$(dirname "$link")"
  ln -s "$target" "$out/$link"
done <<END
${links:-}
END
[ -z "${check:-}" ] || eval "$check"
