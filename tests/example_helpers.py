"""The example workflow, as the tests run it: where it is, what each rule must leave
behind, and the environment a run gets (shared by test_example_workflow and
test_slurm_e2e)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-workflow"
STANDIN = REPO / "tests" / "standin"
ENV_NAMES = ("simulate", "count", "summary", "plot", "gpu")
#: rule -> (env file, the tool its proof names)
RULES = {
    "simulate": ("simulate.toml", "python"),
    "count": ("count.toml", "gawk"),
    "summarize": ("summary.toml", "python"),
    "plot": ("plot.toml", "Rscript"),
    "gpu_check": ("gpu.toml", "python"),
}
SAMPLES = ("sampleA", "sampleB", "sampleC")


# --- helpers shared with tests/test_slurm_e2e.py ---------------------------------------------


def copy_example(dest: Path) -> Path:
    """A copy of example-workflow/ without run state (its own, empty store)."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".snakemake", "results", "logs"))
    return dest


def env_files(wf: Path) -> list[str]:
    return [f"envs/{n}.toml" for n in ENV_NAMES]


def read_kv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def proof_files(wf: Path) -> dict[str, Path]:
    """Every proof a full run writes: 'simulate-sampleA' -> path."""
    names = [f"{r}-{s}" for r in ("simulate", "count") for s in SAMPLES] + ["summarize", "plot", "gpu_check"]
    return {n: wf / "results" / "proof" / f"{n}.txt" for n in names}


def check_proofs(wf: Path, store: Path) -> dict[str, dict[str, str]]:
    """Assert that every job ran inside the image of its own env file; return the proofs."""
    metas = [json.loads(p.read_text()) for p in (store / "meta").glob("*.json")]
    # the store's meta file names the env files an image was built from
    env_of_image = {m["image_id"]: {Path(f).name for f in m["env_files"]} for m in metas}
    proofs = {}
    for name, path in proof_files(wf).items():
        assert path.exists(), f"missing proof {path}"
        kv = read_kv(path)
        rule = kv["rule"]
        env_file, tool = RULES[rule]
        assert name.split("-")[0] == rule
        assert kv[f"which_{tool}"].startswith("/nix/store/"), (name, kv)
        assert kv["metadata"] == "present", (name, kv)
        assert kv["host_python"] == "invisible", (name, kv)
        assert env_file in env_of_image.get(kv["image_id"], set()), (name, kv, env_of_image)
        assert kv["container"] == str(store / "images" / f"{kv['image_id']}.sif"), (name, kv)
        if tool != "python":  # envs without Python: no python at all (the host's is not visible)
            assert kv["which_python"] == "none", (name, kv)
        proofs[name] = kv
    return proofs


def check_results(wf: Path) -> None:
    summary = (wf / "results" / "summary.tsv").read_text().splitlines()
    header = summary[0].split("\t")
    assert header[0] == "sample" and "ts_tv" in header and "reads_mapped" in header
    assert sorted(line.split("\t")[0] for line in summary[1:]) == list(SAMPLES)
    for line in summary[1:]:
        row = dict(zip(header, line.split("\t")))
        assert row["reads_total"] == "20000"
        assert int(row["snvs"]) + int(row["indels"]) == int(row["variants_total"]) > 0
    assert "pandas 2.2.2" in (wf / "logs" / "summarize.log").read_text()
    assert "numpy 1.26.4" in (wf / "logs" / "simulate-sampleA.log").read_text()
    # real R and ggplot2 (the demo set's are Debian's, copied into the store); before that
    # line R may warn that the job's LANG names a locale the image lacks
    assert (wf / "results" / "plot" / "Rscript-output.txt").read_text().splitlines()[
        -1
    ] == "wrote results/plot/variants.pdf "
    assert (wf / "results" / "plot" / "variants.pdf").read_bytes().startswith(b"%PDF-")
    gpu = read_kv(wf / "results" / "gpu" / "gpu_check.txt")
    assert gpu["verdict"] and "libcuda" in gpu


def nix_shims(shim_dir: Path, log: Path) -> Path:
    """nix, nix-build, nix-store, nix-instantiate on PATH that log "<SLURM_JOB_ID or none>
    <TAB> name <TAB> args" to ``log`` and then run the real tool."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("nix", "nix-build", "nix-store", "nix-instantiate", "nix-shell"):
        real = shutil.which(tool)
        if not real:
            continue
        shim = shim_dir / tool
        shim.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\t%s\\t%s\\n' \"${{SLURM_JOB_ID:-none}}\" {tool} \"$*\" >> '{log}'\n"
            f"exec '{real}' \"$@\"\n"
        )
        shim.chmod(0o755)
    return shim_dir


def nix_calls(log: Path) -> list[tuple[str, str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split("\t", 2)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def standin_execs(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [a for a in (json.loads(line) for line in log.read_text().splitlines()) if len(a) > 1 and "exec" in a[1:4]]


def base_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    # the same private nixsnake cache as conftest's autouse fixture (module fixtures run
    # before it is applied), never the developer's own
    env.setdefault("NIXSNAKE_CACHE_DIR", str(tmp / "nixsnake-cache"))
    env.setdefault("NIXSNAKE_CONFIG", str(tmp / "no-user-config.toml"))
    env.pop("NIXSNAKE_NO_BUILD", None)
    return env


def check_committed_locks(wf: Path, env: dict[str, str]) -> None:
    """The example runs on its committed locks, as the main job does (no re-locking): they
    must be current and name commits that exist in this machine's demo package set."""
    cp = subprocess.run(
        [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", "lock", "--check", *env_files(wf)],
        cwd=wf, env=env, check=False, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
