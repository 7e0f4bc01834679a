"""The ``[conda]`` layer: date-locked conda packages (bioconda, conda-forge, site mirrors).

Data flow, each step a function of the previous one's output:

1. **Lock** (:func:`resolve`): the env file's channels, match specs and date go to
   rattler's solver in a child process (``conda_solve.py``) with ``exclude_newer`` = the
   date at 00:00 UTC (exclusive), for ``linux-64`` + ``noarch``, strict channel priority
   and FIXED virtual packages (:data:`VIRTUAL_PACKAGES`; never the build host's). The
   answer is a :class:`CondaLock`: every package by URL + sha256, plus the py-rattler
   wheel that will install them (:data:`INSTALLER_FILE`).
2. **Lock file** (:func:`render` / :func:`parse`): the ``[conda]`` section of
   ``ENV.lock.toml``, sorted, so the same env + date give the same bytes.
3. **Build** (:func:`nix_input`): JSON for ``nix/conda.nix``: one fixed-output fetch per
   package, then ``nix/conda_install.py`` installs them offline into ``$out`` with
   rattler's installer. Nothing in the build reads the env file or a channel's repodata.
4. **Image** (:func:`image_env`, :func:`build_warnings`, :func:`loader`): what the build
   reported (``nix-support/nixsnake-conda.json``) becomes ``CONDA_PREFIX``, the folded
   activation variables, the ELF loader link and warnings.

User strings (specs, channel URLs) only ever travel as data: JSON files for the child
process and for nix; never spliced into code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomlkit

from . import envvars, proc
from .config import cache_dir
from .errors import Exit, MissingFileError, NixsnakeError, SpecError
from .spec import EnvFile, conda_spec_name, day_start

#: The platform every image is for, and the subdirs solved (noarch packages included).
SUBDIR = "linux-64"
PLATFORMS = (SUBDIR, "noarch")
#: Where channel names point (conda's default channel alias).
CHANNEL_ALIAS = "https://conda.anaconda.org"
#: The virtual packages every solve sees, written into the lock. Fixed, not detected:
#: a lock must not depend on the machine that made it. glibc 2.28 matches the
#: manylinux_2_28 wheels of [python]; Linux 4.18 is the kernel of RHEL 8-era clusters.
VIRTUAL_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("__archspec", "1", "x86_64"),
    ("__glibc", "2.28", "0"),
    ("__linux", "4.18", "0"),
    ("__unix", "0", "0"),
)
#: Added when ``[gpu] cuda = true``: the CUDA version the driver must support.
CUDA_VIRTUAL_PACKAGE = ("__cuda", "12.0", "0")
INSTALLER_FILE = "conda-installer.json"
SOLVE_TIMEOUT_S = 600

_URL_RE = re.compile(r"(https?|file)://[^\s\"'\\]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NETWORK_HINT = (
    "check network access to the channel; without internet use a site mirror "
    '(channels = ["https://mirror.example.org/conda-forge"]) or a channel on disk '
    '(channels = ["file:///srv/conda/bioconda"])'
)


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CondaPackage:
    """One locked conda package (one archive)."""

    name: str
    version: str
    build: str
    subdir: str
    channel: str  # channel URL, no trailing slash
    url: str
    sha256: str
    size: int
    timestamp: str  # the build timestamp, ISO 8601 UTC ("" when the record has none)
    indexed_timestamp: str = ""  # when the channel has one; the date filter prefers it

    @property
    def file_name(self) -> str:
        return urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Installer:
    """The py-rattler wheel that installs the packages inside the nix build."""

    name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class CondaLock:
    channels: tuple[str, ...]  # URLs, highest priority first
    subdir: str
    cutoff: str  # ISO 8601 UTC; packages must be older (exclusive)
    virtual_packages: tuple[str, ...]  # "name=version=build"
    exempt: tuple[str, ...]
    installer: Installer
    packages: tuple[CondaPackage, ...]


# --- pure helpers -----------------------------------------------------------------------


def channel_url(channel: str) -> str:
    """A channel as the lock records it: a full URL without trailing slash
    (``bioconda`` -> ``https://conda.anaconda.org/bioconda``)."""
    if "://" in channel:
        return channel.rstrip("/")
    return f"{CHANNEL_ALIAS}/{channel.strip('/')}"


def virtual_packages(spec: EnvFile) -> tuple[tuple[str, str, str], ...]:
    vps = list(VIRTUAL_PACKAGES)
    if spec.gpu.cuda is True:
        vps.append(CUDA_VIRTUAL_PACKAGE)
    return tuple(sorted(vps))


def iso_ms(ms: int | None) -> str:
    """Milliseconds since the epoch (conda's timestamps) as ISO 8601 UTC; "" for None."""
    if ms is None:
        return ""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    frac = f".{ms % 1000:03d}" if ms % 1000 else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def installer() -> Installer:
    data = json.loads((resources.files("snakemake_deploy_nixsnake") / "data" / INSTALLER_FILE).read_text())
    return Installer(data["name"], data["version"], data["url"], data["sha256"])


def store_name(file_name: str) -> str:
    """A valid nix store-path name for an archive (its file name in nix's charset)."""
    return "".join(c if (c.isalnum() or c in "+-._?=") else "_" for c in file_name)[-200:].lstrip(".") or "package"


def local_path(url: str) -> str | None:
    """The file system path of a ``file://`` URL, else None."""
    if not url.startswith("file://"):
        return None
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


# --- locking ----------------------------------------------------------------------------


def _run_solver(request: dict[str, Any]) -> dict[str, Any]:
    """Run ``conda_solve`` in a child process; its RESULT file is the answer."""
    with tempfile.TemporaryDirectory(prefix="nixsnake-conda-") as tmp:
        req = Path(tmp) / "request.json"
        out = Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        r = proc.run(
            [sys.executable, "-P", "-m", "snakemake_deploy_nixsnake.conda_solve", str(req), str(out)],
            check=False,
            timeout=SOLVE_TIMEOUT_S + 300,
            what="the conda solve",
        )
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            raise NixsnakeError(
                f"the conda solver (py-rattler) ended without an answer (exit {r.returncode}): "
                + proc.tail(r.stderr or r.stdout, 5).replace("\n", " "),
                Exit.SOFTWARE,
                "check that py-rattler is installed (pip install 'py-rattler>=0.28,<0.29')",
            ) from None


def resolve(spec: EnvFile, spec_file: str) -> CondaLock | None:
    """Date-locked solve of ``[conda]`` (None when the env file lists no conda package)."""
    conda = spec.conda
    if conda is None or not conda.packages:
        return None
    channels = tuple(channel_url(c) for c in conda.channels)
    cutoff = day_start(spec.date)  # packages must be strictly older
    vps = virtual_packages(spec)
    cutoff_ms = int(cutoff.timestamp() * 1000) - 1  # exclusive: rattler keeps records AT the cut-off
    result = _run_solver(
        {
            "channels": [c + "/" for c in channels],
            "specs": list(conda.packages),
            "exempt": list(conda.exempt),
            "cutoff_ms": cutoff_ms,
            "platforms": list(PLATFORMS),
            "virtual_packages": [list(v) for v in vps],
            "cache_dir": str(cache_dir() / "conda-repodata"),
            "timeout_s": SOLVE_TIMEOUT_S,
        }
    )
    if not result.get("ok"):
        raise _solve_error(result, spec, spec_file)
    packages = tuple(_package(r, spec_file) for r in result["records"])
    solved = {p.name for p in packages}
    for i, name in enumerate(conda.exempt):
        if name not in solved:
            raise SpecError(
                spec_file,
                f"conda.exempt[{i}]",
                f"{name!r} is not in the solved environment",
                "remove it, or fix the name (exempt names a package of the solution)",
            )
    return CondaLock(
        channels=channels,
        subdir=SUBDIR,
        cutoff=cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"),
        virtual_packages=tuple(f"{n}={v}={b}" for n, v, b in vps),
        exempt=tuple(sorted(conda.exempt)),
        installer=installer(),
        packages=tuple(sorted(packages, key=lambda p: (p.name, p.subdir, p.url))),
    )


def _package(r: Mapping[str, Any], spec_file: str) -> CondaPackage:
    url, sha = str(r.get("url") or ""), r.get("sha256")
    if not _URL_RE.fullmatch(url) or not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise NixsnakeError(
            f"{spec_file}: conda package {r.get('name')} {r.get('version')} has no usable URL or sha256 in its channel "
            f"(url {url!r}, sha256 {sha!r}); nixsnake locks every archive by sha256",
            Exit.DATAERR,
            "use a channel whose repodata lists sha256 (conda-forge and bioconda do)",
        )
    return CondaPackage(
        name=str(r["name"]),
        version=str(r["version"]),
        build=str(r["build"]),
        subdir=str(r["subdir"]),
        channel=str(r["channel"] or "").rstrip("/"),
        url=url,
        sha256=sha,
        size=int(r.get("size") or 0),
        timestamp=iso_ms(r.get("timestamp_ms")),
        indexed_timestamp=iso_ms(r.get("indexed_timestamp_ms")),
    )


def _solve_error(result: Mapping[str, Any], spec: EnvFile, spec_file: str) -> NixsnakeError:
    assert spec.conda is not None
    msg = " ".join(line.strip(" │└├─") for line in str(result.get("message", "")).splitlines() if line.strip())
    msg = msg.replace("Cannot solve the request because of: ", "")[:600]
    kind = result.get("kind")
    if kind == "unavailable":
        return NixsnakeError(
            f"{spec_file}: conda.channels: cannot read a channel: {msg}", Exit.UNAVAILABLE, _NETWORK_HINT
        )
    if kind == "unsatisfiable":
        named = [
            (i, s)
            for i, s in enumerate(spec.conda.packages)
            if re.search(rf"(?<![\w.-]){re.escape(conda_spec_name(s))}(?![\w.-])", msg)
        ]
        key = f"conda.packages[{named[0][0]}]" if len(named) == 1 else "conda.packages"
        what = f"{named[0][1]!r}: " if len(named) == 1 else ""
        return SpecError(
            spec_file,
            key,
            f"{what}no date-locked solution before {spec.date.isoformat()}T00:00:00Z: {msg}",
            "relax the specs, pick a later date, or give a package conda.exempt (resolved without the date)",
        )
    return NixsnakeError(f"{spec_file}: conda solve failed ({result.get('error_type')}): {msg}", Exit.SOFTWARE)


# --- lock file section ------------------------------------------------------------------


def _array(items: tuple[str, ...], multiline: bool = False) -> Any:
    a = tomlkit.array()
    for x in items:
        a.append(x)
    return a.multiline(multiline)


def render(c: CondaLock) -> Any:
    """The ``[conda]`` table of the lock file (tomlkit), in a fixed order."""
    t = tomlkit.table()
    t.add("channels", _array(c.channels, multiline=len(c.channels) > 1))
    t.add("subdir", c.subdir)
    t.add("cutoff", c.cutoff)
    t.add("virtual_packages", _array(c.virtual_packages))
    if c.exempt:
        t.add("exempt", _array(c.exempt))
    inst = tomlkit.table()
    for k in ("name", "version", "url", "sha256"):
        inst.add(k, getattr(c.installer, k))
    t.add("installer", inst)
    aot = tomlkit.aot()
    for p in c.packages:
        pt = tomlkit.table()
        for k in ("name", "version", "build", "subdir", "channel", "url", "sha256", "size", "timestamp"):
            pt.add(k, getattr(p, k))
        if p.indexed_timestamp:
            pt.add("indexed_timestamp", p.indexed_timestamp)
        aot.append(pt)
    t.add("packages", aot)
    return t


# --- build ------------------------------------------------------------------------------


# --- image ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CondaBuilt:
    """``nix-support/nixsnake-conda.json`` of the installed prefix (conda_install.py)."""

    prefix: str
    env: dict[str, str]  # what the activation scripts exported
    skipped_env: tuple[str, ...]
    link_scripts: tuple[str, ...]

    @classmethod
    def parse(cls, data: Any) -> CondaBuilt:
        """Raises TypeError/KeyError on anything else (the caller names the file)."""
        if not isinstance(data, dict) or not isinstance(data["env"], dict):
            raise TypeError("not a conda build record")
        return cls(
            prefix=str(data["prefix"]),
            env={str(k): str(v) for k, v in data["env"].items()},
            skipped_env=tuple(str(x) for x in data.get("skipped_env") or ()),
            link_scripts=tuple(str(x) for x in data.get("link_scripts") or ()),
        )

    def _activation(self) -> tuple[dict[str, str], list[str]]:
        """The activation variables the image may set, and notes on those it may not: the
        same names an env file's [env] may not set (loader and path variables, shell
        hooks, nixsnake's and apptainer's own), and CONDA_PREFIX (set by nixsnake)."""
        kept: dict[str, str] = {}
        dropped: list[str] = []
        for name, value in sorted(self.env.items()):
            if (
                not envvars.valid_name(name)
                or envvars.refused_in_env_file(name)
                or name.upper() == "CONDA_PREFIX"
                or "\x00" in value
                or len(value) > 65536
            ):
                dropped.append(f"{name} (managed by nixsnake, or not a plain variable)")
            else:
                kept[name] = value
        return kept, dropped

    def image_env(self) -> dict[str, str]:
        """Variables the image sets for the conda layer: ``CONDA_PREFIX`` and what the
        packages' activation scripts exported (evaluated once, at build time)."""
        env, _ = self._activation()
        env["CONDA_PREFIX"] = self.prefix
        return env

    def warnings(self) -> list[str]:
        out = []
        if self.link_scripts:
            out.append("conda link scripts were not run (nixsnake never runs them): " + ", ".join(self.link_scripts))
        skipped = [*self.skipped_env, *self._activation()[1]]
        if skipped:
            out.append("conda activation variables not set in the image: " + "; ".join(skipped))
        return out


_THROWN_MISMATCH = re.compile(r"nixsnake: conda package (\S+): sha256 mismatch: (.*?); refusing to build \((.*?)\)")
_THROWN_MISSING = re.compile(
    r"nixsnake: conda package (\S+): (.*?) \(its locked file:// URL\) does not exist; ([^\n]*)"
)
_FOD_MISMATCH = re.compile(r"hash mismatch in fixed-output derivation '/nix/store/[a-z0-9]{32}-([^']+?)\.drv'")


def explain_build_failure(exc: NixsnakeError, lock_file: str) -> NixsnakeError:
    """A failed nix build whose cause is a conda archive that no longer matches the lock
    becomes one line naming the lock, the archive and the fix (exit 65; 66 when the
    file of a file:// URL is gone); any other failure is returned unchanged."""
    text = exc.message
    m = _THROWN_MISMATCH.search(text)
    if m:
        return SpecError(lock_file, "conda.packages", f"{m[1]}: sha256 mismatch: {m[2]}", m[3])
    m = _THROWN_MISSING.search(text)
    if m:
        return MissingFileError(m[2], f"{m[3]} (conda package {m[1]} in {lock_file})")
    m = _FOD_MISMATCH.search(text)
    if m and m[1].endswith((".conda", ".tar.bz2", ".whl")):
        key = "conda.installer" if m[1].endswith(".whl") else "conda.packages"
        return SpecError(
            lock_file,
            key,
            f"{m[1]}: the file at its locked URL does not match the lock's sha256; refusing to build",
            "the channel changed after locking: use the original file (a mirror), or re-run `nixsnake lock` and review the change",
        )
    return exc


def software(lock_conda: CondaLock | None, spec: EnvFile) -> list[tuple[str, str, bool]]:
    """(name, version, requested) of every locked conda package; requested = named in
    the env file (the others are dependencies)."""
    if lock_conda is None:
        return []
    wanted = {conda_spec_name(s) for s in spec.conda.packages} if spec.conda else set()
    return [(p.name, p.version, p.name in wanted) for p in lock_conda.packages]


def requested_names(spec: EnvFile) -> list[str]:
    return [conda_spec_name(s) for s in spec.conda.packages] if spec.conda else []
