"""Timing, statistics and process helpers shared by the benchmark suites."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarize(xs: Sequence[float], unit: str = "s") -> dict[str, Any]:
    """Median and spread of repeated measurements (quartiles by the inclusive method)."""
    xs = sorted(float(x) for x in xs)
    if not xs:
        raise ValueError("no measurements")
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "q1": q1,
        "q3": q3,
        "min": xs[0],
        "max": xs[-1],
        "unit": unit,
        "samples": xs,
    }


def ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Ratio of medians a/b."""
    return a["median"] / b["median"] if b["median"] else float("inf")


def run(
    argv: Sequence[str | os.PathLike[str]], *, check: bool = True, quiet: bool = True, **kw: Any
) -> subprocess.CompletedProcess:
    """Run a process; on failure raise with its output (the benchmark must not measure errors)."""
    argv = [os.fspath(a) for a in argv]
    if quiet:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    r = subprocess.run(argv, text=True, check=False, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(
            f"command failed ({r.returncode}): {' '.join(argv)[:400]}\n--- stdout\n{(r.stdout or '')[-3000:]}\n"
            f"--- stderr\n{(r.stderr or '')[-3000:]}"
        )
    return r


def timed_run(argv: Sequence[str | os.PathLike[str]], **kw: Any) -> float:
    """Wall time of one successful run of ``argv`` (output captured, not printed)."""
    t0 = time.perf_counter()
    run(argv, **kw)
    return time.perf_counter() - t0


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: Mapping[str, Callable[[], float]], reps: int, warmup: int = 0) -> dict[str, list[float]]:
    """Call each function ``reps`` times, round-robin (A B C A B C ...), so that a noisy
    moment on the machine hits every variant instead of one. Each function returns the
    seconds it measured (so it can exclude its own set-up and clean-up)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            out[k].append(fn())
    return out


def _first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(workdir: Path) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        mem_kb = int(m.group(1)) if m else 0
    except OSError:
        pass
    fs = _first_line(["stat", "-f", "-c", "%T", str(workdir)])
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "workdir_fs": fs,
        "loadavg_1_5_15": load,
        "tools": {
            "nix": _first_line(["nix-build", "--version"]),
            "mksquashfs": _first_line(["mksquashfs", "-version"]),
            "squashfuse": _first_line(["dpkg-query", "-W", "-f", "${Version}", "squashfuse"]) or "?",
            "bwrap": _first_line(["bwrap", "--version"]),
            "strace": _first_line(["strace", "-V"]),
            "snakemake": _first_line([sys.executable, "-m", "snakemake", "--version"]),
        },
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def rmtree(p: Path) -> None:
    """Remove a directory tree, making read-only parts writable first (nix-like modes)."""
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink() or p.is_file():
        p.unlink()
        return

    def onerror(func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o755)
            os.chmod(path, 0o755)
        except OSError:
            pass
        func(path)

    shutil.rmtree(p, onerror=onerror)


def fmt_s(x: float) -> str:
    """Seconds, human-scaled (ms under a second)."""
    if x < 1:
        return f"{x * 1000:.1f} ms" if x < 0.1 else f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def fmt_stat(s: Mapping[str, Any]) -> str:
    """``median [q1-q3]`` for a time statistic."""
    return f"{fmt_s(s['median'])} [{fmt_s(s['q1'])}–{fmt_s(s['q3'])}]"


def fmt_mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
