# Synthetic packages made of host files, for the benchmarks (see ../default.nix).
# ./chunks.json is written by benchmarks/bench_setup.py: [{ name, files, fingerprint }],
# each chunk ~50 MB of regular host files. The fingerprint (sha256 of "path size mtime"
# lines) is part of the derivation, so a changed host file gives a new store path.
{ pkgs }:
let
  chunks = builtins.fromJSON (builtins.readFile ./chunks.json);
  mkChunk = c: derivation {
    name = "bench-hostfiles-${c.name}";
    system = pkgs.system;
    builder = "${pkgs.busybox}/bin/sh";
    args = [ "-eu" ./chunk.sh ];
    PATH = "${pkgs.busybox}/bin";
    files = c.files;
    fingerprint = c.fingerprint;
    allowSubstitutes = false;
    preferLocalBuild = true;
  };
  chunkDrvs = map mkChunk chunks;
in
{
  benchBlob = derivation {
    name = "bench-blob";
    system = pkgs.system;
    builder = "${pkgs.busybox}/bin/sh";
    args = [ "-eu" ./index.sh ];
    PATH = "${pkgs.busybox}/bin";
    chunks = chunkDrvs;
    shell = "${pkgs.busybox}/bin/sh";
    allowSubstitutes = false;
    preferLocalBuild = true;
  };
}
