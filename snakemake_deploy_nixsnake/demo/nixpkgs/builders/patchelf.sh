# Bootstrap of patchelf: every other re-linked package needs it, and it is itself a
# dynamically linked host program (C++). The imported copy runs once through the demo
# loader with an explicit library path, re-linking a copy of itself and its libraries
# onto the demo glibc; from then on bin/patchelf runs like any demo program.
set -eu -o pipefail
mkdir -p "$out/bin" "$out/lib" boot
# (the bootstrap copy loads its libraries from ./boot: patching a library in place while
# the running process has it mapped would crash it)
while read -r soname src; do
  [ -n "$soname" ] || continue
  cp -L "$src" "boot/$soname"
  cp -L "$src" "$out/lib/$soname"
  chmod 0755 "$out/lib/$soname"
done <<END
$deps
END
cp -L "$exe" "$out/bin/patchelf"
chmod 0755 "$out/bin/patchelf"
cp -L "$exe" boot/patchelf
run() { "$glibc/lib/$loader" --library-path "$PWD/boot:$glibc/lib" boot/patchelf "$@"; }
run --set-interpreter "$glibc/lib/$loader" --set-rpath "$out/lib:$glibc/lib" "$out/bin/patchelf"
for lib in "$out"/lib/*; do
  run --set-rpath "$out/lib:$glibc/lib" "$lib"
  chmod 0555 "$lib"
done
chmod 0555 "$out/bin/patchelf"
[ "$("$out/bin/patchelf" --print-rpath "$out/bin/patchelf")" = "$out/lib:$glibc/lib" ] ||
  { echo "re-linked patchelf does not run" >&2; exit 1; }
