"""The embedded demo package set: a small, real nix package set that stands in for nixpkgs.

No nixpkgs can be fetched on machines without internet, so nixsnake ships a tiny package
set (``nixpkgs/``) offering the part of nixpkgs' interface nixsnake uses
(``import <repo> { config; system; overlays; }`` with ``bash``, ``coreutils``, ``glibc``,
``zlib``, ``stdenv.cc.cc.lib``, ``cacert``, ``python3xx``, ``samtools``, ``bcftools``,
``htslib``, ``R``/``rWrapper``/``rPackages``, ``perl``/``perlPackages``, a few trivial
builders, ...). Its packages are *host* files (busybox-static, the host's glibc, bash,
Python interpreters and Debian packages) imported into the nix store at evaluation time
and re-linked with ``patchelf`` onto a store copy of glibc, so closures are real store
paths, builds pass inside nix's sandbox, and programs run with no host ``/usr`` or ``/lib``.

* ``repo``: the package set as a dated git repository (date locking, ``fetchGit``);
  its revisions depend only on nixsnake's own files.
* ``host``: where the host files are (a manifest, cached per host), handed to nix
  through ``NIXSNAKE_DEMO_HOST``; ``hostpkgs``: the part of it that comes from Debian
  packages (samtools, bcftools, htslib, R, perl).
"""

from __future__ import annotations

from pathlib import Path

from .host import HOST_ENV_VAR, host_manifest, nix_env
from .hostpkgs import unavailable_error
from .repo import DEMO_BRANCHES, DEMO_NIX_DIR, DemoCommit, demo_commit_dates, demo_plan, demo_revs, materialize

#: The ``nixpkgs_source`` value meaning "the embedded demo package set".
SOURCE_NAME = "demo"

__all__ = [
    "DEMO_BRANCHES",
    "DEMO_NIX_DIR",
    "HOST_ENV_VAR",
    "SOURCE_NAME",
    "DemoCommit",
    "default_repo",
    "demo_commit_dates",
    "demo_plan",
    "demo_revs",
    "host_manifest",
    "materialize",
    "nix_env",
    "unavailable_error",
]  # fmt: skip


def default_repo() -> Path:
    """The demo repository in nixsnake's cache, materialized (cheap when current)."""
    from ..config import cache_dir

    return materialize(cache_dir() / "demo-nixpkgs")
