# Builder of the nixsnake environment root: one bin/ with every command, a Python venv
# (pyvenv.cfg) whose site-packages are the locked wheels, and nix-support/nixsnake-env.json
# telling the image step which PATH and LD_LIBRARY_PATH to set.
mkdir -p "$out/bin" "$out/nix-support"
if [ -n "$python" ]; then
  # A venv made of symlinks: no PYTHONPATH needed, nothing leaks into other Pythons.
  printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' "$python" "$pythonVersion" > "$out/pyvenv.cfg"
  site="$out/lib/python$pythonVersion/site-packages"
  mkdir -p "$site"
  # One .pth adds, in order, the locked wheels and every nixpkgs python package among
  # $paths with its propagated dependencies (nix-support/propagated-build-inputs), the
  # way nixpkgs composes python environments.
  seen=" "
  sitedirs=""
  visit() {
    for p in "$@"; do
      case "$seen" in *" $p "*) continue ;; esac
      seen="$seen$p "
      if [ -d "$p/lib/python$pythonVersion/site-packages" ]; then
        sitedirs="$sitedirs $p/lib/python$pythonVersion/site-packages"
      fi
      if [ -f "$p/nix-support/propagated-build-inputs" ]; then
        visit $(cat "$p/nix-support/propagated-build-inputs")
      fi
    done
  }
  if [ -n "$pythonPackages" ]; then visit "$pythonPackages"; fi
  for p in $paths; do
    if [ "$p" != "$pythonPackages" ] && [ "$p/bin" != "$python" ] && [ -d "$p/lib/python$pythonVersion/site-packages" ]; then
      visit "$p"
    fi
  done
  for d in $sitedirs; do
    printf 'import site; site.addsitedir("%s")\n' "$d" >> "$site/00-nixsnake.pth"
  done
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
# Every requested package stays in the image's closure, also those without bin/ (data,
# libraries): nix keeps what the output names, so name them all.
for p in $paths; do echo "$p"; done > "$out/nix-support/nixsnake-paths"
# warnings of the parts (JSON lists of strings, written by their builders)
warnings="[]"
if [ -n "${pythonPackages:-}" ] && [ -f "$pythonPackages/nix-support/nixsnake-warnings.json" ]; then
  warnings=$(cat "$pythonPackages/nix-support/nixsnake-warnings.json")
fi
printf '{"path": ["%s"], "ld_library_path": "%s", "ssl_cert_file": "%s", "bash": "%s", "python": "%s", "system": "%s", "warnings": %s}\n' \
  "$out/bin" "$ldLibraryPath" "$sslCertFile" "$bash" "$python" "$system" "$warnings" > "$out/nix-support/nixsnake-env.json"
