"""Bind mounts: the one grammar for every host path that enters a container.

Binds come from env files (``[run] binds``), settings and ``--bind`` flags, and from
Snakemake (the working directory, its temp dir). They reach apptainer's ``--bind``,
whose parser (``ParseBindPath``, pkg/runtime/engine/apptainer/config/bind.go) cuts a spec
into tokens with the regexp ``([^,^:]+:?)`` -- so ``,`` and ``^`` both separate specs and
``:`` separates src:dst:opts -- and trims whitespace around each token; only ``\\,`` and
``\\:`` escape, with rules that changed between versions. A path holding any of those
characters, or starting or ending with whitespace, would be silently cut or changed, so it
is refused here instead. Paths are compared after lexical normalisation (``//nix``,
``/./etc``, ``/usr//bin`` and ``/.`` are what they look like), and a bind may not cover
what makes the image work: its store, its ``/etc``, the runtime's ``/.singularity.d``.

``bwrap-exec.sh`` applies the same rules (its forbidden characters are generated from
here) and is given only binds that passed here; the apptainer test stand-in parses
``--bind`` the way apptainer does and refuses what apptainer would read differently.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

from .errors import Exit, NixsnakeError

BindMode = Literal["rw", "ro"]
BIND_MODES: tuple[BindMode, ...] = ("rw", "ro")

#: Characters apptainer's --bind parser splits on (or that end a line): never in a path.
FORBIDDEN_CHARS = (",", ":", "^", "\n", "\r", "\x00")

#: Places a bind may not cover (nor an ancestor of them, like ``/`` or ``/usr``): the
#: image's software, its configuration, and the runtime's own directories.
PROTECTED_TARGETS = ("/nix", "/.singularity.d", "/.nixsnake", "/bin", "/etc", "/usr/bin")

#: The usage line every bind error repeats.
GRAMMAR = "SRC[:DST[:ro|rw]]"


class BindError(NixsnakeError):
    """A bind that cannot be expressed or is not allowed: ``problem`` + ``fix``."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(problem, Exit.DATAERR, fix)


def normalize(what: str, path: str) -> str:
    """An absolute path in canonical lexical form, or a BindError saying what is wrong."""
    if not isinstance(path, str) or not path:
        raise BindError(f"{what} is empty", f"write {GRAMMAR} with absolute paths")
    bad = [c for c in FORBIDDEN_CHARS if c in path]
    if bad:
        shown = " and ".join(repr(c) for c in bad)
        raise BindError(
            f"{what} {path!r} contains {shown}, which apptainer's --bind cannot express",
            "move or symlink the directory to a path without ',' ':' '^' or line breaks",
        )
    if path != path.strip():
        raise BindError(f"{what} {path!r} starts or ends with whitespace (apptainer trims it)", "remove the whitespace")
    if not path.startswith("/"):
        raise BindError(f"{what} {path!r} is not an absolute path", "use a path starting with '/'")
    if ".." in path.split("/"):
        raise BindError(f"{what} {path!r} contains '..'", "write the path without '..'")
    return "/" + posixpath.normpath(path).lstrip("/")


def covered(dst: str) -> str | None:
    """The protected path a bind on ``dst`` (normalised) would cover, if any."""
    for t in PROTECTED_TARGETS:
        if dst == t or dst.startswith(t + "/") or t.startswith(dst.rstrip("/") + "/"):
            return t
    return None


def check_target(what: str, dst: str) -> str:
    """Refuse a destination that covers (part of) the image; returns it normalised."""
    dst = normalize(what, dst)
    hit = covered(dst)
    if hit is not None:
        inside = "the whole image" if dst == "/" else f"the image's {hit}"
        raise BindError(f"{what} {dst!r} would cover {inside}", "bind somewhere else, e.g. under /data or /mnt")
    return dst


@dataclass(frozen=True)
class Bind:
    """A host path mounted into the container: ``src`` on ``dst``, read-write or read-only.

    The constructor normalises both paths and checks the grammar; whether ``dst`` may be
    used is a separate question (:func:`parse_user_bind`, :func:`check_target`), because
    nixsnake's own runtimes also bind inside the image (the driver libraries)."""

    src: str
    dst: str
    mode: BindMode = "rw"

    def __post_init__(self) -> None:
        object.__setattr__(self, "src", normalize("bind source", self.src))
        object.__setattr__(self, "dst", normalize("bind destination", self.dst))
        if self.mode not in BIND_MODES:
            raise BindError(f"bind mode must be 'rw' or 'ro', got {self.mode!r}", f"write {GRAMMAR}")

    @property
    def spec(self) -> str:
        """Apptainer's ``--bind`` spec: ``src:dst`` or ``src:dst:ro``."""
        return f"{self.src}:{self.dst}" + (":ro" if self.mode == "ro" else "")


def parse_bind(spec: str) -> Bind:
    """Parse ``SRC[:DST[:ro|rw]]`` (one path pair; apptainer's grammar without lists)."""
    if not isinstance(spec, str) or not spec:
        raise BindError(f"empty bind spec {spec!r}", f"write {GRAMMAR}")
    parts = spec.split(":")
    if len(parts) > 3:
        raise BindError(f"bind {spec!r} has too many ':' fields", f"write {GRAMMAR}; paths cannot contain ':'")
    if "," in spec:
        raise BindError(f"bind {spec!r} contains ','", f"give one bind per entry ({GRAMMAR})")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    mode = parts[2] if len(parts) > 2 else "rw"
    if mode not in BIND_MODES:
        raise BindError(f"bind {spec!r}: mode must be 'ro' or 'rw', got {mode!r}", f"write {GRAMMAR}")
    return Bind(src, dst, "ro" if mode == "ro" else "rw")


def parse_user_bind(spec: str) -> Bind:
    """A bind a user asked for (env file, settings, ``--bind``): grammar and target."""
    b = parse_bind(spec)
    check_target("bind target", b.dst)
    return b
