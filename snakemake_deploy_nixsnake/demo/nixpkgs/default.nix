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
  release = (builtins.fromJSON (builtins.readFile ./version.json)).demoRelease;
  lib = import ./lib.nix { version = release; };
in
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
  base = import ./pkgs.nix { inherit host lib release system; config = cfg; };
  withOverlays = builtins.foldl' (f: overlay: lib.extends overlay f) base overlays;
in
if crossSystem != null && crossSystem != system && (crossSystem.system or null) != system
then throw "nixsnake demo package set: cross compilation (crossSystem) is not supported"
else if !(builtins.isList overlays) then throw "nixsnake demo package set: overlays must be a list"
else lib.fix withOverlays
