"""Site and project settings, layered: defaults < user file < project file < env < flags.

A site admin sets the shared store and the nixpkgs mirror once (user or site file, or
``NIXSNAKE_*`` variables in the module that loads nix); a project pins what it needs in
``nixsnake.toml`` beside its Snakefile; a flag (or ``--sdm-nixsnake-*``) wins for one run.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from .errors import SpecError
from .runtime import GPU_MODES, RUNTIMES

#: Image compressions (the ``compression`` setting): name -> (mksquashfs's default level
#: or None, (min, max) or None when it takes no level). image/squashfs.py applies them.
COMPRESSIONS: dict[str, tuple[int | None, tuple[int, int] | None]] = {
    "zstd": (3, (1, 22)),
    "gzip": (9, (1, 9)),
    "xz": (None, None),
    "lz4": (None, None),
}

PROJECT_FILE = "nixsnake.toml"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("NIXSNAKE_CACHE_DIR") or platformdirs.user_cache_dir("nixsnake"))


@dataclass(frozen=True)
class Config:
    #: Where images live. Shared storage on a cluster; one store serves all users.
    store: Path = field(default_factory=lambda: cache_dir() / "images")
    #: Where nixpkgs comes from: ``github`` (GitHub's API + tarballs), a git URL or
    #: path of a clone/mirror, or ``demo`` (the embedded demo package set).
    nixpkgs_source: str = "github:NixOS/nixpkgs"
    compression: str = "zstd"
    runtime: str = "apptainer"
    #: apptainer/singularity executable (name or absolute path); default: the runtime's name
    runtime_bin: str | None = None
    gpu: str = "auto"
    binds: tuple[str, ...] = ()
    #: Extra ``nix --option NAME VALUE`` pairs (a site without a binary cache sets
    #: ``substituters = ""``).
    nix_options: tuple[tuple[str, str], ...] = ()
    #: Parallel image builds in ``nixsnake build``.
    jobs: int = 2
    #: Seconds to wait for another process building the same image before giving up.
    build_wait: int = 6 * 3600

    def with_overrides(self, **kw: Any) -> Config:
        clean = {k: v for k, v in kw.items() if v is not None and v != ()}
        if "nix_options" in clean:
            clean["nix_options"] = merge_nix_options(self.nix_options, clean["nix_options"])
        return _validated(replace(self, **clean), "command line")


def merge_nix_options(
    base: tuple[tuple[str, str], ...], more: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """Each settings layer adds to ``nix_options`` rather than replacing the table: a flag
    ``sandbox=false`` keeps the project's ``build-users-group = ""``; per option, the later
    layer wins."""
    merged = dict(base)
    merged.update(dict(more))
    return tuple(sorted(merged.items()))


def _validated(cfg: Config, origin: str) -> Config:
    if cfg.compression not in COMPRESSIONS:
        raise SpecError(
            origin, "compression", f"{cfg.compression!r} is not supported", f"use one of {', '.join(COMPRESSIONS)}"
        )
    if cfg.runtime not in RUNTIMES:
        raise SpecError(origin, "runtime", f"{cfg.runtime!r} is not supported", f"use one of {', '.join(RUNTIMES)}")
    if cfg.gpu not in GPU_MODES:
        raise SpecError(origin, "gpu", f"{cfg.gpu!r} is not supported", f"use one of {', '.join(GPU_MODES)}")
    if cfg.jobs < 1:
        raise SpecError(origin, "jobs", "must be at least 1", "set jobs = 1 or more")
    return cfg


def parse_nix_options(text: str) -> tuple[tuple[str, str], ...]:
    """``"substituters=;build-users-group="`` (flag / env var form) -> option pairs."""
    pairs = [p for p in text.split(";") if p.strip()]
    return tuple((p.split("=", 1)[0].strip(), p.split("=", 1)[1].strip() if "=" in p else "") for p in pairs)


def _from_mapping(base: Config, data: Mapping[str, Any], origin: str, base_dir: Path | None) -> Config:
    known = {f.name for f in fields(Config)}
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise SpecError(
                origin, key, f"unknown setting {key!r}", f"did you mean {close[0]!r}?" if close else "remove it"
            )
        if key == "store":
            p = Path(os.path.expanduser(str(value)))
            kw[key] = (base_dir / p) if (base_dir and not p.is_absolute()) else p
        elif key == "nixpkgs_source":
            v = str(value)
            if base_dir and (v.startswith("./") or v.startswith("../")):
                v = str((base_dir / v).resolve())
            kw[key] = v
        elif key == "binds":
            kw[key] = tuple(str(b) for b in (value if isinstance(value, list) else str(value).split(",")) if b)
        elif key == "nix_options":
            if isinstance(value, Mapping):
                more = tuple((str(k), str(v)) for k, v in sorted(value.items()))
            else:
                more = parse_nix_options(str(value))
            kw[key] = merge_nix_options(base.nix_options, more)
        elif key in ("jobs", "build_wait"):
            try:
                kw[key] = int(value)
            except (TypeError, ValueError):
                raise SpecError(origin, key, f"{value!r} is not a number", "give a whole number") from None
        else:
            kw[key] = str(value)
    return _validated(replace(base, **kw), origin)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "", f"invalid TOML: {exc}", "fix the syntax") from None
    section = data.get("nixsnake", data)
    if not isinstance(section, dict):
        raise SpecError(str(path), "nixsnake", "is not a table", "write [nixsnake] settings")
    return section


def load_config(project_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    cfg = Config(store=cache_dir(env) / "images")
    user_file = Path(env.get("NIXSNAKE_CONFIG") or Path(platformdirs.user_config_dir("nixsnake")) / "config.toml")
    if user_file.is_file():
        cfg = _from_mapping(cfg, _read_file(user_file), str(user_file), user_file.parent)
    proj = (project_dir or Path.cwd()) / PROJECT_FILE
    if proj.is_file():
        cfg = _from_mapping(cfg, _read_file(proj), str(proj), proj.parent)
    from_env = {
        f.name: env[f"NIXSNAKE_{f.name.upper()}"] for f in fields(Config) if f"NIXSNAKE_{f.name.upper()}" in env
    }
    if from_env:
        cfg = _from_mapping(cfg, from_env, "environment (NIXSNAKE_*)", Path.cwd())
    return cfg
