"""Simulate one sample of a cohort: its genotypes and its aligned reads (SAM).

The cohort shares one pool of variant sites (drawn from POOL_SEED, the same for every
sample): SNVs (transition-rich) and short indels, placed mostly in coding sequence and
around splice sites (read from the GFF3), each with a population allele frequency. A
sample draws its genotypes from those frequencies (SEED), builds its two haplotypes and
sequences reads from them: 100 bp, 0.2% sequencing errors, some unmapped, some flagged as
PCR duplicates, aligned to the reference with the right CIGAR (M/I/D). The sample's true
variants go to a phased VCF, to compare with what `bcftools call` finds. Deterministic;
gzip files carry no timestamp, so re-runs give identical bytes.

usage: simulate.py SAMPLE SEED POOL_SEED N_READS GENOME_FA GENES_GFF3 OUT_SAM_GZ OUT_TRUTH_VCF_GZ
"""

import bisect
import gzip
import itertools
import sys

import numpy as np

sample, seed, pool_seed, n_reads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
genome_fa, genes_gff, out_sam, out_vcf = sys.argv[5:9]
READ_LEN = 100
BASES = "ACGT"
TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}


def gz(path):  # mtime=0: no timestamp in the gzip header
    return gzip.GzipFile(path, "wb", mtime=0)


def read_fasta(path: str) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:].split()[0]
                seqs[name] = []
            elif line:
                seqs[name].append(line.upper())
    return {k: "".join(v) for k, v in seqs.items()}


ref = read_fasta(genome_fa)
cds: dict[str, list[int]] = {c: [] for c in ref}  # 0-based coding positions
splice: dict[str, list[int]] = {c: [] for c in ref}  # 0-based positions around splice sites
exons: dict[tuple[str, str], list[tuple[int, int]]] = {}  # (chrom, transcript) -> exons
with open(genes_gff) as fh:
    for line in fh:
        if line.startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        if f[2] == "CDS":
            cds[f[0]].extend(range(int(f[3]) - 1, int(f[4])))
        elif f[2] == "exon":
            exons.setdefault((f[0], f[8].split(";")[0]), []).append((int(f[3]) - 1, int(f[4])))
for (chrom, _), parts in exons.items():
    parts.sort()
    for (_, a_end), (b_start, _) in itertools.pairwise(parts):  # the intron between: both ends
        splice[chrom] += [*range(a_end - 2, a_end + 8), *range(b_start - 8, b_start + 2)]

# --- the cohort's variant pool (the same for every sample) --------------------------------
pool_rng = np.random.default_rng(pool_seed)
pool = []  # (chrom, 0-based pos, ref, alt, allele frequency)
for chrom, seq in ref.items():
    n = len(seq) // 120
    where = np.concatenate([
        pool_rng.choice(cds[chrom], int(n * 0.55)) if cds[chrom] else np.array([], int),
        pool_rng.choice(splice[chrom], int(n * 0.10)) if splice[chrom] else np.array([], int),
        pool_rng.integers(10, len(seq) - 10, int(n * 0.35)),
    ])  # fmt: skip
    last = -100
    for pos in np.sort(where):
        pos = int(pos)
        if pos - last < 6 or not 10 <= pos < len(seq) - 10:  # no overlapping variants
            continue
        last = pos
        r = seq[pos]
        kind = pool_rng.random()
        if kind < 0.85:  # SNV, two thirds transitions
            others = [b for b in BASES if b not in (r, TRANSITION[r])]
            alt = TRANSITION[r] if pool_rng.random() < 0.67 else others[int(pool_rng.integers(0, 2))]
            ref_allele = r
        elif kind < 0.93:  # insertion, left-aligned (as callers report it): not ending in r
            ins = list(pool_rng.choice(list(BASES), int(pool_rng.integers(1, 4))))
            if ins[-1] == r:
                ins[-1] = TRANSITION[r]
            ref_allele, alt = r, r + "".join(ins)
        else:  # deletion, left-aligned: the last deleted base differs from the anchor base
            k = int(pool_rng.integers(1, 4))
            if seq[pos + k] == r:
                continue
            ref_allele, alt = seq[pos : pos + 1 + k], r
            last = pos + k
        af = float(np.clip(pool_rng.beta(0.6, 1.6), 0.02, 0.98))
        pool.append((chrom, pos, ref_allele, alt, af))

# --- this sample: genotypes and haplotypes ----------------------------------------------
rng = np.random.default_rng(seed)
haps: list[dict[str, list[tuple[int, str, str]]]] = [{c: [] for c in ref}, {c: [] for c in ref}]
truth = []
for chrom, pos, r, a, af in pool:
    alleles = (rng.random(2) < af).astype(int)
    if not alleles.any():
        continue
    for h in (0, 1):
        if alleles[h]:
            haps[h][chrom].append((pos, r, a))
    truth.append((chrom, pos + 1, r, a, f"{alleles[0]}|{alleles[1]}"))


def read_from(h: int, chrom: str, start: int) -> tuple[str, str, int] | None:
    """Sequence READ_LEN bases of haplotype ``h`` from reference position ``start``:
    (bases, CIGAR, 1-based position), or None when the read would start inside an indel."""
    seq = ref[chrom]
    vs = haps[h][chrom]
    i = bisect.bisect_left(vs, (start, "", ""))
    if i > 0 and vs[i - 1][0] + len(vs[i - 1][1]) > start:  # inside a deletion
        return None
    bases: list[str] = []
    ops: list[str] = []
    p = start
    while len(bases) < READ_LEN and p < len(seq):
        if i < len(vs) and vs[i][0] == p:
            _, r, a = vs[i]
            i += 1
            bases.append(a[0])
            ops.append("M")
            if len(a) > len(r):  # insertion after the anchor base
                for b in a[1:]:
                    if len(bases) == READ_LEN:
                        break
                    bases.append(b)
                    ops.append("I")
            elif len(r) > len(a):  # deletion after the anchor base
                ops += ["D"] * (len(r) - 1)
            p += len(r)
        else:
            bases.append(seq[p])
            ops.append("M")
            p += 1
    while ops and ops[-1] != "M":  # a read ends with an aligned base
        if ops.pop() == "I":
            bases.pop()
    if ops[0] != "M" or len(bases) < READ_LEN // 2:
        return None
    cigar, run = [], 1
    for x, y in zip(ops, [*ops[1:], "$"], strict=True):
        if x == y:
            run += 1
        else:
            cigar.append(f"{run}{x}")
            run = 1
    return "".join(bases), "".join(cigar), start + 1


with gz(out_vcf) as f:
    f.write(b"##fileformat=VCFv4.2\n##source=nixsnake-example-simulate (true genotypes)\n")
    for c, s in ref.items():
        f.write(f"##contig=<ID={c},length={len(s)}>\n".encode())
    f.write(b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
    f.write(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}\n".encode())
    for chrom, pos, r, a, gt in truth:
        f.write(f"{chrom}\t{pos}\t.\t{r}\t{a}\t.\tPASS\t.\tGT\t{gt}\n".encode())

names = list(ref)
weights = np.array([len(ref[c]) for c in names], dtype=float)
with gz(out_sam) as f:
    f.write(b"@HD\tVN:1.6\tSO:unsorted\n")
    for c in names:
        f.write(f"@SQ\tSN:{c}\tLN:{len(ref[c])}\n".encode())
    f.write(f"@RG\tID:{sample}\tSM:{sample}\n@PG\tID:simulate\tPN:simulate.py\n".encode())
    chrom_idx = rng.choice(len(names), n_reads, p=weights / weights.sum())
    unmapped = rng.random(n_reads) < 0.04
    dup = rng.random(n_reads) < 0.08
    reverse = rng.random(n_reads) < 0.5
    hap = rng.integers(0, 2, n_reads)
    mapq = np.clip(rng.normal(50, 10, n_reads), 0, 60).astype(int)
    for i in range(n_reads):
        name = f"{sample}.r{i}"
        if unmapped[i]:
            seq = "".join(rng.choice(list(BASES), READ_LEN))
            f.write(f"{name}\t4\t*\t0\t0\t*\t*\t0\t0\t{seq}\t{'I' * READ_LEN}\tRG:Z:{sample}\n".encode())
            continue
        chrom = names[chrom_idx[i]]
        read = None
        while read is None:
            read = read_from(int(hap[i]), chrom, int(rng.integers(0, len(ref[chrom]) - READ_LEN)))
        bases, cigar, pos = read
        errors = np.flatnonzero(rng.random(len(bases)) < 0.002)
        if errors.size:
            b = list(bases)
            for e in errors:
                b[e] = BASES[int(rng.integers(0, 4))]
            bases = "".join(b)
        flag = (16 if reverse[i] else 0) | (1024 if dup[i] else 0)
        qual = "I" * len(bases)
        f.write(
            f"{name}\t{flag}\t{chrom}\t{pos}\t{mapq[i]}\t{cigar}\t*\t0\t0\t{bases}\t{qual}\tRG:Z:{sample}\n".encode()
        )

print(f"{sample}: {n_reads} reads, {len(truth)} true variants (pool {len(pool)}), numpy {np.__version__}")
