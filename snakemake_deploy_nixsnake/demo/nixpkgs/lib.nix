# A small subset of nixpkgs' `lib`, with the same names and behaviour, for the demo
# package set (see default.nix). Only what the demo itself and typical callers use.
{ version }:
let
  inherit (builtins) concatStringsSep filter map attrNames foldl' isFunction;
in
rec {
  inherit version;
  release = version;
  trivial = { inherit version release; };

  # fixed points and overlays, exactly as nixpkgs defines them
  fix = f: let x = f x; in x;
  extends = overlay: f: (final: let prev = f final; in prev // overlay final prev);
  composeExtensions = f: g: final: prev:
    let fApplied = f final prev; in fApplied // g final (prev // fApplied);

  # lists and strings
  optional = cond: elem: if cond then [ elem ] else [ ];
  optionals = cond: elems: if cond then elems else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: as: if cond then as else { };
  concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
  concatStringsSep = builtins.concatStringsSep;
  concatMapStrings = f: list: concatStringsSep "" (map f list);
  attrValues = builtins.attrValues;
  mapAttrs = builtins.mapAttrs;
  mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (attrNames attrs);
  filterAttrs = pred: attrs:
    builtins.listToAttrs (map (n: { name = n; value = attrs.${n}; })
      (filter (n: pred n attrs.${n}) (attrNames attrs)));
  unique = foldl' (acc: e: if builtins.elem e acc then acc else acc ++ [ e ]) [ ];
  flatten = x: if builtins.isList x then builtins.concatMap flatten x else [ x ];
  last = list: builtins.elemAt list (builtins.length list - 1);
  hasPrefix = pref: str: builtins.substring 0 (builtins.stringLength pref) str == pref;
  id = x: x;
  const = x: _: x;
  isDerivation = x: builtins.isAttrs x && (x.type or null) == "derivation";

  # outputs and search paths (nixpkgs: lib/attrsets.nix, lib/strings.nix)
  getOutput = output: pkg: if pkg ? outputSpecified && pkg.outputSpecified then pkg else pkg.${output} or pkg.out or pkg;
  getBin = getOutput "bin";
  getLib = getOutput "lib";
  getDev = getOutput "dev";
  getMan = getOutput "man";
  makeSearchPath = subDir: paths: concatStringsSep ":" (map (p: "${p}/${subDir}") (filter (p: p != null) paths));
  makeSearchPathOutput = output: subDir: pkgs: makeSearchPath subDir (map (getOutput output) (filter (p: p != null) pkgs));
  makeLibraryPath = makeSearchPathOutput "lib" "lib";
  makeBinPath = makeSearchPathOutput "bin" "bin";

  # overridable functions (nixpkgs: lib/customisation.nix, reduced)
  makeOverridable = f: origArgs:
    let
      result = f origArgs;
      override = newArgs: makeOverridable f (origArgs // (if isFunction newArgs then newArgs origArgs else newArgs));
    in
    if builtins.isAttrs result then result // { inherit override; } else result;

  licenses = {
    free = { shortName = "free"; free = true; };
    mit = { shortName = "mit"; spdxId = "MIT"; free = true; };
    gpl2Plus = { shortName = "gpl2Plus"; spdxId = "GPL-2.0-or-later"; free = true; };
    gpl3Plus = { shortName = "gpl3Plus"; spdxId = "GPL-3.0-or-later"; free = true; };
    lgpl21Plus = { shortName = "lgpl21Plus"; spdxId = "LGPL-2.1-or-later"; free = true; };
    psfl = { shortName = "psfl"; spdxId = "Python-2.0"; free = true; };
    zlib = { shortName = "zlib"; spdxId = "Zlib"; free = true; };
    mpl20 = { shortName = "mpl20"; spdxId = "MPL-2.0"; free = true; };
    artistic1 = { shortName = "artistic1"; spdxId = "Artistic-1.0-Perl"; free = true; };
    unfree = { shortName = "unfree"; free = false; };
  };
}
