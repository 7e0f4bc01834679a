"""Which host files the demo package set copies: found once per host, cached.

The demo package set (``nixpkgs/``) is made of files of the machine it runs on. Nix must
bring them into the store at *evaluation* time (``builtins.path``, content-addressed):
a builder that read ``/usr`` or ``/root`` would fail inside nix's sandbox, which is on
by default wherever the kernel allows it. So this module only answers "where are the
files?" and writes the answer as a manifest (``host.json``); the .nix files import what
it names, and no host path ever reaches a builder.

The manifest is not part of the demo repository's commits: the revisions depend only on
the files nixsnake ships, so a lock made on one machine names commits that exist on
every other. Nix finds the manifest through ``NIXSNAKE_DEMO_HOST`` (like nixpkgs reads
``NIXPKGS_CONFIG``): :func:`nix_env` gives the variable to every demo build.

Discovery runs ``ldd``, ``ldconfig`` and each host Python (1-10 s), so its result is
cached per host and reused until one of the files it names changes (a ``stat`` each).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import proc
from ..config import cache_dir
from ..elf import ld_cache
from ..errors import Exit
from .hostfiles import checked_path, fail, ldd
from .hostpkgs import discover_debian

#: The variable through which nix finds the manifest.
HOST_ENV_VAR = "NIXSNAKE_DEMO_HOST"
#: Bump when the manifest's shape changes (the .nix files read it).
MANIFEST_FORMAT = 3
#: dpkg's database of installed packages (its change means: discover again).
DPKG_STATUS = "/var/lib/dpkg/status"
#: Python minor versions offered as ``python3XX`` when the host has them.
SUPPORTED_PYTHON_MINORS = (10, 11, 12, 13)

# Sonames that belong to glibc itself (copied into the demo ``glibc`` package).
GLIBC_SONAMES = (
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libutil.so.1", "libresolv.so.2", "libanl.so.1", "libnss_files.so.2", "libnss_dns.so.2",
    "libnss_compat.so.2", "libnss_hesiod.so.2", "libBrokenLocale.so.1", "libthread_db.so.1",
    "libc_malloc_debug.so.0", "libnsl.so.1",
)  # fmt: skip
# gcc's runtime libraries (nixpkgs: ``stdenv.cc.cc.lib``); the first two are required.
GCC_SONAMES = ("libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1", "libatomic.so.1", "libquadmath.so.0")
ZLIB_SONAME = "libz.so.1"
# Parts of the stdlib the demo pythons leave out (size; nixpkgs splits some of them off too).
_PYTHON_SKIP_EXTENSIONS = ("_tkinter", "_test", "_xxtestfuzz")


def _file(name: str, path: Path) -> dict[str, str]:
    """A manifest entry: the name the file gets in its package, and its real host path."""
    real = path.resolve()
    if not real.is_file():
        raise fail(f"{path} (for {name}) is not a file")
    if "/" in name or not name or any(c in name for c in "\n\r\t "):
        raise fail(f"file name {name!r} is not usable", code=Exit.SOFTWARE)
    return {"name": name, "path": checked_path(real)}


def elf_interpreter(path: Path) -> bool:
    """True if the ELF file asks for a program interpreter (is dynamically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            raise fail(f"{path} is not a 64-bit ELF file")
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


def loader_patches(loader: Path) -> list[dict[str, Any]]:
    """Byte offsets of those strings, each with a same-length replacement naming no directory."""
    data = loader.resolve().read_bytes()
    patches = []
    for m in _LOADER_STRINGS.finditer(data):
        old = m.group(1).decode()
        # same length, names nothing that exists: "/lib/" -> "/~~~/", "/etc/ld.so.cache" -> "/~~~..."
        new = "/" + "~" * (len(old) - 2) + "/" if old.endswith("/") else "/" + "~" * (len(old) - 1)
        patches.append({"offset": m.start(1), "old": old, "new": new})
    if not any(p["old"] == "/etc/ld.so.cache" for p in patches):
        raise fail(f"{loader}: did not find the ld.so.cache path in the loader (not glibc?)", code=Exit.SOFTWARE)
    return patches


def _ldconfig_map() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name, flags, path in ld_cache():
        if platform.machine() == "x86_64" and "x86-64" not in flags:
            continue  # another ABI (i386, x32)
        out.setdefault(name, Path(path))
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


def _python_info(prefix: Path) -> dict[str, Any] | None:
    """What the demo needs to know about one host Python, or None if it is unusable."""
    for minor in SUPPORTED_PYTHON_MINORS:
        exe = prefix / "bin" / f"python3.{minor}"
        stdlib = prefix / "lib" / f"python3.{minor}"
        if exe.is_file() and (stdlib / "os.py").is_file() and (stdlib / "lib-dynload").is_dir():
            break
    else:
        return None
    res = proc.run(
        [exe, "-I", "-c", "import platform; print(platform.python_version())"], check=False, what=f"{exe} --version"
    )
    if res.returncode != 0:
        return None
    exts = sorted(p for p in (stdlib / "lib-dynload").glob("*.so") if not p.name.startswith(_PYTHON_SKIP_EXTENSIONS))
    libs, loader = ldd([exe, *exts])
    libpython_name = next((n for n in libs if n.startswith("libpython")), None)
    if libpython_name is not None:
        more, _ = ldd([libs[libpython_name]])
        libs.update(more)
    libpython3 = prefix / "lib" / "libpython3.so"
    return {
        "version": res.stdout.split()[0],
        "pythonVersion": f"3.{minor}",
        "stdlib": checked_path(stdlib.resolve()),
        "executable": _file(exe.name, exe),
        "libpython": _file(libpython_name, libs[libpython_name]) if libpython_name else None,
        "libpython3": _file("libpython3.so", libpython3) if libpython_name and libpython3.is_file() else None,
        "libs": {n: p for n, p in libs.items() if not n.startswith("libpython")},
        "loader": loader,
    }


def _cafile() -> Path:
    import ssl

    for cand in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile,
                 "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):  # fmt: skip
        if cand and Path(cand).is_file():
            return Path(cand)
    raise fail("no CA certificate bundle found", "install ca-certificates")


def _program(exe: Path, skip: set[str]) -> dict[str, Any]:
    """A dynamically linked host program and the libraries it needs (glibc's excluded)."""
    libs, _ = ldd([exe.resolve()])
    return {"exe": _file(exe.name, exe), "deps": [_file(n, p) for n, p in sorted(libs.items()) if n not in skip]}


def discover_host() -> dict[str, Any]:
    """Find the host files the demo package set copies: the manifest nix reads."""
    machine = platform.machine()
    system = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}.get(machine)
    if system is None or sys.platform != "linux":
        raise fail(f"unsupported host {sys.platform}/{machine}", "the demo package set needs x86_64 or aarch64 Linux")

    busybox = proc.which("busybox")
    if not busybox:
        raise fail("busybox not found", "install busybox-static (Debian: apt-get install busybox-static)")
    busybox_path = Path(busybox).resolve()
    if elf_interpreter(busybox_path):
        raise fail(
            f"{busybox_path} is dynamically linked", "install busybox-static (Debian: apt-get install busybox-static)"
        )
    banner = proc.run([busybox_path], check=False).stdout
    m = re.search(r"BusyBox v(\d[\w.]*)", banner)
    patchelf = Path(proc.require("patchelf"))
    bash = proc.which("bash")
    if not bash:
        raise fail("bash not found", "install bash")

    pythons: dict[str, dict[str, Any]] = {}
    for prefix in _python_candidates():
        info = _python_info(prefix)
        if info and info["pythonVersion"] not in pythons:
            pythons[info["pythonVersion"]] = info
    bash_libs, loader = ldd([Path(bash).resolve()])
    if loader is None or "libc.so.6" not in bash_libs:
        raise fail("could not find the host's glibc (ldd of bash shows no loader / libc.so.6)")
    glibc_dir = bash_libs["libc.so.6"].resolve().parent
    glibc = [_file(loader.name, loader)] + [_file(n, glibc_dir / n) for n in GLIBC_SONAMES if (glibc_dir / n).is_file()]
    glibc_names = {e["name"] for e in glibc}

    ldconfig = _ldconfig_map()
    all_libs: dict[str, Path] = {}
    for py_info in pythons.values():
        all_libs.update(py_info["libs"])
    all_libs.update(bash_libs)

    def find(soname: str) -> Path | None:
        for cand in (all_libs.get(soname), ldconfig.get(soname), glibc_dir / soname):
            if cand is not None and cand.is_file():
                return cand
        return None

    zlib = find(ZLIB_SONAME)
    if zlib is None:
        raise fail("libz.so.1 not found on the host", "install zlib (Debian: apt-get install zlib1g)")
    gcc = []
    for n in GCC_SONAMES:
        p = find(n)
        if p is None and n in GCC_SONAMES[:2]:
            raise fail(f"{n} not found on the host", "install gcc's runtime (Debian: apt-get install libstdc++6)")
        if p is not None:
            gcc.append(_file(n, p))
    special = glibc_names | {ZLIB_SONAME} | set(GCC_SONAMES)

    python_deps = {n: _file(n, p) for py in pythons.values() for n, p in py["libs"].items() if n not in special}
    for py in pythons.values():
        py["needsGccLib"] = any(n in GCC_SONAMES for n in py["libs"])
        py["deps"] = sorted(n for n in py.pop("libs") if n not in special)
        py.pop("loader")

    return {
        "comment": "Written by snakemake_deploy_nixsnake.demo: host files the demo package set imports.",
        "format": MANIFEST_FORMAT,
        "system": system,
        "busybox": {**_file("busybox", busybox_path), "version": m.group(1) if m else "unknown"},
        "patchelf": _program(patchelf, glibc_names),
        "bash": _program(Path(bash), glibc_names),
        "glibc": {"loader": loader.name, "files": glibc, "loaderPatches": loader_patches(loader)},
        "zlib": _file(ZLIB_SONAME, zlib),
        "gccLib": gcc,
        "cacert": _file("ca-bundle.crt", _cafile()),
        "pythonDeps": [python_deps[n] for n in sorted(python_deps)],
        "pythons": {k: pythons[k] for k in sorted(pythons, key=lambda v: int(v.split(".")[1]))},
        # samtools, bcftools, htslib, R, perl: the host's Debian packages (hostpkgs.py)
        **discover_debian(special),
    }


# --------------------------------------------------------------------------- the cache


def _named_paths(manifest: Any) -> Iterable[str]:
    """Every host path the manifest names (files, the stdlib and tree directories)."""
    if isinstance(manifest, dict):
        for k, v in manifest.items():
            if k in ("path", "stdlib", "root") and isinstance(v, str):
                yield v
            else:
                yield from _named_paths(v)
    elif isinstance(manifest, list):
        for v in manifest:
            yield from _named_paths(v)


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _stamps(manifest: dict[str, Any]) -> dict[str, list[int] | None]:
    """What must stay unchanged for the manifest to stay true: the files it names, the
    loader cache (a newly installed library changes what ldd finds) and dpkg's database
    (a Debian package installed, upgraded or removed changes the Debian groups)."""
    paths = sorted({*_named_paths(manifest), "/etc/ld.so.cache", DPKG_STATUS})
    return {p: _stamp(p) for p in paths}


def _cache_key() -> str:
    """Discovery depends on the machine and on where it looks (PATH, pyenv, this Python)."""
    parts = [
        MANIFEST_FORMAT,
        platform.machine(),
        os.environ.get("PATH", ""),
        os.environ.get("PYENV_ROOT", ""),
        str(Path.home()),
        sys.base_prefix,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def host_manifest(cache: Path | None = None) -> Path:
    """The manifest file (``host.json``) for this host: discovered once, then reused while
    the files it names are unchanged."""
    d = (cache or cache_dir() / "demo-host") / _cache_key()
    manifest, stamps = d / "host.json", d / "stamps.json"
    try:
        recorded = json.loads(stamps.read_text())
        if manifest.is_file() and recorded and all(_stamp(p) == s for p, s in recorded.items()):
            return manifest
    except (OSError, ValueError, AttributeError):
        pass
    data = discover_host()
    d.mkdir(parents=True, exist_ok=True)
    _write_atomic(manifest, json.dumps(data, indent=2, sort_keys=True) + "\n")
    _write_atomic(stamps, json.dumps(_stamps(data), indent=1, sort_keys=True) + "\n")
    return manifest


def nix_env(cache: Path | None = None) -> dict[str, str]:
    """The environment a nix command needs to evaluate the demo package set."""
    return {HOST_ENV_VAR: os.fspath(host_manifest(cache))}
