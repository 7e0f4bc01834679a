"""Before/after comparison of two nixsnake source trees on the benchmark's envs.

    python benchmarks/ab_compare.py --before /path/to/old/checkout [--after .] [--reps 7]

Runs after `python benchmarks/run.py` (it reuses that work directory's workspace, locks
and warm nix store). For each of the medium and large envs it alternates the two trees
(A B A B ...): a cold `nixsnake build` (new process, empty store) and, in a separate
process, `pack_squashfs` of the same closure (wall time and the packer's own CPU time).
Writes `benchmarks/results/<date>-ab.json`. Used for the "What was changed" figures in
docs/performance.md; not part of the one command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import summarize

PACK = """
import sys, time
from pathlib import Path
from snakemake_deploy_nixsnake.image.sif import read_sif
from snakemake_deploy_nixsnake.image.squashfs import pack_squashfs
cl = read_sif(Path(sys.argv[1])).metadata['store_paths']
t, c = time.perf_counter(), time.process_time()
pack_squashfs(Path(sys.argv[2]), cl, [])
print(time.perf_counter() - t, time.process_time() - c)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="source tree holding the old snakemake_deploy_nixsnake/")
    ap.add_argument("--after", type=Path, default=HERE.parent)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("NIXSNAKE_BENCH_WORKDIR", "/tmp/nixsnake-bench"))
    )
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    ws = a.workdir / "ws"
    if not (ws / "envs" / "large.lock.toml").exists():
        ap.error(f"no locked envs in {ws}: run `python benchmarks/run.py` first")
    env = {**os.environ, "NIXSNAKE_CACHE_DIR": str(a.workdir / "cache"),
           "NIXSNAKE_CONFIG": str(a.workdir / "no-user-config.toml")}  # fmt: skip
    trees = {"before": a.before.resolve(), "after": a.after.resolve()}
    scratch = a.workdir / "ab"
    samples: dict[str, list[float]] = {}
    for name in ("medium", "large"):
        for _ in range(a.reps):
            for label, tree in trees.items():
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                e = {**env, "PYTHONPATH": str(tree)}
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "snakemake_deploy_nixsnake.cli", "build", f"envs/{name}.toml",
                                "--store", str(scratch / "store")], cwd=ws, env=e, check=True, capture_output=True)  # fmt: skip
                samples.setdefault(f"{name}: nixsnake build, {label}", []).append(time.perf_counter() - t)
                [img] = (scratch / "store" / "images").glob("*.sif")
                out = subprocess.run([sys.executable, "-c", PACK, str(img), str(scratch / "x.sqfs")], cwd=ws, env=e,
                                     check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
                samples.setdefault(f"{name}: pack_squashfs wall, {label}", []).append(float(out[0]))
                samples.setdefault(f"{name}: pack_squashfs packer CPU, {label}", []).append(float(out[1]))
    shutil.rmtree(scratch, ignore_errors=True)
    doc = {
        "date": dt.date.today().isoformat(),
        "trees": {k: str(v) for k, v in trees.items()},
        "reps": a.reps,
        "stats": {k: summarize(v) for k, v in samples.items()},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{doc['date']}-ab.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    for k, v in doc["stats"].items():
        print(f"{k:45s} median {v['median']:.3f} s  [{v['q1']:.3f}-{v['q3']:.3f}]")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
