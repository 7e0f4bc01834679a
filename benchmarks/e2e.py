"""Suite 6, end to end: what ``--sdm nixsnake`` costs a real Snakemake workflow.

Released Snakemake cannot load software-deployment plugins; the plugin API lives on
snakemake's ``feat/software-deployment-plugins`` branch. This suite runs only when a
Python with that branch is given (``--snakemake-branch-python``,
``$NIXSNAKE_BENCH_SNAKEMAKE_PYTHON``) or found (this Python, then the venv of the
README's recipe); otherwise it records that it was skipped and why. The branch's
Snakemake imports nixsnake from this checkout (the benchmark puts it first on
``PYTHONPATH``), whatever nixsnake the venv has installed; the probe checks that.

Two measurements, each interleaved with its baseline:

- ``snakemake -n`` of a generated workflow (default 10,000 jobs, 10 rules, each rule
  with its own env file: ``software: nixsnake(spec=...)``) with ``--sdm nixsnake``, vs
  the same workflow without any ``software:`` directive;
- a real run (``--cores 2``) of the same workflow with 1,000 trivial jobs, with the
  bwrap runtime (and, optionally, the apptainer test stand-in) vs without ``--sdm``.
  Besides wall time, the Snakemake process's own CPU time (nixsnake's per-job Python
  work happens there) is reported apart from its jobs' CPU time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_setup import CLI, REPO, Bench
from common import interleaved, log, ratio, rmtree, run, summarize, timed, timed_run

STANDIN = REPO / "tests" / "standin"
ENV_VAR = "NIXSNAKE_BENCH_SNAKEMAKE_PYTHON"
#: Where benchmarks/README.md's recipe puts the branch's venv.
DEFAULT_VENV_PYTHON = Path("/tmp/smk-venv/bin/python")

_PROBE = r"""
import json, importlib.metadata as md
out = {}
try:
    import snakemake
    out["snakemake"] = md.version("snakemake")
except Exception as e:
    out["error"] = f"no snakemake ({type(e).__name__}: {e})"
else:
    try:
        from snakemake.deployment import SoftwareDeploymentManager  # noqa: F401 (the plugin branch only)
        from snakemake_interface_software_deployment_plugins.registry import SoftwareDeploymentPluginRegistry
        out["interface"] = md.version("snakemake-interface-software-deployment-plugins")
        out["plugins"] = sorted(SoftwareDeploymentPluginRegistry().plugins)
    except Exception as e:
        out["error"] = (f"snakemake {out['snakemake']} cannot load software-deployment plugins "
                        f"({type(e).__name__}: {e}); it is not snakemake's feat/software-deployment-plugins branch")
    else:
        try:
            import snakemake_deploy_nixsnake, snakemake_software_deployment_plugin_nixsnake as plugin
            out["nixsnake"] = snakemake_deploy_nixsnake.__file__
            out["plugin_module"] = plugin.__file__
        except Exception as e:  # the branch is there, nixsnake is broken: not a reason to skip
            out["error"] = f"nixsnake's plugin does not import ({type(e).__name__}: {e})"
            out["broken"] = True
print(json.dumps(out))
"""


def probe(python: str) -> dict[str, Any]:
    """What ``python`` offers: snakemake's version, the interface, the plugins it finds,
    the nixsnake it imports; ``error`` says why it cannot run the suite."""
    pythonpath = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
    try:
        r = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "PYTHONPATH": pythonpath}, cwd="/")  # fmt: skip
    except OSError as exc:
        return {"python": python, "error": f"cannot run {python}: {exc.strerror}"}
    try:
        info = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"python": python, "error": f"{python} failed: {(r.stderr or r.stdout).strip()[-300:]}"}
    info["python"] = python
    if "error" not in info:
        if "nixsnake" not in info["plugins"]:
            info["error"] = f"snakemake {info['snakemake']} finds no nixsnake plugin (plugins: {info['plugins']})"
        else:
            for key in ("nixsnake", "plugin_module"):
                if not Path(info[key]).resolve().is_relative_to(REPO):
                    info["error"] = f"it imports {info[key]}, not this checkout's ({REPO})"
    return info


def find_branch_python(explicit: str | None) -> dict[str, Any]:
    """The Python to run the plugin branch's snakemake with: ``explicit`` (an error if
    unusable; ``none``: skip), else the first usable of $NIXSNAKE_BENCH_SNAKEMAKE_PYTHON,
    this Python, the README recipe's venv. Returns the probe of the one chosen, or
    ``{"skipped": reason}``."""
    if explicit == "none":
        return {"skipped": "not asked for (--snakemake-branch-python none)"}
    if explicit:
        info = probe(explicit)
        if "error" in info:
            raise SystemExit(f"--snakemake-branch-python {explicit}: {info['error']}")
        return info
    candidates = [c for c in (os.environ.get(ENV_VAR), sys.executable, str(DEFAULT_VENV_PYTHON)) if c]
    tried = []
    for c in dict.fromkeys(candidates):
        if c != sys.executable and not Path(c).exists():
            tried.append(f"{c}: does not exist")
            continue
        info = probe(c)
        if "error" not in info:
            return info
        if info.get("broken"):  # snakemake's branch is there: a broken nixsnake must not read as "skipped"
            raise SystemExit(f"{c}: {info['error']}")
        tried.append(f"{c}: {info['error']}")
    return {
        "skipped": "no Python with snakemake's plugin branch (feat/software-deployment-plugins) was found; "
        "make one as benchmarks/README.md says and pass --snakemake-branch-python PATH. Tried: " + "; ".join(tried)
    }


# --------------------------------------------------------------------------- workflows


def snakefile(n_jobs: int, n_rules: int, software: bool) -> str:
    """``n_rules`` rules of ``n_jobs // n_rules`` jobs each; rule k uses envs/e{k}.toml.
    The job prints $BENCH_VARIANT, which only the env's image sets: the outputs show
    where each job ran."""
    sw = "        software: nixsnake(spec=f'envs/e{k}.toml')\n" if software else ""
    return (
        f"N = {n_jobs}\nK = {n_rules}\n"
        "rule all:\n    input: expand('out/{k}/{i}.txt', k=range(K), i=range(N // K))\n"
        "for k in range(K):\n"
        "    rule:\n"
        "        name: f'step{k}'\n"
        "        output: f'out/{k}/{{i}}.txt'\n"
        f"{sw}"
        "        shell: 'echo {wildcards.i} ${{BENCH_VARIANT:-none}} > {output}'\n"
    )


def make_workflow(b: Bench, path: Path, n_jobs: int, software: bool) -> Path:
    from snakemake_deploy_nixsnake.spec import lock_path_for

    rmtree(path)
    (path / "envs").mkdir(parents=True)
    (path / "Snakefile").write_text(snakefile(n_jobs, len(b.dag_envs), software))
    # the benchmark workspace's settings, with its store as an absolute path
    text = (b.ws / "nixsnake.toml").read_text().replace('store = "store"', f'store = "{b.store}"')
    (path / "nixsnake.toml").write_text(text)
    if software:
        for k, env in enumerate(b.dag_envs):
            shutil.copyfile(env, path / "envs" / f"e{k}.toml")
            shutil.copyfile(lock_path_for(env), path / "envs" / f"e{k}.lock.toml")
    return path


#: Runs snakemake in this process and writes its own and its children's CPU seconds
#: (getrusage) to $NIXSNAKE_BENCH_RUSAGE at exit. With $NIXSNAKE_BENCH_COUNTS (untimed
#: runs only) it also counts the plugin's calls in this process: Env constructions, the
#: per-job calls, and the reads and parses of settings, env files and locks.
WRAPPER = """\
import atexit, collections, json, os, resource, sys, time

counts, seconds, cpu = collections.Counter(), collections.Counter(), collections.Counter()

def _dump():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["NIXSNAKE_BENCH_RUSAGE"], "w") as f:
        json.dump({"self": s.ru_utime + s.ru_stime, "children": c.ru_utime + c.ru_stime, "calls": counts,
                   "seconds": seconds, "cpu_seconds": cpu}, f)

if os.environ.get("NIXSNAKE_BENCH_COUNTS"):
    t0, c0 = time.perf_counter(), time.thread_time()
    from snakemake_deploy_nixsnake import plugin
    seconds["import the plugin"] = time.perf_counter() - t0
    cpu["import the plugin"] = time.thread_time() - c0

    def _count(owner, name, key):
        orig = getattr(owner, name)

        def wrapper(*a, **kw):
            counts[key] += 1
            t, c = time.perf_counter(), time.thread_time()
            try:
                return orig(*a, **kw)
            finally:
                seconds[key] += time.perf_counter() - t  # wall: includes waiting for the GIL
                cpu[key] += time.thread_time() - c  # this thread's CPU: the plugin's own work

        setattr(owner, name, wrapper)

    for name in ("__post_init__", "record_hash", "decorate_shellcmd", "contains_executable", "deploy"):
        _count(plugin.Env, name, "Env." + name)
    for name in ("load_config", "parse_spec", "parse_lock"):
        _count(plugin, name, name)

atexit.register(_dump)
sys.argv[0] = "snakemake"
from snakemake.cli import main
main()
"""


def _clean_run(wf: Path) -> None:
    """Forget the outputs and Snakemake's records of them; keep the deployments."""
    rmtree(wf / "out")
    for d in ("metadata", "incomplete", "log", "locks"):
        rmtree(wf / ".snakemake" / d)


# --------------------------------------------------------------------------- the suite


def end_to_end(b: Bench, branch: dict[str, Any], dag_jobs: int, dag_reps: int, run_jobs: int, run_reps: int,
               standin: bool) -> dict[str, Any]:  # fmt: skip
    if "skipped" in branch:
        log(f"end to end: skipped: {branch['skipped']}")
        return {"skipped": branch["skipped"]}
    py = branch["python"]
    out: dict[str, Any] = {
        "snakemake": {k: branch[k] for k in ("python", "snakemake", "interface", "nixsnake", "plugin_module")}
    }
    root = b.workdir / "e2e"
    root.mkdir(exist_ok=True)
    smk = [py, "-m", "snakemake"]
    sdm = ["--sdm", "nixsnake"]

    # --- snakemake -n ---------------------------------------------------------------
    log(f"end to end: snakemake -n, {dag_jobs} jobs over {len(b.dag_envs)} env files ({dag_reps} reps)")
    with_sw = make_workflow(b, root / "dag-software", dag_jobs, software=True)
    without = make_workflow(b, root / "dag-plain", dag_jobs, software=False)
    wrapper = root / "snakemake_wrapper.py"
    wrapper.write_text(WRAPPER)
    ru = root / "rusage.json"

    def counted(argv: list[str], wf: Path, env: dict[str, str] | None = None) -> tuple[str, dict[str, int], dict]:
        """One untimed run with the plugin's calls counted and timed: (stdout, counts,
        {"wall": seconds, "cpu": the calling thread's CPU seconds}). The plugin's own time
        in Snakemake's process is the import plus its Env methods (they do not call each
        other; the module functions counted run inside them); deploy() is apart (builds)."""
        ru.unlink(missing_ok=True)
        e = {**(env or os.environ), "NIXSNAKE_BENCH_RUSAGE": str(ru), "NIXSNAKE_BENCH_COUNTS": "1"}
        text = run([py, str(wrapper), *argv], cwd=wf, env=e).stdout
        data = json.loads(ru.read_text())
        secs: dict[str, dict[str, float]] = {}
        for kind, key in (("wall", "seconds"), ("cpu", "cpu_seconds")):
            d = dict(sorted(data[key].items()))
            d["total: import + Env methods"] = sum(
                v for k, v in d.items() if k.startswith(("Env.", "import")) and k != "Env.deploy"
            )
            secs[kind] = d
        return text, dict(sorted(data["calls"].items())), secs

    # once, not timed: the plugin is active and sees every env file (its calls counted);
    # the plain one runs
    seen, calls, secs = counted(["-n", "--cores", "1", "all", *sdm], with_sw)
    if f"deploy {len(b.dag_envs)} software environments" not in seen:
        raise RuntimeError(f"snakemake -n --sdm nixsnake did not report {len(b.dag_envs)} envs:\n{seen[-2000:]}")
    log(f"  the plugin's calls in snakemake -n: {calls}; its CPU time there: "
        f"{secs['cpu']['total: import + Env methods']:.3f} s")  # fmt: skip
    run([*smk, "-n", "--cores", "1", "--quiet", "all"], cwd=without)

    def dry(wf: Path, extra: list[str]):
        return lambda: timed_run([*smk, "-n", "--cores", "1", "--quiet", "all", *extra], cwd=wf)

    t = interleaved(
        {"snakemake -n, no software directive": dry(without, []),
         "snakemake -n --sdm nixsnake": dry(with_sw, sdm)}, dag_reps,
    )  # fmt: skip
    st = {k: summarize(v) for k, v in t.items()}
    base = st["snakemake -n, no software directive"]
    out["dry_run"] = {
        "jobs": dag_jobs,
        "env_files": len(b.dag_envs),
        **{k: {**v, "ratio": ratio(v, base), "per_job_us": v["median"] / dag_jobs * 1e6} for k, v in st.items()},
    }
    withs = st["snakemake -n --sdm nixsnake"]
    out["dry_run"]["plugin_calls"] = calls
    out["dry_run"]["plugin_seconds"] = secs
    out["dry_run"]["ratio"] = ratio(withs, base)
    out["dry_run"]["difference_s"] = withs["median"] - base["median"]
    log(f"  -n: {base['median']:.2f} s plain, {withs['median']:.2f} s with --sdm nixsnake, "
        f"{out['dry_run']['ratio']:.3f}x")  # fmt: skip

    # --- a real run -----------------------------------------------------------------
    log(f"end to end: real run, {run_jobs} jobs, --cores 2 ({run_reps} reps)")
    run_sw = make_workflow(b, root / "run-software", run_jobs, software=True)
    run_plain = make_workflow(b, root / "run-plain", run_jobs, software=False)
    cpu: dict[str, dict[str, list[float]]] = {}
    standin_path = {**os.environ, "PATH": f"{STANDIN}:{os.environ['PATH']}"}
    variants: dict[str, tuple[Path, list[str], dict[str, str] | None, str]] = {
        "no --sdm": (run_plain, [], None, "none"),
        "--sdm nixsnake, bwrap runtime": (
            run_sw, [*sdm, "--sdm-nixsnake-runtime", "bwrap", "--sdm-nixsnake-gpu", "never"], None, "k"),
    }  # fmt: skip
    if standin:
        variants["--sdm nixsnake, apptainer stand-in"] = (
            run_sw, [*sdm, "--sdm-nixsnake-runtime", "apptainer", "--sdm-nixsnake-gpu", "never"], standin_path, "k")  # fmt: skip

    def real(name: str, wf: Path, extra: list[str], env: dict[str, str] | None, variant: str):
        def once() -> float:
            _clean_run(wf)
            ru.unlink(missing_ok=True)
            e = {**(env or os.environ), "NIXSNAKE_BENCH_RUSAGE": str(ru)}
            t = timed(lambda: run([py, str(wrapper), "--cores", "2", "--quiet", "all", *extra], cwd=wf, env=e))
            _check_outputs(wf, run_jobs, len(b.dag_envs), variant)
            u = json.loads(ru.read_text())
            c = cpu.setdefault(name, {"snakemake process": [], "its jobs (getrusage children)": []})
            c["snakemake process"].append(u["self"])
            c["its jobs (getrusage children)"].append(u["children"])
            return t

        return once

    fns = {name: real(name, *v) for name, v in variants.items()}
    # the images first (a head-node build, not what is measured), then one warm-up run of
    # each variant, not timed; the bwrap one with the plugin's calls counted
    run([*CLI, "build", *(f"envs/e{k}.toml" for k in range(len(b.dag_envs)))], cwd=run_sw)
    for name, fn in fns.items():
        log(f"  warm-up: {name}")
        if name != "--sdm nixsnake, bwrap runtime":
            fn()
            continue
        wf, extra, env, variant = variants[name]
        _clean_run(wf)
        _, run_calls, run_secs = counted(["--cores", "2", "--quiet", "all", *extra], wf, env)
        _check_outputs(wf, run_jobs, len(b.dag_envs), variant)
        log(f"  the plugin's calls in that run: {run_calls}; its CPU time there: "
            f"{run_secs['cpu']['total: import + Env methods']:.3f} s")  # fmt: skip
    cpu.clear()
    t = interleaved(fns, run_reps)
    st = {k: summarize(v) for k, v in t.items()}
    base = st["no --sdm"]
    out["real_run"] = {
        "jobs": run_jobs,
        "cores": 2,
        "gpu": "never",
        "plugin_calls": run_calls,
        "plugin_seconds": run_secs,
        **{
            k: {**v, "ratio": ratio(v, base), "per_job_ms": v["median"] / run_jobs * 1000,
                "adds_per_job_ms": (v["median"] - base["median"]) / run_jobs * 1000,
                "cpu_s": {what: summarize(xs) for what, xs in cpu[k].items()}}
            for k, v in st.items()
        },
    }  # fmt: skip
    for k, v in out["real_run"].items():
        if isinstance(v, dict) and "median" in v:
            log(f"  {k}: {v['median']:.1f} s ({v['ratio']:.2f}x, {v['adds_per_job_ms']:+.1f} ms per job)")
    return out


def _check_outputs(wf: Path, n_jobs: int, n_rules: int, variant: str) -> None:
    """Every job ran, and where: in env k's image $BENCH_VARIANT is k, on the host unset."""
    files = sorted((wf / "out").glob("*/*.txt"))
    if len(files) != n_jobs:
        raise RuntimeError(f"{wf}: {len(files)} outputs, expected {n_jobs}")
    for k in range(n_rules):
        sample = (wf / "out" / str(k) / "0.txt").read_text().split()
        want = str(k) if variant == "k" else "none"
        if sample != ["0", want]:
            raise RuntimeError(f"{wf}/out/{k}/0.txt is {sample}, expected ['0', {want!r}]")
