# A host CPython copied into the store, laid out like nixpkgs' python3:
#   bin/python3.X, bin/python3, bin/python; lib/libpython3.X.so.1.0; lib/python3.X/ (stdlib,
#   lib-dynload, empty site-packages). $exe, $stdlib and $libs are imported host files
#   (store paths).
# The interpreter, libpython and the lib-dynload extensions are re-linked with patchelf
# onto the demo glibc ($glibc) and the store copies of the libraries they need ($rpath).
# The stdlib is byte-compiled here (unchecked-hash pycs, like nixpkgs), so that running it
# never writes __pycache__ into the store (root can write to /nix/store on this host).
set -eu -o pipefail
lib="$out/lib/python$pythonVersion"
exe_out="$out/bin/python$pythonVersion"
mkdir -p "$out/bin" "$out/lib"

# 1. stdlib: imported already filtered (no tests, tkinter, idle, site-packages; pkgs.nix)
cp -R "$stdlib" "$lib"
chmod -R u+w "$lib"
[ -f "$lib/os.py" ] || { echo "no stdlib in $stdlib" >&2; exit 1; }
mkdir -p "$lib/site-packages"
echo "This directory exists so that nixsnake can install Python packages next to it." > "$lib/site-packages/README.txt"

# 2. interpreter and libpython
cp -L "$exe" "$exe_out"
chmod 0755 "$exe_out"
while read -r dest src; do
  [ -n "$dest" ] || continue
  cp -L "$src" "$out/$dest"
  chmod 0755 "$out/$dest"
  "$patchelf" --set-rpath "$out/lib:$rpath" "$out/$dest"
done <<END
$libs
END
# --add-needed: see default.nix ("glibc and LD_LIBRARY_PATH")
needed=""
for n in $glibcCompat; do
  if [ -e "$glibc/lib/$n" ]; then needed="$needed --add-needed $n"; fi
done
# (separate calls: patchelf 0.14 mangles the RUNPATH when --add-needed and --set-rpath are combined)
"$patchelf" $needed "$exe_out"
"$patchelf" --set-interpreter "$glibc/lib/$loader" --set-rpath "$out/lib:$rpath" "$exe_out"
[ "$("$patchelf" --print-rpath "$exe_out")" = "$out/lib:$rpath" ] || { echo "patchelf did not set the RUNPATH of $exe_out" >&2; exit 1; }

# 3. extension modules
for so in "$lib"/lib-dynload/*.so; do
  chmod u+w "$so"
  "$patchelf" --set-rpath "$out/lib:$rpath" "$so"
done

# 4. build-time paths of the host prefix in sysconfig data -> this store path (the prefix
# is read from the data itself: no host path is ever handed to this builder)
src=$(sed -n "s/^ *'prefix': '\([^']*\)',\$/\1/p" "$lib"/_sysconfigdata_*.py | head -n 1)
[ -n "$src" ] && [ "$src" != / ] || { echo "no prefix found in $lib/_sysconfigdata_*.py" >&2; exit 1; }
for f in "$lib"/_sysconfigdata_*.py "$lib"/config-*/Makefile "$lib"/lib-dynload/_sysconfigdata_*.py; do
  [ -f "$f" ] || continue
  chmod u+w "$f"
  sed -i "s|$src|$out|g" "$f"
done

ln -s "python$pythonVersion" "$out/bin/python3"
ln -s "python$pythonVersion" "$out/bin/python"

# 5. smoke test (fails the build loudly) and byte-compilation with the new interpreter
# (-I ignores PYTHON* variables, so -B keeps the smoke test from writing timestamp pycs,
# which compileall would keep and which would go stale once nix resets the mtimes)
"$exe_out" -I -B -c "
import sys, os, ssl, sqlite3, ctypes, zlib, bz2, lzma, hashlib, json, decimal, uuid, socket
assert sys.prefix == os.environ['out'], (sys.prefix, os.environ['out'])
assert sys.version.split()[0] == os.environ['pythonFullVersion'], sys.version
"
"$exe_out" -I -B -m compileall -f -q -j "${NIX_BUILD_CORES:-1}" --invalidation-mode unchecked-hash \
  -x "$compileSkip" "$lib" > compile.log 2>&1 || { cat compile.log >&2; echo "compileall failed" >&2; exit 1; }
# every pyc must be an unchecked-hash pyc (flags word = 1), or python would rewrite it
"$exe_out" -I -B -c "
import os, sys
bad = []
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        if f.endswith('.pyc'):
            with open(os.path.join(d, f), 'rb') as fh:
                if fh.read(8)[4:8] != b'\\x01\\x00\\x00\\x00': bad.append(os.path.join(d, f))
assert not bad, bad[:5]
" "$lib"
find "$out" -type d -exec chmod 0555 {} +
