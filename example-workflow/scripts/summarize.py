"""Summarize the cohort with pandas: one table of samples x metrics (reads, depth, calls,
Ts/Tv, recall against the simulated truth) and one of consequences x samples (how many
of each sample's variants get each `bcftools csq` consequence).

usage: summarize.py RESULTS_DIR OUT_SUMMARY_TSV OUT_CONSEQUENCES_TSV SAMPLE...
"""

import sys
from pathlib import Path

import pandas as pd

results, out_summary, out_consequences, samples = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
genome_length = pd.read_csv(results / "ref" / "genome.fa.fai", sep="\t", header=None)[1].sum()


def read_vcf(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path, sep="\t", comment="#", header=None, usecols=[0, 1, 3, 4], names=["chrom", "pos", "ref", "alt"]
    )


def sn_lines(path: Path, key_col: int, value_col: int) -> dict[str, str]:
    """`SN` lines of samtools/bcftools stats: key (without the colon) -> value."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("SN\t"):
            f = line.split("\t")
            out[f[key_col].rstrip(":")] = f[value_col]
    return out


rows = []
for s in samples:
    flag = pd.read_csv(results / "qc" / f"{s}.flagstat.tsv", sep="\t", header=None, names=["passed", "failed", "what"])
    flag = flag.set_index("what")["passed"]
    sam = sn_lines(results / "qc" / f"{s}.samtools-stats.txt", 1, 2)
    bcf = sn_lines(results / "qc" / f"{s}.bcftools-stats.txt", 2, 3)
    tstv = next(
        line.split("\t")[4]
        for line in (results / "qc" / f"{s}.bcftools-stats.txt").read_text().splitlines()
        if line.startswith("TSTV\t")
    )
    called = read_vcf(results / "calls" / f"{s}.vcf.gz")
    truth = read_vcf(results / "sim" / f"{s}.truth.vcf.gz")
    found = len(called.merge(truth, on=["chrom", "pos", "ref", "alt"]))
    rows.append({
        "sample": s,
        "reads_total": int(flag["total (QC-passed reads + QC-failed reads)"]),
        "reads_mapped": int(flag["mapped"]),
        "reads_duplicate": int(flag["duplicates"]),
        "mean_depth": round(int(sam["bases mapped (cigar)"]) / genome_length, 1),
        "variants_called": int(bcf["number of records"]),
        "snvs": int(bcf["number of SNPs"]),
        "indels": int(bcf["number of indels"]),
        "ts_tv": float(tstv),
        "variants_true": len(truth),
        "recall_pct": round(100 * found / max(len(truth), 1), 1),
        "precision_pct": round(100 * found / max(len(called), 1), 1),
    })  # fmt: skip
summary = pd.DataFrame(rows).set_index("sample")
summary.insert(2, "mapped_pct", (100 * summary["reads_mapped"] / summary["reads_total"]).round(2))
summary.insert(4, "duplicate_pct", (100 * summary["reads_duplicate"] / summary["reads_mapped"]).round(2))
summary.to_csv(out_summary, sep="\t")

# consequences: one row per (site, sample) from `bcftools query` on the annotated cohort
sites = pd.read_csv(
    results / "cohort" / "consequences-by-sample.tsv",
    sep="\t",
    header=None,
    names=["chrom", "pos", "ref", "alt", "sample", "gt", "bcsq"],
    dtype=str,
)
carriers = sites[sites["gt"].str.split(r"[/|]").apply(lambda a: any(x not in ("0", ".") for x in a))]


def consequence_types(bcsq: str) -> list[str]:
    """BCSQ `missense|GENE|TRANSCRIPT|biotype|strand|aa|dna,...` -> the distinct types.
    `*type`: downstream of a stop or frameshift on that haplotype (still that type);
    `@POS`: a joint consequence reported at the record at POS (counted there)."""
    if bcsq in (".", ""):
        return ["intergenic"]
    kinds = set()
    for entry in bcsq.split(","):
        if entry.startswith("@"):
            continue
        kinds.update(entry.split("|")[0].lstrip("*").split("&"))
    return sorted(kinds)


long = carriers.assign(consequence=carriers["bcsq"].map(consequence_types)).explode("consequence")
table = long.groupby(["consequence", "sample"]).size().unstack("sample", fill_value=0)
table = table.reindex(columns=samples, fill_value=0)
table["total"] = table.sum(axis=1)
table = table.sort_values(["total"], ascending=False, kind="stable")
table.to_csv(out_consequences, sep="\t")

print(summary.T.to_string())
print()
print(table.to_string())
print(f"pandas {pd.__version__}")
