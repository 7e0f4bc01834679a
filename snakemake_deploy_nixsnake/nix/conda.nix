# nixsnake: the [conda] layer of an environment, built from the lock alone.
#
# Static and shipped with nixsnake, like env.nix: everything user-specific arrives as
# data (`conda`, from the JSON file env.nix reads); no user string becomes nix code.
#
# conda = { subdir; installer = { url; sha256; store_name; };
#           packages = [ { name; version; build; channel; url; sha256; file_name; store_name;
#                          local (null, or the path of a file:// URL); } ]; }
#
# Every archive is content-addressed by its locked sha256:
#  - https/http URLs: a fixed-output fetch (<nix/fetchurl.nix>); nix verifies the hash, and
#    a store that already holds the file (`nix-store --add-fixed sha256 FILE`, a binary
#    cache) needs no network;
#  - file:// URLs (a channel on a file system): nix 2.x's builtin fetcher refuses file://,
#    so the file is imported at evaluation time with builtins.path, flat-hashed and
#    checked against the locked sha256 -- the same store path the fetch would give.
# Then one derivation installs them OFFLINE into $out with rattler's installer
# (conda_install.py), so prefix placeholders become $out. py-rattler itself is a locked
# wheel (fixed-output fetch) run by a nixpkgs Python >= 3.10.
{ pkgs, conda, system, toolPath }:
let
  fetchArchive = p:
    if p.local != null then
      (if !(builtins.pathExists p.local) then
        throw "nixsnake: conda package ${p.file_name}: ${p.local} (its locked file:// URL) does not exist; restore the channel or re-run `nixsnake lock`"
      else
        let actual = builtins.hashFile "sha256" p.local; in
        if actual != p.sha256 then
          throw "nixsnake: conda package ${p.file_name}: sha256 mismatch: ${p.local} has ${actual}, the lock says ${p.sha256}; refusing to build (the channel changed after locking: restore the file, or re-run `nixsnake lock` and review the change)"
        else builtins.path { path = p.local; name = p.store_name; sha256 = p.sha256; recursive = false; })
    else
      import <nix/fetchurl.nix> { url = p.url; sha256 = p.sha256; name = p.store_name; };

  # The installer's Python: python3 when it is new enough for the py-rattler wheel
  # (abi3, CPython >= 3.10), else the newest python3NN the nixpkgs rev has.
  pythonOk = n:
    let t = builtins.tryEval (builtins.hasAttr n pkgs && builtins.compareVersions (builtins.getAttr n pkgs).pythonVersion "3.10" >= 0);
    in t.success && t.value;
  pythonNames = builtins.filter pythonOk [ "python3" "python313" "python312" "python311" "python310" ];
  python =
    if pythonNames == [ ] then throw "nixsnake: [conda] needs a Python >= 3.10 in nixpkgs to run the conda installer; pick a later date (or [nixpkgs] rev)"
    else builtins.getAttr (builtins.head pythonNames) pkgs;

  rattlerWheel = import <nix/fetchurl.nix> { url = conda.installer.url; sha256 = conda.installer.sha256; name = conda.installer.store_name; };

  records = map (p: {
    inherit (p) name version build channel url sha256 file_name;
    archive = fetchArchive p;
  }) conda.packages;
in
derivation {
  name = "nixsnake-conda-env";
  inherit system;
  # through bash: python must see its full path as argv[0] to find its standard library
  builder = "${pkgs.bash}/bin/bash";
  args = [ "-c" "exec \"$python\" -I \"$installer\"" ];
  python = "${python}/bin/python3";
  installer = ./conda_install.py;
  PATH = toolPath;
  bash = "${pkgs.bash}/bin/bash";
  inherit rattlerWheel;
  inherit (conda) subdir;
  records = builtins.toJSON records;
  passAsFile = [ "records" ];
  # the py-rattler extension module needs libgcc_s (unwinding); nothing else from here
  installerLibraryPath = "${pkgs.stdenv.cc.cc.lib}/lib";
  SOURCE_DATE_EPOCH = "1";
  SSL_CERT_FILE = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
}
