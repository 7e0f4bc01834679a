"""The ``nixsnake`` command's entry point.

Every command ends in one of the sysexits codes from ``errors.Exit``; a failure prints
one line (``nixsnake: <file>: <key>: <problem>; fix: <fix>``), never a traceback,
unless ``NIXSNAKE_DEBUG=1``.

``nixsnake --version`` and ``nixsnake check FILE...`` are answered here, without the
CLI framework (typer, rich: ~50 ms of imports): they are what scripts and editors call
often. Everything else, help and usage errors included, goes to ``commands.py``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import Exit, NixsnakeError

if TYPE_CHECKING:
    from .spec import EnvFile


def env_files(paths: list[Path], note: Callable[[str], None]) -> list[Path]:
    """Accept ``envs/*.toml``: lock files (``*.lock.toml``) are skipped, with a note."""
    keep = []
    for p in paths:
        if p.name.endswith(".lock.toml"):
            note(f"nixsnake: skipping {p} (a lock file; its env file is {p.name[: -len('.lock.toml')]}.toml)")
        else:
            keep.append(p)
    return keep


def describe(env: EnvFile) -> str:
    """What ``nixsnake check`` says about a valid env file."""
    parts = [f"date {env.date}", f"{len(env.nixpkgs.packages)} nixpkgs"]
    if env.python:
        parts.append(f"python {env.python.version} with {len(env.python.packages)} requirements")
    if env.r:
        parts.append(f"{len(env.r.packages)} R packages")
    if env.conda:
        parts.append(f"{len(env.conda.packages)} conda packages")
    return ", ".join(parts)


def _check(paths: list[str]) -> None:
    from .spec import load_spec

    for path in env_files([Path(p) for p in paths], lambda n: print(n, file=sys.stderr)):
        print(f"{path}: ok ({describe(load_spec(path))})")


def internal_error(exc: BaseException) -> NixsnakeError:
    return NixsnakeError(
        f"internal error: {exc.__class__.__name__}: {exc} (set NIXSNAKE_DEBUG=1 for a traceback)", Exit.SOFTWARE
    )


def _fail(exc: NixsnakeError) -> None:
    print(f"nixsnake: {exc}", file=sys.stderr)
    if os.environ.get("NIXSNAKE_DEBUG"):
        traceback.print_exc()
    sys.exit(int(exc.code))


def main(argv: list[str] | None = None) -> None:
    """Typer handles usage errors itself (exit 2, with help); everything nixsnake raises
    becomes one line and its sysexits code; anything else is a bug: one line, exit 70."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args == ["--version"]:
            print(f"nixsnake {__version__}")
            return
        if len(args) > 1 and args[0] == "check" and not any(a.startswith("-") for a in args[1:]):
            _check(args[1:])
            return
        from .commands import app

        app(args=args, prog_name="nixsnake")  # standalone mode: exits by itself
    except NixsnakeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("nixsnake: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, exit 70
        _fail(internal_error(exc))


if __name__ == "__main__":
    main()
