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
    """``NIXSNAKE_CACHE_DIR``, else the platform's user cache (``~/.cache/nixsnake``): the
    default store, GitHub answers, nixpkgs mirrors, conda repodata."""
    env = os.environ if env is None else env
    return Path(env.get("NIXSNAKE_CACHE_DIR") or platformdirs.user_cache_dir("nixsnake"))


def _doc(help: str, default_doc: str | None = None) -> dict[str, str | None]:
    """A setting's one description: the docs' settings table, the plugin's
    ``--sdm-nixsnake-*`` help and the CLI's flags all read it from here."""
    return {"help": help, "default_doc": default_doc}


@dataclass(frozen=True)
class Config:
    store: Path = field(
        default_factory=lambda: cache_dir() / "images",
        metadata=_doc(
            "Image store directory: shared storage on a cluster; one store serves all users and jobs.",
            "`$NIXSNAKE_CACHE_DIR/images` (default `~/.cache/nixsnake/images`)",
        ),
    )
    nixpkgs_source: str = field(
        default="github:NixOS/nixpkgs",
        metadata=_doc(
            "Where nixpkgs comes from: `github:OWNER/REPO` (GitHub's API and tarballs), the path or URL "
            "of a nixpkgs git clone or mirror, or `demo` (the embedded demo package set)."
        ),
    )
    compression: str = field(
        default="zstd", metadata=_doc("Image compression: `zstd`, `gzip` (old squashfuse or kernels), `xz` or `lz4`.")
    )
    runtime: str = field(
        default="apptainer", metadata=_doc("Container runtime on compute nodes: `apptainer`, `singularity` or `bwrap`.")
    )
    runtime_bin: str | None = field(
        default=None,
        metadata=_doc(
            "apptainer/singularity executable on the nodes: a name on `PATH` or an absolute path "
            "(for sites where it is only on `PATH` after `module load`).",
            "the runtime's name",
        ),
    )
    gpu: str = field(
        default="auto",
        metadata=_doc("`--nv` for jobs: `auto` (decided on the node when the job starts), `always` or `never`."),
    )
    binds: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Extra binds for every job, `SRC[:DST[:ro]]`: a list in TOML, comma separated in a variable or flag.",
            "none",
        ),
    )
    nix_options: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=_doc(
            "Extra `nix --option NAME VALUE` pairs: a TOML table, or `name=value;name=value`. They add up "
            "across layers, per option the later layer wins (a site without a binary cache sets "
            '`substituters = ""`).',
            "none",
        ),
    )
    jobs: int = field(default=2, metadata=_doc("Images `nixsnake build` builds in parallel."))
    build_wait: int = field(
        default=6 * 3600,
        metadata=_doc(
            "Seconds to wait for another process building the same image before giving up (exit 75).",
            "`21600` (6 hours)",
        ),
    )

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


def setting_help(name: str) -> str:
    """The description of one setting with its default (plain text, for command-line help)."""
    (f,) = [f for f in fields(Config) if f.name == name]
    default = f.metadata["default_doc"] or (f.default if f.default not in (None, ()) else None)
    text = str(f.metadata["help"]) + (f" Default: {default}." if default is not None else "")
    return text.replace("`", "")
