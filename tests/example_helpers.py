"""The example workflow, as the tests run it: where it is, what each rule must leave
behind, and the environment a run gets (shared by test_example_workflow and
test_slurm_e2e)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-workflow"
STANDIN = REPO / "tests" / "standin"
#: the env files a default run uses (the VEP ones only serve the `vep` rule, off by default)
ENV_NAMES = ("simulate", "samtools", "bcftools", "summary", "plot", "gpu", "tally")
VEP_ENV_NAMES = ("vep", "vep-bioconda")
#: rule -> (env file, the tool its proof names)
RULES = {
    "reference": ("simulate.toml", "python"),
    "index_reference": ("samtools.toml", "samtools"),
    "simulate": ("simulate.toml", "python"),
    "sort_bam": ("samtools.toml", "samtools"),
    "bam_stats": ("samtools.toml", "samtools"),
    "call": ("bcftools.toml", "bcftools"),
    "vcf_stats": ("bcftools.toml", "bcftools"),
    "merge": ("bcftools.toml", "bcftools"),
    "scatter": ("bcftools.toml", "bcftools"),
    "annotate": ("bcftools.toml", "bcftools"),
    "gather": ("bcftools.toml", "bcftools"),
    "tally": ("tally.toml", "csq-tally"),
    "summarize": ("summary.toml", "python"),
    "plot": ("plot.toml", "Rscript"),
    "gpu_check": ("gpu.toml", "python"),
}
#: rules only the VEP path has (Snakefile: inside `if VEP_CACHE:`)
VEP_RULES = {"vep": ("vep.toml", "vep"), "vep_gather": ("bcftools.toml", "bcftools")}
PER_SAMPLE = ("simulate", "sort_bam", "bam_stats", "call", "vcf_stats")
PER_CHUNK = ("annotate",)
SAMPLES = ("sampleA", "sampleB", "sampleC")
#: consequences bcftools csq must find in the default cohort (its genes and variant pool
#: are simulated around coding sequence and splice sites)
EXPECTED_CONSEQUENCES = ("missense", "synonymous", "frameshift", "splice_region", "intron", "intergenic")


# --- helpers shared with tests/test_slurm_e2e.py ---------------------------------------------


def copy_example(dest: Path) -> Path:
    """A copy of example-workflow/ without run state (its own, empty store)."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".snakemake", "results", "logs"))
    return dest


def env_files(wf: Path) -> list[str]:
    """The env files of a default run (the main job checks the same locks)."""
    return [f"envs/{n}.toml" for n in ENV_NAMES]


def read_kv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def chunk_names(n: int) -> list[str]:
    """The Snakefile's chunk names for config chunks=n."""
    return [f"chunk{i:0{len(str(n))}d}" for i in range(1, n + 1)]


def proof_files(wf: Path, chunks: int = 4) -> dict[str, Path]:
    """Every proof a full default run writes: 'simulate-sampleA' -> path."""
    names = [f"{r}-{s}" for r in PER_SAMPLE for s in SAMPLES]
    names += [f"{r}-{c}" for r in PER_CHUNK for c in chunk_names(chunks)]
    names += [r for r in RULES if r not in PER_SAMPLE and r not in PER_CHUNK]
    return {n: wf / "results" / "proof" / f"{n}.txt" for n in names}


def check_proofs(wf: Path, store: Path, chunks: int = 4) -> dict[str, dict[str, str]]:
    """Assert that every job ran inside the image of its own env file; return the proofs."""
    metas = [json.loads(p.read_text()) for p in (store / "meta").glob("*.json")]
    # the store's meta file names the env files an image was built from
    env_of_image = {m["image_id"]: {Path(f).name for f in m["env_files"]} for m in metas}
    proofs = {}
    for name, path in proof_files(wf, chunks).items():
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


def check_results(wf: Path, chunks: int = 4) -> None:
    res = wf / "results"
    summary = (res / "summary.tsv").read_text().splitlines()
    header = summary[0].split("\t")
    assert header[0] == "sample" and "ts_tv" in header and "reads_mapped" in header and "recall_pct" in header
    assert sorted(line.split("\t")[0] for line in summary[1:]) == list(SAMPLES)
    for line in summary[1:]:
        row = dict(zip(header, line.split("\t")))
        # samtools flagstat / stats and bcftools stats, read by pandas
        assert row["reads_total"] == "20000" and 0 < int(row["reads_mapped"]) < 20000
        assert 40 < float(row["mean_depth"]) < 80
        assert int(row["snvs"]) + int(row["indels"]) == int(row["variants_called"]) > 0
        assert int(row["indels"]) > 0 and float(row["ts_tv"]) > 1
        assert float(row["recall_pct"]) > 90, row  # bcftools call finds what was simulated
    # the annotation, scattered into chunks and gathered: consequences per sample
    consequences = (res / "consequences.tsv").read_text().splitlines()
    assert consequences[0].split("\t") == ["consequence", *SAMPLES, "total"]
    counts = {line.split("\t")[0]: [int(x) for x in line.split("\t")[1:]] for line in consequences[1:]}
    assert set(EXPECTED_CONSEQUENCES) <= set(counts), counts
    assert {"stop_gained", "splice_acceptor", "splice_donor", "start_lost", "stop_lost"} & set(counts), counts
    assert all(sum(c[:-1]) == c[-1] for c in counts.values())
    assert len(list((res / "chunks").glob("*.vcf.gz"))) == chunks
    assert sorted(p.name for p in (res / "annotated").glob("*.vcf.gz")) == [f"{c}.vcf.gz" for c in chunk_names(chunks)]
    table = (res / "cohort" / "consequences-by-sample.tsv").read_text().splitlines()
    assert len(table) > 100 and all(len(line.split("\t")) == 7 for line in table)
    assert any("|missense|" in line or "\tmissense|" in line for line in table)
    assert "pandas 2.2.2" in (wf / "logs" / "summarize.log").read_text()
    assert "numpy 1.26.4" in (wf / "logs" / "simulate-sampleA.log").read_text()
    assert "genes" in (wf / "logs" / "reference.log").read_text()
    # real R and ggplot2 (the demo set's are Debian's, copied into the store); before that
    # line R may warn that the job's LANG names a locale the image lacks
    assert (
        (res / "plot" / "Rscript-output.txt")
        .read_text()
        .splitlines()[-1]
        .startswith("wrote results/plot/consequences.pdf with ")
    )
    pdf = (res / "plot" / "consequences.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 2  # two plots
    gpu = read_kv(res / "gpu" / "gpu_check.txt")
    assert gpu["verdict"] and "libcuda" in gpu
    check_tally(res)


def check_tally(res: Path) -> None:
    """The `tally` rule ran csq-tally from the conda layer of its image: version 1.0 (the
    env file's date is before 2.0), installed into a store path (its text placeholder
    rewritten), with the package's activation variable set in the job, and counts that
    agree with the gathered table."""
    lines = (res / "tally" / "consequence-counts.tsv").read_text().splitlines()
    head = re.fullmatch(
        r"# csq-tally 1\.0 \(conda package; data in (/nix/store/[^ ]+-nixsnake-conda-env)/share/csq-tally\)", lines[0]
    )
    assert head, lines[0]
    prefix = head.group(1)
    proof = read_kv(res / "proof" / "tally.txt")
    assert proof["which_csq-tally"] == f"{prefix}/bin/csq-tally", proof
    assert proof["csq_tally_home"] == f"{prefix}/share/csq-tally", proof  # etc/conda/activate.d
    assert lines[1] == "consequence\tvariants"
    got = {k: int(v) for k, v in (line.split("\t") for line in lines[2:])}
    want: dict[str, int] = {}
    variants = {
        tuple(f[:4]): f[6]
        for f in (line.split("\t") for line in (res / "cohort" / "consequences-by-sample.tsv").read_text().splitlines())
    }
    for bcsq in variants.values():
        for csq in bcsq.split(","):
            kind = csq.split("|")[0]
            if kind.strip(".") and not kind.startswith("@"):  # '@POS': see another record
                want[kind] = want.get(kind, 0) + 1
    assert got == want and "missense" in got, (got, want)


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
