"""The ``nixsnake`` command.

Every command ends in one of the sysexits codes from ``errors.Exit``; a failure prints
one line (``nixsnake: <file>: <key>: <problem>; fix: <fix>``), never a traceback,
unless ``NIXSNAKE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console

from . import __version__
from .config import Config, load_config
from .errors import Exit, NixsnakeError

app = typer.Typer(
    name="nixsnake",
    help="Date-locked, nix-built SIF images for Snakemake rules.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

SpecArgs = Annotated[list[Path], typer.Argument(help="env files (TOML), e.g. envs/vep.toml", show_default=False)]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="image store directory (shared storage on a cluster)")]
SourceOpt = Annotated[
    Optional[str],
    typer.Option("--nixpkgs-source", help="'github', 'github:OWNER/REPO', a nixpkgs git clone/mirror path or URL, or 'demo'"),
]


def _config(**overrides: object) -> Config:
    return load_config().with_overrides(**overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"nixsnake {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")] = False,
) -> None:
    pass


@app.command()
def check(specs: SpecArgs) -> None:
    """Validate env files without resolving anything (no network, no nix)."""
    from .spec import load_spec

    for path in specs:
        spec = load_spec(path)
        parts = [f"date {spec.date}", f"{len(spec.nixpkgs.packages)} nixpkgs"]
        if spec.python:
            parts.append(f"python {spec.python.version} with {len(spec.python.packages)} requirements")
        if spec.r:
            parts.append(f"{len(spec.r.packages)} R packages")
        out.print(f"{path}: ok ({', '.join(parts)})")


@app.command()
def lock(
    specs: SpecArgs,
    check_only: Annotated[bool, typer.Option("--check", help="exit 65 if a lock is missing or stale; write nothing")] = False,
    nixpkgs_source: SourceOpt = None,
) -> None:
    """Resolve each env file's date and write ENV.lock.toml beside it."""
    from .lock import lock_file, parse_source, stale_reason
    from .spec import load_spec

    if check_only:
        stale = []
        for path in specs:
            reason = stale_reason(load_spec(path), path)
            if reason:
                stale.append(reason)
                err.print(f"nixsnake: stale: {reason}; fix: run `nixsnake lock {path}`")
            else:
                out.print(f"{path}: lock is current")
        if stale:
            raise typer.Exit(int(Exit.DATAERR))
        return
    cfg = _config(nixpkgs_source=nixpkgs_source)
    source = parse_source(cfg.nixpkgs_source) if specs else None
    for path in specs:
        with err.status(f"locking {path} ..."):
            lock_path, changed = lock_file(path, cfg, source)
        out.print(f"{lock_path}: {'written' if changed else 'unchanged'}")


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, prog_name="nixsnake", standalone_mode=False)
    except NixsnakeError as exc:
        err.print(f"nixsnake: {exc}", markup=False)
        if os.environ.get("NIXSNAKE_DEBUG"):
            traceback.print_exc()
        sys.exit(int(exc.code))
    except click.exceptions.Abort:
        err.print("nixsnake: interrupted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(64)  # EX_USAGE
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("nixsnake: interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, exit 70
        err.print(f"nixsnake: internal error: {exc.__class__.__name__}: {exc} (set NIXSNAKE_DEBUG=1 for a traceback)", markup=False)
        if os.environ.get("NIXSNAKE_DEBUG"):
            traceback.print_exc()
        sys.exit(int(Exit.SOFTWARE))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
