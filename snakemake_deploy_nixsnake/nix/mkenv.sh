# Builder of the nixsnake environment root: one bin/ with every command, a Python venv
# (pyvenv.cfg) whose site-packages are the locked wheels, the Perl module directories, and
# nix-support/nixsnake-env.json telling the image step which PATH, LD_LIBRARY_PATH and
# PERL5LIB to set.
mkdir -p "$out/bin" "$out/nix-support"
# walk SUBDIR PKG...: each PKG and what it propagates (nix-support/propagated-build-inputs),
# depth first, each package once per walk ($walked); appends PKG/SUBDIR to $found where it
# exists -- how nixpkgs composes python and perl environments.
walk() {
  local sub=$1 p
  shift
  for p in "$@"; do
    case "$walked" in *" $p "*) continue ;; esac
    walked="$walked$p "
    if [ -d "$p/$sub" ]; then found="$found $p/$sub"; fi
    if [ -f "$p/nix-support/propagated-build-inputs" ]; then
      walk "$sub" $(cat "$p/nix-support/propagated-build-inputs")
    fi
  done
}
if [ -n "$python" ]; then
  # A venv made of symlinks: no PYTHONPATH needed, nothing leaks into other Pythons.
  printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' "$python" "$pythonVersion" > "$out/pyvenv.cfg"
  site="$out/lib/python$pythonVersion/site-packages"
  mkdir -p "$site"
  # One .pth adds, in order, the locked wheels and every nixpkgs python package among
  # $paths with its propagated dependencies (nix-support/propagated-build-inputs), the
  # way nixpkgs composes python environments.
  walked=" "
  found=""
  if [ -n "$pythonPackages" ]; then walk "lib/python$pythonVersion/site-packages" "$pythonPackages"; fi
  for p in $paths; do
    if [ "$p" != "$pythonPackages" ] && [ "$p/bin" != "$python" ] && [ -d "$p/lib/python$pythonVersion/site-packages" ]; then
      walk "lib/python$pythonVersion/site-packages" "$p"
    fi
  done
  for d in $found; do
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
# Perl modules: lib/perl5/site_perl of every package among $paths and of their propagated
# dependencies (nix-support/propagated-build-inputs), depth first in the order of $paths,
# as nixpkgs' makePerlPath / perl.withPackages compose them. The image sets PERL5LIB to
# them (perl adds each one's version and arch subdirectories itself), so `perl` with
# `perlPackages.X` in one env file finds X, as Python packages are found through the venv.
walked=" "
found=""
walk lib/perl5/site_perl $paths
perl5lib=""
for d in $found; do perl5lib="$perl5lib${perl5lib:+:}$d"; done
# Every requested package stays in the image's closure, also those without bin/ (data,
# libraries): nix keeps what the output names, so name them all.
for p in $paths; do echo "$p"; done > "$out/nix-support/nixsnake-paths"
# The glibc loader the image offers at /lib64/ld-linux-x86-64.so.2 ("" when nixsnake knows
# no such path for this system). Host programs bound into a container (apptainer --nv:
# nvidia-smi & co.) run on it and need its glibc's libc.so.6 & co.: nixpkgs' loader has
# its own lib/ as its built-in search path; a loader without it there (the demo package
# set's host copy, whose built-in paths are blanked) gets that directory on
# LD_LIBRARY_PATH instead.
if [ -n "$loader" ]; then
  [ -e "$loader" ] || { echo "nixsnake: the ELF loader $loader does not exist in this nixpkgs' glibc" >&2; exit 1; }
  glibcLib=${loader%/*}
  loaderHelp=$("$loader" --help 2>/dev/null || true)
  case "$loaderHelp" in
    *" $glibcLib (system search path)"*) ;;
    *) case ":$ldLibraryPath:" in
         *":$glibcLib:"*) ;;
         *) ldLibraryPath="${ldLibraryPath:+$ldLibraryPath:}$glibcLib" ;;
       esac ;;
  esac
fi
# warnings of the parts (JSON lists of strings, written by their builders)
warnings="[]"
if [ -n "${pythonPackages:-}" ] && [ -f "$pythonPackages/nix-support/nixsnake-warnings.json" ]; then
  warnings=$(cat "$pythonPackages/nix-support/nixsnake-warnings.json")
fi
printf '{"path": ["%s"], "ld_library_path": "%s", "ssl_cert_file": "%s", "bash": "%s", "python": "%s", "loader": "%s", "perl5lib": "%s", "system": "%s", "warnings": %s}\n' \
  "$out/bin" "$ldLibraryPath" "$sslCertFile" "$bash" "$python" "$loader" "$perl5lib" "$system" "$warnings" > "$out/nix-support/nixsnake-env.json"
