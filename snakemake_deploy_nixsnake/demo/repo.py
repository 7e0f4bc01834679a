"""The demo package set as a dated git repository, so date locking works on it as on nixpkgs.

``git rev-list --before=DATE branch`` and ``builtins.fetchGit`` need a real repository
with real dates. Its commits hold only the files nixsnake ships (``nixpkgs/``) plus a
``version.json`` per commit; author, dates and content are fixed, so every machine with
the same nixsnake makes the same revisions: a lock made on one works on all (the host's
files are an input of the build, see ``host.py``, never part of a commit).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from .. import proc
from ..errors import Exit, NixsnakeError

#: Branches of the materialized repository (the first one is checked out).
DEMO_BRANCHES = ("nixos-unstable", "nixos-24.05")
#: Where the .nix files of the package set live inside the installed package.
DEMO_NIX_DIR = Path(__file__).resolve().parent / "nixpkgs"

AUTHOR_NAME = "nixsnake demo"
AUTHOR_EMAIL = "demo@nixsnake.invalid"


def _utc(y: int, m: int, d: int) -> _dt.datetime:
    return _dt.datetime(y, m, d, 12, 0, tzinfo=_dt.UTC)


# The commit plan: (date, demoRelease) per branch. Both branches share the first two
# commits; nixos-24.05 forks after 2024-01-15, like a release branch.
_BASE = [
    (_utc(2023, 6, 1), "23.05-demo"),
    (_utc(2024, 1, 15), "24.01-demo"),
]
_PLAN: dict[str, list[tuple[_dt.datetime, str]]] = {
    "nixos-unstable": [*_BASE, (_utc(2024, 6, 1), "24.06-demo"), (_utc(2025, 3, 1), "25.03-demo")],
    "nixos-24.05": [*_BASE, (_utc(2024, 6, 1), "24.05-demo"), (_utc(2025, 3, 1), "24.05.1-demo")],
}

#: Written by the materialization, never copied from DEMO_NIX_DIR.
_GENERATED = ("version.json",)
#: Written into ``.git/`` (outside the tracked tree) once a repository is complete.
_MARKER = "nixsnake-demo.json"


def demo_commit_dates() -> list[_dt.datetime]:
    """The (UTC) dates of the commits of the demo repository, oldest first."""
    return sorted({d for commits in _PLAN.values() for d, _ in commits})


def _shipped_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for p in sorted(DEMO_NIX_DIR.rglob("*")):
        rel = p.relative_to(DEMO_NIX_DIR).as_posix()
        if p.is_file() and "__pycache__" not in rel and rel not in _GENERATED:
            files[rel] = p.read_bytes()
    if "default.nix" not in files:
        raise NixsnakeError(f"{DEMO_NIX_DIR}/default.nix is missing (broken installation)", Exit.SOFTWARE)
    return files


def _git_env(date: _dt.datetime | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "EMAIL"}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        LC_ALL="C",
        TZ="UTC",
    )
    if date is not None:
        stamp = f"{int(date.timestamp())} +0000"
        env.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    return env


def _git(repo: Path, *args: str, date: _dt.datetime | None = None) -> str:
    return proc.run(
        ["git", "-C", repo, "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args],
        env=_git_env(date),
        what=f"git {args[0]} (materializing the demo package set)",
    ).stdout.strip()


def _fingerprint(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(repr(sorted((b, [(d.isoformat(), r) for d, r in c]) for b, c in _PLAN.items())).encode())
    return h.hexdigest()


def _read_marker(dest: Path) -> dict | None:
    try:
        return json.loads((dest / ".git" / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _build_repo(tmp: Path, files: dict[str, bytes], fingerprint: str) -> dict[str, str]:
    proc.run(["git", "init", "-q", "-b", DEMO_BRANCHES[0], tmp], env=_git_env(), what="git init (demo package set)")
    for rel, data in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)

    def commit(date: _dt.datetime, release: str) -> None:
        (tmp / "version.json").write_text(json.dumps({"demoRelease": release}, indent=2) + "\n")
        (tmp / "version.json").chmod(0o644)
        _git(tmp, "add", "-A")
        _git(tmp, "commit", "-q", "--no-verify", "-m", f"demo release {release}", date=date)

    base = _PLAN[DEMO_BRANCHES[0]]
    shared = 0
    while shared < len(base) and all(len(c) > shared and c[shared] == base[shared] for c in _PLAN.values()):
        shared += 1
    for date, release in base[:shared]:
        commit(date, release)
    fork = _git(tmp, "rev-parse", "HEAD")
    for date, release in base[shared:]:
        commit(date, release)
    for branch in DEMO_BRANCHES[1:]:
        _git(tmp, "checkout", "-q", "-b", branch, fork)
        for date, release in _PLAN[branch][shared:]:
            commit(date, release)
    _git(tmp, "checkout", "-q", DEMO_BRANCHES[0])
    revs = {b: _git(tmp, "rev-parse", f"refs/heads/{b}") for b in DEMO_BRANCHES}
    (tmp / ".git" / _MARKER).write_text(json.dumps({"fingerprint": fingerprint, "revs": revs}, indent=2))
    return revs


def materialize(dest: Path) -> Path:
    """Make (or reuse) the demo package set as a git repository at ``dest``; return ``dest``.

    Safe to call from several processes at once: the repository is built in a temporary
    directory next to ``dest`` under a lock and renamed into place, so ``dest`` is either
    absent or complete. A ``dest`` made from other content (another nixsnake version) is
    replaced; a ``dest`` that is not a demo repository is an error.
    """
    from flufl.lock import Lock  # only when (re)building: a cold import costs ~30 ms

    dest = Path(dest).absolute()
    files = _shipped_files()
    fingerprint = _fingerprint(files)

    def current() -> bool:
        marker = _read_marker(dest)
        return marker is not None and marker.get("fingerprint") == fingerprint

    if current():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Lock(os.fspath(dest.parent / f".{dest.name}.lock"), lifetime=_dt.timedelta(minutes=10)):
        if current():
            return dest
        if dest.exists() and _read_marker(dest) is None:
            raise NixsnakeError(
                f"{dest} exists and is not a nixsnake demo package set",
                Exit.DATAERR,
                f"remove {dest} or choose another directory",
            )
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            _build_repo(tmp, files, fingerprint)
            if dest.exists():  # stale: other content; swap it out
                old = dest.parent / f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def demo_revs(dest: Path) -> dict[str, str]:
    """Branch -> tip revision of a materialized demo repository."""
    marker = _read_marker(Path(dest))
    if marker is None:
        raise NixsnakeError(f"demo package set: {dest} is not materialized", Exit.SOFTWARE)
    return dict(marker["revs"])
