# GNU hello's behaviour, as a script: prints "Hello, world!" (or --greeting / -g TEXT).
set -eu -o pipefail
mkdir -p "$out/bin"
cat > "$out/bin/hello" <<END
#!$shell
greeting="Hello, world!"
while [ \$# -gt 0 ]; do
  case "\$1" in
    --version) echo "hello (nixsnake demo) $version"; exit 0 ;;
    -g|--greeting) greeting="\$2"; shift ;;
    --greeting=*) greeting="\${1#--greeting=}" ;;
    *) echo "hello: unrecognized option '\$1'" >&2; exit 1 ;;
  esac
  shift
done
echo "\$greeting"
END
chmod 0555 "$out/bin/hello"
[ "$("$out/bin/hello")" = "Hello, world!" ]
