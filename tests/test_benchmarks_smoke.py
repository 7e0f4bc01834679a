"""Smoke test of the benchmark command (benchmarks/README.md): it runs on the tiny env
with minimal repetitions and writes a valid results document. Issue #6 keeps timing
thresholds out of the test suite: nothing here compares a time with a limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.nix]

STAT_KEYS = {"n", "median", "q1", "q3", "min", "max", "unit", "samples"}


def _is_stat(x) -> bool:
    return isinstance(x, dict) and set(x) >= STAT_KEYS and x["n"] >= 1 and x["min"] <= x["median"] <= x["max"]


@pytest.mark.skipif(not all(shutil.which(t) for t in ("strace", "bwrap", "squashfuse_ll", "mksquashfs", "unsquashfs")),
                    reason="the benchmarks need strace, bubblewrap, squashfuse and squashfs-tools")  # fmt: skip
def test_quick_benchmark_writes_valid_json(tmp_path):
    out = tmp_path / "results"
    docs = tmp_path / "performance.md"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--no-plot",
         "--workdir", str(tmp_path / "work"), "--out", str(out), "--docs", str(docs)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    [result] = out.glob("*.json")
    doc = json.loads(result.read_text())

    assert doc["schema"] == 1 and doc["quick"] is True
    assert {"date", "command", "machine", "parameters", "wall_seconds", "setup", "results", "headline"} <= set(doc)
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["cpu_model"] is not None
    res = doc["results"]
    assert set(res) == {"cold_build", "warm_path", "job_start", "metadata_storm", "image_size", "end_to_end"}

    cold = res["cold_build"]["tiny"]
    assert _is_stat(cold["nixsnake_build"]) and _is_stat(cold["raw_steps"]) and cold["ratio"] > 0
    assert set(cold["raw_step_breakdown"]) == {"nix-build", "nix-store -qR", "mksquashfs", "write+fsync"}
    assert cold["closure_nar_bytes"] > 0 and cold["image_bytes"] > 0

    warm = res["warm_path"]
    assert _is_stat(warm["single"]["nixsnake build (image present)"])
    assert warm["single"]["python -c pass"]["ratio_to_python"] == 1.0
    for k in ("nixsnake --version", "nixsnake check ENV"):  # start-up, vs python -c pass
        assert _is_stat(warm["single"][k]) and warm["single"][k]["ratio_to_python"] > 0, k
    dag = warm["dag"]
    assert dag["jobs"] > 0 and dag["env_files"] == 10
    assert _is_stat(dag["snakemake -n (no software directive)"])
    assert dag["plugin: Env + hash + decorate per job"]["ratio_to_snakemake_n"] > 0

    start = res["job_start"]["tiny"]
    for k in ("host: bash -c true", "bare container (squashfuse + bwrap)", "nixsnake bwrap runtime",
              "nixsnake apptainer runtime (stand-in)"):  # fmt: skip
        assert _is_stat(start[k]), k

    meta = res["metadata_storm"]
    sif = meta["counts"]["SIF (nixsnake bwrap runtime) | hello"]
    unpacked = meta["counts"]["unpacked directory (bwrap) | hello"]
    assert _is_stat(sif["reach_store_dir"]) and _is_stat(unpacked["reach_store_dir"])
    assert sif["calls"]["image file reads (pread64)"]["median"] > 0  # squashfuse read the image

    size = res["image_size"]
    assert size["nar_bytes"] > 0
    assert {"zstd-3", "gzip-9"} <= set(size["by_compression"])
    assert all(0 < v["ratio_to_nar"] < 2 for v in size["by_compression"].values())

    e2e = res["end_to_end"]  # with snakemake's plugin branch when this machine has it, else why not
    if "skipped" in e2e:
        assert "plugin branch" in e2e["skipped"], e2e
    else:
        assert e2e["snakemake"]["snakemake"] and e2e["snakemake"]["nixsnake"].startswith(str(REPO))
        dry = e2e["dry_run"]
        assert dry["env_files"] == 10 and dry["ratio"] > 0
        # Snakemake makes one Env per env file, and the plugin parses each file once
        calls = dry["plugin_calls"]
        assert calls["Env.__post_init__"] == calls["parse_spec"] == calls["parse_lock"] == 10, calls
        assert dry["plugin_seconds"]["cpu"]["total: import + Env methods"] > 0
        assert _is_stat(dry["snakemake -n --sdm nixsnake"]) and _is_stat(dry["snakemake -n, no software directive"])
        real = e2e["real_run"]
        assert real["plugin_calls"]["Env.decorate_shellcmd"] == real["jobs"], real["plugin_calls"]
        for k in ("no --sdm", "--sdm nixsnake, bwrap runtime", "--sdm nixsnake, apptainer stand-in"):
            assert _is_stat(real[k]) and _is_stat(real[k]["cpu_s"]["snakemake process"]), k

    table = result.with_suffix(".md").read_text()
    assert "## 1. Cold build" in table and "| tiny |" in table
    assert docs.exists() and doc["date"] in docs.read_text()


def test_end_to_end_suite_says_why_it_was_skipped(tmp_path):
    """Without snakemake's plugin branch the end-to-end suite is skipped, and the results
    and the docs page say so (here forced with --snakemake-branch-python none)."""
    out, docs = tmp_path / "results", tmp_path / "performance.md"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--only", "e2e", "--no-plot",
         "--snakemake-branch-python", "none", "--workdir", str(tmp_path / "work"), "--out", str(out),
         "--docs", str(docs)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    [result] = out.glob("*.json")
    doc = json.loads(result.read_text())
    assert doc["results"] == {"end_to_end": {"skipped": "not asked for (--snakemake-branch-python none)"}}
    assert "end to end: skipped: not asked for" in r.stdout
    assert "Skipped in this run" in docs.read_text()


def test_unusable_snakemake_branch_python_stops_the_benchmark(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--only", "e2e",
         "--snakemake-branch-python", str(tmp_path / "no-such-python"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode != 0
    assert "--snakemake-branch-python" in r.stderr and "cannot run" in r.stderr
