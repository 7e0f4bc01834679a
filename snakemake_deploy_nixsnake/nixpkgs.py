"""Where nixpkgs comes from, and which commit a date means.

The ``nixpkgs_source`` setting names a source: GitHub (``github:OWNER/REPO``, through
GitHub's API and tarballs), a git clone or mirror (a path, or a URL that nixsnake
mirrors locally), or the embedded demo package set. A date becomes the last commit on
the branch before that day (00:00 UTC), following first parents: the branch tip as it
was, never a commit from inside a merged pull request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import proc
from .config import cache_dir
from .errors import Exit, NixsnakeError, SpecError
from .spec import EnvFile, cutoff

GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class NixpkgsPin:
    branch: str
    rev: str
    commit_time: str  # ISO 8601, UTC
    pinned: bool  # rev given in the env file rather than found by date


@dataclass(frozen=True)
class NixpkgsSource:
    kind: str  # "git" | "github"
    location: str  # a local path for git; "owner/repo" for github
    #: The URL nix fetches from, given a rev (fetchGit url or tarball url template).
    fetch_url: str = ""
    #: The embedded demo package set: its builds need the host manifest (demo.nix_env).
    demo: bool = False


def parse_source(text: str) -> NixpkgsSource:
    """Turn the ``nixpkgs_source`` setting into a source we can query and nix can fetch."""
    from . import demo

    if text == demo.SOURCE_NAME:
        path = demo.default_repo()
        return NixpkgsSource("git", str(path), "file://" + str(path), demo=True)
    if text == "github" or text.startswith("github:"):
        repo = text.partition(":")[2] or "NixOS/nixpkgs"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
            raise SpecError(
                "settings", "nixpkgs_source", f"{text!r} is not github:OWNER/REPO", "write e.g. github:NixOS/nixpkgs"
            )
        return NixpkgsSource("github", repo, f"https://github.com/{repo}/archive/{{rev}}.tar.gz")
    if text.startswith("file://"):
        text = urllib.parse.unquote(text[len("file://") :])
    if re.match(r"[a-z+]+://", text) or re.match(r"[\w.-]+@[\w.-]+:", text):
        # nix fetches from the local mirror nixsnake keeps: the remote URL would make nix
        # clone all of nixpkgs again into its own cache
        mirror = _mirror(text)
        return NixpkgsSource("git", mirror, "file://" + mirror)
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise SpecError(
            "settings",
            "nixpkgs_source",
            f"{text!r} does not exist",
            "give a path to a nixpkgs git clone or mirror, a git URL, 'github' or 'demo'",
        )
    return NixpkgsSource("git", str(path), "file://" + str(path))


def _mirror(url: str) -> str:
    """A bare mirror of a remote nixpkgs in the cache, refreshed on each lock."""
    dest = cache_dir() / "git-mirrors" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (dest / "HEAD").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        proc.run(
            ["git", "clone", "--quiet", "--mirror", "--", url, str(dest)],
            what=f"mirroring {url}",
            code=Exit.UNAVAILABLE,
        )
    else:
        proc.run(
            ["git", "-C", str(dest), "fetch", "--quiet", "--prune", "origin"],
            what=f"updating mirror of {url}",
            code=Exit.UNAVAILABLE,
        )
    return str(dest)


def _iso_utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_git(repo: str, branch: str, day: dt.date, spec_file: str, rev: str | None = None) -> NixpkgsPin:
    """Last first-parent commit on ``branch`` before ``day`` (00:00 UTC) in a local repo."""
    git = ["git", "-C", repo]
    if rev is not None:
        r = proc.run([*git, "show", "-s", "--format=%ct", rev + "^{commit}", "--"], check=False)
        if r.returncode != 0:
            raise SpecError(
                spec_file,
                "nixpkgs.rev",
                f"commit {rev} is not in {repo}",
                "check the hash, or update the nixpkgs mirror",
            )
        return NixpkgsPin(branch, rev, _iso_utc(int(r.stdout.split()[0])), True)
    ref = None
    for candidate in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        if proc.run([*git, "rev-parse", "--verify", "--quiet", candidate], check=False).returncode == 0:
            ref = candidate
            break
    if ref is None:
        raise SpecError(
            spec_file,
            "nixpkgs.branch",
            f"branch {branch!r} does not exist in {repo}",
            "use an existing branch such as nixos-unstable",
        )
    out = proc.run(
        [*git, "rev-list", "-1", "--first-parent", f"--before={cutoff(day)}", ref, "--"], what="git rev-list"
    ).stdout.strip()
    if not out:
        roots = proc.run([*git, "rev-list", "--max-parents=0", ref, "--"], what="git rev-list").stdout.split()
        first = (
            proc.run([*git, "show", "-s", "--format=%cI", roots[-1], "--"], what="git show").stdout.strip()
            if roots
            else "?"
        )
        raise SpecError(
            spec_file,
            "date",
            f"{day.isoformat()} is before the first commit on {branch!r} ({first})",
            "use a later date",
        )
    ct = proc.run([*git, "show", "-s", "--format=%ct", out], what="git show").stdout.split()[0]
    return NixpkgsPin(branch, out, _iso_utc(int(ct)), False)


def _github_get(url: str) -> Any:
    """GET a GitHub API URL, cached on disk (commits at a past date do not change)."""
    cache = cache_dir() / "github" / (hashlib.sha256(url.encode()).hexdigest() + ".json")
    if cache.exists():
        return json.loads(cache.read_text())
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "nixsnake"}
    token = os.environ.get("NIXSNAKE_GITHUB_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 422):
            return None
        raise NixsnakeError(
            f"GitHub API answered {exc.code} for {url}",
            Exit.UNAVAILABLE,
            "set GITHUB_TOKEN (60 requests/hour without one) or use nixpkgs_source = a local nixpkgs mirror",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise NixsnakeError(
            f"cannot reach GitHub API ({exc})",
            Exit.UNAVAILABLE,
            "without network access set nixpkgs_source to a local nixpkgs clone/mirror (or 'demo' to try nixsnake)",
        ) from None
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, cache)
    return data


def resolve_github(repo: str, branch: str, day: dt.date, spec_file: str, rev: str | None = None) -> NixpkgsPin:
    if rev is not None:
        data = _github_get(f"{GITHUB_API}/repos/{repo}/commits/{rev}")
        if not data:
            raise SpecError(spec_file, "nixpkgs.rev", f"commit {rev} is not in github:{repo}", "check the hash")
        return NixpkgsPin(branch, rev, data["commit"]["committer"]["date"], True)
    q = urllib.parse.urlencode({"sha": branch, "until": cutoff(day), "per_page": 1})
    data = _github_get(f"{GITHUB_API}/repos/{repo}/commits?{q}")
    if data is None:
        raise SpecError(
            spec_file,
            "nixpkgs.branch",
            f"branch {branch!r} does not exist in github:{repo}",
            "use an existing branch such as nixos-unstable",
        )
    if not data:
        raise SpecError(
            spec_file, "date", f"{day.isoformat()} is before the first commit on {branch!r}", "use a later date"
        )
    return NixpkgsPin(branch, data[0]["sha"], data[0]["commit"]["committer"]["date"], False)


def resolve_nixpkgs(spec: EnvFile, source: NixpkgsSource, spec_file: str) -> NixpkgsPin:
    n = spec.nixpkgs
    if source.kind == "github":
        return resolve_github(source.location, n.branch, spec.date, spec_file, n.rev)
    return resolve_git(source.location, n.branch, spec.date, spec_file, n.rev)


def missing_rev(rev: str, source: NixpkgsSource) -> str | None:
    """Why the locked nixpkgs commit cannot be fetched from ``source`` (None if it can):
    a lock made against another source, or a mirror that lost the commit, fails here
    with a message instead of inside nix."""
    if source.kind == "github":
        if _github_get(f"{GITHUB_API}/repos/{source.location}/commits/{rev}") is None:
            return f"commit {rev} is not in github:{source.location}"
        return None
    r = proc.run(["git", "-C", source.location, "cat-file", "-e", f"{rev}^{{commit}}"], check=False)
    if r.returncode != 0:
        what = "the demo package set" if source.demo else source.location
        return f"commit {rev} is not in {what}"
    return None
