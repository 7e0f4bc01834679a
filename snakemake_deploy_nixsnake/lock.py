"""Resolve an env file's ecosystem date into exact pins, and read/write the lock file.

The env file says *what* (packages) and *when* (date); the lock says *exactly which*:
the nixpkgs commit that was current on that day and every Python wheel by URL and
sha256. Builds read only the lock, so a rebuild years later gets the same bits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from . import conda as conda_layer
from . import proc
from .config import Config, cache_dir
from .errors import Exit, NixsnakeError, SpecError
from .spec import EnvFile, lock_path_for, sha256_json

LOCK_VERSION = 1
PY_PLATFORM = "x86_64-manylinux_2_28"
GITHUB_API = "https://api.github.com"


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NixpkgsPin:
    branch: str
    rev: str
    commit_time: str  # ISO 8601, UTC
    pinned: bool  # rev given in the env file rather than found by date


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Lock:
    spec_sha256: str
    date: str
    nixpkgs: NixpkgsPin
    python_version: str | None = None
    python_platform: str | None = None
    wheels: tuple[Wheel, ...] = ()
    conda: conda_layer.CondaLock | None = None  # the [conda] section (conda.py)

    def resolved(self) -> dict[str, Any]:
        """What the built software depends on (for the image hash)."""
        d = asdict(self)
        if d["conda"] is None:  # envs without [conda] keep the ids they had before it existed
            del d["conda"]
        return d

    def software(self) -> list[tuple[str, str]]:
        return [(w.name, w.version) for w in self.wheels]


# --- nixpkgs sources --------------------------------------------------------------------


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
        if not re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", repo):
            raise SpecError("settings", "nixpkgs_source", f"{text!r} is not github:OWNER/REPO", "write e.g. github:NixOS/nixpkgs")
        return NixpkgsSource("github", repo, f"https://github.com/{repo}/archive/{{rev}}.tar.gz")
    if text.startswith("file://"):
        text = urllib.parse.unquote(text[len("file://") :])
    if re.match(r"^[a-z+]+://", text) or re.match(r"^[\w.-]+@[\w.-]+:", text):
        return NixpkgsSource("git", _mirror(text), text)
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise SpecError(
            "settings", "nixpkgs_source", f"{text!r} does not exist",
            "give a path to a nixpkgs git clone or mirror, a git URL, 'github' or 'demo'",
        )
    return NixpkgsSource("git", str(path), "file://" + str(path))


def _mirror(url: str) -> str:
    """A bare mirror of a remote nixpkgs in the cache, refreshed on each lock."""
    dest = cache_dir() / "git-mirrors" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (dest / "HEAD").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        proc.run(["git", "clone", "--quiet", "--mirror", "--", url, str(dest)], what=f"mirroring {url}", code=Exit.UNAVAILABLE)
    else:
        proc.run(["git", "-C", str(dest), "fetch", "--quiet", "--prune", "origin"], what=f"updating mirror of {url}", code=Exit.UNAVAILABLE)
    return str(dest)


def _cutoff(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _iso_utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_git(repo: str, branch: str, day: dt.date, spec_file: str, rev: str | None = None) -> NixpkgsPin:
    """Last first-parent commit on ``branch`` before ``day`` (00:00 UTC) in a local repo."""
    git = ["git", "-C", repo]
    if rev is not None:
        r = proc.run([*git, "show", "-s", "--format=%ct", rev + "^{commit}", "--"], check=False)
        if r.returncode != 0:
            raise SpecError(spec_file, "nixpkgs.rev", f"commit {rev} is not in {repo}", "check the hash, or update the nixpkgs mirror")
        return NixpkgsPin(branch, rev, _iso_utc(int(r.stdout.split()[0])), True)
    ref = None
    for candidate in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        if proc.run([*git, "rev-parse", "--verify", "--quiet", candidate], check=False).returncode == 0:
            ref = candidate
            break
    if ref is None:
        raise SpecError(spec_file, "nixpkgs.branch", f"branch {branch!r} does not exist in {repo}", "use an existing branch such as nixos-unstable")
    out = proc.run([*git, "rev-list", "-1", "--first-parent", f"--before={_cutoff(day)}", ref, "--"], what="git rev-list").stdout.strip()
    if not out:
        roots = proc.run([*git, "rev-list", "--max-parents=0", ref, "--"], what="git rev-list").stdout.split()
        first = proc.run([*git, "show", "-s", "--format=%cI", roots[-1], "--"], what="git show").stdout.strip() if roots else "?"
        raise SpecError(
            spec_file, "date", f"{day.isoformat()} is before the first commit on {branch!r} ({first})",
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
            f"GitHub API answered {exc.code} for {url}", Exit.UNAVAILABLE,
            "set GITHUB_TOKEN (60 requests/hour without one) or use nixpkgs_source = a local nixpkgs mirror",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise NixsnakeError(
            f"cannot reach GitHub API ({exc})", Exit.UNAVAILABLE,
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
    q = urllib.parse.urlencode({"sha": branch, "until": _cutoff(day), "per_page": 1})
    data = _github_get(f"{GITHUB_API}/repos/{repo}/commits?{q}")
    if data is None:
        raise SpecError(spec_file, "nixpkgs.branch", f"branch {branch!r} does not exist in github:{repo}", "use an existing branch such as nixos-unstable")
    if not data:
        raise SpecError(spec_file, "date", f"{day.isoformat()} is before the first commit on {branch!r}", "use a later date")
    return NixpkgsPin(branch, data[0]["sha"], data[0]["commit"]["committer"]["date"], False)


def resolve_nixpkgs(spec: EnvFile, source: NixpkgsSource, spec_file: str) -> NixpkgsPin:
    n = spec.nixpkgs
    if source.kind == "github":
        return resolve_github(source.location, n.branch, spec.date, spec_file, n.rev)
    return resolve_git(source.location, n.branch, spec.date, spec_file, n.rev)


# --- python -----------------------------------------------------------------------------


def _uv() -> str:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = proc.which("uv")
        if found:
            return found
        raise proc.ToolMissingError("uv", proc.INSTALL_HINTS["uv"]) from None


_NETWORK_MARKERS = ("dns error", "failed to fetch", "connection refused", "network is unreachable",
                    "error sending request", "timed out", "failed to connect", "could not connect")


def resolve_python(spec: EnvFile, spec_file: str) -> tuple[Wheel, ...]:
    """Date-locked resolution through uv, wheels only, for the image's platform."""
    py = spec.python
    if py is None or not py.packages:
        return ()
    with tempfile.TemporaryDirectory(prefix="nixsnake-uv-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("".join(p + "\n" for p in py.packages))
        out = Path(tmp) / "pylock.toml"
        argv = [
            _uv(), "pip", "compile", str(req), "-o", str(out), "--format", "pylock.toml",
            "--python-version", py.version, "--python-platform", PY_PLATFORM,
            "--exclude-newer", _cutoff(spec.date), "--only-binary", ":all:",
            "--no-header", "--quiet", "--no-config",
        ]
        for name, day in sorted(py.package_dates.items()):
            argv += ["--exclude-newer-package", f"{name}={_cutoff(day)}"]
        r = proc.run(argv, check=False, env={**os.environ, "UV_NO_PROGRESS": "1"})
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip()
            low = msg.lower()
            if any(m in low for m in _NETWORK_MARKERS):
                raise NixsnakeError(
                    "cannot reach the Python package index: " + proc.tail(msg, 3).replace("\n", " "),
                    Exit.UNAVAILABLE,
                    "check network access or the index settings (UV_INDEX_URL); locking needs the index",
                )
            first = " ".join(line.strip() for line in msg.splitlines() if line.strip())[:400]
            raise SpecError(
                spec_file, "python.packages", f"no date-locked resolution: {first}",
                "relax the requirements, pick a later date, or give a package its own date in python.package_dates",
            )
        data = tomllib.loads(out.read_text())
    wheels = []
    for pkg in data.get("packages", []):
        ws = pkg.get("wheels") or []
        if not ws:
            raise SpecError(spec_file, "python.packages", f"{pkg['name']} has no wheel", "nixsnake installs wheels only; pick a version with a wheel")
        w = ws[0]
        wheels.append(Wheel(pkg["name"], pkg["version"], w["url"], w["hashes"]["sha256"]))
    return tuple(sorted(wheels, key=lambda w: w.name))


# --- lock file --------------------------------------------------------------------------


def make_lock(spec: EnvFile, spec_path: Path, cfg: Config, source: NixpkgsSource | None = None) -> Lock:
    src = source or parse_source(cfg.nixpkgs_source)
    pin = resolve_nixpkgs(spec, src, str(spec_path))
    wheels = resolve_python(spec, str(spec_path))
    conda = conda_layer.resolve(spec, str(spec_path))
    return Lock(
        spec_sha256=spec.spec_hash(),
        date=spec.date.isoformat(),
        nixpkgs=pin,
        python_version=spec.python.version if spec.python else None,
        python_platform=PY_PLATFORM if wheels else None,
        wheels=wheels,
        conda=conda,
    )


def render_lock(lock: Lock, spec_name: str) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"Generated by `nixsnake lock {spec_name}`. Do not edit: change {spec_name} and re-run the lock."))
    doc.add("lock_version", LOCK_VERSION)
    doc.add("spec_sha256", lock.spec_sha256)
    doc.add("date", lock.date)
    nix = tomlkit.table()
    nix.add("branch", lock.nixpkgs.branch)
    nix.add("rev", lock.nixpkgs.rev)
    nix.add("commit_time", lock.nixpkgs.commit_time)
    nix.add("pinned", lock.nixpkgs.pinned)
    doc.add("nixpkgs", nix)
    if lock.python_version is not None:
        py = tomlkit.table()
        py.add("version", lock.python_version)
        if lock.python_platform:
            py.add("platform", lock.python_platform)
        aot = tomlkit.aot()
        for w in lock.wheels:
            t = tomlkit.table()
            t.add("name", w.name)
            t.add("version", w.version)
            t.add("url", w.url)
            t.add("sha256", w.sha256)
            aot.append(t)
        if lock.wheels:
            py.add("wheels", aot)
        doc.add("python", py)
    if lock.conda is not None:
        doc.add("conda", conda_layer.render(lock.conda))
    return tomlkit.dumps(doc)


def parse_lock(text: str, path: str) -> Lock:
    try:
        d = tomllib.loads(text)
        if d.get("lock_version") != LOCK_VERSION:
            raise SpecError(path, "lock_version", f"unsupported lock version {d.get('lock_version')!r}", "re-run `nixsnake lock`")
        n = d["nixpkgs"]
        if not re.match(r"^[0-9a-f]{40}$", n["rev"]):
            raise SpecError(path, "nixpkgs.rev", "is not a commit hash", "re-run `nixsnake lock`")
        py = d.get("python", {})
        wheels = []
        for i, w in enumerate(py.get("wheels", [])):
            if not re.match(r"^https://[^\s\"'\\]+$", w["url"]) or not re.match(r"^[0-9a-f]{64}$", w["sha256"]):
                raise SpecError(path, f"python.wheels[{i}]", "bad url or sha256", "re-run `nixsnake lock`")
            wheels.append(Wheel(str(w["name"]), str(w["version"]), w["url"], w["sha256"]))
        return Lock(
            spec_sha256=str(d["spec_sha256"]),
            date=str(d["date"]),
            nixpkgs=NixpkgsPin(str(n["branch"]), n["rev"], str(n["commit_time"]), bool(n["pinned"])),
            python_version=py.get("version"),
            python_platform=py.get("platform"),
            wheels=tuple(wheels),
            conda=conda_layer.parse(d["conda"], path) if "conda" in d else None,
        )
    except SpecError:
        raise
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SpecError(path, "", f"not a valid lock file ({exc.__class__.__name__}: {exc})", "delete it and re-run `nixsnake lock`") from None


def read_lock(spec_path: Path) -> Lock:
    path = lock_path_for(spec_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from .errors import MissingFileError

        raise MissingFileError(str(path), f"run `nixsnake lock {spec_path}` on the head node") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), "", "not UTF-8", f"delete it and re-run `nixsnake lock {spec_path}`") from None
    return parse_lock(text, str(path))


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace ``path`` unless it already has exactly this content."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def stale_reason(spec: EnvFile, spec_path: Path, lock: Lock | None = None) -> str | None:
    """Why the lock of ``spec_path`` no longer matches the env file (None if current).

    ``lock`` is the already-read lock, if the caller has it; else it is read from beside
    the env file."""
    if lock is None:
        path = lock_path_for(spec_path)
        if not path.exists():
            return f"{path} is missing"
        lock = read_lock(spec_path)
    if lock.spec_sha256 != spec.spec_hash():
        return f"{spec_path} changed since {lock_path_for(spec_path)} was written"
    return None


def lock_file(spec_path: Path, cfg: Config, source: NixpkgsSource | None = None) -> tuple[Path, bool]:
    from .spec import load_spec

    spec = load_spec(spec_path)
    lock = make_lock(spec, spec_path, cfg, source)
    path = lock_path_for(spec_path)
    changed = write_if_changed(path, render_lock(lock, spec_path.name))
    return path, changed
