# Install locked wheels offline into $out/$sitePackages (no pip, no network: the wheels
# are already in the store as fixed-output fetches), then byte-compile reproducibly.
mkdir -p "$out/$sitePackages" "$out/bin"
"$python" -I "$installer" "$out" "$sitePackages" $wheels
"$python" -I -m compileall -q -j 1 --invalidation-mode checked-hash "$out/$sitePackages" > /dev/null
