"""Locked env -> nix store path: the nix half of an image build.

nix sees only the shipped ``nix/env.nix`` plus a JSON file of data derived from the
env file and its lock. We use a pinned non-flake expression rather than a flake: it works
on nix 2.x without experimental features (many head nodes run old nix), passes the
nixpkgs rev as data instead of generating ``flake.nix``, and does not copy a workspace
into the store or churn a ``flake.lock``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__, proc
from .config import Config
from .errors import Exit, NixsnakeError
from .lock import Lock, NixpkgsSource
from .spec import EnvFile, sha256_json

#: Bump when the image layout or build recipe changes in a way that changes image bytes.
IMAGE_FORMAT_VERSION = 1


def nix_dir() -> Path:
    return Path(str(resources.files("snakemake_deploy_nixsnake") / "nix"))


def wheel_store_name(url: str) -> str:
    """A valid store-path name for a wheel (the file name, restricted to nix's charset)."""
    base = url.rsplit("/", 1)[-1]
    return "".join(c if (c.isalnum() or c in "+-._?=") else "_" for c in base)[-200:].lstrip(".") or "wheel"


def nix_input(spec: EnvFile, lock: Lock, source: NixpkgsSource) -> dict[str, Any]:
    """The JSON document env.nix reads. Pure: same spec + lock + source, same data."""
    if source.kind == "github":
        nixpkgs = {"type": "tarball", "url": source.fetch_url.format(rev=lock.nixpkgs.rev), "rev": lock.nixpkgs.rev, "ref": ""}
    else:
        nixpkgs = {"type": "git", "url": source.fetch_url, "rev": lock.nixpkgs.rev, "ref": lock.nixpkgs.branch}
    python = None
    if spec.python is not None:
        major, minor = spec.python.version.split(".")
        python = {
            "attr": f"python{major}{minor}",
            "version": spec.python.version,
            "wheels": [{"url": w.url, "sha256": w.sha256, "name": wheel_store_name(w.url)} for w in lock.wheels],
        }
    return {
        "nixpkgs": nixpkgs,
        # CUDA is unfree in nixpkgs: asking for it is consent to build it.
        "allowUnfree": spec.nixpkgs.allow_unfree or spec.gpu.cuda is True,
        "cudaSupport": spec.gpu.cuda is True,
        "packages": list(spec.nixpkgs.packages),
        "libraries": list(spec.nixpkgs.libraries),
        "python": python,
        "rPackages": [n.replace(".", "_") for n in spec.r.packages] if spec.r else None,
    }


def image_id(spec: EnvFile, lock: Lock, compression: str) -> str:
    """Content address of an image: normalized env + resolved lock + format + compression
    + nixsnake version (every byte of the image follows from these, so one id always
    means one SHA-256).

    Hashing canonical JSON (not concatenated strings) means two different inputs can only
    share an id through a SHA-256 collision; the nixpkgs *source location* is left out on
    purpose: the same rev from a mirror or from GitHub is the same software.
    """
    return sha256_json(
        {
            "format": IMAGE_FORMAT_VERSION,
            "nixsnake": __version__,
            "spec": spec.normalized(),
            "lock": lock.resolved(),
            "compression": compression,
        }
    )[:40]


def nix_env(source: NixpkgsSource) -> dict[str, str]:
    env = dict(os.environ)
    # Builds must not depend on the user's channels or NIX_PATH beyond <nix/...>.
    env.pop("NIX_PATH", None)
    if source.demo:
        from . import demo

        env.update(demo.nix_env())
    return env


def nix_option_args(cfg: Config) -> list[str]:
    args: list[str] = []
    for name, value in cfg.nix_options:
        args += ["--option", name, value]
    return args


@dataclass(frozen=True)
class NixBuild:
    out: Path  # the environment root in /nix/store
    closure: tuple[str, ...]
    info: dict[str, Any]  # nix-support/nixsnake-env.json


def nix_build(
    data: dict[str, Any], source: NixpkgsSource, cfg: Config, workdir: Path, on_line: Callable[[str], None] | None = None
) -> NixBuild:
    """Run nix-build on env.nix with ``data``; keep a GC root in ``workdir`` until packed."""
    proc.require("nix-build")
    spec_file = workdir / "nixsnake-input.json"
    spec_file.write_text(json.dumps(data, sort_keys=True, indent=1))
    link = workdir / "result"
    argv = [
        "nix-build", str(nix_dir() / "env.nix"), "--argstr", "specFile", str(spec_file),
        "--out-link", str(link), *nix_option_args(cfg),
    ]
    try:
        stdout = proc.stream(argv, on_line=on_line, env=nix_env(source), what="nix-build of the environment", code=Exit.SOFTWARE)
    except NixsnakeError as exc:
        if source.demo:  # an attribute whose Debian packages this host lacks: exit 69 + apt-get hint
            from . import demo

            if (missing := demo.unavailable_error(exc.message)) is not None:
                raise missing from None
        raise
    out = Path(stdout.strip().splitlines()[-1]) if stdout.strip() else link.resolve()
    closure = proc.run(["nix-store", "--query", "--requisites", str(out)], what="nix-store --query --requisites").stdout.split()
    info_path = out / "nix-support" / "nixsnake-env.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise NixsnakeError(f"nix build produced {out} without a readable {info_path.name}: {exc}", Exit.SOFTWARE) from None
    return NixBuild(out, tuple(sorted(closure)), info)


def nix_available() -> bool:
    return proc.which("nix-build") is not None and proc.which("nix-store") is not None


def temp_workdir(prefix: str = "nixsnake-build-") -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)
