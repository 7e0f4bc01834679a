# Synthetic packages made of host files, for the benchmarks (see ../default.nix).
# ./chunks.json is written by benchmarks/bench_setup.py: [{ name, files }], each chunk
# ~50 MB of regular host files. The files enter the store at evaluation time
# (builtins.path keeps exactly the listed files and their directories), so the builders
# read only /nix/store and work inside nix's sandbox; a changed host file is a new store
# path.
{ pkgs }:
let
  chunks = builtins.fromJSON (builtins.readFile ./chunks.json);
  set = names: builtins.listToAttrs (map (n: { name = n; value = true; }) names);
  ancestors = f: let d = dirOf f; in if d == "/" then [ ] else [ d ] ++ ancestors d;
  # Under `path = /.` nix 2.8 hands the filter "//usr/...": one leading slash off.
  norm = p: if builtins.substring 0 2 p == "//" then builtins.substring 1 (builtins.stringLength p) p else p;
  importChunk = c:
    let
      files = set c.files;
      dirs = set (builtins.concatMap ancestors c.files);
    in
    builtins.path {
      path = /.;
      name = "bench-hostfiles-${c.name}-src";
      filter = p: type: if type == "directory" then dirs ? ${norm p} else files ? ${norm p};
    };
  mkChunk = c: derivation {
    name = "bench-hostfiles-${c.name}";
    system = pkgs.system;
    builder = "${pkgs.busybox}/bin/sh";
    args = [ "-eu" ./chunk.sh ];
    PATH = "${pkgs.busybox}/bin";
    src = importChunk c;
    count = toString (builtins.length c.files);
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
