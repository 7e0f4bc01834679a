"""Helpers shared by the test modules (imported as ``helpers``; never from a test file).

Nix's sandbox: Debian's nix has it on wherever the kernel allows it, and then a builder
sees nothing but its inputs in /nix/store. Where this machine can sandbox, every nix call
of the tests forces it on *without* the silent fallback, so a builder that reads a host
file fails here exactly as on a user's machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


@functools.cache
def can_sandbox() -> bool:
    """Build a trivial derivation with the sandbox forced on (no fallback)."""
    if not shutil.which("nix-build"):
        return False
    busybox = shutil.which("busybox")
    if not busybox:
        return False
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(busybox, Path(d) / "busybox")
        expr = (
            f'let p = builtins.path {{ path = {d}; name = "probe-tools"; }}; in derivation {{ '
            f'name = "sandbox-probe-${{toString builtins.currentTime}}"; system = builtins.currentSystem; '
            f'builder = "${{p}}/busybox"; args = ["sh" "-c" "echo ok > $out"]; }}'
        )
        cp = subprocess.run(
            ["nix-build", "--no-out-link", "--option", "sandbox", "true", "--option", "sandbox-fallback", "false",
             "--option", "build-users-group", "", "--option", "substituters", "", "-E", expr],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    return cp.returncode == 0


#: nix settings for machines without the binary cache and without a nixbld group.
BASE_NIX_OPTIONS = {"substituters": "", "build-users-group": ""}


def nix_options() -> dict[str, str]:
    """The nix options every test build uses: offline, and sandboxed where possible."""
    opts = dict(BASE_NIX_OPTIONS)
    if can_sandbox():
        opts.update({"sandbox": "true", "sandbox-fallback": "false"})
    return opts


def nix_option_args() -> list[str]:
    return [a for k, v in nix_options().items() for a in ("--option", k, v)]


def nix_options_toml() -> str:
    """The same options as a nixsnake.toml inline table."""
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in nix_options().items()) + " }"


def nix_env(**extra: str) -> dict[str, str]:
    """The environment of a nix command that evaluates the demo package set directly."""
    from snakemake_deploy_nixsnake import demo

    return {**os.environ, **demo.nix_env(), **extra}
