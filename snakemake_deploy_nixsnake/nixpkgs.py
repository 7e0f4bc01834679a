"""Where nixpkgs comes from, and which commit a date means.

The ``nixpkgs_source`` setting names a source: GitHub (``github:OWNER/REPO``, through
GitHub's API and tarballs), a git clone or mirror (a path, or a URL that nixsnake
mirrors locally), or the embedded demo package set. A date becomes the last commit on
the branch before that day (00:00 UTC), following first parents: the branch tip as it
was, never a commit from inside a merged pull request.
"""

from __future__ import annotations

import datetime as dt
import functools
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
from .spec import EnvFile, cutoff, day_start

GITHUB_API = "https://api.github.com"
#: ``github:OWNER/REPO`` with an optional ``@BASE`` (GitHub Enterprise Server, or a
#: server answering like GitHub in tests): the API is then ``BASE/api/v3``, tarballs
#: ``BASE/OWNER/REPO/archive/REV.tar.gz`` and files ``BASE/OWNER/REPO/raw/REV/PATH``.
_GITHUB_SOURCE = re.compile(
    r"github(?::(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+))?(?:@(?P<base>https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*))?"
)


@dataclass(frozen=True)
class NixpkgsPin:
    branch: str
    rev: str
    commit_time: str  # ISO 8601, UTC
    pinned: bool  # rev given in the env file rather than found by date
    #: GitHub sources: the NAR hash (nix base32) of the unpacked tarball of ``rev``, which
    #: fetchTarball checks (git sources fetch by commit hash and need none)
    sha256: str | None = None


@dataclass(frozen=True)
class NixpkgsSource:
    kind: str  # "git" | "github"
    location: str  # a local path for git; "owner/repo" for github
    #: The URL nix fetches from, given a rev (fetchGit url or tarball url template).
    fetch_url: str = ""
    #: The embedded demo package set: its builds need the host manifest (demo.nix_env).
    demo: bool = False
    #: A mirror only: the git URL it mirrors (fetched again when a locked commit is missing).
    remote: str = ""
    #: GitHub only: the API root, and the URL of one file at a rev ({rev}, {path}).
    api: str = ""
    raw_url: str = ""


def parse_source(text: str, *, update: bool = False) -> NixpkgsSource:
    """Turn the ``nixpkgs_source`` setting into a source we can query and nix can fetch.

    For a git URL, nixsnake's local mirror of it is cloned when missing; ``update``
    (locking) also fetches the remote's new commits. Builds do not: they need only the
    locked commit, which the mirror has since the lock (when it does not, because the
    lock was made on another machine, :func:`missing_rev` fetches once)."""
    from . import demo

    if text == demo.SOURCE_NAME:
        path = demo.default_repo()
        return NixpkgsSource("git", str(path), "file://" + str(path), demo=True)
    if text == "github" or text.startswith(("github:", "github@")):
        m = _GITHUB_SOURCE.fullmatch(text)
        if m is None:
            raise SpecError(
                "settings",
                "nixpkgs_source",
                f"{text!r} is not github:OWNER/REPO[@https://HOST]",
                "write e.g. github:NixOS/nixpkgs (or github:NixOS/nixpkgs@https://github.example.org for GitHub Enterprise)",
            )
        repo = m["repo"] or "NixOS/nixpkgs"
        base = m["base"]
        if base is None:
            return NixpkgsSource(
                "github",
                repo,
                f"https://github.com/{repo}/archive/{{rev}}.tar.gz",
                api=GITHUB_API,
                raw_url=f"https://raw.githubusercontent.com/{repo}/{{rev}}/{{path}}",
            )
        return NixpkgsSource(
            "github",
            repo,
            f"{base}/{repo}/archive/{{rev}}.tar.gz",
            api=f"{base}/api/v3",
            raw_url=f"{base}/{repo}/raw/{{rev}}/{{path}}",
        )
    if text.startswith("file://"):
        text = urllib.parse.unquote(text[len("file://") :])
    if re.match(r"[a-z+]+://", text) or re.match(r"[\w.-]+@[\w.-]+:", text):
        # nix fetches from the local mirror nixsnake keeps: the remote URL would make nix
        # clone all of nixpkgs again into its own cache
        mirror = _mirror(text, update)
        return NixpkgsSource("git", mirror, "file://" + mirror, remote=text)
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise SpecError(
            "settings",
            "nixpkgs_source",
            f"{text!r} does not exist",
            "give a path to a nixpkgs git clone or mirror, a git URL, 'github' or 'demo'",
        )
    return NixpkgsSource("git", str(path), "file://" + str(path))


def _mirror(url: str, update: bool) -> str:
    """A bare mirror of a remote nixpkgs in the cache: made when missing, refreshed on
    each lock (``update``) and when a locked commit is not in it yet (:func:`missing_rev`)."""
    dest = cache_dir() / "git-mirrors" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (dest / "HEAD").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        proc.run(
            ["git", "clone", "--quiet", "--mirror", "--", url, str(dest)],
            what=f"mirroring {url}",
            code=Exit.UNAVAILABLE,
        )
    elif update:
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


def _github_cache(url: str) -> Path:
    return cache_dir() / "github" / (hashlib.sha256(url.encode()).hexdigest() + ".json")


def _github_get(url: str, *, raw: bool = False, cache: bool = True) -> Any:
    """GET a GitHub API URL (JSON), or with ``raw`` a file (text; None when it does not
    exist), cached on disk: what is asked by commit hash does not change. ``cache=False``
    for what does (a branch's head)."""
    cached = _github_cache(url)
    if cache and cached.exists():
        return json.loads(cached.read_text())
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "nixsnake"}
    token = os.environ.get("NIXSNAKE_GITHUB_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            data = resp.read().decode("utf-8", errors="replace") if raw else json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 422):
            if raw and exc.code == 404 and cache:  # a file missing at a commit stays missing
                _github_store(cached, None)
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
    if cache:
        _github_store(cached, data)
    return data


def _github_store(cache: Path, data: Any) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, cache)


#: Commits per request when walking a branch on GitHub (the API's maximum).
GITHUB_PAGE = 100


def _commit_date(commit: dict[str, Any]) -> dt.datetime:
    """A GitHub commit's committer date (``2024-01-15T12:00:00Z`` or with an offset)."""
    return dt.datetime.fromisoformat(commit["commit"]["committer"]["date"])


def _page_url(source: NixpkgsSource, start: str) -> str:
    q = urllib.parse.urlencode({"sha": start, "per_page": GITHUB_PAGE})
    return f"{source.api}/repos/{source.location}/commits?{q}"


def _commit_url(source: NixpkgsSource, rev: str) -> str:
    """One commit; resolve_github stores the commit it found under this URL, so lock
    --check and builds asking about that rev are answered from the cache."""
    return f"{source.api}/repos/{source.location}/commits/{rev}"


def _first_parent_before(source: NixpkgsSource, branch: str, cut: dt.datetime) -> dict[str, Any] | bool | None:
    """The first commit on the first-parent chain of ``branch`` whose committer date is at
    or before ``cut`` (``git rev-list -1 --first-parent --before=cut``); None when the
    chain ends first; False when the branch does not exist.

    GitHub's commits API has no first-parent option (``until=`` returns the newest commit
    reachable from the branch, which can be one from inside a merged pull request that
    was never the branch's tip). So: list the branch from its head, 100 commits per
    request (git log order: the first parents are among them, between the merged
    commits), follow ``parents[0]`` through what was listed, and list again from where
    the chain leaves it. A list from a given commit never changes, so each is cached
    under its first commit; a later walk (the branch has moved on) reaches an earlier
    head and continues on cached lists: only new history costs requests.
    """
    head_page = _github_get(_page_url(source, branch), cache=False)
    if head_page is None:
        return False
    if not head_page:
        return None
    _github_store(_github_cache(_page_url(source, head_page[0]["sha"])), head_page)
    known = {c["sha"]: c for c in head_page}
    cur = head_page[0]
    while True:
        if _commit_date(cur) <= cut:
            return cur
        parents = cur.get("parents") or []
        if not parents:
            return None
        sha = parents[0]["sha"]
        page_cache = _github_cache(_page_url(source, sha))
        if sha not in known or page_cache.exists():  # (a cached list from here continues the walk)
            page = _github_get(_page_url(source, sha))
            if not page or page[0]["sha"] != sha:
                raise NixsnakeError(
                    f"GitHub listed no commits from {sha} (github:{source.location})",
                    Exit.UNAVAILABLE,
                    "try again later, or use nixpkgs_source = a local nixpkgs mirror",
                )
            known.update((c["sha"], c) for c in page)
        cur = known[sha]


def resolve_github(
    source: NixpkgsSource, branch: str, day: dt.date, spec_file: str, rev: str | None = None
) -> NixpkgsPin:
    repo = source.location
    if rev is not None:
        data = _github_get(_commit_url(source, rev))
        if not data:
            raise SpecError(spec_file, "nixpkgs.rev", f"commit {rev} is not in github:{repo}", "check the hash")
        return NixpkgsPin(branch, rev, _iso_utc(int(_commit_date(data).timestamp())), True)
    found = _first_parent_before(source, branch, day_start(day))
    if found is False:
        raise SpecError(
            spec_file,
            "nixpkgs.branch",
            f"branch {branch!r} does not exist in github:{repo}",
            "use an existing branch such as nixos-unstable",
        )
    if not isinstance(found, dict):
        raise SpecError(
            spec_file, "date", f"{day.isoformat()} is before the first commit on {branch!r}", "use a later date"
        )
    _github_store(_github_cache(_commit_url(source, found["sha"])), found)
    return NixpkgsPin(branch, found["sha"], _iso_utc(int(_commit_date(found).timestamp())), False)


_DOWNLOAD_FAILED = ("unable to download", "couldn't resolve", "could not resolve", "connection refused", "timed out")


def tarball_sha256(source: NixpkgsSource, rev: str) -> str:
    """The NAR hash of the unpacked GitHub tarball of ``rev`` -- what ``fetchTarball {
    url; sha256; }`` checks -- as ``nix-prefetch-url --unpack`` gives it. The prefetch
    also puts the tree into the nix store under the very path the build's fetchTarball
    uses, so the build then needs no network. Cached per URL (the content of a commit
    does not change; the compressed bytes GitHub serves may, the NAR hash does not)."""
    url = source.fetch_url.format(rev=rev)
    cache = _github_cache("nar-sha256 " + url)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if isinstance(cached, str):
            return cached
    proc.require("nix-prefetch-url")
    r = proc.run(["nix-prefetch-url", "--unpack", "--name", "source", url], check=False, timeout=3600)
    lines = r.stdout.split()
    if r.returncode != 0 or not lines or not re.fullmatch(r"[0-9a-z]{52}", lines[-1]):
        why = proc.tail(r.stderr or r.stdout, 3).replace("\n", " ")
        if any(m in why.lower() for m in _DOWNLOAD_FAILED):
            raise NixsnakeError(
                f"cannot download the nixpkgs tarball {url}: {why}",
                Exit.UNAVAILABLE,
                "check network access to GitHub, or use nixpkgs_source = a local nixpkgs mirror",
            )
        raise NixsnakeError(f"nix-prefetch-url --unpack {url} failed: {why}", Exit.SOFTWARE)
    _github_store(cache, lines[-1])
    return lines[-1]


def resolve_nixpkgs(spec: EnvFile, source: NixpkgsSource, spec_file: str) -> NixpkgsPin:
    n = spec.nixpkgs
    if source.kind == "github":
        return resolve_github(source, n.branch, spec.date, spec_file, n.rev)
    return resolve_git(source.location, n.branch, spec.date, spec_file, n.rev)


def missing_rev(rev: str, source: NixpkgsSource) -> str | None:
    """Why the locked nixpkgs commit cannot be fetched from ``source`` (None if it can):
    a lock made against another source, or a mirror that lost the commit, fails here
    with a message instead of inside nix."""
    if source.kind == "github":
        try:
            known = _github_get(_commit_url(source, rev))
        except NixsnakeError:  # GitHub unreachable: nix may have the tarball in its store already
            return None
        if known is None:
            return f"commit {rev} is not in github:{source.location}"
        return None

    def has() -> bool:
        return (
            proc.run(["git", "-C", source.location, "cat-file", "-e", f"{rev}^{{commit}}"], check=False).returncode == 0
        )

    if not has() and source.remote:  # a lock newer than nixsnake's mirror: fetch once
        _mirror(source.remote, True)
    if not has():
        what = "the demo package set" if source.demo else source.location
        return f"commit {rev} is not in {what}"
    return None


# --- the Nix version a nixpkgs rev needs ------------------------------------------------------

#: Where nixpkgs says which Nix it needs, newest shape first: ``lib/minfeatures.nix`` (since
#: 2025-08-22: a feature list; its version condition reads ``builtins.compareVersions
#: "2.18" builtins.nixVersion``) and ``lib/minver.nix`` (a bare version string: "2.3" in
#: 22.11-24.05, "2.3.17" in 24.11/25.05, "2.18" from 2025-08-12). nixpkgs' default.nix
#: aborts below it.
MIN_NIX_FILES = ("lib/minfeatures.nix", "lib/minver.nix")
_MINFEATURES_VERSION = re.compile(r'compareVersions\s+"([0-9][^"\s]*)"\s+builtins\.nixVersion')
_MINVER = re.compile(r'\A\s*"([0-9][^"\s]*)"\s*\Z')

#: How to get a newer nix, for the messages.
NEWER_NIX_HINT = (
    "install a newer nix: the official installer (curl -L https://nixos.org/nix/install | sh -s -- --daemon), "
    "or load a newer nix from your site's module system (e.g. `module load nix`); "
    "or use an env date (or [nixpkgs] rev) whose nixpkgs this nix can evaluate (docs/date-locking.md#nix-versions)"
)


@dataclass(frozen=True)
class MinNix:
    version: str  # e.g. "2.18"
    file: str  # the nixpkgs file that says so


def parse_min_nix(file: str, text: str) -> str | None:
    """The minimum Nix version in ``lib/minver.nix`` or ``lib/minfeatures.nix`` text (None
    when the file has another shape: then nix itself tells)."""
    if file.endswith("minfeatures.nix"):
        found = _MINFEATURES_VERSION.findall(text)
        return max(found, key=functools.cmp_to_key(compare_versions)) if found else None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    m = _MINVER.match("\n".join(lines))
    return m[1] if m else None


def source_file(source: NixpkgsSource, rev: str, path: str) -> str | None:
    """The text of ``path`` in nixpkgs at ``rev`` (None when it has no such file): ``git
    show`` on a clone or mirror, the raw file from GitHub (cached)."""
    if source.kind == "github":
        text = _github_get(source.raw_url.format(rev=rev, path=path), raw=True)
        return text if isinstance(text, str) else None
    r = proc.run(["git", "-C", source.location, "show", f"{rev}:{path}"], check=False)
    return r.stdout if r.returncode == 0 else None


def required_nix(source: NixpkgsSource, rev: str) -> MinNix | None:
    """The Nix version nixpkgs at ``rev`` needs, from its own files (None: it says nothing
    nixsnake can read, as nixpkgs before 2017 or the demo set's first commits)."""
    for path in MIN_NIX_FILES:
        text = source_file(source, rev, path)
        if text is not None:
            version = parse_min_nix(path, text)
            if version is not None:
                return MinNix(version, path)
    return None


@functools.cache
def local_nix_version() -> str | None:
    """``builtins.nixVersion`` of the nix here (what nixpkgs compares; Lix says 2.18.3-lix),
    or None without nix."""
    if proc.which("nix-instantiate") is None:
        return None
    r = proc.run(["nix-instantiate", "--eval", "--expr", "builtins.nixVersion"], check=False, timeout=60)
    try:
        value = json.loads(r.stdout.strip()) if r.returncode == 0 else None
    except ValueError:
        value = None
    return value if isinstance(value, str) else None


def _version_component(v: str, i: int) -> tuple[str, int]:
    """The next component of ``v`` from ``i`` (nix's nextComponent): separators '.'
    and '-' are skipped; a run of digits, or a run of other characters."""
    while i < len(v) and v[i] in ".-":
        i += 1
    j = i
    if j < len(v) and v[j].isdigit():
        while j < len(v) and v[j].isdigit():
            j += 1
    else:
        while j < len(v) and not v[j].isdigit() and v[j] not in ".-":
            j += 1
    return v[i:j], j


def _component_lt(a: str, b: str) -> bool:
    if a.isdigit() and b.isdigit():
        return int(a) < int(b)
    if a == "" and b.isdigit():
        return True
    if a == "pre" and b != "pre":
        return True
    if b == "pre":
        return False
    if b.isdigit():
        return True
    if a.isdigit():
        return False
    return a < b


def compare_versions(a: str, b: str) -> int:
    """``builtins.compareVersions``: -1, 0 or 1 (nix's own rules: "2.3.17" < "2.18",
    "2.18pre" < "2.18", "2.18.3-lix" > "2.18")."""
    i = j = 0
    while i < len(a) or j < len(b):
        ca, i = _version_component(a, i)
        cb, j = _version_component(b, j)
        if _component_lt(ca, cb):
            return -1
        if _component_lt(cb, ca):
            return 1
    return 0


def nix_too_old(source: NixpkgsSource, pin: NixpkgsPin, where: str) -> NixsnakeError | None:
    """Exit 69 naming both versions when the nix here cannot evaluate nixpkgs at the pin
    (None when it can, or when there is no nix here to ask)."""
    local = local_nix_version()
    if local is None:
        return None
    need = required_nix(source, pin.rev)
    if need is None or compare_versions(need.version, local) <= 0:
        return None
    return NixsnakeError(
        f"{where}: nixpkgs {pin.rev[:12]} ({pin.commit_time[:10]}) needs Nix >= {need.version} "
        f"(its {need.file}); the nix here is {local}",
        Exit.UNAVAILABLE,
        NEWER_NIX_HINT,
    )
