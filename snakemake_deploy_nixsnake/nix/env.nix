# nixsnake: build one environment from a locked env file.
#
# This file is static and shipped with nixsnake. Everything user-specific arrives as one
# JSON document through `inputFile`, written by nixsnake from the dataclass
# `NixInput` (snakemake_deploy_nixsnake/nixbuild.py), its only producer: no user string
# is ever spliced into nix source, so an env file cannot inject nix code.
#
# NixInput fields (a test keeps this list equal to the dataclass):
#   nixpkgs.type nixpkgs.url nixpkgs.rev nixpkgs.ref
#   allow_unfree cuda_support packages libraries
#   python python.attr python.version python.wheels python.wheels.url python.wheels.sha256 python.wheels.name
#   r_packages
#   conda conda.subdir conda.installer conda.installer.url conda.installer.sha256 conda.installer.store_name
#   conda.packages conda.packages.name conda.packages.version conda.packages.build conda.packages.channel
#   conda.packages.url conda.packages.sha256 conda.packages.file_name conda.packages.store_name conda.packages.local
{ inputFile }:
let
  input = builtins.fromJSON (builtins.readFile inputFile);

  src =
    if input.nixpkgs.type == "git" then
      # allRefs: a rev pinned in the env file need not be on the branch (nix only looks
      # at refs/heads/<ref> otherwise: "Cannot find Git revision ... in ref")
      builtins.fetchGit { url = input.nixpkgs.url; rev = input.nixpkgs.rev; ref = input.nixpkgs.ref; allRefs = true; }
    else if input.nixpkgs.type == "tarball" then
      builtins.fetchTarball { url = input.nixpkgs.url; }
    else throw "nixsnake: unknown nixpkgs source type";

  pkgs = import src {
    config = { allowUnfree = input.allow_unfree; cudaSupport = input.cuda_support; };
    overlays = [ ];
  };

  splitDots = s: builtins.filter builtins.isString (builtins.split "\\." s);
  getAttrPath = path:
    builtins.foldl'
      (acc: name:
        if builtins.isAttrs acc && builtins.hasAttr name acc then builtins.getAttr name acc
        else throw "nixsnake: nixpkgs (rev ${input.nixpkgs.rev}) has no attribute '${path}'; check the name in [nixpkgs] packages")
      pkgs (splitDots path);

  system = builtins.currentSystem;
  base = [ pkgs.bash pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused pkgs.which ];
  userPkgs = map getAttrPath input.packages;
  toolPath = builtins.concatStringsSep ":" (map (p: "${p}/bin") [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused ]);

  # Libraries that manylinux wheels expect from the "system" (the LD_pkgs lesson), plus
  # the env file's [nixpkgs] libraries.
  ldLibs = [ pkgs.stdenv.cc.cc.lib pkgs.zlib ] ++ map getAttrPath input.libraries
    # conda's binaries run on nixpkgs' glibc (through /lib64/ld-linux-x86-64.so.2 in the image)
    ++ (if conda == null then [ ] else [ pkgs.glibc ]);

  # [conda]: a conda prefix installed from the lock (conda.nix), or null.
  conda = if input.conda == null then null
    else import ./conda.nix { inherit pkgs system toolPath; conda = input.conda; };

  python = if input.python == null then null else getAttrPath input.python.attr;

  # Each wheel is a fixed-output fetch: nix downloads, verifies and caches it by sha256.
  wheels = if input.python == null then [ ] else
    map (w: import <nix/fetchurl.nix> { url = w.url; sha256 = w.sha256; name = w.name; }) input.python.wheels;

  pythonPackages = if python == null then null else derivation {
    name = "nixsnake-python${input.python.version}-packages";
    inherit system wheels;
    builder = "${pkgs.bash}/bin/bash";
    args = [ "-eu" "-o" "pipefail" ./install-wheels.sh ];
    PATH = toolPath;
    python = "${python}/bin/python3";
    installer = ./install_wheels.py;
    sitePackages = "lib/python${input.python.version}/site-packages";
    SOURCE_DATE_EPOCH = "1";
  };

  rEnv = if input.r_packages == null then null else
    pkgs.rWrapper.override { packages = map (n: builtins.getAttr n pkgs.rPackages) input.r_packages; };

  present = builtins.filter (x: x != null);
in
derivation ({
  name = "nixsnake-env";
  inherit system;
  builder = "${pkgs.bash}/bin/bash";
  args = [ "-eu" "-o" "pipefail" ./mkenv.sh ];
  PATH = toolPath;
  # Order matters: the first package providing a command wins.
  paths = present ([ pythonPackages python ] ++ userPkgs ++ [ rEnv ] ++ base);
  python = if python == null then "" else "${python}/bin";
  pythonVersion = if input.python == null then "" else input.python.version;
  pythonPackages = if pythonPackages == null then "" else pythonPackages;
  ldLibraryPath = builtins.concatStringsSep ":" (map (p: "${p}/lib") ldLibs);
  sslCertFile = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
  bash = "${pkgs.bash}/bin/bash";
} // (if conda == null then { } else {
  # the same root, plus the conda prefix (mkenv-conda.sh); envs without [conda] keep
  # exactly the derivation they had before [conda] existed
  args = [ "-eu" "-o" "pipefail" ./mkenv-conda.sh ];
  mkenv = ./mkenv.sh;
  condaPrefix = conda;
  loader = "${pkgs.glibc}/lib/ld-linux-x86-64.so.2";
}))
