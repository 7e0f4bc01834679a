# perl from the host's Debian packages, laid out by hostpkg.sh (sourced from there):
# bin/.perl-wrapped is the interpreter, whose compiled-in @INC (host directories) was
# overwritten with names of directories that do not exist; its own library is in
# $perlInc (lib/perl5/core/...). bin/perl is the wrapper that puts that library on
# PERL5LIB, after the caller's PERL5LIB, as nixpkgs' perl wrappers do for modules.
mkdir -p "$out/bin"
inc=""
for d in $perlInc; do
  [ -d "$out/$d" ] || { echo "perl library $d is missing" >&2; exit 1; }
  inc="$inc${inc:+:}$out/$d"
done
cat > "$out/bin/perl" <<END
#!$shell
PERL5LIB="\${PERL5LIB:+\$PERL5LIB:}$inc"
export PERL5LIB
exec "$out/bin/.perl-wrapped" "\$@"
END
chmod 0555 "$out/bin/perl"
ln -s perl "$out/bin/perl$perlVersion"
# the library is complete, and @INC names nothing but this package and the overwritten paths
HOME="$PWD" "$out/bin/perl" -e '
use strict; use warnings; use POSIX (); use Data::Dumper; use Storable; use Compress::Zlib;
use Encode; use List::Util qw(sum); use File::Temp; use Digest::MD5; use Time::HiRes;
for (@INC) { die "\@INC has $_\n" unless m{^\Q$ENV{out}/\E} || m{^/~+$} }
sum(1, 2) == 3 or die;'
