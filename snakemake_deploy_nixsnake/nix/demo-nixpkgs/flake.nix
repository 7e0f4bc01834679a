{
  # nixsnake DEMO package set (NOT nixpkgs): see default.nix. Shaped like the nixpkgs flake
  # (legacyPackages.<system>, lib), so `inputs.nixpkgs.url = "git+file://...?rev=..."` works.
  description = "nixsnake demo package set: host tools copied into the nix store (not nixpkgs)";

  outputs = { self }:
    let
      host = builtins.fromJSON (builtins.readFile ./host.json);
      pkgs = import ./default.nix { system = host.system; };
    in
    {
      lib = pkgs.lib;
      legacyPackages.${host.system} = pkgs;
    };
}
