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
from typing import NamedTuple

from .. import proc
from ..errors import Exit, NixsnakeError

#: Branches of the materialized repository (the first one is checked out).
DEMO_BRANCHES = ("nixos-unstable", "nixos-24.05", "nixos-25.11")
#: Where the .nix files of the package set live inside the installed package.
DEMO_NIX_DIR = Path(__file__).resolve().parent / "nixpkgs"

AUTHOR_NAME = "nixsnake demo"
AUTHOR_EMAIL = "demo@nixsnake.invalid"


def _utc(y: int, m: int, d: int) -> _dt.datetime:
    return _dt.datetime(y, m, d, 12, 0, tzinfo=_dt.UTC)


class DemoCommit(NamedTuple):
    """One commit of the demo repository. Besides the shipped files it gets
    ``version.json`` (``demoRelease``, ``python3``) and the Nix version check nixpkgs had
    at that time: ``lib/minver.nix`` (a bare version string, nixpkgs until 2025-08-22) or
    ``lib/minfeatures.nix`` (a feature list whose version condition says "2.18", nixpkgs
    since then); ``default.nix`` aborts below it, like nixpkgs'."""

    date: _dt.datetime
    release: str
    #: what ``python3`` is at this commit (nixpkgs: 23.05 3.10, 23.11/24.05 3.11,
    #: 24.11/25.05 3.12, 25.11 3.13)
    python3: str
    #: ("minver" | "minfeatures", the minimum Nix version)
    min_nix: tuple[str, str]


# The commit plan per branch. All branches share the first two commits; nixos-24.05 forks
# after 2024-01-15, like a release branch; nixos-25.11 continues nixos-unstable with two
# commits that need Nix >= 2.18 (nixpkgs raised lib/minver.nix to 2.18 on 2025-08-12 and
# replaced it by lib/minfeatures.nix on 2025-08-22): no Debian 12 nix (2.8) evaluates them.
_BASE = [
    DemoCommit(_utc(2023, 6, 1), "23.05-demo", "3.10", ("minver", "2.3")),
    DemoCommit(_utc(2024, 1, 15), "24.01-demo", "3.11", ("minver", "2.3")),
]
_UNSTABLE = [
    *_BASE,
    DemoCommit(_utc(2024, 6, 1), "24.06-demo", "3.11", ("minver", "2.3")),
    DemoCommit(_utc(2025, 3, 1), "25.03-demo", "3.12", ("minver", "2.3.17")),
]
_PLAN: dict[str, list[DemoCommit]] = {
    "nixos-unstable": _UNSTABLE,
    "nixos-24.05": [
        *_BASE,
        DemoCommit(_utc(2024, 6, 1), "24.05-demo", "3.11", ("minver", "2.3")),
        DemoCommit(_utc(2025, 3, 1), "24.05.1-demo", "3.11", ("minver", "2.3")),
    ],
    "nixos-25.11": [
        *_UNSTABLE,
        DemoCommit(_utc(2025, 8, 15), "25.08-demo", "3.12", ("minver", "2.18")),
        DemoCommit(_utc(2025, 11, 30), "25.11-demo", "3.13", ("minfeatures", "2.18")),
    ],
}

#: Written by the materialization, never copied from DEMO_NIX_DIR.
_GENERATED = ("version.json", "lib/minver.nix", "lib/minfeatures.nix")
#: Written into ``.git/`` (outside the tracked tree) once a repository is complete.
_MARKER = "nixsnake-demo.json"


def _min_nix_file(kind: str, version: str) -> tuple[str, str]:
    """(path, content) of a commit's Nix version check, in the shape nixpkgs has it."""
    if kind == "minver":
        return "lib/minver.nix", f'# The minimum Nix version this (demo) package set needs.\n"{version}"\n'
    return "lib/minfeatures.nix", (
        "# The Nix features this (demo) package set needs (nixpkgs' lib/minfeatures.nix shape).\n"
        "let\n"
        "  features = [\n"
        '    { description = "the `nixVersion` builtin"; condition = builtins ? nixVersion; }\n'
        f'    {{ description = "`builtins.nixVersion` reports at least {version}";\n'
        f'      condition = builtins ? nixVersion && builtins.compareVersions "{version}" builtins.nixVersion != 1; }}\n'
        "  ];\n"
        "  evaluated = builtins.partition ({ condition, ... }: condition) features;\n"
        "in\n"
        "{ all = features; supported = evaluated.right; missing = evaluated.wrong; }\n"
    )


def demo_plan() -> dict[str, list[DemoCommit]]:
    """Branch -> its commits, oldest first (what each commit's python3 and Nix check are)."""
    return {b: list(cs) for b, cs in _PLAN.items()}


def demo_commit_dates() -> list[_dt.datetime]:
    """The (UTC) dates of the commits of the demo repository, oldest first."""
    return sorted({c.date for commits in _PLAN.values() for c in commits})


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
    h.update(repr(sorted((b, [(c.date.isoformat(), *c[1:]) for c in cs]) for b, cs in _PLAN.items())).encode())
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

    def commit(c: DemoCommit) -> str:
        (tmp / "version.json").write_text(json.dumps({"demoRelease": c.release, "python3": c.python3}, indent=2) + "\n")
        for rel in _GENERATED[1:]:
            (tmp / rel).unlink(missing_ok=True)
        rel, text = _min_nix_file(*c.min_nix)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
        for rel in _GENERATED:
            if (tmp / rel).exists():
                (tmp / rel).chmod(0o644)
        _git(tmp, "add", "-A")
        _git(tmp, "commit", "-q", "--no-verify", "-m", f"demo release {c.release}", date=c.date)
        return _git(tmp, "rev-parse", "HEAD")

    # the first branch, then every other one forked from the last commit it shares with it
    base = _PLAN[DEMO_BRANCHES[0]]
    base_revs = [commit(c) for c in base]
    for branch in DEMO_BRANCHES[1:]:
        plan = _PLAN[branch]
        shared = 0
        while shared < min(len(base), len(plan)) and plan[shared] == base[shared]:
            shared += 1
        _git(tmp, "checkout", "-q", "-b", branch, base_revs[shared - 1])
        for c in plan[shared:]:
            commit(c)
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
