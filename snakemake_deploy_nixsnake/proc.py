"""The one place where nixsnake starts other programs.

Keeping every subprocess call here means one policy for: argv lists only (never a shell
string built from user data), a clear exit 69 when a tool is missing, and captured
output that ends up in error messages instead of being lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import Exit, Interrupted, NixsnakeError, ToolMissingError

#: How to install each tool we may call, for the "missing tool" hint.
INSTALL_HINTS: dict[str, str] = {
    "git": "install git (Debian: apt-get install git)",
    "nix": "install nix (Debian: apt-get install nix-bin) on the head node",
    "nix-build": "install nix (Debian: apt-get install nix-bin) on the head node",
    "nix-store": "install nix (Debian: apt-get install nix-bin) on the head node",
    "mksquashfs": "install squashfs-tools (Debian: apt-get install squashfs-tools)",
    "squashfuse": "install squashfuse (Debian: apt-get install squashfuse fuse3)",
    "bwrap": "install bubblewrap (Debian: apt-get install bubblewrap)",
    "apptainer": "install apptainer, or load its module; or set runtime_bin to its absolute path; or use --runtime bwrap",
    "singularity": "install singularity, or load its module; or set runtime_bin to its absolute path; or use --runtime bwrap",
    "uv": "reinstall nixsnake: the 'uv' Python package ships the resolver binary",
}


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


# Ctrl-C reaches the main thread only; builds run on worker threads. interrupt() (called
# by the main thread) stops the children and makes every later call here raise
# Interrupted, so a worker unwinds through its cleanup (temp files, build lock) and never
# publishes an image after the user asked to stop.
_interrupted = threading.Event()
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def interrupt() -> None:
    """Stop: terminate running children; every later call here raises ``Interrupted``."""
    _interrupted.set()
    with _children_lock:
        live = list(_children)
    for child in live:
        with contextlib.suppress(OSError):
            child.terminate()


def check_interrupted() -> None:
    """Raise ``Interrupted`` after :func:`interrupt` (a worker's last word before it
    commits something, e.g. publishing an image)."""
    if _interrupted.is_set():
        raise Interrupted()


@contextlib.contextmanager
def _child(
    args: list[str], env: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None, **kwargs
) -> Iterator[subprocess.Popen]:
    """A started program with its output piped, known to :func:`interrupt` until it is
    waited for."""
    check_interrupted()
    child = _popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        **kwargs,
    )
    with _children_lock:
        _children.add(child)
    try:
        yield child
    finally:
        with _children_lock:
            _children.discard(child)
        if child.poll() is None:
            child.kill()
            child.wait()
    check_interrupted()


def which(tool: str, env: Mapping[str, str] | None = None) -> str | None:
    path = (env or os.environ).get("PATH", os.defpath)
    return shutil.which(tool, path=path)


def require(tool: str, env: Mapping[str, str] | None = None) -> str:
    found = which(tool, env)
    if found is None:
        raise ToolMissingError(tool, INSTALL_HINTS.get(tool, f"install {tool}"))
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    what: str | None = None,
    code: Exit = Exit.SOFTWARE,
    timeout: float | None = None,
) -> Result:
    """Run a program to completion and capture its output.

    ``what`` names the step in the error message ("resolving python packages");
    ``code`` is the exit code used when the program fails.
    """
    args = [os.fspath(a) for a in argv]
    stdin = subprocess.PIPE if input is not None else None
    with _child(args, env, cwd, stdin=stdin, text=True, errors="replace") as child:
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            child.communicate()
            raise NixsnakeError(f"{what or args[0]} timed out after {timeout}s", Exit.UNAVAILABLE) from exc
    result = Result(tuple(args), child.returncode, stdout, stderr)
    if check and child.returncode != 0:
        raise NixsnakeError(
            f"{what or ' '.join(args[:2])} failed (exit {child.returncode}): {tail(stderr or stdout)}",
            code,
        )
    return result


def _popen(args: list[str], **kwargs) -> subprocess.Popen:
    """Popen with the one "missing tool" policy (exit 69 with an install hint)."""
    try:
        return subprocess.Popen(args, **kwargs)
    except FileNotFoundError as exc:
        tool = Path(args[0]).name
        raise ToolMissingError(tool, INSTALL_HINTS.get(tool, f"install {tool}")) from exc


def _pump(pipe, sink, on_line: Callable[[str], None] | None = None) -> threading.Thread:
    """Drain a child's pipe on a thread (no pipe deadlock): each line, decoded and without
    its newline, goes to ``sink`` (a list, or a bounded deque for a log tail)."""

    def run() -> None:
        for raw in pipe:
            line = (raw.decode(errors="replace") if isinstance(raw, bytes) else raw).rstrip("\n")
            sink.append(line)
            if on_line:
                on_line(line)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _failed(name: str, rc: int, log: Iterable[str], code: Exit) -> NixsnakeError:
    return NixsnakeError(f"{name} failed (exit {rc}); last log lines:\n" + "\n".join(log), code)


def stream(
    argv: Sequence[str | os.PathLike[str]],
    *,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
    code: Exit = Exit.SOFTWARE,
    keep: int = 40,
) -> str:
    """Run a long program (nix build), feeding each stderr/stdout line to ``on_line``.

    Returns stdout. On failure the last ``keep`` lines of the log are in the error.
    """
    args = [os.fspath(a) for a in argv]
    log: deque[str] = deque(maxlen=keep)
    out_lines: list[str] = []
    with _child(args, env, cwd, text=True, errors="replace") as proc:
        t = _pump(proc.stderr, log, on_line)
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
        rc = proc.wait()
        t.join()
    if rc != 0:
        raise _failed(what or " ".join(args[:2]), rc, log, code)
    return "".join(out_lines)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def pipe_into(
    argv: Sequence[str | os.PathLike[str]],
    writer: Callable[[IO[bytes]], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
    code: Exit = Exit.SOFTWARE,
    keep: int = 40,
) -> str:
    """Run a program and feed its stdin from ``writer`` (a tar stream into mksquashfs).

    ``writer`` gets the program's binary stdin and writes to it; it must not close it.
    Stdout and stderr are drained on threads (no pipe deadlock) and the last ``keep``
    lines end up in the error message. Fails loudly: a non-zero exit, or the program
    dying while we still write (broken pipe), raises ``NixsnakeError``; an exception in
    ``writer`` kills the program and propagates (wrapped unless already a
    ``NixsnakeError``). Returns the program's stdout.
    """
    args = [os.fspath(a) for a in argv]
    log: deque[str] = deque(maxlen=keep)
    out_chunks: list[str] = []
    name = what or " ".join(args[:2])
    broken = False
    with _child(args, env, cwd, stdin=subprocess.PIPE) as proc:
        threads = [_pump(proc.stderr, log), _pump(proc.stdout, out_chunks)]
        assert proc.stdin is not None
        try:
            writer(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            broken = True  # the program died early: report its exit status and log below
        except BaseException as exc:
            proc.kill()
            proc.wait()
            for t in threads:
                t.join()
            if isinstance(exc, NixsnakeError):
                raise
            if isinstance(exc, Exception):
                raise NixsnakeError(f"{name}: feeding its input failed: {exc}", code) from exc
            raise
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        rc = proc.wait()
        for t in threads:
            t.join()
    if rc != 0 or broken:
        raise _failed(name, rc, log, code)
    return "\n".join(out_chunks)
