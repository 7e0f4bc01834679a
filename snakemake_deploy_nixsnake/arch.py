"""Which architecture an image is for: the build machine's, as nix names it.

nixsnake builds for the machine it runs on (nix's ``builtins.currentSystem``): the
image's programs, the PyPI wheels locked for it (``x86_64-manylinux_2_28`` /
``aarch64-manylinux_2_28``) and the SIF header (``amd64`` / ``arm64``) all follow from
that one system. Supported: x86_64-linux and aarch64-linux.
"""

from __future__ import annotations

import platform

from .errors import Exit, NixsnakeError

#: ``platform.machine()`` -> nix system
_SYSTEMS = {"x86_64": "x86_64-linux", "amd64": "x86_64-linux", "aarch64": "aarch64-linux", "arm64": "aarch64-linux"}
#: nix system -> (CPU name in wheel tags, SIF arch)
_ARCHES = {"x86_64-linux": ("x86_64", "amd64"), "aarch64-linux": ("aarch64", "arm64")}
SYSTEMS = tuple(_ARCHES)
#: the glibc baseline of locked wheels (and of [conda]'s __glibc)
MANYLINUX = "manylinux_2_28"


def host_system() -> str:
    """The nix system of this machine (x86_64-linux or aarch64-linux)."""
    machine = platform.machine().lower()
    system = _SYSTEMS.get(machine)
    if system is None or platform.system() != "Linux":
        raise NixsnakeError(
            f"this machine is {platform.system()} {machine}: nixsnake builds images for " + " and ".join(SYSTEMS),
            Exit.UNAVAILABLE,
            "build on an x86_64 or aarch64 Linux head node",
        )
    return system


def py_platform(system: str) -> str:
    """uv's ``--python-platform`` for ``system`` (``aarch64-manylinux_2_28``)."""
    return f"{_ARCHES[system][0]}-{MANYLINUX}"


def sif_arch(system: str) -> str:
    """The SIF header's architecture for ``system`` (``amd64``, ``arm64``)."""
    if system not in _ARCHES:
        raise NixsnakeError(f"nix built for {system!r}; nixsnake images are {' or '.join(SYSTEMS)}", Exit.SOFTWARE)
    return _ARCHES[system][1]


def wheel_arch(python_platform: str) -> str:
    """The CPU of a lock's ``python.platform`` (``x86_64-manylinux_2_28`` -> ``x86_64``)."""
    return python_platform.split("-", 1)[0]
