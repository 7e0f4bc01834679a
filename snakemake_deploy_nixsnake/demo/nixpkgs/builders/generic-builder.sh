# The demo's stdenv builder (runs under the demo bash, like nixpkgs' setup.sh with set -eu
# -o pipefail): PATH = the demo base tools + bin/ of the inputs; then either $buildCommand
# (runCommand), or the phases unpack (src: a directory or tarball), configure, build,
# install with their pre/post hooks (stdenv.mkDerivation subset).
set -eu -o pipefail
PATH="$demoBasePath"
for p in ${demoInputs:-}; do
  if [ -d "$p/bin" ]; then PATH="$p/bin:$PATH"; fi
done
export PATH
export NIX_BUILD_TOP="${NIX_BUILD_TOP:-$PWD}" SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"
runHook() { local h="$1"; if [ -n "${!h:-}" ]; then eval "${!h}"; fi; }
if [ -n "${buildCommandPath:-}" ]; then
  source "$buildCommandPath"
elif [ -n "${buildCommand:-}" ]; then
  eval "$buildCommand"
else
  if [ -n "${src:-}" ] && [ "${dontUnpack:-}" != 1 ]; then
    runHook preUnpack
    if [ -n "${unpackPhase:-}" ]; then eval "$unpackPhase"
    elif [ -d "$src" ]; then cp -R "$src" ./source; chmod -R u+w ./source; cd ./source
    else mkdir source; tar -xf "$src" -C source; cd source
      set -- *; if [ $# = 1 ] && [ -d "$1" ]; then cd "$1"; fi
    fi
    runHook postUnpack
  fi
  for phase in configure build install; do
    runHook "pre${phase^}"
    runHook "${phase}Phase"
    runHook "post${phase^}"
  done
  [ -e "$out" ] || { echo "$name: installPhase did not create \$out" >&2; exit 1; }
fi
