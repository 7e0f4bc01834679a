# Builder of the nixsnake environment root: one bin/ with every command, a Python venv
# (pyvenv.cfg) whose site-packages are the locked wheels, and nix-support/nixsnake-env.json
# telling the image step which PATH and LD_LIBRARY_PATH to set.
mkdir -p "$out/bin" "$out/nix-support"
if [ -n "$python" ]; then
  # A venv made of symlinks: no PYTHONPATH needed, nothing leaks into other Pythons.
  printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' "$python" "$pythonVersion" > "$out/pyvenv.cfg"
  mkdir -p "$out/lib/python$pythonVersion"
  if [ -n "$pythonPackages" ]; then
    ln -s "$pythonPackages/lib/python$pythonVersion/site-packages" "$out/lib/python$pythonVersion/site-packages"
  else
    mkdir -p "$out/lib/python$pythonVersion/site-packages"
  fi
  for exe in python python3 "python$pythonVersion"; do
    if [ -e "$python/$exe" ]; then ln -s "$python/$exe" "$out/bin/$exe"; fi
  done
fi
for p in $paths; do
  if [ -d "$p/bin" ]; then
    for f in "$p/bin/"*; do
      [ -e "$f" ] || continue
      name=$(basename "$f")
      if [ ! -e "$out/bin/$name" ] && [ ! -L "$out/bin/$name" ]; then
        ln -s "$f" "$out/bin/$name"
      fi
    done
  fi
done
printf '{"path": ["%s"], "ld_library_path": "%s", "ssl_cert_file": "%s", "bash": "%s", "python": "%s"}\n' \
  "$out/bin" "$ldLibraryPath" "$sslCertFile" "$bash" "$python" > "$out/nix-support/nixsnake-env.json"
