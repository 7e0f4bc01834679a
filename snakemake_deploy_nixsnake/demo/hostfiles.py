"""Reading the host's files for the demo package set: what host.py and hostpkgs.py share."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from .. import proc
from ..errors import Exit, NixsnakeError


def fail(msg: str, hint: str | None = None, code: Exit = Exit.UNAVAILABLE) -> NixsnakeError:
    return NixsnakeError(f"demo package set: {msg}", code, hint)


def checked_path(p: Path) -> str:
    s = os.fspath(p)
    if any(c in s for c in "\n\r\t ") or not s.startswith("/"):
        raise fail(f"host path {s!r} is not usable (absolute paths without whitespace only)", code=Exit.SOFTWARE)
    return s


def ldd(files: Iterable[Path]) -> tuple[dict[str, Path], Path | None]:
    """Libraries (soname -> resolved path) that ``ldd`` lists for ``files``, and the loader."""
    argv = ["ldd", *[os.fspath(f) for f in files]]
    res = proc.run(argv, check=False, what="ldd (finding host libraries for the demo package set)")
    libs: dict[str, Path] = {}
    loader: Path | None = None
    for line in res.stdout.splitlines():
        line = line.strip()
        m = re.fullmatch(r"(\S+) => (/\S+) \(0x[0-9a-f]+\)", line)
        if m:
            libs[m.group(1)] = Path(m.group(2))
            continue
        m = re.fullmatch(r"(/\S+) \(0x[0-9a-f]+\)", line)
        if m:
            loader = Path(m.group(1))
            continue
        if "=> not found" in line:
            raise fail(f"ldd: {line} (needed by one of {argv[1:]})", "install the missing library on the host")
    if res.returncode != 0 and not libs:
        raise fail(f"ldd failed: {proc.tail(res.stderr or res.stdout)}")
    return libs, loader
