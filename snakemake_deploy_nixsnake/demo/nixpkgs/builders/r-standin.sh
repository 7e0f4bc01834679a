# Stand-in for an R package that the host has no Debian package for: a real, loadable
# R package (for the demo's real R) whose only content is a message saying that it is a
# stand-in, printed whenever it is loaded. It is NOT the R package $rName.
set -eu -o pipefail
export HOME="$PWD"
d="$out/library/$rName"
mkdir -p "$d/R" "$d/Meta"
cat > "$d/DESCRIPTION" <<END
Package: $rName
Version: 0.0.0
Title: nixsnake demo stand-in for the R package $rName
Description: NOT the R package $rName. The host that built this has no Debian package
    for it, so the nixsnake demo package set offers this stand-in, which only says so.
License: MIT
NeedsCompilation: no
Built: R $rVersion; ; 1980-01-01 00:00:00 UTC; unix
END
printf '# nixsnake demo stand-in: exports nothing\n' > "$d/NAMESPACE"
cat > "$d/R/$rName" <<END
.onLoad <- function(libname, pkgname)
  message("nixsnake demo stand-in for the R package ", pkgname,
          " (NOT the real package: the host has no Debian package for it)")
END
# what R CMD INSTALL would write into Meta/ (it cannot run here: it needs /bin/sh)
"$R/bin/Rscript" -e '
d <- commandArgs(TRUE)[1]
saveRDS(tools:::.split_description(tools:::.read_description(file.path(d, "DESCRIPTION"))),
        file.path(d, "Meta", "package.rds"))
saveRDS(parseNamespaceFile(basename(d), dirname(d)), file.path(d, "Meta", "nsInfo.rds"))' "$d"
msg=$(R_LIBS_SITE="$out/library" "$R/bin/Rscript" -e "library($rName)" 2>&1)
case "$msg" in
  *"nixsnake demo stand-in for the R package $rName"*) ;;
  *) echo "the stand-in for $rName does not load: $msg" >&2; exit 1 ;;
esac
