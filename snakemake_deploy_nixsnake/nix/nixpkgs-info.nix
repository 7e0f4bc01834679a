# nixsnake: what locking needs to know about a nixpkgs rev -- its default Python (python3)
# -- read from the same source tree env.nix builds from. `inputFile`: a JSON NixpkgsFetch
# (nixsnake.nixbuild.nixpkgs_python3), data only.
{ inputFile }:
let
  src = import ./nixpkgs-src.nix (builtins.fromJSON (builtins.readFile inputFile));
  pkgs = import src { config = { }; overlays = [ ]; };
in
{ python3 = pkgs.python3.pythonVersion; }
