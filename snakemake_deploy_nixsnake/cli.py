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
from pathlib import Path

from . import __version__
from .errors import Exit, InternalError, NixsnakeError


def _check(paths: list[str]) -> None:
    from .spec import env_files, load_spec

    for path in env_files([Path(p) for p in paths], lambda n: print(n, file=sys.stderr)):
        print(f"{path}: ok ({load_spec(path).summary()})")


def _fail(exc: NixsnakeError) -> None:
    print(f"nixsnake: {exc}", file=sys.stderr)
    if os.environ.get("NIXSNAKE_DEBUG"):
        traceback.print_exc()
    sys.exit(int(exc.code))


def _cli_framework_error(exc: Exception) -> int | None:
    """Show click's own errors (usage, bad parameter) the way click does, and give their
    exit code: 64 for usage errors (click's would be 2). Matched by class name because
    typer >= 0.20 raises them from its vendored copy of click."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "ClickException" in names:
        exc.show()  # type: ignore[attr-defined]
        return int(Exit.USAGE) if "UsageError" in names else int(exc.exit_code)  # type: ignore[attr-defined]
    if "Abort" in names:  # EOF at a prompt
        return 1
    return None


def main(argv: list[str] | None = None) -> None:
    """Usage errors are click's message and exit 64; everything nixsnake raises becomes
    one line and its sysexits code; anything else is a bug: one line, exit 70."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args == ["--version"]:
            print(f"nixsnake {__version__}")
            return
        if len(args) > 1 and args[0] == "check" and not any(a.startswith("-") for a in args[1:]):
            _check(args[1:])
            return
        from .commands import app

        try:
            rc = app(args=args, prog_name="nixsnake", standalone_mode=False)
        except Exception as exc:
            code = _cli_framework_error(exc)
            if code is None:
                raise
            sys.exit(code)
        if isinstance(rc, int) and rc:  # typer.Exit(code), Ctrl-C (130)
            if rc == Exit.INTERRUPTED:
                print("nixsnake: interrupted", file=sys.stderr)
            sys.exit(rc)
    except NixsnakeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("nixsnake: interrupted", file=sys.stderr)
        sys.exit(int(Exit.INTERRUPTED))
    except Exception as exc:  # a bug: still one line, exit 70
        _fail(InternalError(exc))


if __name__ == "__main__":
    main()
