# Install locked wheels offline into $out/$sitePackages (no pip, no network: the wheels
# are already in the store as fixed-output fetches), then byte-compile reproducibly; what
# cannot be compiled is a warning in nix-support/nixsnake-warnings.json (install_wheels.py).
mkdir -p "$out/$sitePackages" "$out/bin" "$out/nix-support"
"$python" -I "$installer" "$out" "$sitePackages" $wheels
