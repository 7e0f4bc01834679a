"""The embedded demo package set: a small, real nix package set that stands in for nixpkgs.

No nixpkgs can be fetched on machines without internet, so nixsnake ships a tiny package
set (``nix/demo-nixpkgs/``) that offers the part of nixpkgs' interface nixsnake uses
(``import <repo> { config; system; overlays; }`` with ``bash``, ``coreutils``, ``glibc``,
``zlib``, ``stdenv.cc.cc.lib``, ``cacert``, ``python3xx``, ``rWrapper``/``rPackages``, a
few trivial builders, ...). Its packages are *host* files (busybox-static, the host's
glibc, bash and Python interpreters) copied into the nix store and re-linked with
``patchelf`` onto a store copy of glibc, so closures are real store paths and run with no
host ``/usr`` or ``/lib`` visible. R cannot be built here: ``R``/``Rscript`` are clearly
labelled stand-in scripts.

This module

* discovers where the host files are (``discover_host``; nothing host-specific is written
  in the .nix files, they read the ``host.json`` written here), and
* materializes the package set as a git repository with dated commits on the branches
  ``nixos-unstable`` and ``nixos-24.05`` (``materialize_demo_nixpkgs``), so date locking
  (``git rev-list --before=DATE branch``) and ``builtins.fetchGit`` work on it exactly as
  on a nixpkgs clone. The same content gives the same revisions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

from . import proc
from .errors import Exit, NixsnakeError

#: The ``nixpkgs_source`` value meaning "the embedded demo package set".
DEMO_SOURCE = "demo"
#: Branches of the materialized repository (the first one is checked out).
DEMO_BRANCHES = ("nixos-unstable", "nixos-24.05")
#: Where the .nix files of the package set live inside the installed package.
DEMO_NIX_DIR = Path(__file__).resolve().parent / "nix" / "demo-nixpkgs"
#: Python minor versions offered as ``python3XX`` when the host has them.
SUPPORTED_PYTHON_MINORS = (10, 11, 12, 13)

AUTHOR_NAME = "nixsnake demo"
AUTHOR_EMAIL = "demo@nixsnake.invalid"


def _utc(y: int, m: int, d: int) -> _dt.datetime:
    return _dt.datetime(y, m, d, 12, 0, tzinfo=_dt.UTC)


# The commit plan: (branch, date, demoRelease). Both branches share the first two commits;
# nixos-24.05 forks after 2024-01-15, like a release branch.
_BASE = [
    (_utc(2023, 6, 1), "23.05-demo"),
    (_utc(2024, 1, 15), "24.01-demo"),
]
_PLAN: dict[str, list[tuple[_dt.datetime, str]]] = {
    "nixos-unstable": [*_BASE, (_utc(2024, 6, 1), "24.06-demo"), (_utc(2025, 3, 1), "25.03-demo")],
    "nixos-24.05": [*_BASE, (_utc(2024, 6, 1), "24.05-demo"), (_utc(2025, 3, 1), "24.05.1-demo")],
}

#: Files of the package set that are generated, never copied from DEMO_NIX_DIR.
_GENERATED = ("host.json", "version.json")
#: Written into ``.git/`` (outside the tracked tree) once a repository is complete.
_MARKER = "nixsnake-demo.json"

# Sonames that belong to glibc itself (copied into the demo ``glibc`` package).
GLIBC_SONAMES = (
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libutil.so.1", "libresolv.so.2", "libanl.so.1", "libnss_files.so.2", "libnss_dns.so.2",
    "libnss_compat.so.2", "libnss_hesiod.so.2", "libBrokenLocale.so.1", "libthread_db.so.1",
    "libc_malloc_debug.so.0", "libnsl.so.1",
)
# gcc's runtime libraries (nixpkgs: ``stdenv.cc.cc.lib``); the first two are required.
GCC_SONAMES = ("libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1", "libatomic.so.1", "libquadmath.so.0")
ZLIB_SONAME = "libz.so.1"
# Parts of the stdlib the demo pythons leave out (size; nixpkgs splits some of them off too).
_PYTHON_SKIP_EXTENSIONS = ("_tkinter",)


def demo_commit_dates() -> list[_dt.datetime]:
    """The (UTC) dates of the commits of the demo repository, oldest first."""
    return sorted({d for commits in _PLAN.values() for d, _ in commits})


# --------------------------------------------------------------------------- discovery


def _fail(msg: str, hint: str | None = None, code: Exit = Exit.UNAVAILABLE) -> NixsnakeError:
    return NixsnakeError(f"demo package set: {msg}", code, hint)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checked_path(p: Path) -> str:
    s = os.fspath(p)
    if any(c in s for c in "\n\r\t ") or not s.startswith("/"):
        raise _fail(f"host path {s!r} is not usable (absolute paths without whitespace only)", code=Exit.SOFTWARE)
    return s


def _file_entry(name: str, path: Path) -> dict[str, str]:
    real = path.resolve()
    if not real.is_file():
        raise _fail(f"{path} (for {name}) is not a file")
    return {"name": name, "path": _checked_path(real), "sha256": _sha256(real)}


def _elf_has_interp(path: Path) -> bool:
    """True if the ELF file asks for a program interpreter (is dynamically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            raise _fail(f"{path} is not a 64-bit ELF file")
        endian = "<" if head[5] == 1 else ">"
        phoff = struct.unpack_from(endian + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(struct.unpack_from(endian + "I", table, i * phentsize)[0] == 3 for i in range(phnum))


# Strings in the host's loader that make it look outside the nix store: the ld.so.cache
# file and the built-in system library directories. nixpkgs' glibc uses neither (its
# cache path and its only default directory are inside its store path).
_LOADER_STRINGS = re.compile(
    rb"(?<![A-Za-z0-9_./-])(/etc/ld\.so\.cache|(?:/usr)?/lib(?:64|32|x32)?/(?:[A-Za-z0-9_]+-linux-gnu[A-Za-z0-9_]*/)?)(?=\0)"
)


def _loader_patches(loader: Path) -> list[dict]:
    """Byte offsets of those strings, each with a same-length replacement naming no directory."""
    data = loader.resolve().read_bytes()
    patches = []
    for m in _LOADER_STRINGS.finditer(data):
        old = m.group(1).decode()
        # same length, names nothing that exists: "/lib/" -> "/~~~/", "/etc/ld.so.cache" -> "/~~~..."
        new = "/" + "~" * (len(old) - 2) + "/" if old.endswith("/") else "/" + "~" * (len(old) - 1)
        patches.append({"offset": m.start(1), "old": old, "new": new})
    if not any(p["old"] == "/etc/ld.so.cache" for p in patches):
        raise _fail(f"{loader}: did not find the ld.so.cache path in the loader (not glibc?)", code=Exit.SOFTWARE)
    return patches


def _ldd(files: Iterable[Path]) -> tuple[dict[str, Path], Path | None]:
    """Libraries (soname -> resolved path) that ``ldd`` lists for ``files``, and the loader."""
    argv = ["ldd", *[os.fspath(f) for f in files]]
    res = proc.run(argv, check=False, what="ldd (finding host libraries for the demo package set)")
    libs: dict[str, Path] = {}
    loader: Path | None = None
    for line in res.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(\S+) => (/\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            libs[m.group(1)] = Path(m.group(2))
            continue
        m = re.match(r"^(/\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            loader = Path(m.group(1))
            continue
        if "=> not found" in line:
            raise _fail(f"ldd: {line} (needed by one of {argv[1:]})", "install the missing library on the host")
    if res.returncode != 0 and not libs:
        raise _fail(f"ldd failed: {proc.tail(res.stderr or res.stdout)}")
    return libs, loader


def _ldconfig_map() -> dict[str, Path]:
    ldconfig = proc.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.access(p, os.X_OK)), None
    )
    if not ldconfig:
        return {}
    res = proc.run([ldconfig, "-p"], check=False, what="ldconfig -p")
    out: dict[str, Path] = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^\s*(\S+) \(([^)]*)\) => (/\S+)$", line)
        if m is None or (platform.machine() == "x86_64" and "x86-64" not in m.group(2)):
            continue  # another ABI (i386, x32)
        out.setdefault(m.group(1), Path(m.group(3)))
    return out


def _python_candidates() -> list[Path]:
    """Python prefixes: pyenv's versions (newest patch first), then this interpreter's."""
    found: list[tuple[tuple[int, int, int], Path]] = []
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if root.is_dir():
        for d in root.iterdir():
            m = re.fullmatch(r"3\.(\d+)\.(\d+)", d.name)
            if m and d.is_dir():
                found.append(((3, int(m.group(1)), int(m.group(2))), d))
    found.sort(reverse=True)
    return [d for _, d in found] + [Path(sys.base_prefix)]


def _python_info(prefix: Path) -> dict | None:
    """What the demo needs to know about one host Python, or None if it is unusable."""
    for minor in SUPPORTED_PYTHON_MINORS:
        exe = prefix / "bin" / f"python3.{minor}"
        stdlib = prefix / "lib" / f"python3.{minor}"
        if exe.is_file() and (stdlib / "os.py").is_file() and (stdlib / "lib-dynload").is_dir():
            break
    else:
        return None
    res = proc.run(
        [exe, "-I", "-c", "import platform, sys; print(platform.python_version()); print(sys.prefix)"],
        check=False,
        what=f"{exe} --version",
    )
    if res.returncode != 0:
        return None
    version = res.stdout.split()[0]
    exts = sorted(
        p for p in (stdlib / "lib-dynload").glob("*.so") if not p.name.startswith(_PYTHON_SKIP_EXTENSIONS)
    )
    libs, loader = _ldd([exe, *exts])
    libpython = next((libs[n] for n in libs if n.startswith("libpython")), None)
    if libpython is not None:
        more, _ = _ldd([libpython])
        libs.update(more)
    return {
        "version": version,
        "pythonVersion": f"3.{minor}",
        "prefix": _checked_path(prefix.resolve()),
        "executable": _file_entry(exe.name, exe),
        "libpython": _file_entry(next(n for n in libs if n.startswith("libpython")), libpython)
        if libpython
        else None,
        "libs": {n: p for n, p in libs.items() if not n.startswith("libpython")},
        "loader": loader,
    }


def discover_host() -> dict:
    """Find the host files the demo package set copies; the result is written as host.json."""
    machine = platform.machine()
    system = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}.get(machine)
    if system is None or sys.platform != "linux":
        raise _fail(f"unsupported host {sys.platform}/{machine}", "the demo package set needs x86_64 or aarch64 Linux")

    busybox = proc.which("busybox")
    if not busybox:
        raise _fail("busybox not found", "install busybox-static (Debian: apt-get install busybox-static)")
    busybox_path = Path(busybox).resolve()
    if _elf_has_interp(busybox_path):
        raise _fail(f"{busybox_path} is dynamically linked", "install busybox-static (Debian: apt-get install busybox-static)")
    banner = proc.run([busybox_path], check=False).stdout
    m = re.search(r"BusyBox v(\d[\w.]*)", banner)
    patchelf = proc.require("patchelf")
    bash = proc.which("bash")
    if not bash:
        raise _fail("bash not found", "install bash")

    pythons: dict[str, dict] = {}
    for prefix in _python_candidates():
        info = _python_info(prefix)
        if info and info["pythonVersion"] not in pythons:
            pythons[info["pythonVersion"]] = info
    bash_libs, bash_loader = _ldd([Path(bash).resolve()])
    loader = bash_loader or next((p["loader"] for p in pythons.values() if p["loader"]), None)
    if loader is None or "libc.so.6" not in bash_libs:
        raise _fail("could not find the host's glibc (ldd of bash shows no loader / libc.so.6)")
    glibc_dir = bash_libs["libc.so.6"].resolve().parent
    glibc = [_file_entry(loader.name, loader)] + [
        _file_entry(n, glibc_dir / n) for n in GLIBC_SONAMES if (glibc_dir / n).is_file()
    ]
    glibc_names = {e["name"] for e in glibc}

    ldconfig = _ldconfig_map()
    all_libs: dict[str, Path] = {}
    for p in pythons.values():
        all_libs.update(p["libs"])
    all_libs.update(bash_libs)

    def find(soname: str) -> Path | None:
        for cand in (all_libs.get(soname), ldconfig.get(soname), glibc_dir / soname):
            if cand is not None and cand.is_file():
                return cand
        return None

    zlib = find(ZLIB_SONAME)
    if zlib is None:
        raise _fail("libz.so.1 not found on the host", "install zlib (Debian: apt-get install zlib1g)")
    gcc = []
    for n in GCC_SONAMES:
        p = find(n)
        if p is None and n in GCC_SONAMES[:2]:
            raise _fail(f"{n} not found on the host", "install gcc's runtime (Debian: apt-get install libstdc++6)")
        if p is not None:
            gcc.append(_file_entry(n, p))
    special = glibc_names | {ZLIB_SONAME} | set(GCC_SONAMES)

    python_deps = {n: _file_entry(n, p) for py in pythons.values() for n, p in py["libs"].items() if n not in special}
    for py in pythons.values():
        py["needsGccLib"] = any(n in GCC_SONAMES for n in py["libs"])
        py["deps"] = sorted(n for n in py.pop("libs") if n not in special)
        py.pop("loader")

    cafile = None
    import ssl

    for cand in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile,
                 "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if cand and Path(cand).is_file():
            cafile = Path(cand)
            break
    if cafile is None:
        raise _fail("no CA certificate bundle found", "install ca-certificates")

    return {
        "comment": "Written by snakemake_deploy_nixsnake.demo: host files the demo package set copies.",
        "system": system,
        "patchelf": _checked_path(Path(patchelf).resolve()),
        "busybox": {**_file_entry("busybox", busybox_path), "version": m.group(1) if m else "unknown"},
        "bash": {
            **_file_entry("bash", Path(bash)),
            "deps": [_file_entry(n, p) for n, p in sorted(bash_libs.items()) if n not in glibc_names],
        },
        "glibc": {"loader": loader.name, "files": glibc, "loaderPatches": _loader_patches(loader)},
        "zlib": _file_entry(ZLIB_SONAME, zlib),
        "gccLib": gcc,
        "cacert": _file_entry("ca-bundle.crt", cafile),
        "pythonDeps": [python_deps[n] for n in sorted(python_deps)],
        "pythons": {k: pythons[k] for k in sorted(pythons, key=lambda v: int(v.split(".")[1]))},
    }


# --------------------------------------------------------------------------- materialize


def _shipped_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for p in sorted(DEMO_NIX_DIR.rglob("*")):
        rel = p.relative_to(DEMO_NIX_DIR).as_posix()
        if p.is_file() and "__pycache__" not in rel and rel not in _GENERATED:
            files[rel] = p.read_bytes()
    if "default.nix" not in files:
        raise _fail(f"{DEMO_NIX_DIR}/default.nix is missing (broken installation)", code=Exit.SOFTWARE)
    return files


def _git_env(date: _dt.datetime | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k not in ("EMAIL",)
    }
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


def _fingerprint(files: dict[str, bytes], host_json: str) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(host_json.encode())
    h.update(repr(sorted((b, [(d.isoformat(), r) for d, r in c]) for b, c in _PLAN.items())).encode())
    return h.hexdigest()


def _read_marker(dest: Path) -> dict | None:
    try:
        return json.loads((dest / ".git" / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _build_repo(tmp: Path, files: dict[str, bytes], host_json: str, fingerprint: str) -> dict[str, str]:
    proc.run(["git", "init", "-q", "-b", DEMO_BRANCHES[0], tmp], env=_git_env(), what="git init (demo package set)")
    for rel, data in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)
    (tmp / "host.json").write_text(host_json)
    (tmp / "host.json").chmod(0o644)

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


def materialize_demo_nixpkgs(dest: Path) -> Path:
    """Make (or reuse) the demo package set as a git repository at ``dest``; return ``dest``.

    Safe to call from several processes at once: the repository is built in a temporary
    directory next to ``dest`` under a lock and renamed into place, so ``dest`` is either
    absent or complete. A ``dest`` made from other content (another nixsnake version, or
    changed host files) is replaced; a ``dest`` that is not a demo repository is an error.
    """
    from flufl.lock import Lock

    dest = Path(dest).absolute()
    files = _shipped_files()
    host_json = json.dumps(discover_host(), indent=2, sort_keys=True) + "\n"
    fingerprint = _fingerprint(files, host_json)

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
            _build_repo(tmp, files, host_json, fingerprint)
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
        raise _fail(f"{dest} is not a materialized demo package set", code=Exit.SOFTWARE)
    return dict(marker["revs"])


def main(argv: list[str] | None = None) -> int:
    """``python -m snakemake_deploy_nixsnake.demo DEST``: materialize and print the revisions."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m snakemake_deploy_nixsnake.demo DEST", file=sys.stderr)
        return 64
    dest = materialize_demo_nixpkgs(Path(args[0]))
    print(json.dumps({"path": os.fspath(dest), "revs": demo_revs(dest)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
