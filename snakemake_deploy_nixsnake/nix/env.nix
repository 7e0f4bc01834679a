# nixsnake: build one environment from a locked env file.
#
# This file is static and shipped with nixsnake. Everything user-specific arrives as
# JSON data through `specFile` (written by nixsnake's build step): no user string is ever
# spliced into nix source, so an env file cannot inject nix code.
#
# JSON fields: nixpkgs.{type,url,rev,ref}, allowUnfree, cudaSupport, packages and
# libraries (attribute paths), python (null or {attr, version, wheels: [{url, sha256, name}]}), rPackages
# (null or [names]), conda (absent/null, or the locked [conda] layer: see conda.nix).
{ specFile }:
let
  spec = builtins.fromJSON (builtins.readFile specFile);

  src =
    if spec.nixpkgs.type == "git" then
      builtins.fetchGit { url = spec.nixpkgs.url; rev = spec.nixpkgs.rev; ref = spec.nixpkgs.ref; }
    else if spec.nixpkgs.type == "tarball" then
      builtins.fetchTarball { url = spec.nixpkgs.url; }
    else if spec.nixpkgs.type == "path" then
      builtins.path { path = spec.nixpkgs.url; name = "nixpkgs"; }
    else throw "nixsnake: unknown nixpkgs source type";

  pkgs = import src {
    config = { allowUnfree = spec.allowUnfree; cudaSupport = spec.cudaSupport; };
    overlays = [ ];
  };

  splitDots = s: builtins.filter builtins.isString (builtins.split "\\." s);
  getAttrPath = path:
    builtins.foldl'
      (acc: name:
        if builtins.isAttrs acc && builtins.hasAttr name acc then builtins.getAttr name acc
        else throw "nixsnake: nixpkgs (rev ${spec.nixpkgs.rev}) has no attribute '${path}'; check the name in [nixpkgs] packages")
      pkgs (splitDots path);

  system = builtins.currentSystem;
  base = [ pkgs.bash pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused pkgs.which ];
  userPkgs = map getAttrPath spec.packages;
  toolPath = builtins.concatStringsSep ":" (map (p: "${p}/bin") [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused ]);

  # Libraries that manylinux wheels expect from the "system" (the LD_pkgs lesson), plus
  # the env file's [nixpkgs] libraries.
  ldLibs = [ pkgs.stdenv.cc.cc.lib pkgs.zlib ] ++ map getAttrPath (spec.libraries or [ ])
    # conda's binaries run on nixpkgs' glibc (through /lib64/ld-linux-x86-64.so.2 in the image)
    ++ (if conda == null then [ ] else [ pkgs.glibc ]);

  # [conda]: a conda prefix installed from the lock (conda.nix), or null.
  conda = if (spec.conda or null) == null then null
    else import ./conda.nix { inherit pkgs system toolPath; conda = spec.conda; };

  python = if spec.python == null then null else getAttrPath spec.python.attr;

  # Each wheel is a fixed-output fetch: nix downloads, verifies and caches it by sha256.
  wheels = if spec.python == null then [ ] else
    map (w: import <nix/fetchurl.nix> { url = w.url; sha256 = w.sha256; name = w.name; }) spec.python.wheels;

  pythonPackages = if python == null then null else derivation {
    name = "nixsnake-python${spec.python.version}-packages";
    inherit system wheels;
    builder = "${pkgs.bash}/bin/bash";
    args = [ "-eu" "-o" "pipefail" ./install-wheels.sh ];
    PATH = toolPath;
    python = "${python}/bin/python3";
    installer = ./install_wheels.py;
    sitePackages = "lib/python${spec.python.version}/site-packages";
    SOURCE_DATE_EPOCH = "1";
  };

  rEnv = if spec.rPackages == null then null else
    pkgs.rWrapper.override { packages = map (n: builtins.getAttr n pkgs.rPackages) spec.rPackages; };

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
  pythonVersion = if spec.python == null then "" else spec.python.version;
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
