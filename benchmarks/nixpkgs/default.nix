# nixsnake BENCHMARK package set -- NOT nixpkgs, NOT shipped.
#
# The benchmark harness (benchmarks/bench_setup.py) copies the demo package set's git
# repository, renames the demo's default.nix to demo-default.nix, and adds this file plus
# ./bench/ on a branch of its own (`nixsnake-bench`). Everything the demo offers is
# unchanged; the benchmark adds packages made of host files, so closures of a chosen size
# exist without any download:
#
#   benchBlob   all chunks of ./bench/chunks.json (the ~700 MB of the "large" env)
#
# The env files name them like any nixpkgs attribute: [nixpkgs] packages = ["benchBlob"].
args:
let
  demo = import ./demo-default.nix args;
in
demo // import ./bench/bench.nix { pkgs = demo; }
