# R from the host's Debian r-base-core, laid out by hostpkg.sh (sourced from there) with
# R_HOME = $out/lib/R (share, include and doc inside it, as upstream R installs them).
# Debian's R names its install paths in its scripts and etc/ files; they are rewritten
# here to this store path or to the demo's tools. The old paths are read from the files
# themselves: no host path is ever handed to this builder.
R_HOME="$out/lib/R"
old_home=$(sed -n 's/^R_HOME_DIR=//p' "$R_HOME/bin/R")
old_share=$(sed -n 's/^R_SHARE_DIR=//p' "$R_HOME/bin/R")
old_include=$(sed -n 's/^R_INCLUDE_DIR=//p' "$R_HOME/bin/R")
old_doc=$(sed -n 's/^R_DOC_DIR=//p' "$R_HOME/bin/R")
[ -n "$old_home" ] && [ -n "$old_share" ] || { echo "bin/R does not set R_HOME_DIR / R_SHARE_DIR" >&2; exit 1; }

# 1. the shell scripts of R_HOME/bin run under the demo bash
for f in "$R_HOME"/bin/*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  [ "$(head -c 2 "$f")" = '#!' ] || continue
  sed -i -e "1s|^#! */bin/bash|#!$bash/bin/bash|" -e "1s|^#! */bin/sh|#!$bash/bin/sh|" "$f"
done

# 2. bin/R: this R_HOME (and no probing of /usr/lib64/R), the demo's sed and sh
sed -i \
  -e '/^if test "${R_HOME_DIR}" = "\//,/^fi$/d' \
  -e "s|^R_HOME_DIR=.*|R_HOME_DIR=$R_HOME|" \
  -e "s|^R_SHARE_DIR=.*|R_SHARE_DIR=$R_HOME/share|" \
  -e "s|^R_INCLUDE_DIR=.*|R_INCLUDE_DIR=$R_HOME/include|" \
  -e "s|^R_DOC_DIR=.*|R_DOC_DIR=$R_HOME/doc|" \
  -e "s|^SED=.*|SED=$busybox/bin/sed|" \
  -e "s|exec sh \"|exec $bash/bin/sh \"|" \
  "$R_HOME/bin/R"

# 3. etc/: tools by store path (busybox applets) or by name; library paths: never the
# host's site libraries (R_LIBS_SITE comes from rWrapper), no per-user library either
etc="$R_HOME/etc"
have=" $(busybox --list | tr '\n' ' ') "
sed -i -e "s|R_GZIPCMD-'[^']*'|R_GZIPCMD-'$busybox/bin/gzip'|" -e "s|PAGER-'[^']*'|PAGER-'$busybox/bin/less'|" "$etc/Renviron"
for p in $(grep -o "'/[^' ]*" "$etc/Renviron" | cut -c2- | grep -v "^$NIX_STORE/" | sort -u); do
  b=${p##*/}
  case "$have" in *" $b "*) new="$busybox/bin/$b" ;; *) new="$b" ;; esac
  sed -i "s|'$p|'$new|g" "$etc/Renviron"
done
sed -i \
  -e "s|^R_LIBS_SITE=.*|R_LIBS_SITE=\${R_LIBS_SITE:-'%S'}|" \
  -e "s|^R_LIBS_USER=.*|R_LIBS_USER=\${R_LIBS_USER:-'$R_HOME/no-user-library'}|" \
  "$etc/Renviron"
sed -i -e '/^R_LIBS_SITE=/d' "$etc/Renviron.site"
cat > "$etc/ldpaths" <<END
# nixsnake demo: R's own lib/ only (Debian's named the host's library and Java directories)
: \${R_LD_LIBRARY_PATH=\${R_HOME}/lib}
if test -z "\${LD_LIBRARY_PATH}"; then
  LD_LIBRARY_PATH="\${R_LD_LIBRARY_PATH}"
else
  LD_LIBRARY_PATH="\${R_LD_LIBRARY_PATH}:\${LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH
END
# (Makeconf only matters to R CMD INSTALL/SHLIB, which need a compiler the demo lacks)
[ ! -f "$etc/Makeconf" ] || sed -i -e "s|$old_home|$R_HOME|g" -e "s|$old_share|$R_HOME/share|g" \
  -e "s|$old_include|$R_HOME/include|g" -e "s|$old_doc|$R_HOME/doc|g" "$etc/Makeconf"
# what R reads when it starts must name no host directory (comments aside)
for f in bin/R etc/Renviron etc/Renviron.site etc/Rprofile.site etc/ldpaths; do
  [ -f "$R_HOME/$f" ] || continue
  if grep -v '^[[:space:]]*#' "$R_HOME/$f" | grep -E "(^|[[:space:]'\"=:(])/(usr|etc|bin|sbin|lib|lib64|opt)(/|$)" >&2; then
    echo "$f still names a host directory" >&2
    exit 1
  fi
done

# 4. Sys.which(): Debian's runs /usr/bin/which (a host path compiled into base R) through
# /bin/sh; this one searches PATH itself. Every R program start needs it: utils looks for
# `uname` when it loads. Without /bin/sh no program can be run from R (system(), pipe()
# and system2() go through it), so it finds nothing there, and R still starts (nix's
# sandbox, a bare bwrap).
cat >> "$R_HOME/library/base/R/Rprofile" <<'END'

## nixsnake demo package set: Sys.which() without /usr/bin/which (see builders/r.sh)
local({
    which <- function(names) {
        res <- character(length(names))
        names(res) <- names
        if (!file.exists("/bin/sh")) return(res)
        dirs <- strsplit(Sys.getenv("PATH"), ":", fixed = TRUE)[[1L]]
        dirs <- ifelse(nzchar(dirs), dirs, ".")
        for (i in seq_along(names)) {
            n <- names[i]
            if (is.na(n)) { res[i] <- NA; next }
            cands <- if (grepl("/", n, fixed = TRUE)) n else file.path(dirs, n)
            for (p in cands)
                if (file.exists(p) && !dir.exists(p) && file.access(p, 1L) == 0L) { res[i] <- p; break }
        }
        res
    }
    environment(which) <- baseenv()
    unlockBinding("Sys.which", baseenv())
    assign("Sys.which", which, envir = baseenv())
    lockBinding("Sys.which", baseenv())
})
END

# 5. bin/R and bin/Rscript, as in nixpkgs' R; Debian's Rscript has the host's R home
# compiled in and runs $RHOME/bin/R instead when RHOME is set
mkdir -p "$out/bin"
ln -s ../lib/R/bin/R "$out/bin/R"
cat > "$out/bin/Rscript" <<END
#!$bash/bin/bash
RHOME=$R_HOME
export RHOME
exec "$R_HOME/bin/Rscript" "\$@"
END
chmod 0555 "$out/bin/Rscript"
