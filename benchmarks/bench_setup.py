"""Set up what the benchmarks measure: a benchmark package set, workspaces, locked env
files and a warm image store.

Everything lives under one work directory (default ``/tmp/nixsnake-bench``), with its own
nixsnake cache (``NIXSNAKE_CACHE_DIR``) and no user configuration, so a run never touches
the developer's own store or cache. Only the nix store is shared with the machine.

The benchmark package set is the embedded demo package set (materialized by nixsnake's
own ``demo.materialize``) copied into a git repository of the benchmark's own,
with one extra commit on a branch ``nixsnake-bench`` that adds ``benchBlob``: ~700 MB of
host files in ~50 MB store paths (``benchmarks/nixpkgs/``). The shipped demo package set
is not changed; env files reach the extra package through
``[nixpkgs] branch = "nixsnake-bench"`` and ``nixpkgs_source = <that repository>``, so
the real ``nixsnake build`` builds every size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import log, rmtree, run

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BRANCH = "nixsnake-bench"
#: The benchmark commit's date: after the demo's 2024-01-15 release, before the envs' date.
BENCH_COMMIT_DATE = "2024-05-01T12:00:00Z"
FORK_BEFORE = "2024-05-01T00:00:00Z"
NIX_OPTIONS = 'nix_options = { substituters = "", build-users-group = "" }'

#: Host directories the synthetic closure is taken from, in this order.
BLOB_SOURCES = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/gcc", "/usr/lib/python3", "/usr/share", "/usr/lib")
BLOB_BYTES = 700 * 10**6
CHUNK_BYTES = 50 * 10**6
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@=,-]+$")

CLI = [sys.executable, "-m", "snakemake_deploy_nixsnake.cli"]


@dataclass
class Bench:
    workdir: Path
    quick: bool
    ws: Path  # workspace: nixsnake.toml with the benchmark package set
    ws_demo: Path  # workspace: nixsnake.toml with nixpkgs_source = "demo"
    bench_repo: Path
    envs: dict[str, Path] = field(default_factory=dict)  # name -> env file in ws
    images: dict[str, Path] = field(default_factory=dict)  # name -> image in ws/store
    dag_envs: list[Path] = field(default_factory=list)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    blob: dict = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.ws / "store"


def isolate_environment(workdir: Path) -> None:
    """This process and every child use the work directory's cache and no user config."""
    os.environ["NIXSNAKE_CACHE_DIR"] = str(workdir / "cache")
    os.environ["NIXSNAKE_CONFIG"] = str(workdir / "no-user-config.toml")
    os.environ.pop("NIXSNAKE_STORE", None)
    os.environ.pop("SOURCE_DATE_EPOCH", None)
    # the package under test is imported from this checkout, whatever the caller's cwd
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # the benchmark package set is the demo's plus bench/: its builds read the same host
    # manifest, which nixsnake only hands to nix for nixpkgs_source = "demo"
    from snakemake_deploy_nixsnake import demo

    os.environ[demo.HOST_ENV_VAR] = str(demo.host_manifest())


def blob_chunks(target: int = BLOB_BYTES, chunk: int = CHUNK_BYTES) -> list[dict]:
    """Regular, readable host files (sorted walk of BLOB_SOURCES) adding up to ``target``
    bytes, grouped into chunks of about ``chunk`` bytes."""
    files: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    total = 0
    for top in BLOB_SOURCES:
        if total >= target:
            break
        for root, dirs, names in os.walk(top):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(root, n)
                if p in seen or not _SAFE_PATH.match(p):
                    continue
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or not os.access(p, os.R_OK):
                    continue
                seen.add(p)
                files.append((p, st.st_size, int(st.st_mtime)))
                total += st.st_size
                if total >= target:
                    break
            if total >= target:
                break
    chunks: list[dict] = []
    cur: list[tuple[str, int, int]] = []
    size = 0
    for f in files:
        cur.append(f)
        size += f[1]
        if size >= chunk:
            chunks.append(_chunk(len(chunks), cur, size))
            cur, size = [], 0
    if cur:
        chunks.append(_chunk(len(chunks), cur, size))
    return chunks


def _chunk(i: int, files: list[tuple[str, int, int]], size: int) -> dict:
    return {"name": f"{i:02d}", "files": [p for p, _, _ in files], "bytes": size}


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="nixsnake benchmark",
        GIT_AUTHOR_EMAIL="bench@nixsnake.invalid",
        GIT_COMMITTER_NAME="nixsnake benchmark",
        GIT_COMMITTER_EMAIL="bench@nixsnake.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(repo.parent),
    )
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return run(["git", "-C", str(repo), "-c", "commit.gpgsign=false", *args], env=env).stdout.strip()


def make_bench_repo(workdir: Path, chunks: list[dict]) -> Path:
    """The demo package set's repository plus the benchmark commit on branch ``nixsnake-bench``."""
    from snakemake_deploy_nixsnake.demo import materialize

    demo = materialize(workdir / "cache" / "demo-nixpkgs")
    repo = workdir / "bench-nixpkgs"
    rmtree(repo)
    run(["git", "clone", "-q", str(demo), str(repo)])
    fork = _git(repo, "rev-list", "-1", "--first-parent", f"--before={FORK_BEFORE}", "origin/nixos-unstable")
    _git(repo, "checkout", "-q", "-b", BRANCH, fork)
    _git(repo, "mv", "default.nix", "demo-default.nix")
    shutil.copyfile(HERE / "nixpkgs" / "default.nix", repo / "default.nix")
    (repo / "bench").mkdir()
    for f in ("bench.nix", "chunk.sh", "index.sh"):
        shutil.copyfile(HERE / "nixpkgs" / f, repo / "bench" / f)
    slim = [{k: c[k] for k in ("name", "files")} for c in chunks]
    (repo / "bench" / "chunks.json").write_text(json.dumps(slim, indent=1) + "\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--no-verify", "-m", "nixsnake benchmark packages", date=BENCH_COMMIT_DATE)
    return repo


def _workspace(path: Path, source: str) -> Path:
    (path / "envs").mkdir(parents=True, exist_ok=True)
    (path / "nixsnake.toml").write_text(f'[nixsnake]\nstore = "store"\nnixpkgs_source = "{source}"\n{NIX_OPTIONS}\n')
    return path


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def cli(*args: str, cwd: Path) -> str:
    return run([*CLI, *args], cwd=cwd).stdout


def prepare(workdir: Path, *, quick: bool) -> Bench:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    isolate_environment(workdir)
    t_all = time.perf_counter()
    secs: dict[str, float] = {}

    t = time.perf_counter()
    chunks = [] if quick else blob_chunks()
    repo = make_bench_repo(workdir, chunks)
    secs["package_set"] = time.perf_counter() - t
    log(
        f"benchmark package set at {repo} ({sum(c['bytes'] for c in chunks) / 1e6:.0f} MB of host files in {len(chunks)} chunks)"
    )

    ws = _workspace(workdir / "ws", str(repo))
    ws_demo = _workspace(workdir / "ws-demo", "demo")
    rmtree(ws / "store")  # images of earlier runs (other package-set revisions) out of the way
    b = Bench(workdir=workdir, quick=quick, ws=ws, ws_demo=ws_demo, bench_repo=repo)
    b.blob = {"chunks": len(chunks), "bytes": sum(c["bytes"] for c in chunks), "sources": list(BLOB_SOURCES)}

    names = ["tiny"] if quick else ["tiny", "medium", "large"]
    for n in names:
        dst = ws / "envs" / f"{n}.toml"
        _write_if_changed(dst, (HERE / "envs" / f"{n}.toml").read_text())
        b.envs[n] = dst
    # the same tiny env against the demo package set itself (nixpkgs_source = "demo")
    tiny_demo = ws_demo / "envs" / "tiny.toml"
    _write_if_changed(tiny_demo, (HERE / "envs" / "tiny.toml").read_text().replace(f'branch = "{BRANCH}"\n', ""))
    # 10 distinct env files for the DAG-time benchmark: tiny + one [env] variable each
    dag_dir = ws / "envs" / "dag"
    dag_dir.mkdir(exist_ok=True)
    for k in range(10):
        p = dag_dir / f"e{k}.toml"
        _write_if_changed(p, (HERE / "envs" / "tiny.toml").read_text() + f'\n[env]\nBENCH_VARIANT = "{k}"\n')
        b.dag_envs.append(p)

    t = time.perf_counter()
    cli("lock", *(str(p.relative_to(ws)) for p in [*b.envs.values(), *b.dag_envs]), cwd=ws)
    cli("lock", "envs/tiny.toml", cwd=ws_demo)
    secs["lock"] = time.perf_counter() - t
    log(f"locked {len(b.envs) + len(b.dag_envs) + 1} env files")

    # Warm everything once: nix builds (and wheel downloads) happen here, not in the
    # timed runs; the images land in the workspace's store for the warm-path suites.
    t = time.perf_counter()
    out = cli("build", *(str(p.relative_to(ws)) for p in b.envs.values()), cwd=ws)
    secs["warm_build"] = time.perf_counter() - t
    for line in out.splitlines():
        m = re.match(r"^envs/(\w+)\.toml: (/\S+\.sif)$", line.strip())
        if m:
            b.images[m.group(1)] = Path(m.group(2))
    missing = set(b.envs) - set(b.images)
    if missing:
        raise RuntimeError(f"nixsnake build did not report images for {sorted(missing)}:\n{out}")
    log("warm store ready: " + ", ".join(f"{k} {v.stat().st_size / 2**20:.0f} MiB" for k, v in b.images.items()))
    secs["total"] = time.perf_counter() - t_all
    b.setup_seconds = secs
    return b
