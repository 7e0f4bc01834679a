# Stand-in for nixpkgs' rWrapper: bin/R and bin/Rscript are scripts that say what they are
# and which R packages they "have"; library/<pkg> links to the package stand-ins.
# R itself cannot be built on this machine. This is NOT R.
set -eu -o pipefail
mkdir -p "$out/bin" "$out/library"
for p in $packagePaths; do
  for d in "$p"/library/*; do
    [ -e "$d" ] || continue
    [ -e "$out/library/$(basename "$d")" ] || ln -s "$d" "$out/library/$(basename "$d")"
  done
done
names=${packageNames:-}
[ -n "$names" ] || names="(none)"
for prog in R Rscript; do
  cat > "$out/bin/$prog" <<END
#!$shell
# nixsnake demo stand-in for $prog (R cannot be built here). NOT R.
case "\${1:-}" in
  --version) echo "R version 0.0.0 (nixsnake demo stand-in, not R)"; exit 0 ;;
esac
echo "demo R stand-in; packages: $names"
END
  chmod 0555 "$out/bin/$prog"
done
[ "$("$out/bin/Rscript" -e 1)" = "demo R stand-in; packages: $names" ]
