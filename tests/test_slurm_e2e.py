"""The example workflow on the real one-node SLURM cluster (.ci/slurm-up.sh), with released
Snakemake, snakemake-executor-plugin-slurm, the `container:` path and the apptainer TEST
STAND-IN (tests/standin) on PATH.

Asserted:
- the images were built once, on the submitting host, before any job was submitted
  (store metadata `built_at` <= every job's SubmitTime; one nix-build per image);
- no job ran nix (logging nix shims first on PATH record $SLURM_JOB_ID; PATH reaches the
  jobs because the executor submits with --export=ALL);
- every job ran as a SLURM job inside the image of its own env file (the rules' proofs);
- the GPU rule got --gres=gpu:1 (`scontrol show job`, finished jobs stay visible for
  MinJobAge=3600) and its apptainer call had --nv (the stand-in's log; NIXSNAKE_STANDIN_LOG
  reaches the jobs the same way);
- re-running builds nothing: "Nothing to be done", and `--forcerun gpu_check` runs a new
  job without any nix call;
- the annotation stage runs as one SLURM job per chunk (CHUNKS of them), several in flight
  at once (submitted before the others ended) and running side by side on the node.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from example_helpers import (
    ENV_NAMES,
    STANDIN,
    base_env,
    check_committed_locks,
    check_proofs,
    check_results,
    chunk_names,
    copy_example,
    nix_calls,
    nix_shims,
    proof_files,
    read_kv,
    standin_execs,
)


def _slurm_up() -> bool:
    try:
        return subprocess.run(["scontrol", "ping"], check=False, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.nix,
    pytest.mark.network,
    pytest.mark.skipif(not _slurm_up(), reason="no SLURM cluster (`scontrol ping` fails); run .ci/slurm-up.sh"),
]

#: Hard limit per snakemake call: with a broken status command snakemake waits forever
#: and ignores SIGTERM (tests/data/slurm/README.md, trap 1), so it is SIGKILLed.
RUN_TIMEOUT = 600
#: annotation chunks (config chunks): more than the profile's 4 jobs in flight
CHUNKS = 6


def run_snakemake(wf: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--slurm-keep-successful-logs", *args]
    proc = subprocess.Popen(
        cmd, cwd=wf, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        _cancel_jobs_of(wf)
        pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT}s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _cancel_jobs_of(wf: Path) -> None:
    """scancel the jobs still queued/running in this workflow copy (never anyone else's)."""
    cp = subprocess.run(["squeue", "-h", "-t", "PD,R,CG", "-o", "%i %Z"], check=False, capture_output=True, text=True)
    ids = [line.split()[0] for line in cp.stdout.splitlines() if len(line.split()) == 2 and line.split()[1] == str(wf)]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def show_job(job_id: str) -> str:
    cp = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], check=False, capture_output=True, text=True, timeout=30
    )
    assert cp.returncode == 0, f"scontrol show job {job_id}: {cp.stderr} (MinJobAge too small?)"
    return cp.stdout


def job_field(job: str, key: str) -> str:
    m = re.search(rf"(?:^|\s){key}=(\S*)", job)
    assert m, f"{key} not in {job}"
    return m.group(1)


def local_epoch(scontrol_time: str) -> float:
    """scontrol prints local time without a zone."""
    return time.mktime(time.strptime(scontrol_time, "%Y-%m-%dT%H:%M:%S"))


def test_example_workflow_on_slurm(tmp_path):
    wf = copy_example(tmp_path / "wf")
    store = wf / ".snakemake" / "nixsnake-store"
    nix_log = tmp_path / "nix-calls.log"
    standin_log = tmp_path / "standin.log"
    env = base_env(tmp_path)
    env["PATH"] = f"{nix_shims(tmp_path / 'shims', nix_log)}:{STANDIN}:{env['PATH']}"
    env["NIXSNAKE_STANDIN_LOG"] = str(standin_log)
    for var in [k for k in env if k.startswith("SLURM_")]:  # we are the head node, not a job
        del env[var]
    check_committed_locks(wf, env)

    t0 = time.time()
    cp = run_snakemake(wf, env, "--config", f"chunks={CHUNKS}")
    took = time.time() - t0
    assert cp.returncode == 0, cp.stdout[-6000:]

    # -- every job ran as a SLURM job inside its own image -----------------------------------
    proofs = check_proofs(wf, store, CHUNKS)
    check_results(wf, CHUNKS)
    job_ids = {name: kv["slurm_job_id"] for name, kv in proofs.items()}
    assert all(j.isdigit() for j in job_ids.values()), job_ids
    assert len(set(job_ids.values())) == len(job_ids), f"one SLURM job per rule instance: {job_ids}"
    jobs = {name: show_job(j) for name, j in job_ids.items()}
    for name, job in jobs.items():
        assert job_field(job, "JobState") == "COMPLETED", (name, job)
        assert job_field(job, "WorkDir") == str(wf)

    # -- the annotation: one job per chunk, several in flight at once --------------------------
    annotate = [jobs[f"annotate-{c}"] for c in chunk_names(CHUNKS)]
    spans = [
        (local_epoch(job_field(j, "SubmitTime")), local_epoch(job_field(j, "StartTime")),
         local_epoch(job_field(j, "EndTime")))
        for j in annotate
    ]  # fmt: skip
    in_flight = max(sum(1 for s, _, e in spans if s <= t < e) for t, _, _ in spans)
    side_by_side = max(sum(1 for _, b, e in spans if b <= t < e) for _, t, _ in spans)
    assert in_flight >= 3, f"annotate jobs in flight at once: {in_flight} ({spans})"
    assert side_by_side >= 2, f"annotate jobs running at once: {side_by_side} ({spans})"

    # -- images: built once, on this (submitting) host, before the first submission ------------
    metas = [json.loads(p.read_text()) for p in (store / "meta").glob("*.json")]
    images = list((store / "images").glob("*.sif"))
    assert len(metas) == len(images) == len(ENV_NAMES)
    calls = nix_calls(nix_log)
    assert [c[1] for c in calls].count("nix-build") == len(ENV_NAMES), calls
    assert all(c[0] == "none" for c in calls), f"nix ran inside a SLURM job: {[c for c in calls if c[0] != 'none']}"
    first_submit = min(local_epoch(job_field(j, "SubmitTime")) for j in jobs.values())
    first_start = min(int(kv["started_epoch"]) for kv in proofs.values())
    for meta in metas:
        built = calendar.timegm(time.strptime(meta["built_at"], "%Y-%m-%dT%H:%M:%SZ"))
        assert built <= first_submit, (meta["built_at"], first_submit)
        assert re.fullmatch(rf"[^@]+@{re.escape(socket.gethostname())} \(nixsnake [^)]+\)", meta["built_by"]), meta
    assert max(int(p.stat().st_mtime) for p in images) <= first_start

    # -- the GPU rule: --gres=gpu:1 from SLURM, --nv to apptainer -------------------------------
    gpu_job = jobs["gpu_check"]
    assert re.search(r"TresPerNode=\S*gres[:/]gpu:1\b", gpu_job), gpu_job
    for name, job in jobs.items():
        if name != "gpu_check":  # only the GPU rule asks for a GPU
            assert not re.search(r"TresPerNode=\S*gpu", job), (name, job)
    execs = standin_execs(standin_log)  # written by the jobs: the variable reached them
    assert len(execs) == len(proofs), execs
    gpu_image = proofs["gpu_check"]["container"]
    [gpu_exec] = [e for e in execs if gpu_image in e]
    assert "--nv" in gpu_exec[: gpu_exec.index(gpu_image)], gpu_exec
    for e in execs:  # released snakemake's call shape: exec --home <workdir> ..., no --cleanenv
        assert e[1:4] == ["exec", "--home", str(wf)] and "--cleanenv" not in e, e

    # -- re-running builds nothing ------------------------------------------------------------
    image_state = {p: p.stat().st_mtime_ns for p in images}
    again = run_snakemake(wf, env, "--config", f"chunks={CHUNKS}")
    assert again.returncode == 0, again.stdout[-4000:]
    assert "Nothing to be done" in again.stdout
    forced = run_snakemake(wf, env, "--forcerun", "gpu_check", "--config", f"chunks={CHUNKS}")
    assert forced.returncode == 0, forced.stdout[-4000:]
    new_gpu = read_kv(proof_files(wf, CHUNKS)["gpu_check"])
    assert new_gpu["slurm_job_id"].isdigit() and new_gpu["slurm_job_id"] != job_ids["gpu_check"]
    assert nix_calls(nix_log) == calls, "a re-run called nix"
    assert {p: p.stat().st_mtime_ns for p in images} == image_state
    print(
        f"first run {took:.0f}s, {len(jobs)} SLURM jobs; annotate: {in_flight} in flight, {side_by_side} running at once"
    )
