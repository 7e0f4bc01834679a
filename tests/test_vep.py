"""Ensembl VEP, run for real inside a nixsnake image built from an env file with the demo
package set's `perl` + `perlPackages.*` (the Perl stack VEP needs), against VEP's own
test cache.

VEP's code and the Ensembl API are not on any registry reachable from CI and nixsnake
ships none of them. Point NIXSNAKE_TEST_VEP_SRC at a directory holding checkouts of
Ensembl's repositories (branch release/115; docs/verification.md, "Ensembl VEP", says
how), laid out as::

    $NIXSNAKE_TEST_VEP_SRC/ensembl-vep/{vep,modules/,t/testdata/cache/,t/testdata/input/test.vcf}
    $NIXSNAKE_TEST_VEP_SRC/{ensembl,ensembl-variation,ensembl-funcgen,ensembl-io}/modules/

The checkout is bound read-only into the container; the job puts its modules on PERL5LIB
in front of the image's own (the perlPackages' lib/perl5/site_perl directories).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_env

VEP_SRC = os.environ.get("NIXSNAKE_TEST_VEP_SRC", "")
API_REPOS = ("ensembl", "ensembl-variation", "ensembl-funcgen", "ensembl-io")
#: The env file: perl and the Perl modules VEP loads, htslib for tabix/bgzip.
PERL_STACK = ["perl", *(f"perlPackages.{m}" for m in (
    "BioPerl", "DBI", "JSON", "SetIntervalTree", "BioDBHTS", "PerlIOgzip", "ListMoreUtils", "LWP")), "htslib"]  # fmt: skip
CACHE = "ensembl-vep/t/testdata/cache"
#: VEP release/115 on its test.vcf with the homo_sapiens 84_GRCh38 test cache (the host's
#: Debian perl gives the same lines: docs/verification.md)
EXPECTED_LINES, EXPECTED_VARIANTS = 744, 132

pytestmark = [
    pytest.mark.nix,
    pytest.mark.skipif(
        not VEP_SRC,
        reason="NIXSNAKE_TEST_VEP_SRC is not set: it names a checkout of Ensembl VEP release/115 and the Ensembl "
        "API's modules/ (docs/verification.md, 'Ensembl VEP')",
    ),
]


def _check_layout(src: Path) -> None:
    need = [
        src / "ensembl-vep" / "vep",
        src / "ensembl-vep" / "modules" / "Bio" / "EnsEMBL" / "VEP",
        src / CACHE / "homo_sapiens" / "84_GRCh38" / "info.txt",
        src / "ensembl-vep/t/testdata/input/test.vcf",
    ]
    need += [src / r / "modules" / "Bio" / "EnsEMBL" for r in API_REPOS]  # fmt: skip
    missing = [str(p) for p in need if not p.exists()]
    assert not missing, f"NIXSNAKE_TEST_VEP_SRC={src} lacks {missing} (docs/verification.md says how to fetch it)"


def test_vep_annotates_its_test_vcf_inside_a_nixsnake_image(workspace, run_cli):
    src = Path(VEP_SRC).absolute()
    _check_layout(src)
    if not shutil.which("squashfuse") or not shutil.which("bwrap"):
        pytest.skip("needs squashfuse and bwrap (the bwrap runtime)")
    spec = write_env(workspace, "vep-perl", f"date = 2024-06-01\n[nixpkgs]\npackages = {json.dumps(PERL_STACK)}\n")
    r = run_cli("build", str(spec))
    if r.returncode == 69 and "apt-get install" in r.stderr:
        pytest.skip(f"the demo set lacks a Debian package here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    perl5lib = ":".join(f"/vep-src/{r}/modules" for r in ("ensembl-vep", *API_REPOS))
    script = (
        f'export PERL5LIB={perl5lib}:"$PERL5LIB"; '
        "which perl > where.txt; test -e /usr/bin/perl && echo host-perl-visible >> where.txt; "
        f"perl /vep-src/ensembl-vep/vep --offline --cache --dir_cache /vep-src/{CACHE} --cache_version 84 "
        "--assembly GRCh38 -i /vep-src/ensembl-vep/t/testdata/input/test.vcf -o vep.txt --force_overwrite "
        "--no_stats --fork 2"
    )
    r = run_cli("run", "--runtime", "bwrap", "--gpu", "never", "-B", f"{src}:/vep-src:ro", str(spec), "--",
                "bash", "-c", script)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    where = (workspace / "where.txt").read_text().splitlines()
    # perl comes from the image, and the host's /usr/bin/perl is not visible
    assert len(where) == 1 and where[0].startswith("/nix/store/"), where
    lines = (workspace / "vep.txt").read_text().splitlines()
    assert lines[0].startswith("## ENSEMBL VARIANT EFFECT PREDICTOR v115")
    body = [line.split("\t") for line in lines if not line.startswith("#")]
    assert len(body) == EXPECTED_LINES and len({f[0] for f in body}) == EXPECTED_VARIANTS
    consequences = collections.Counter(c for f in body for c in f[6].split(","))
    assert consequences["missense_variant"] > 100 and consequences["synonymous_variant"] > 100, consequences
    assert {"splice_region_variant", "intron_variant", "upstream_gene_variant"} <= set(consequences)
