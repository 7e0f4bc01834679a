# nixpkgs' rWrapper: bin/R and bin/Rscript run $R with R_LIBS_SITE = library/, which
# links the requested R packages and their dependencies (nix-support/propagated-build-inputs,
# closed over by pkgs.nix).
set -eu -o pipefail
export HOME="$PWD"
mkdir -p "$out/bin" "$out/library"
for p in ${packagePaths:-}; do
  for d in "$p"/library/*; do
    [ -e "$d" ] || continue
    [ -e "$out/library/$(basename "$d")" ] || ln -s "$d" "$out/library/$(basename "$d")"
  done
done
for prog in R Rscript; do
  cat > "$out/bin/$prog" <<END
#!$shell
R_LIBS_SITE="$out/library\${R_LIBS_SITE:+:\$R_LIBS_SITE}"
export R_LIBS_SITE
exec "$R/bin/$prog" "\$@"
END
  chmod 0555 "$out/bin/$prog"
done
# every requested package loads (a stand-in says that it is one, on stderr)
"$out/bin/Rscript" -e 'for (p in commandArgs(TRUE)) suppressPackageStartupMessages(library(p, character.only = TRUE))' \
  ${packageNames:-}
