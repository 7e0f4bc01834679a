# A "package" made of busybox applets: bin/<tool> -> busybox, for the applets in $tools
# that busybox has; $required must all exist; $aliases ("name=applet" lines) become small
# wrapper scripts (busybox dispatches on argv[0], so a symlink named e.g. gawk would not work).
set -eu -o pipefail
mkdir -p "$out/bin"
have=" $(busybox --list | tr '\n' ' ') "
for t in $tools; do
  case "$have" in *" $t "*) ln -s "$busybox/bin/busybox" "$out/bin/$t" ;; esac
done
for t in $required; do
  [ -e "$out/bin/$t" ] || { echo "busybox has no applet '$t' (needed by $name)" >&2; exit 1; }
done
while IFS='=' read -r alias applet; do
  [ -n "$alias" ] || continue
  case "$have" in *" $applet "*) ;; *) echo "busybox has no applet '$applet'" >&2; exit 1 ;; esac
  printf '#!%s/bin/sh\nexec %s/bin/busybox %s "$@"\n' "$busybox" "$busybox" "$applet" > "$out/bin/$alias"
  chmod 0555 "$out/bin/$alias"
done <<END
$aliases
END
