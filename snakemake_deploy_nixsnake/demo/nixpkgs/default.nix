# nixsnake DEMO package set -- this is NOT nixpkgs.
#
# A small, real nix package set that mimics the part of nixpkgs' interface nixsnake uses,
# for machines that cannot fetch nixpkgs (tests, demos, air-gapped head nodes):
#
#   import <this repo> { config = { allowUnfree = false; cudaSupport = false; };
#                        system = "x86_64-linux"; overlays = [ ]; }
#
# Its packages are host files imported into the nix store AT EVALUATION TIME
# (builtins.path, content-addressed; see pkgs.nix): busybox-static for the small tools,
# the host's glibc / bash / zlib / libstdc++ / CA bundle, the host's Python interpreters,
# and the host's Debian packages of samtools, bcftools, htslib, R (+ its R packages) and
# perl (+ Perl modules), all re-linked with patchelf onto the store copy of glibc.
# Builders only ever read /nix/store, so every build works inside nix's sandbox. A few
# rPackages names the host has no Debian package for are labelled stand-ins.
#
# Where the host files are is data: a manifest (host.json) written by nixsnake
# (snakemake_deploy_nixsnake/demo/host.py) and named by the environment variable
# NIXSNAKE_DEMO_HOST, the way nixpkgs reads NIXPKGS_CONFIG. It is not part of this
# repository, so its revisions are the same on every machine. ./version.json names the
# demo release of a commit.
#
# glibc and LD_LIBRARY_PATH: nixpkgs' glibc ignores /etc/ld.so.cache and its only default
# library directory is its own store path, so a nix program finds libpthread, libdl, ... of
# its glibc and never a host library. The demo's glibc is the host's loader copied into
# the store; two changes make it behave the same:
#  1. The loader's built-in paths (/etc/ld.so.cache, /lib/<triplet>/, /usr/lib/<triplet>/,
#     /lib/, /usr/lib/) are overwritten in the store copy with same-length names of
#     directories that do not exist ("/~~~/"; offsets found by demo/host.py, checked by the
#     builder). So even on the host, outside any container, a demo program only finds
#     libraries through RUNPATH and LD_LIBRARY_PATH, as inside an image.
#  2. Such a loader cannot find glibc's own libraries by default either, so the demo
#     pythons list the glibc compatibility libraries (libpthread.so.0, libdl.so.2,
#     librt.so.1, libutil.so.1) as DT_NEEDED (patchelf --add-needed; they resolve through
#     the interpreter's RUNPATH to the demo glibc). Once loaded, a later request for one
#     of those sonames -- e.g. a manylinux wheel's libopenblas asking for libpthread.so.0
#     -- is satisfied by the loaded library, whatever LD_LIBRARY_PATH says.
# So, as with real nixpkgs, a manylinux wheel (numpy) on a demo python needs exactly
# LD_LIBRARY_PATH = "${stdenv.cc.cc.lib}/lib:${zlib}/lib" (libstdc++, libgcc_s, libz), and
# fails without it ("libgcc_s.so.1: cannot open shared object file").
let
  hostFile = builtins.getEnv "NIXSNAKE_DEMO_HOST";
  host =
    if hostFile == "" then
      throw "nixsnake demo package set: NIXSNAKE_DEMO_HOST is not set; build through nixsnake (nixpkgs_source = \"demo\") or set it to the manifest that `python -m snakemake_deploy_nixsnake.demo DIR` prints"
    else builtins.fromJSON (builtins.readFile hostFile);
  versionInfo = builtins.fromJSON (builtins.readFile ./version.json);
  release = versionInfo.demoRelease;
  lib = import ./lib.nix { version = release; };

  # ---- the Nix version check of nixpkgs' default.nix ----------------------------------
  # Each commit of the demo repository has the check nixpkgs had at its date (demo/repo.py):
  # lib/minver.nix, a bare version string (nixpkgs until 2025-08-22: "2.3", "2.3.17",
  # "2.18"), or lib/minfeatures.nix, a list of { description; condition; } whose version
  # condition says "2.18" (nixpkgs since 2025-08-22). Below it, importing aborts with a
  # message worded like nixpkgs' (nixsnake checks the same files at lock time, and turns
  # this message into its own when a build meets it).
  minNixError =
    if builtins.pathExists ./lib/minfeatures.nix then
      let missing = (import ./lib/minfeatures.nix).missing; in
      if missing == [ ] then null
      else "This version of Nixpkgs (here: the nixsnake demo package set) requires an implementation of Nix with the following features:\n"
        + builtins.concatStringsSep "" (map (f: "- ${f.description}\n") missing)
        + "Please upgrade Nix, or use a compatible implementation."
    else if builtins.pathExists ./lib/minver.nix then
      let required = import ./lib/minver.nix; in
      if !(builtins ? nixVersion) || builtins.compareVersions required builtins.nixVersion == 1
      then "This version of Nixpkgs (here: the nixsnake demo package set) requires Nix >= ${required}, please upgrade (the install script at https://nixos.org/nix/install, or your distribution's or site's newer nix)."
      else null
    else null;
in
if minNixError != null then abort minNixError else
{ localSystem ? null
, system ? (
    if localSystem == null then builtins.currentSystem or host.system
    else if builtins.isString localSystem then localSystem
    else localSystem.system
  )
, config ? { }
, overlays ? [ ]
, crossSystem ? null
, crossOverlays ? [ ]
, ...
}:
let
  userConfig = if builtins.isFunction config then config { inherit lib; } else config;
  cfg = { allowUnfree = false; cudaSupport = false; } // userConfig;
  base = import ./pkgs.nix { inherit host lib release system; config = cfg; python3Version = versionInfo.python3 or "3.11"; };
  withOverlays = builtins.foldl' (f: overlay: lib.extends overlay f) base overlays;
in
if crossSystem != null && crossSystem != system && (crossSystem.system or null) != system
then throw "nixsnake demo package set: cross compilation (crossSystem) is not supported"
else if !(builtins.isList overlays) then throw "nixsnake demo package set: overlays must be a list"
else lib.fix withOverlays
