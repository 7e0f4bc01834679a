#!/usr/bin/env python3
"""Write (or, with --check, verify) every generated section of the repository.

Some rules live in Python but are needed elsewhere: ``bwrap-exec.sh`` (POSIX sh, run per
job, no Python) gets its constants as a generated header. Each generated section sits
between two marker lines and is rewritten from the code here; ``--check`` (run by the
tests) fails when a committed section differs from what the code generates.

    python3 scripts/generate.py          # rewrite the sections
    python3 scripts/generate.py --check  # exit 1 and name each stale section
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _sections() -> list[tuple[Path, str, str, Callable[[], str]]]:
    """(file, begin marker, end marker, generator) for every generated section."""
    from snakemake_deploy_nixsnake.runtime import bwrap_header

    return [
        (
            REPO / "snakemake_deploy_nixsnake" / "data" / "bwrap-exec.sh",
            "# --- generated from snakemake_deploy_nixsnake by scripts/generate.py: do not edit ---\n",
            "# --- end generated ---\n",
            bwrap_header,
        ),
    ]


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    i = text.index(begin) + len(begin)
    j = text.index(end, i)
    return text[:i] + body + text[j:]


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for path, begin, end, make in _sections():
        text = path.read_text()
        new = replace_between(text, begin, end, make())
        if new != text:
            stale.append(path.relative_to(REPO))
            if not check:
                path.write_text(new)
    if check and stale:
        print("generated sections out of date (run: python3 scripts/generate.py): " + ", ".join(map(str, stale)))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
