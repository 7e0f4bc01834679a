# Bootstrap: copy the host's static busybox into the store, one symlink per applet.
# Runs under the imported copy of the host busybox (the derivation's builder, a store
# path), so every tool is called as "$hostBusybox <applet>" until our copy exists.
# Fails loudly: set -eu -o pipefail.
set -eu -o pipefail
bb="$hostBusybox"
"$bb" mkdir -p "$out/bin"
"$bb" cp "$bb" "$out/bin/busybox"
"$bb" chmod 0555 "$out/bin/busybox"
PATH="$out/bin"
applets=$(busybox --list)
[ -n "$applets" ] || { echo "busybox --list printed nothing" >&2; exit 1; }
for a in $applets; do
  case "$a" in busybox|*/*) continue ;; esac
  ln -s busybox "$out/bin/$a"
done
# smoke test: the copy runs and the shell evaluates pipelines
[ "$("$out/bin/sh" -c 'echo ok | cat')" = ok ] || { echo "copied busybox does not work" >&2; exit 1; }
