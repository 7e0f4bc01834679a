"""nixsnake benchmarks: one command, every figure.

    python benchmarks/run.py            # the full run (< 15 min on 2 cores), see README.md
    python benchmarks/run.py --quick    # tiny env, minimal repetitions (the smoke test)

Writes ``<out>/<date>.json`` (every sample), ``<out>/<date>.md`` (the tables),
``<out>/<date>.png`` (if matplotlib is installed: ``pip install -e '.[bench]'``) and
``docs/performance.md`` (the explained figures, from ``benchmarks/performance.md.in``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the nixsnake checkout this benchmark belongs to

import e2e
from bench_setup import prepare
from common import log, machine_info
from report import write_docs, write_markdown, write_plot

SUITES = ("cold", "warm", "start", "meta", "size", "e2e")
SCHEMA = 1

# (start_reps: a job start is ~40 ms and the figures judged are differences of a few ms
# between its rows, on machines whose speed drifts: 100 interleaved rounds, under 2 min)
FULL = {
    "cold_reps": 5, "cold_warmup": 1, "warm_reps": 15, "dag_jobs": 10_000, "dag_reps": 3, "start_reps": 100,
    "meta_reps": 5, "trace_reps": 3, "size_reps": 3, "compressions": ["zstd", "gzip", "lz4", "xz"],
    "e2e_dag_jobs": 10_000, "e2e_dag_reps": 5, "e2e_run_jobs": 1_000, "e2e_run_reps": 3, "e2e_standin": False,
}  # fmt: skip
QUICK = {
    "cold_reps": 1, "cold_warmup": 0, "warm_reps": 2, "dag_jobs": 200, "dag_reps": 1, "start_reps": 2,
    "meta_reps": 1, "trace_reps": 1, "size_reps": 1, "compressions": ["zstd", "gzip"],
    "e2e_dag_jobs": 200, "e2e_dag_reps": 1, "e2e_run_jobs": 20, "e2e_run_reps": 1, "e2e_standin": True,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny env only, minimal repetitions (smoke test)")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of: {', '.join(SUITES)}")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("NIXSNAKE_BENCH_WORKDIR", "/tmp/nixsnake-bench")),
                    help="scratch directory (stores, caches, traces); reused between runs")  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where <date>.json/.md/.png go")
    ap.add_argument("--docs", type=Path, default=None,
                    help="the docs page to write (default: docs/performance.md for a full run, none with --quick)")  # fmt: skip
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--snakemake-branch-python", metavar="PATH", default=None,
                    help="a Python with snakemake's plugin branch, for the end-to-end suite (default: "
                         f"${e2e.ENV_VAR}, this Python, {e2e.DEFAULT_VENV_PYTHON}, the first that has it; "
                         "none found: the suite is skipped, with the reason; 'none': skip it)")  # fmt: skip
    ap.add_argument("--e2e-standin", action="store_true",
                    help="end to end: also run the 1,000 jobs through the apptainer test stand-in (~+4 min)")  # fmt: skip
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - set(SUITES)
    if bad:
        ap.error(f"unknown suite(s): {', '.join(sorted(bad))}")
    p = dict(QUICK if args.quick else FULL)
    if args.e2e_standin:
        p["e2e_standin"] = True
    # before the set-up: an unusable --snakemake-branch-python stops here
    branch = e2e.find_branch_python(args.snakemake_branch_python) if "e2e" in only else None
    docs = args.docs if args.docs is not None else (None if args.quick else HERE.parent / "docs" / "performance.md")

    t_start = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    load_start = [round(x, 2) for x in os.getloadavg()]
    b = prepare(args.workdir, quick=args.quick)
    os.chdir(b.ws)  # jobs run from the workflow directory, as under Snakemake

    import suites  # after prepare(): it sets the environment the package reads

    results: dict = {}
    wall: dict[str, float] = {}

    def go(key: str, fn, *a) -> None:
        t = time.perf_counter()
        results[key] = fn(*a)
        wall[key] = time.perf_counter() - t
        log(f"{key} done in {wall[key]:.0f} s")

    if "cold" in only:
        go("cold_build", suites.cold_build, b, p["cold_reps"], p["cold_warmup"])
    if "warm" in only:
        go("warm_path", suites.warm_path, b, p["warm_reps"], p["dag_jobs"], p["dag_reps"])
    if "start" in only:
        go("job_start", suites.job_start, b, p["start_reps"])
    if "meta" in only:
        go("metadata_storm", suites.metadata_storm, b, p["meta_reps"], p["trace_reps"])
    if "size" in only:
        go("image_size", suites.image_size, b, p["size_reps"], p["compressions"])
    if "e2e" in only:
        go("end_to_end", e2e.end_to_end, b, branch, p["e2e_dag_jobs"], p["e2e_dag_reps"], p["e2e_run_jobs"],
           p["e2e_run_reps"], p["e2e_standin"])  # fmt: skip

    total = time.perf_counter() - t_start
    command = ["python benchmarks/run.py", *(["--quick"] if args.quick else [])]
    if only != list(SUITES):
        command += ["--only", args.only]
    if args.snakemake_branch_python:
        command += ["--snakemake-branch-python", args.snakemake_branch_python]
    if args.e2e_standin:
        command.append("--e2e-standin")
    doc = {
        "schema": SCHEMA,
        "date": started.date().isoformat(),
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(command),
        "quick": args.quick,
        "suites": only,
        "parameters": p,
        "wall_seconds": {"total": total, "setup": b.setup_seconds, **wall},
        "machine": {**machine_info(b.workdir), "loadavg_at_start": load_start},
        "setup": {
            "workdir": str(b.workdir),
            "benchmark_package_set": str(b.bench_repo),
            "host_file_blob": b.blob,
            "images": {k: {"path": str(v), "bytes": v.stat().st_size} for k, v in b.images.items()},
        },
        "results": results,
    }
    doc["headline"] = headline(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / doc["date"]
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    write_markdown(doc, stem.with_suffix(".md"))
    if not args.no_plot:
        write_plot(doc, stem.with_suffix(".png"))
    if docs is not None:
        write_docs(doc, docs, results_stem=stem)
    log(f"wrote {stem}.json/.md" + (f", {docs}" if docs else "") + f" in {total:.0f} s")
    for k, v in doc["headline"].items():
        print(f"{k}: {v}")
    return 0


def headline(doc: dict) -> dict[str, str]:
    r = doc["results"]
    h: dict[str, str] = {}
    for env, c in r.get("cold_build", {}).items():
        h[f"cold build {env}"] = (
            f"{c['ratio']:.2f}x raw steps ({c['nixsnake_build']['median']:.2f} s vs {c['raw_steps']['median']:.2f} s)"
        )
    if "warm_path" in r:
        s = r["warm_path"]["single"]
        h["warm nixsnake build"] = (f"{s['nixsnake build (image present)']['median'] * 1000:.0f} ms "
                                    f"= {s['nixsnake build (image present)']['ratio_to_python']:.1f}x python -c pass")  # fmt: skip
        h["warm deploy()"] = f"{s['plugin deploy() in process']['median'] * 1000:.1f} ms"
        for k in ("nixsnake --version", "nixsnake check ENV"):
            h[f"start-up: {k}"] = (f"{s[k]['median'] * 1000:.0f} ms = {s[k]['ratio_to_python']:.2f}x python -c pass "
                                   f"({s[k]['over_python_s'] * 1000:+.0f} ms)")  # fmt: skip
        d = r["warm_path"]["dag"]
        k = "plugin: Env + hash + decorate per job"
        h["DAG time"] = (f"{d[k]['median']:.2f} s for {d['jobs']} jobs = {d[k]['ratio_to_snakemake_n']:.2f}x "
                         f"snakemake -n ({d['snakemake -n (no software directive)']['median']:.2f} s)")  # fmt: skip
    if "job_start" in r:
        j = r["job_start"]
        for env, v in j.items():
            if isinstance(v, dict):
                h[f"job start {env}"] = (f"bwrap {v['nixsnake bwrap runtime']['median'] * 1000:.0f} ms, "
                                         f"bare container {v['bare container (squashfuse + bwrap)']['median'] * 1000:.0f} ms, "
                                         f"host {v['host: bash -c true']['median'] * 1000:.1f} ms; wrapper adds "
                                         f"{v['wrapper_adds_s'] * 1000:.0f} ms"
                                         + (f" (the job's shell and environment {v['job_floor_adds_s'] * 1000:.0f} ms, "
                                            f"nixsnake's share {v['script_adds_s'] * 1000:.0f} ms)" if "script_adds_s" in v else ""))  # fmt: skip
    if "metadata_storm" in r:
        m = r["metadata_storm"]
        heavy = list(m["commands"])[-1]
        sif = m["counts"][f"SIF (nixsnake bwrap runtime) | {heavy}"]["reach_store_dir"]["median"]
        dirc = m["counts"][f"unpacked directory (bwrap) | {heavy}"]["reach_store_dir"]["median"]
        h["metadata storm"] = f"{heavy}: {dirc:.0f} calls reach the store dir unpacked vs {sif:.0f} from the SIF"
    if "image_size" in r:
        s = r["image_size"]
        h["image size"] = ", ".join(f"{k} {v['ratio_to_nar']:.2f}x NAR in {v['pack_time']['median']:.1f} s"
                                    for k, v in s["by_compression"].items())  # fmt: skip
    if "end_to_end" in r:
        e = r["end_to_end"]
        if "skipped" in e:
            h["end to end"] = f"skipped: {e['skipped']}"
        else:
            d = e["dry_run"]
            h["end to end: snakemake -n"] = (
                f"{d['ratio']:.3f}x with --sdm nixsnake ({d['snakemake -n --sdm nixsnake']['median']:.2f} s vs "
                f"{d['snakemake -n, no software directive']['median']:.2f} s, {d['jobs']} jobs, "
                f"{d['difference_s'] * 1000:+.0f} ms)"
            )
            rr = e["real_run"]
            base = rr["no --sdm"]
            for k, v in rr.items():
                if isinstance(v, dict) and "median" in v and k != "no --sdm":
                    h[f"end to end: {rr['jobs']} jobs, {k}"] = (
                        f"{v['median']:.1f} s vs {base['median']:.1f} s without = {v['ratio']:.2f}x "
                        f"({v['adds_per_job_ms']:+.1f} ms per job at --cores {rr['cores']})"
                    )
    h["wall time"] = f"{doc['wall_seconds']['total']:.0f} s"
    return h


if __name__ == "__main__":
    sys.exit(main())
