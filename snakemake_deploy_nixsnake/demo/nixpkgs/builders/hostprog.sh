# One host program (and the non-glibc libraries it needs), imported into the store, copied
# into a package and re-linked onto the demo glibc: interpreter = $glibc/lib/$loader,
# RUNPATH = $out/lib:$glibc/lib.
set -eu -o pipefail
mkdir -p "$out/bin" "$out/lib"
cp -L "$exe" "$out/bin/$exeName"
chmod 0755 "$out/bin/$exeName"
"$patchelf" --set-interpreter "$glibc/lib/$loader" --set-rpath "$out/lib:$glibc/lib" "$out/bin/$exeName"
while read -r soname src; do
  [ -n "$soname" ] || continue
  cp -L "$src" "$out/lib/$soname"
  chmod 0755 "$out/lib/$soname"
  "$patchelf" --set-rpath "$out/lib:$glibc/lib" "$out/lib/$soname"
done <<END
$deps
END
while read -r link target; do
  [ -n "$link" ] || continue
  ln -s "$target" "$out/$link"
done <<END
${links:-}
END
chmod 0555 "$out/bin/$exeName"
eval "$check"
