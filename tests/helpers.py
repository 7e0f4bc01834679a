"""Helpers shared by the test modules (imported as ``helpers``; never from a test file).

Nix's sandbox: Debian's nix has it on wherever the kernel allows it, and then a builder
sees nothing but its inputs in /nix/store. Where this machine can sandbox, every nix call
of the tests forces it on *without* the silent fallback, so a builder that reads a host
file fails here exactly as on a user's machine.
"""

from __future__ import annotations

import functools
import json
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


def instantiate_env(data, tmp: Path, timeout: float = 600, **extra_env: str) -> str:
    """The .drv of nixsnake's env.nix for the NixInput ``data`` (instantiated, nothing
    built), with the test nix options; fails the test with nix's message otherwise. The
    input stays in ``tmp/input.json`` (for a build of the same input after)."""
    from snakemake_deploy_nixsnake.nixbuild import nix_dir

    f = tmp / "input.json"
    f.write_text(data.to_json())
    cp = subprocess.run(
        ["nix-instantiate", *nix_option_args(), str(nix_dir() / "env.nix"), "--argstr", "inputFile", str(f)],
        capture_output=True, text=True, env=nix_env(**extra_env), timeout=timeout,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-3000:]
    return cp.stdout.strip()


# --------------------------------------------------------------------------- the demo package set


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout.strip()


def demo_nix_build(
    repo: Path, expr: str, *attrs: str, rev: str | None = None, config: dict | None = None, timeout: float = 600
) -> list[str]:
    """Build ``attrs`` of ``expr`` (a function of url, rev and config, a JSON string) from
    the materialized demo repository, with the test nix options (sandboxed where possible)."""
    rev = rev or git(repo, "rev-parse", "nixos-unstable")
    argv = [
        "nix-build",
        *nix_option_args(),
        "--no-out-link",
        "-E",
        expr,
        "--argstr",
        "url",
        f"file://{repo}",
        "--argstr",
        "rev",
        rev,
        "--argstr",
        "config",
        json.dumps(config or {}),
    ]
    for a in attrs:
        argv += ["-A", a]
    cp = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=nix_env())
    assert cp.returncode == 0, cp.stderr[-3000:]
    outs = cp.stdout.split()
    assert len(outs) == len(attrs), cp.stdout
    return outs


def bwrap(
    argv: list[str],
    env: dict[str, str] | None = None,
    binds: dict[str, str] | None = None,
    stdin: str | None = None,
    rw_binds: dict[str, str] | None = None,
    symlinks: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` with only /nix/store (and ``binds``) visible: no host /usr, /lib, /bin.
    ``rw_binds`` are writable (a test's output directory); ``symlinks`` maps a path in
    the sandbox to a link target (e.g. /bin/sh -> a store path, as in an image)."""
    assert shutil.which("bwrap"), "bubblewrap is needed (apt-get install bubblewrap)"
    cmd = [
        "bwrap",
        "--tmpfs",
        "/",
        "--ro-bind",
        "/nix/store",
        "/nix/store",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--clearenv",
        "--setenv",
        "HOME",
        "/tmp",
    ]
    for src, dst in (binds or {}).items():
        cmd += ["--ro-bind", src, dst]
    for src, dst in (rw_binds or {}).items():
        cmd += ["--bind", src, dst]
    for link, target in (symlinks or {}).items():
        cmd += ["--symlink", target, link]
    for k, v in (env or {}).items():
        cmd += ["--setenv", k, v]
    return subprocess.run(cmd + argv, check=False, capture_output=True, text=True, input=stdin, timeout=120)


def closure(*paths: str) -> list[str]:
    out = subprocess.run(["nix-store", "-qR", *paths], check=True, capture_output=True, text=True).stdout
    return out.split()


def elf_files(root: str):
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    yield p


# --------------------------------------------------------------------------- store images


def make_image(tmp: Path, image_id: str, payload: str = "x") -> Path:
    """A valid nixsnake-shaped SIF whose metadata names ``image_id``."""
    from snakemake_deploy_nixsnake.image.sif import write_sif

    root = tmp / f"root-{image_id[:4]}-{payload}"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "payload").write_bytes(payload.encode() + os.urandom(256 << 10))  # incompressible
    sqfs = tmp / f"{image_id[:4]}-{payload}.sqfs"
    subprocess.run(
        ["mksquashfs", str(root), str(sqfs), "-noappend", "-quiet", "-no-progress", "-all-root"],
        check=True,
        capture_output=True,
    )
    sif = tmp / f"{image_id[:4]}-{payload}.sif"
    write_sif(sif, sqfs, {"image_id": image_id, "labels": {}})
    return sif


def publish_with_metadata(root: Path, tmp: Path, image_id: str, metadata: dict) -> Path:
    """A store at ``root`` with a published image whose SIF metadata is ``metadata``
    (plus its id), the way a build leaves it (for doctor's GPU check)."""
    from snakemake_deploy_nixsnake.image.sif import write_sif
    from snakemake_deploy_nixsnake.store import Meta, Store

    store = Store(root)
    store.ensure()
    make_image(tmp, image_id, "meta")
    sif = tmp / f"{image_id[:4]}-with-meta.sif"
    write_sif(sif, tmp / f"{image_id[:4]}-meta.sqfs", {"image_id": image_id, "labels": {}, **metadata})
    part = store.temp_path(image_id)
    shutil.copyfile(sif, part)
    final, sha = store.publish(image_id, part)
    store.write_meta(Meta(image_id=image_id, env_files=("/w/envs/x.toml",), sha256=sha))
    return final
