"""Simulate one sample: a small two-chromosome reference, aligned reads (SAM) and the
sample's true variants (VCF). Deterministic for a given seed; gzip files carry no
timestamp, so re-runs give identical bytes.

usage: simulate.py SAMPLE SEED N_READS OUT_SAM_GZ OUT_VCF_GZ
"""

import gzip
import sys

import numpy as np

sample, seed, n_reads, out_sam, out_vcf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rng = np.random.default_rng(seed)
BASES = np.array(list("ACGT"))
CHROMS = {"chr1": 20_000, "chr2": 12_000}
READ_LEN = 100

ref = {c: BASES[rng.integers(0, 4, n)] for c, n in CHROMS.items()}


def gz(path):  # mtime=0: no timestamp in the gzip header
    return gzip.GzipFile(path, "wb", mtime=0)


# --- variants: SNVs (transition-rich, like real data) and short indels ---------------------
TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}
variants = []
for chrom, length in CHROMS.items():
    n_var = int(rng.poisson(length / 400))
    for pos in np.sort(rng.choice(np.arange(10, length - 10), n_var, replace=False)):
        r = str(ref[chrom][pos])
        kind = rng.random()
        if kind < 0.85:  # SNV, two thirds transitions
            alt = TRANSITION[r] if rng.random() < 0.67 else str(rng.choice([b for b in "ACGT" if b not in (r, TRANSITION[r])]))
            ref_allele = r
        elif kind < 0.93:  # insertion
            ref_allele, alt = r, r + "".join(BASES[rng.integers(0, 4, int(rng.integers(1, 4)))])
        else:  # deletion
            k = int(rng.integers(1, 4))
            ref_allele, alt = "".join(ref[chrom][pos : pos + 1 + k]), r
        gt = "1/1" if rng.random() < 0.3 else "0/1"
        variants.append((chrom, int(pos) + 1, ref_allele, alt, int(rng.integers(20, 60)), gt))

with gz(out_vcf) as f:
    f.write(b"##fileformat=VCFv4.2\n##source=nixsnake-example-simulate\n")
    for c, n in CHROMS.items():
        f.write(f"##contig=<ID={c},length={n}>\n".encode())
    f.write(b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
    f.write(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}\n".encode())
    for chrom, pos, r, a, q, gt in variants:
        f.write(f"{chrom}\t{pos}\t.\t{r}\t{a}\t{q}\tPASS\t.\tGT\t{gt}\n".encode())

# --- reads: mapped / unmapped / duplicate / reverse-strand flags, MAPQ ---------------------
with gz(out_sam) as f:
    f.write(b"@HD\tVN:1.6\tSO:unsorted\n")
    for c, n in CHROMS.items():
        f.write(f"@SQ\tSN:{c}\tLN:{n}\n".encode())
    f.write(f"@RG\tID:{sample}\tSM:{sample}\n@PG\tID:simulate\tPN:simulate.py\n".encode())
    chrom_names = list(CHROMS)
    weights = np.array(list(CHROMS.values()), dtype=float)
    chrom_idx = rng.choice(len(chrom_names), n_reads, p=weights / weights.sum())
    unmapped = rng.random(n_reads) < 0.04
    dup = rng.random(n_reads) < 0.08
    reverse = rng.random(n_reads) < 0.5
    mapq = np.clip(rng.normal(50, 12, n_reads), 0, 60).astype(int)
    errors = rng.random((n_reads, READ_LEN)) < 0.002
    for i in range(n_reads):
        name = f"{sample}.r{i}"
        if unmapped[i]:
            seq = "".join(BASES[rng.integers(0, 4, READ_LEN)])
            f.write(f"{name}\t4\t*\t0\t0\t*\t*\t0\t0\t{seq}\t{'I' * READ_LEN}\tRG:Z:{sample}\n".encode())
            continue
        chrom = chrom_names[chrom_idx[i]]
        start = int(rng.integers(0, CHROMS[chrom] - READ_LEN))
        seq = ref[chrom][start : start + READ_LEN].copy()
        seq[errors[i]] = BASES[rng.integers(0, 4, int(errors[i].sum()))]
        flag = (16 if reverse[i] else 0) | (1024 if dup[i] else 0)
        f.write(
            f"{name}\t{flag}\t{chrom}\t{start + 1}\t{mapq[i]}\t{READ_LEN}M\t*\t0\t0\t{''.join(seq)}\t{'I' * READ_LEN}\tRG:Z:{sample}\n".encode()
        )

print(f"{sample}: {n_reads} reads, {len(variants)} variants, numpy {np.__version__}")
