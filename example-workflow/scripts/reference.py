"""Simulate the reference: a small genome (FASTA) and its protein-coding genes (GFF3).

Each gene is one transcript, built the way real genes look to a consequence caller:
5' UTR, a coding sequence (ATG, sense codons, one stop codon), 3' UTR, split into 2-5
exons by introns that start with GT and end with AG; on either strand. The GFF3 uses
Ensembl's conventions (ID=gene:..., ID=transcript:..., Parent=..., biotype=...), which
is what `bcftools csq` reads (and VEP's --gff). Deterministic for a given seed.

usage: reference.py SEED OUT_FASTA OUT_GFF3 CHROM:LENGTH...
"""

import sys

import numpy as np

seed, out_fa, out_gff = int(sys.argv[1]), sys.argv[2], sys.argv[3]
chroms = {c: int(n) for c, n in (a.split(":") for a in sys.argv[4:])}
rng = np.random.default_rng(seed)
BASES = np.array(list("ACGT"))
STOPS = ("TAA", "TAG", "TGA")
CODONS = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def random_seq(n: int) -> str:
    return "".join(BASES[rng.integers(0, 4, n)])


def revcomp(s: str) -> str:
    return s.translate(COMPLEMENT)[::-1]


def make_gene() -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
    """(pre-mRNA sequence 5'->3', exons as [start, end) in it, CDS as [start, end) in the mRNA)."""
    utr5, utr3 = random_seq(int(rng.integers(30, 80))), random_seq(int(rng.integers(40, 120)))
    n_codons = int(rng.integers(90, 220))
    cds = "ATG" + "".join(CODONS[i] for i in rng.integers(0, len(CODONS), n_codons)) + STOPS[int(rng.integers(0, 3))]
    mrna = utr5 + cds + utr3
    n_exons = int(rng.integers(2, 6))
    cuts = sorted(rng.choice(np.arange(40, len(mrna) - 40), n_exons - 1, replace=False))
    pieces = np.split(np.array(list(mrna)), cuts)
    seq, exons = "", []
    for i, piece in enumerate(pieces):
        exons.append((len(seq), len(seq) + len(piece)))
        seq += "".join(piece)
        if i < len(pieces) - 1:  # an intron: GT ... polypyrimidine tract ... AG
            body = random_seq(int(rng.integers(60, 180)))
            tract = "".join(rng.choice(list("CT"), 12))
            seq += "GT" + body + tract + "AG"
    return seq, exons, (len(utr5), len(utr5) + len(cds))


def gene_features(chrom: str, g0: int, strand: str, name: str, span: int, exons, cds) -> list[tuple[int, int, str]]:
    """GFF3 lines (sort key first) of one gene whose pre-mRNA starts at 0-based ``g0``."""
    tx = f"{name}-201"
    out = []

    def add(kind: str, a: int, b: int, attrs: str, phase: str = ".") -> None:
        # [a, b) of the pre-mRNA (5'->3') -> 1-based inclusive genomic coordinates
        s, e = (g0 + a + 1, g0 + b) if strand == "+" else (g0 + span - b + 1, g0 + span - a)
        rank = {"gene": 0, "mRNA": 1, "exon": 2}.get(kind, 3)
        out.append((s, rank, f"{chrom}\tnixsnake\t{kind}\t{s}\t{e}\t.\t{strand}\t{phase}\t{attrs}"))

    add("gene", 0, span, f"ID=gene:{name};Name={name};biotype=protein_coding")
    add("mRNA", 0, span, f"ID=transcript:{tx};Parent=gene:{name};Name={tx};biotype=protein_coding")
    mrna_at = 0  # mRNA position where the current exon starts
    coding_done = 0  # coding bases before the current CDS segment (gives its phase)
    for rank, (a, b) in enumerate(exons, 1):
        add("exon", a, b, f"Parent=transcript:{tx};Name={tx}.{rank};rank={rank}")
        m0, m1 = mrna_at, mrna_at + (b - a)
        for kind, lo, hi in (
            ("five_prime_UTR", m0, min(m1, cds[0])),
            ("CDS", max(m0, cds[0]), min(m1, cds[1])),
            ("three_prime_UTR", max(m0, cds[1]), m1),
        ):
            if lo >= hi:
                continue
            if kind == "CDS":
                add(
                    kind,
                    a + lo - m0,
                    a + hi - m0,
                    f"ID=CDS:{tx};Parent=transcript:{tx}",
                    str((3 - coding_done % 3) % 3),
                )
                coding_done += hi - lo
            else:
                add(kind, a + lo - m0, a + hi - m0, f"Parent=transcript:{tx}")
        mrna_at = m1
    return out


genome = {}
gff = ["##gff-version 3"] + [f"##sequence-region {c} 1 {n}" for c, n in chroms.items()]
n_genes = 0
for chrom, length in chroms.items():
    seq = list(random_seq(length))
    features = []
    pos = int(rng.integers(200, 800))  # 0-based start of the next gene
    while True:
        gene_seq, exons, cds = make_gene()
        if pos + len(gene_seq) > length - 200:
            break
        n_genes += 1
        strand = "+" if rng.random() < 0.5 else "-"
        seq[pos : pos + len(gene_seq)] = list(gene_seq if strand == "+" else revcomp(gene_seq))
        features += gene_features(chrom, pos, strand, f"GENE{n_genes}", len(gene_seq), exons, cds)
        pos += len(gene_seq) + int(rng.integers(150, 600))
    gff += [line for _, _, line in sorted(features)]
    genome[chrom] = "".join(seq)

with open(out_fa, "w") as fh:
    for chrom, s in genome.items():
        fh.write(f">{chrom}\n")
        fh.writelines(s[i : i + 60] + "\n" for i in range(0, len(s), 60))
with open(out_gff, "w") as fh:
    fh.write("\n".join(gff) + "\n")
print(f"reference: {len(genome)} chromosomes, {sum(map(len, genome.values()))} bp, {n_genes} genes")
