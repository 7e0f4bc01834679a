"""Python packages as they were on a date: uv resolves against the package index with
``--exclude-newer``, wheels only, for the image's platform."""

from __future__ import annotations

import os
import tempfile
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import packaging.tags
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from . import proc
from .errors import Exit, NixsnakeError, SpecError
from .spec import EnvFile, cutoff


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    url: str
    sha256: str


def _uv() -> str:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = proc.which("uv")
        if found:
            return found
        raise proc.ToolMissingError("uv", proc.INSTALL_HINTS["uv"]) from None


_NETWORK_MARKERS = (
    "dns error",
    "failed to fetch",
    "connection refused",
    "network is unreachable",
    "error sending request",
    "timed out",
    "failed to connect",
    "could not connect",
)


def resolve_python(spec: EnvFile, python_version: str, platform: str, spec_file: str) -> tuple[Wheel, ...]:
    """Date-locked resolution through uv, wheels only, for the image's platform
    (``x86_64-manylinux_2_28``: the build machine's, arch.py) and Python
    (``python_version``: the env file's, or nixpkgs' python3)."""
    py = spec.python
    if py is None or not py.packages:
        return ()
    with tempfile.TemporaryDirectory(prefix="nixsnake-uv-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("".join(p + "\n" for p in py.packages))
        out = Path(tmp) / "pylock.toml"
        argv = [
            _uv(),
            "pip",
            "compile",
            str(req),
            "-o",
            str(out),
            "--format",
            "pylock.toml",
            "--python-version",
            python_version,
            "--python-platform",
            platform,
            "--exclude-newer",
            cutoff(spec.date),
            "--only-binary",
            ":all:",
            "--no-header",
            "--quiet",
            "--no-config",
        ]
        for name, day in sorted(py.package_dates.items()):
            argv += ["--exclude-newer-package", f"{name}={cutoff(day)}"]
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
            first = _sentences(" ".join(line.strip() for line in msg.splitlines() if line.strip()), 500)
            raise SpecError(
                spec_file,
                "python.packages",
                f"no date-locked resolution: {first}",
                "relax the requirements, pick a later date, or give a package its own date in python.package_dates",
            )
        data = tomllib.loads(out.read_text())
    return select_wheels(data, python_version, platform, spec_file)


def target_tags(python_version: str, platform: str) -> list[Tag]:
    """The wheel tags CPython ``python_version`` on ``platform`` (uv's form,
    ``x86_64-manylinux_2_28``) accepts, best first, ranked as pip and uv rank them:
    the interpreter's own ABI, then abi3 of newer then older CPythons, then pure Python;
    within each, the newest manylinux glibc first."""
    arch, _, manylinux = platform.partition("-")
    glibc_minor = int(manylinux.rsplit("_", 1)[1])
    platforms = []
    for minor in range(glibc_minor, 4, -1):
        platforms.append(f"manylinux_2_{minor}_{arch}")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
        if legacy is not None and (minor == 17 or arch in ("x86_64", "i686")):
            platforms.append(f"{legacy}_{arch}")
    major, minor_py = (int(x) for x in python_version.split("."))
    version = (major, minor_py)
    return [
        *packaging.tags.cpython_tags(version, abis=[f"cp{major}{minor_py}"], platforms=platforms),
        *packaging.tags.compatible_tags(version, interpreter=f"cp{major}{minor_py}", platforms=platforms),
    ]


def select_wheels(pylock: dict[str, Any], python_version: str, platform: str, spec_file: str) -> tuple[Wheel, ...]:
    """One wheel per package of uv's pylock.toml: the one whose best tag ranks highest
    for the image's Python and platform (:func:`target_tags`), never simply the first
    listed (uv lists every file of a version that fits, or, in some versions, every file:
    abi3 and cp311 builds, manylinux_2_17 and _2_28, other architectures, pure Python)."""
    rank = {tag: i for i, tag in reversed(list(enumerate(target_tags(python_version, platform))))}
    wheels = []
    for pkg in pylock.get("packages", []):
        best: tuple[tuple[int, str], dict[str, Any]] | None = None
        names = []
        for w in pkg.get("wheels") or []:
            filename = urllib.parse.unquote(str(w.get("name") or w["url"].rsplit("/", 1)[-1]))
            names.append(filename)
            try:
                tags = parse_wheel_filename(filename)[3]
            except InvalidWheelFilename:
                continue
            fits = [rank[t] for t in tags if t in rank]
            if fits and (best is None or (min(fits), filename) < best[0]):
                best = ((min(fits), filename), w)
        if best is None:
            listed = f" (uv listed {', '.join(names)})" if names else ""
            raise SpecError(
                spec_file,
                "python.packages",
                f"{pkg['name']} {pkg.get('version', '')} has no wheel for CPython {python_version} on {platform}{listed}",
                "nixsnake installs wheels only; pick a version with a wheel for this platform",
            )
        w = best[1]
        wheels.append(Wheel(pkg["name"], pkg["version"], w["url"], w["hashes"]["sha256"]))
    return tuple(sorted(wheels, key=lambda w: w.name))


def _sentences(text: str, limit: int) -> str:
    """uv's explanation, cut after the last whole sentence within ``limit`` characters (a
    message that stops mid-word reads like a bug)."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return (text[: end + 1] if end > 0 else text[:limit]) + " [...]"
