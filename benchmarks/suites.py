"""The five benchmark suites. Each returns a JSON-able dict of statistics and ratios.

Every measurement is a wall-clock time (``time.perf_counter``) or a count, repeated; the
baseline of each ratio is measured in the same run, interleaved with what it is
compared to. nixsnake's own functions are called, never re-implemented: the CLI as a
subprocess, or the package's functions in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_setup import CLI, REPO, Bench
from common import interleaved, log, ratio, rmtree, run, summarize, timed, timed_run
from e2e import snakefile

from snakemake_deploy_nixsnake.config import load_config
from snakemake_deploy_nixsnake.deploy import ensure_image, resolve
from snakemake_deploy_nixsnake.image.sif import PARTITION_OFFSET, read_sif
from snakemake_deploy_nixsnake.nixbuild import NixInput, nix_dir, nix_option_args
from snakemake_deploy_nixsnake.nixpkgs import parse_source

HERE = Path(__file__).resolve().parent
STANDIN = REPO / "tests" / "standin"
RAW_START = HERE / "raw_container_start.sh"
#: mksquashfs options shared by nixsnake and the raw floor (zstd level 3 = nixsnake's default).
RAW_SQUASHFS_FLAGS = [
    "-comp", "zstd", "-Xcompression-level", "3", "-noappend", "-quiet", "-no-progress",
    "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "1",
]  # fmt: skip


# ---------------------------------------------------------------------------- helpers


def _closure(image: Path) -> list[str]:
    return list(read_sif(image).metadata["store_paths"])


def nar_size(paths: list[str]) -> int:
    out = run(["nix-store", "--query", "--size", *paths]).stdout.split()
    return sum(int(x) for x in out)


def _plugin_env(spec: Path, store: Path, **settings: Any):
    """A plugin ``Env`` the way Snakemake makes one (spec file cached in place)."""
    from snakemake_interface_software_deployment_plugins import EnvSpecSourceFile, ShellExecutable

    from snakemake_deploy_nixsnake.plugin import Env, EnvSpec, Settings

    known = {f.name for f in dataclasses.fields(Settings)}
    s = Settings(**{k: v for k, v in {"store": store, **settings}.items() if k in known})
    es = EnvSpec(spec=EnvSpecSourceFile(str(spec)))
    es.spec.cached = spec
    pfx = store.parent / "plugin-prefix"
    kw: dict[str, Any] = {
        "spec": es, "within": None, "settings": s, "shell_executable": ShellExecutable("bash", command_arg="-c"),
        "mountpoints": [], "tempdir": Path("/tmp"), "cache_prefix": pfx, "deployment_prefix": pfx,
        "pinfile_prefix": pfx,
    }  # fmt: skip
    if "envvars" in inspect.signature(Env.__init__).parameters:  # interface >= 0.19
        kw["envvars"] = set()
    return Env(**kw)


# ------------------------------------------------------------- 1. cold build overhead


def _phase_timer():
    """Wrap nixsnake's build steps (where they exist) to time them inside one real
    ``ensure_image`` call; returns (phases dict, undo function)."""
    import snakemake_deploy_nixsnake.image.sif as SIF
    import snakemake_deploy_nixsnake.image.squashfs as SQ
    import snakemake_deploy_nixsnake.nixbuild as NB
    import snakemake_deploy_nixsnake.nixpkgs as NP
    from snakemake_deploy_nixsnake.store import Store

    phases: dict[str, float] = {}
    undo = []
    for owner, name in [(NP, "parse_source"), (NB, "nix_build"), (SQ, "pack_squashfs"), (SIF, "write_sif"),
                        (Store, "publish")]:  # fmt: skip
        orig = getattr(owner, name, None)
        if orig is None:
            continue

        def wrapper(*a, __orig=orig, __name=name, **kw):
            t0 = time.perf_counter()
            try:
                return __orig(*a, **kw)
            finally:
                phases[__name] = phases.get(__name, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)
        undo.append((owner, name, orig))

    def restore():
        for owner, name, orig in undo:
            setattr(owner, name, orig)

    return phases, restore


def cold_build(b: Bench, reps: int, warmup: int = 1) -> dict[str, Any]:
    """``nixsnake build`` with the image absent vs the same steps by hand."""
    results: dict[str, Any] = {}
    scratch = b.workdir / "cold"
    rmtree(scratch)
    scratch.mkdir()
    cases = [
        ("tiny", b.ws, b.envs["tiny"]),
        ("tiny (nixpkgs_source=demo)", b.ws_demo, b.ws_demo / "envs" / "tiny.toml"),
    ]
    cases += [(n, b.ws, b.envs[n]) for n in ("medium", "large") if n in b.envs]
    for label, ws, spec in cases:
        log(f"cold build: {label} ({reps} reps each side)")
        cfg = load_config(ws)
        r = resolve(spec, cfg, auto_lock=False)
        source = parse_source(cfg.nixpkgs_source)
        raw_dir = scratch / "raw"
        raw_dir.mkdir(exist_ok=True)
        input_json = raw_dir / "input.json"
        input_json.write_text(NixInput.of(r.env, r.lock, source).to_json())
        (raw_dir / "sif-head.bin").write_bytes(bytes(PARTITION_OFFSET))
        raw_steps: dict[str, list[float]] = {"nix-build": [], "nix-store -qR": [], "mksquashfs": [], "write+fsync": []}

        def nixsnake_once() -> float:
            store = scratch / "store"
            rmtree(store)
            t = timed_run([*CLI, "build", str(spec), "--store", str(store)], cwd=ws)
            rmtree(store)
            return t

        def raw_once() -> float:
            for f in ("result", "raw.sqfs", "raw.sif"):
                (raw_dir / f).unlink(missing_ok=True)
            t0 = time.perf_counter()
            run(["nix-build", str(nix_dir() / "env.nix"), "--argstr", "inputFile", str(input_json),
                 "--out-link", str(raw_dir / "result"), *nix_option_args(cfg)])  # fmt: skip
            t1 = time.perf_counter()
            closure = run(["nix-store", "--query", "--requisites", str(raw_dir / "result")]).stdout.split()
            t2 = time.perf_counter()
            run(["mksquashfs", *sorted(closure), str(raw_dir / "raw.sqfs"), *RAW_SQUASHFS_FLAGS])
            t3 = time.perf_counter()
            run(["sh", "-c", 'cat "$1" "$2" > "$3" && sync "$3"', "sh",
                 str(raw_dir / "sif-head.bin"), str(raw_dir / "raw.sqfs"), str(raw_dir / "raw.sif")])  # fmt: skip
            t4 = time.perf_counter()
            for k, v in zip(raw_steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                raw_steps[k].append(v)
            return t4 - t0

        times = interleaved({"nixsnake": nixsnake_once, "raw": raw_once}, reps, warmup=warmup)
        raw_steps = {k: v[-reps:] for k, v in raw_steps.items()}  # drop the warm-up run
        raw_sqfs_size = (raw_dir / "raw.sqfs").stat().st_size

        # where nixsnake's time goes: the same build in this process, its steps timed
        phase_runs: list[dict[str, float]] = []
        sif_size = 0
        for _ in range(max(1, min(reps, 3))):
            store = scratch / "store-inproc"
            rmtree(store)
            phases, restore = _phase_timer()
            try:
                t0 = time.perf_counter()
                inproc = cfg.with_overrides(store=store)
                img = ensure_image(resolve(spec, inproc, auto_lock=False), inproc)
                phases["total (in process)"] = time.perf_counter() - t0
            finally:
                restore()
            sif_size = img.stat().st_size
            phase_runs.append(phases)
            rmtree(store)
        breakdown = {k: summarize([p.get(k, 0.0) for p in phase_runs]) for k in phase_runs[0]}
        closure = sorted(run(["nix-store", "--query", "--requisites", str(raw_dir / "result")]).stdout.split())
        ns, raw = summarize(times["nixsnake"]), summarize(times["raw"])
        results[label] = {
            "nixsnake_build": ns,
            "raw_steps": raw,
            "ratio": ratio(ns, raw),
            "overhead_s": ns["median"] - raw["median"],
            "raw_step_breakdown": {k: summarize(v) for k, v in raw_steps.items()},
            "nixsnake_breakdown": breakdown,
            "closure_paths": len(closure),
            "closure_nar_bytes": nar_size(closure),
            "image_bytes": sif_size,
            "raw_squashfs_bytes": raw_sqfs_size,
        }
        log(f"  nixsnake {ns['median']:.2f} s, raw {raw['median']:.2f} s, ratio {results[label]['ratio']:.2f}")
    rmtree(scratch)
    return results


# ---------------------------------------------------------------------- 2. warm path


def warm_path(b: Bench, reps: int, dag_jobs: int, dag_reps: int) -> dict[str, Any]:
    """Image present: CLI build and plugin deploy vs `python -c pass`; DAG-time plugin cost."""
    out: dict[str, Any] = {}
    spec = b.envs["tiny"]
    cfg = load_config(b.ws)
    log(f"warm path: nixsnake build / deploy() with the image present ({reps} reps)")

    def deploy_once() -> float:
        env = _plugin_env(spec, b.store, runtime="bwrap", gpu="never")
        return timed(lambda: asyncio.run(env.deploy()))

    times = interleaved(
        {
            "python -c pass": lambda: timed_run([sys.executable, "-c", "pass"]),
            "nixsnake --version": lambda: timed_run([*CLI, "--version"], cwd=b.ws),
            "nixsnake check ENV": lambda: timed_run([*CLI, "check", str(spec)], cwd=b.ws),
            "nixsnake build (image present)": lambda: timed_run([*CLI, "build", str(spec)], cwd=b.ws),
            "import nixsnake CLI": lambda: timed_run([sys.executable, "-c", "import snakemake_deploy_nixsnake.cli"]),
            "ensure_image() in process": lambda: timed(lambda: ensure_image(resolve(spec, cfg, auto_lock=False), cfg)),
            "plugin deploy() in process": deploy_once,
        },
        reps,
        warmup=1,
    )
    stats = {k: summarize(v) for k, v in times.items()}
    base = stats["python -c pass"]
    out["single"] = {k: {**v, "ratio_to_python": ratio(v, base), "over_python_s": v["median"] - base["median"]}
                     for k, v in stats.items()}  # fmt: skip

    # DAG time: what Snakemake calls per job, in this process (released snakemake cannot
    # load software-deployment plugins), vs `snakemake -n` of the same DAG without them.
    log(f"DAG time: {dag_jobs} jobs over {len(b.dag_envs)} env files ({dag_reps} reps)")
    dag = b.workdir / "dag"
    dag.mkdir(exist_ok=True)
    (dag / "Snakefile").write_text(snakefile(dag_jobs, len(b.dag_envs), software=False))
    k_envs = len(b.dag_envs)

    def per_job_envs() -> float:
        t0 = time.perf_counter()
        hashes = set()
        for j in range(dag_jobs):
            k = j % k_envs
            env = _plugin_env(b.dag_envs[k], b.store)
            hashes.add(env.hash())
            env.decorate_shellcmd(f"echo {j} > out/{k}/{j}.txt")
        dt = time.perf_counter() - t0
        assert len(hashes) == k_envs, hashes
        return dt

    def per_rule_envs() -> float:
        t0 = time.perf_counter()
        envs = [_plugin_env(p, b.store) for p in b.dag_envs]
        for e in envs:
            e.hash()
        for j in range(dag_jobs):
            k = j % k_envs
            envs[k].decorate_shellcmd(f"echo {j} > out/{k}/{j}.txt")
        return time.perf_counter() - t0

    def snakemake_n() -> float:
        return timed_run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "all"], cwd=dag)

    t = interleaved(
        {"snakemake -n (no software directive)": snakemake_n, "plugin: Env + hash + decorate per job": per_job_envs,
         "plugin: Env + hash per env file, decorate per job": per_rule_envs},
        dag_reps,
    )  # fmt: skip
    st = {k: summarize(v) for k, v in t.items()}
    base = st["snakemake -n (no software directive)"]
    out["dag"] = {
        "jobs": dag_jobs,
        "env_files": k_envs,
        **{k: {**v, "ratio_to_snakemake_n": ratio(v, base), "per_job_us": v["median"] / dag_jobs * 1e6}
           for k, v in st.items()},
    }  # fmt: skip
    return out


# ----------------------------------------------------------------------- 3. job start


#: The bare start of the same job: what any runtime must do for it at the least -- the
#: job's shell (Snakemake's bash -c, for every job), the bare start, the image's environment
#: (set by bwrap, no shell inside) and the rule's shell (bash -c true) in the image.
JOB_FLOOR = "bare start of the same job (bash -c, the image's environment, the rule's bash)"


def _image_environment(image: Path) -> list[str]:
    """The image's environment as bwrap --setenv words (its /.nixsnake/environment)."""
    from snakemake_deploy_nixsnake.image.sif import PARTITION_OFFSET
    from snakemake_deploy_nixsnake.image.skeleton import ENVIRONMENT_PATH

    out = run(["unsquashfs", "-o", str(PARTITION_OFFSET), "-cat", str(image), ENVIRONMENT_PATH]).stdout
    words: list[str] = []
    for line in out.splitlines():
        name, _, value = line.partition("=")
        words += ["--setenv", name, value]
    return words


def job_start(b: Bench, reps: int) -> dict[str, Any]:
    """`true` as a Snakemake job: on the host, in a bare container, through nixsnake."""
    out: dict[str, Any] = {}
    env_path = {**os.environ, "PATH": f"{STANDIN}:{os.environ['PATH']}"}
    for name, image in b.images.items():
        log(f"job start: {name} image ({image.stat().st_size / 2**20:.0f} MiB), {reps} reps")
        spec = b.envs[name]
        cmd_bwrap = _plugin_env(spec, b.store, runtime="bwrap", gpu="never").decorate_shellcmd("true")
        cmd_app = _plugin_env(spec, b.store, runtime="apptainer", runtime_bin=str(STANDIN / "apptainer"),
                              gpu="never").decorate_shellcmd("true")  # fmt: skip
        floor_argv = [str(RAW_START), str(image), *_image_environment(image), "bash", "-c", "true"]
        floor = " ".join(["exec sh", *map(shlex.quote, floor_argv)])
        fns = {
            "host: bash -c true": lambda: timed_run(["bash", "-c", "true"]),
            "bare container (squashfuse + bwrap)": lambda: timed_run(
                ["sh", str(RAW_START), str(image), "/bin/sh", "-c", "true"]
            ),
            JOB_FLOOR: lambda c=floor: timed_run(["bash", "-c", c]),
            "nixsnake bwrap runtime": lambda c=cmd_bwrap: timed_run(["bash", "-c", c]),
            "nixsnake apptainer runtime (stand-in)": lambda c=cmd_app: timed_run(["bash", "-c", c], env=env_path),
        }
        if name == "tiny":
            cmd_auto = _plugin_env(spec, b.store, runtime="bwrap", gpu="auto").decorate_shellcmd("true")
            fns["nixsnake bwrap runtime, gpu=auto"] = lambda c=cmd_auto: timed_run(["bash", "-c", c])
        t = interleaved(fns, reps, warmup=1)
        st = {k: summarize(v) for k, v in t.items()}
        host, bare = st["host: bash -c true"], st["bare container (squashfuse + bwrap)"]
        out[name] = {
            "image_bytes": image.stat().st_size,
            **{
                k: {**v, "ratio_to_host": ratio(v, host), "ratio_to_bare_container": ratio(v, bare)}
                for k, v in st.items()
            },
            "wrapper_adds_s": st["nixsnake bwrap runtime"]["median"] - bare["median"],
            # of that: the job's shell, the image's environment and the rule's shell (JOB_FLOOR
            # - bare), and nixsnake's own share (bwrap runtime - JOB_FLOOR)
            "job_floor_adds_s": st[JOB_FLOOR]["median"] - bare["median"],
            "script_adds_s": st["nixsnake bwrap runtime"]["median"] - st[JOB_FLOOR]["median"],
        }
    names = list(out)
    if len(names) > 1:
        xs = [out[n]["image_bytes"] / 2**20 for n in names]
        ys = [out[n]["nixsnake bwrap runtime"]["median"] for n in names]
        out["size_slope_ms_per_100MiB"] = (ys[-1] - ys[0]) / (xs[-1] - xs[0]) * 100 * 1000 if xs[-1] != xs[0] else 0.0
    return out


# ----------------------------------------------------------------- 4. metadata storm

_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DIRFD = re.compile(r"^(\d+)<([^>]*)>")
_FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
#: %process calls that name no file (execve does, and is counted)
_NOT_FILE = frozenset(
    {
        "exit",
        "exit_group",
        "wait4",
        "waitid",
        "kill",
        "tkill",
        "tgkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_open",
        "pidfd_send_signal",
        "unshare",
        "setns",
    }
)


def _classify(trace: Path, *, store_dir: str, image_top: set[str], bound: list[str]) -> dict[str, int]:
    """Count file-system calls in an ``strace -f -y`` log by where they land.

    Processes start on the host side; one that calls ``pivot_root``/``chroot`` (bwrap's
    sandbox) and everything it forks afterwards are inside the container. Inside, an
    absolute path whose first component is an entry of the image root (and not a host
    path bound over it) is an *image* access. On either side a path under the store
    directory (host view) reaches the store directory.
    """
    lines = []
    for line in trace.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            lines.append((int(m.group(1)), bool(m.group(2)), m.group(2) or m.group(3), m.group(4)))
    # pass 1: who forked whom (and when), who pivoted into a container root (and when)
    started: dict[int, int] = {}  # pid -> index of its last unfinished fork-like call
    parent: dict[int, tuple[int, int]] = {}
    pivot: dict[int, int] = {}
    for i, (pid, resumed, call, rest) in enumerate(lines):
        if call in _FORKS:
            if not resumed:
                started[pid] = i
            r = re.search(r"=\s+(\d+)\s*$", rest)
            if r:
                parent[int(r.group(1))] = (pid, started.get(pid, i))
        elif call in ("pivot_root", "chroot") and not resumed:
            pivot.setdefault(pid, i)

    def inside_since(pid: int, depth: int = 0) -> int | None:
        if pid in pivot:
            return pivot[pid]
        if pid in parent and depth < 64:
            p, at = parent[pid]
            s = inside_since(p, depth + 1)
            if s is not None and s < at:
                return 0
        return None

    since = {pid: inside_since(pid) for pid in {ln[0] for ln in lines}}
    counts: Counter[str] = Counter()
    for i, (pid, resumed, call, rest) in enumerate(lines):
        if resumed or call in _FORKS:
            continue
        s0 = since.get(pid)
        is_inside = s0 is not None and i >= s0
        if call == "pread64":
            fd = _DIRFD.match(rest)
            if fd and fd.group(2).startswith(store_dir):
                counts["image file reads (pread64)"] += 1
            continue
        if call in _NOT_FILE:
            continue
        counts["file calls, all"] += 1
        s = _STR.search(rest)
        if not s:
            continue
        path = s.group(1)
        before = rest[: s.start()]
        fd = _DIRFD.match(before)
        if not path.startswith("/") and fd:
            path = fd.group(2).rstrip("/") + "/" + path
        if not path.startswith("/"):
            counts["relative to the job's directory"] += 1
            continue
        if path.startswith(store_dir):
            counts["store directory (host path)"] += 1
            continue
        if is_inside:
            if any(path == p or path.startswith(p.rstrip("/") + "/") for p in bound):
                counts["inside: host-bound paths"] += 1
            elif path.strip("/").split("/", 1)[0] in image_top:
                counts["inside: image paths"] += 1
            else:
                counts["inside: other"] += 1
        else:
            counts["host side: other"] += 1
    return dict(counts)


class FuseBroker:
    """Runs the real ``squashfuse_ll`` for traced jobs, outside their strace (see
    fuse_broker_shim.sh), each under a strace of its own that logs its file calls and
    its reads of the image file."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "fuse-broker"
        rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.bin = workdir / "fuse-broker-bin"
        rmtree(self.bin)
        self.bin.mkdir()
        shim = self.bin / "squashfuse_ll"
        shutil.copyfile(HERE / "fuse_broker_shim.sh", shim)
        shim.chmod(0o755)
        self.real = shutil.which("squashfuse_ll") or shutil.which("squashfuse")
        self.traces: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def env(self) -> dict[str, str]:
        # (NIXSNAKE_BWRAP_MOUNT=host: the broker's mount is on the host; a mount made for the
        # job in a namespace of its own would not be the one the job sees)
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "NIXSNAKE_BENCH_FUSE_BROKER": str(self.dir),
                "NIXSNAKE_BWRAP_MOUNT": "host"}  # fmt: skip

    def __enter__(self) -> FuseBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def collect(self) -> list[Path]:
        """Wait for the squashfuse processes started so far (they end at unmount)."""
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        done, self.traces, self.procs = self.traces, [], []
        return done

    def _serve(self) -> None:
        while not self._stop.is_set():
            for req in sorted(self.dir.glob("*.req")):
                args = req.read_text().splitlines()
                ident = req.stem
                req.unlink()
                trace = self.dir / f"squashfuse-{ident}.txt"
                mnt = args[-1] if args else ""
                p = subprocess.Popen(
                    ["strace", "-f", "-qq", "-y", "-e", "trace=%file,pread64", "-o", str(trace), self.real, *args],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                deadline = time.monotonic() + 20
                rc = 1
                while time.monotonic() < deadline:
                    if os.path.ismount(mnt):
                        rc = 0
                        break
                    if p.poll() is not None and p.returncode != 0:
                        break
                    time.sleep(0.002)
                self.procs.append(p)
                self.traces.append(trace)
                (self.dir / f"{ident}.done").write_text(str(rc))
            time.sleep(0.002)


def metadata_storm(b: Bench, reps: int, trace_reps: int) -> dict[str, Any]:
    """File-system calls reaching the store directory: SIF (squashfuse) vs unpacked dir."""
    name = "medium" if "medium" in b.images else "tiny"
    image, spec = b.images[name], b.envs[name]
    store_dir = str(b.store.resolve())
    if name == "medium":
        cmds = {"python -c pass": "python -c pass", "import numpy, pandas": 'python -c "import numpy, pandas"'}
    else:
        cmds = {"true": "true", "hello": "hello"}
    # the same env unpacked into the store directory, as a conda env would live there
    unpacked = b.store / "unpacked" / image.stem
    if not unpacked.exists():
        log(f"metadata storm: unpacking {image.name} to {unpacked}")
        tmp = unpacked.with_name(unpacked.name + ".tmp")
        rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        run(["unsquashfs", "-q", "-n", "-no-xattrs", "-o", str(PARTITION_OFFSET), "-d", str(tmp), str(image)])
        tmp.rename(unpacked)
    image_top = set(os.listdir(unpacked))
    home = os.environ.get("HOME", "/root")
    cwd = str(b.ws)
    bound = ["/proc", "/sys", "/dev", "/tmp", "/var/tmp", home, cwd, "/etc/resolv.conf", "/etc/hosts", "/etc/localtime"]

    def dir_argv(cmd: str) -> list[str]:
        """bwrap over the unpacked directory: the image's root entries bound one by one
        (what `apptainer exec` of a sandbox directory does), same env scripts."""
        argv = ["bwrap", "--tmpfs", "/"]
        for e in sorted(image_top):
            src = unpacked / e
            if e in ("proc", "sys", "dev", "tmp"):
                continue
            if src.is_symlink():
                argv += ["--symlink", os.readlink(src), "/" + e]
            else:
                argv += ["--ro-bind", str(src), "/" + e]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", cwd, cwd, "--chdir", cwd,
                 "--remount-ro", "/", "--clearenv", "--setenv", "HOME", home, "--setenv", "LANG", "C",
                 "/bin/sh", "-c", 'for f in /.singularity.d/env/*.sh; do . "$f"; done; exec bash -c "$1"', "sh", cmd]  # fmt: skip
        return argv

    sif_env = _plugin_env(spec, b.store, runtime="bwrap", gpu="never")
    modes = {
        "SIF (nixsnake bwrap runtime)": lambda cmd: ["bash", "-c", sif_env.decorate_shellcmd(cmd)],
        "unpacked directory (bwrap)": dir_argv,
    }
    out: dict[str, Any] = {
        "env": name,
        "store_dir": store_dir,
        "commands": cmds,
        "image_root_entries": sorted(image_top),
    }
    traces = b.workdir / "traces"
    traces.mkdir(exist_ok=True)
    counts: dict[str, dict[str, Any]] = {}
    classify = {"store_dir": store_dir, "image_top": image_top, "bound": bound}
    for mode, mk in modes.items():
        for label, cmd in cmds.items():
            log(f"metadata storm: strace {mode}: {label} ({trace_reps}x)")
            per: list[dict[str, int]] = []
            for i in range(trace_reps):
                tf = traces / f"{len(counts)}-{i}.txt"
                argv = [
                    "strace",
                    "-f",
                    "-qq",
                    "-y",
                    "-e",
                    "trace=%file,%process,pread64",
                    "-o",
                    str(tf),
                    "--",
                    *mk(cmd),
                ]
                with FuseBroker(b.workdir) as broker:
                    run(argv, cwd=cwd, env=broker.env())
                    fuse_traces = broker.collect()
                c = Counter(_classify(tf, **classify))
                for ft in fuse_traces:  # squashfuse's own calls: host side
                    c.update({f"squashfuse: {k}": v for k, v in _classify(ft, **classify).items()})
                    c["store directory (host path)"] += _classify(ft, **classify).get("store directory (host path)", 0)
                    c["image file reads (pread64)"] += _classify(ft, **classify).get("image file reads (pread64)", 0)
                per.append(dict(c))
            keys = sorted({k for p in per for k in p})
            stats = {k: summarize([p.get(k, 0) for p in per], unit="calls") for k in keys}
            reach = [p.get("store directory (host path)", 0) + (p.get("inside: image paths", 0) if mode.startswith("unpacked") else 0)
                     for p in per]  # fmt: skip
            counts[f"{mode} | {label}"] = {"mode": mode, "command": label, "calls": stats,
                                           "reach_store_dir": summarize(reach, unit="calls")}  # fmt: skip
    out["counts"] = counts
    log(f"metadata storm: timing without strace ({reps} reps)")
    fns = {f"{mode} | {label}": (lambda m=mk, c=cmd: timed_run(m(c), cwd=cwd))
           for mode, mk in modes.items() for label, cmd in cmds.items()}  # fmt: skip
    t = interleaved(fns, reps, warmup=1)
    out["times"] = {k: summarize(v) for k, v in t.items()}
    heavy = list(cmds)[-1]
    sif = counts[f"SIF (nixsnake bwrap runtime) | {heavy}"]["reach_store_dir"]["median"]
    dirc = counts[f"unpacked directory (bwrap) | {heavy}"]["reach_store_dir"]["median"]
    out["ratio_dir_to_sif_calls"] = dirc / sif if sif else float("inf")
    return out


# ------------------------------------------------------------------- 5. image size


def image_size(b: Bench, reps: int, compressions: list[str]) -> dict[str, Any]:
    """Squashfs size and pack time per compression vs the closure's NAR size."""
    from snakemake_deploy_nixsnake.config import COMPRESSIONS
    from snakemake_deploy_nixsnake.image.squashfs import pack_squashfs

    name = "medium" if "medium" in b.images else "tiny"
    closure = _closure(b.images[name])
    nar = nar_size(closure)
    out: dict[str, Any] = {"env": name, "closure_paths": len(closure), "nar_bytes": nar, "by_compression": {}}
    tmp = b.workdir / "size"
    tmp.mkdir(exist_ok=True)
    for comp in compressions:
        level = COMPRESSIONS[comp][0]
        label = f"{comp}-{level}" if level is not None else comp
        log(f"image size: {name} with {label} ({reps} reps)")
        sizes: list[int] = []

        def once() -> float:
            f = tmp / "x.sqfs"
            t = timed(lambda: pack_squashfs(f, closure, [], compression=comp))
            sizes.append(f.stat().st_size)
            f.unlink()
            return t

        t = summarize([once() for _ in range(reps)])
        assert len(set(sizes)) == 1, sizes  # reproducible: same bytes every time
        out["by_compression"][label] = {
            "default": comp == "zstd",
            "pack_time": t,
            "squashfs_bytes": sizes[0],
            "ratio_to_nar": sizes[0] / nar,
            "nar_mib_per_s": nar / 2**20 / t["median"],
        }
    out["all_envs_default_compression"] = {
        n: {"nar_bytes": nar_size(_closure(img)), "image_bytes": img.stat().st_size,
            "ratio_to_nar": img.stat().st_size / nar_size(_closure(img))}
        for n, img in b.images.items()
    }  # fmt: skip
    rmtree(tmp)
    return out
