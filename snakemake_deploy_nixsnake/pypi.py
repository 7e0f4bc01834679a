"""Python packages as they were on a date: uv resolves against the package index with
``--exclude-newer``, wheels only, for the image's platform."""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import Exit, NixsnakeError, SpecError
from .spec import EnvFile, cutoff

#: The platform wheels are chosen for (the image's).
PY_PLATFORM = "x86_64-manylinux_2_28"


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


def resolve_python(spec: EnvFile, python_version: str, spec_file: str) -> tuple[Wheel, ...]:
    """Date-locked resolution through uv, wheels only, for the image's platform and
    Python (``python_version``: the env file's, or nixpkgs' python3)."""
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
            PY_PLATFORM,
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
            first = " ".join(line.strip() for line in msg.splitlines() if line.strip())[:400]
            raise SpecError(
                spec_file,
                "python.packages",
                f"no date-locked resolution: {first}",
                "relax the requirements, pick a later date, or give a package its own date in python.package_dates",
            )
        data = tomllib.loads(out.read_text())
    wheels = []
    for pkg in data.get("packages", []):
        ws = pkg.get("wheels") or []
        if not ws:
            raise SpecError(
                spec_file,
                "python.packages",
                f"{pkg['name']} has no wheel",
                "nixsnake installs wheels only; pick a version with a wheel",
            )
        w = ws[0]
        wheels.append(Wheel(pkg["name"], pkg["version"], w["url"], w["hashes"]["sha256"]))
    return tuple(sorted(wheels, key=lambda w: w.name))
