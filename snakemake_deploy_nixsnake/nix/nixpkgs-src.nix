# nixsnake: the nixpkgs source tree of a lock. `fetch` is a NixpkgsFetch (the `nixpkgs`
# field of env.nix's input, written by nixsnake.nixbuild): a commit of a git clone or
# mirror, or a GitHub tarball checked against its NAR hash.
fetch:
if fetch.type == "git" then
  # allRefs: a rev pinned in the env file need not be on the branch (nix only looks
  # at refs/heads/<ref> otherwise: "Cannot find Git revision ... in ref")
  builtins.fetchGit { url = fetch.url; rev = fetch.rev; ref = fetch.ref; allRefs = true; }
else if fetch.type == "tarball" then
  # the NAR hash of the unpacked tree, recorded at lock time: a changed tarball is
  # refused, and a store that has the tree (the lock's prefetch put it there) needs no
  # network
  builtins.fetchTarball { url = fetch.url; sha256 = fetch.sha256; }
else throw "nixsnake: unknown nixpkgs source type"
