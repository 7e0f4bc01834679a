# A host CPython copied into the store, laid out like nixpkgs' python3:
#   bin/python3.X, bin/python3, bin/python; lib/libpython3.X.so.1.0; lib/python3.X/ (stdlib,
#   lib-dynload, empty site-packages); include/python3.X.
# The interpreter, libpython and the lib-dynload extensions are re-linked with patchelf
# onto the demo glibc ($glibc) and the store copies of the libraries they need ($rpath).
# The stdlib is byte-compiled here (unchecked-hash pycs, like nixpkgs), so that running it
# never writes __pycache__ into the store (root can write to /nix/store on this host).
set -eu -o pipefail
src="$hostPrefix"
lib="$out/lib/python$pythonVersion"
exe="$out/bin/python$pythonVersion"
mkdir -p "$out/bin" "$lib" "$out/include"

# 1. stdlib, without the parts nixpkgs also splits off or that only bloat the closure
for e in "$src/lib/python$pythonVersion"/* ; do
  n=$(basename "$e")
  case " $skipTop " in *" $n "*) continue ;; esac
  cp -R "$e" "$lib/"
done
[ -f "$lib/os.py" ] || { echo "no stdlib copied from $src" >&2; exit 1; }
find "$lib" -depth -type d -name __pycache__ -exec rm -rf {} +
# test suites inside packages (ctypes/test, unittest/test, lib2to3/tests, ...)
find "$lib" -depth -mindepth 2 -type d \( -name test -o -name tests -o -name idle_test \) -exec rm -rf {} +
for pat in $skipGlobs; do
  for f in $lib/$pat; do if [ -e "$f" ]; then rm -rf "$f"; fi; done
done
mkdir -p "$lib/site-packages"
echo "This directory exists so that nixsnake can install Python packages next to it." > "$lib/site-packages/README.txt"
if [ -d "$src/include/python$pythonVersion" ]; then
  cp -R "$src/include/python$pythonVersion" "$out/include/"
fi

# 2. interpreter and libpython
cp -L "$hostExe" "$exe"
chmod 0755 "$exe"
if [ -n "$hostLibpython" ]; then
  cp -L "$hostLibpython" "$out/lib/$libpythonName"
  chmod 0755 "$out/lib/$libpythonName"
  "$patchelf" --set-rpath "$rpath" "$out/lib/$libpythonName"
  if [ -f "$src/lib/libpython3.so" ]; then
    cp -L "$src/lib/libpython3.so" "$out/lib/libpython3.so"
    chmod 0755 "$out/lib/libpython3.so"
    "$patchelf" --set-rpath "$out/lib:$rpath" "$out/lib/libpython3.so"
  fi
fi
# --add-needed: see default.nix ("glibc and LD_LIBRARY_PATH")
needed=""
for n in $glibcCompat; do
  if [ -e "$glibc/lib/$n" ]; then needed="$needed --add-needed $n"; fi
done
# (separate calls: patchelf 0.14 mangles the RUNPATH when --add-needed and --set-rpath are combined)
"$patchelf" $needed "$exe"
"$patchelf" --set-interpreter "$glibc/lib/$loader" --set-rpath "$out/lib:$rpath" "$exe"
[ "$("$patchelf" --print-rpath "$exe")" = "$out/lib:$rpath" ] || { echo "patchelf did not set the RUNPATH of $exe" >&2; exit 1; }

# 3. extension modules
for so in "$lib"/lib-dynload/*.so; do
  chmod u+w "$so"
  "$patchelf" --set-rpath "$out/lib:$rpath" "$so"
done

# 4. build-time paths of the host prefix in sysconfig data -> this store path
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
"$exe" -I -B -c "
import sys, os, ssl, sqlite3, ctypes, zlib, bz2, lzma, hashlib, json, decimal, uuid, socket
assert sys.prefix == os.environ['out'], (sys.prefix, os.environ['out'])
assert sys.version.split()[0] == os.environ['pythonFullVersion'], sys.version
"
"$exe" -I -B -m compileall -f -q -j "${NIX_BUILD_CORES:-1}" --invalidation-mode unchecked-hash \
  -x "$compileSkip" "$lib" > compile.log 2>&1 || { cat compile.log >&2; echo "compileall failed" >&2; exit 1; }
# every pyc must be an unchecked-hash pyc (flags word = 1), or python would rewrite it
"$exe" -I -B -c "
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
