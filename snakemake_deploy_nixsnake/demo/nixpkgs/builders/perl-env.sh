# perl.withPackages: bin/perl runs $perl with PERL5LIB = the caller's, then $libDirs
# (lib/perl5/site_perl of the requested modules and their dependencies, then perl's own
# library), like nixpkgs' perl.withPackages wrapper.
set -eu -o pipefail
mkdir -p "$out/bin"
cat > "$out/bin/perl" <<END
#!$shell
PERL5LIB="\${PERL5LIB:+\$PERL5LIB:}$libDirs"
export PERL5LIB
exec "$perl/bin/.perl-wrapped" "\$@"
END
chmod 0555 "$out/bin/perl"
HOME="$PWD" "$out/bin/perl" -e 1
