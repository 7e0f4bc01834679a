# libdemo: three outputs, `bin` first (like glib or curl in nixpkgs). $bin: a config
# script; $out: lib/libdemo.so.1 (a copy of the demo zlib's libz.so.1, loadable as it is);
# $dev: a header. Nothing of it is built: it only has nixpkgs' shape.
set -eu -o pipefail
mkdir -p "$bin/bin" "$out/lib" "$dev/include"
cp "$zlib/lib/libz.so.1" "$out/lib/libdemo.so.1"
chmod 0555 "$out/lib/libdemo.so.1"
ln -s libdemo.so.1 "$out/lib/libdemo.so"
printf '#!%s\necho "-L%s/lib -ldemo%s"\n' "$(command -v sh)" "$out" "${cudaSupport:+ -DLIBDEMO_CUDA}" > "$bin/bin/libdemo-config"
chmod 0555 "$bin/bin/libdemo-config"
echo "/* libdemo: nixsnake demo package set (a copy of zlib; no API of its own) */" > "$dev/include/libdemo.h"
