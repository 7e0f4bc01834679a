"""The demo package set's real tools, from the host's Debian packages: samtools, bcftools,
htslib, R with ggplot2, perl with the Perl modules Ensembl VEP needs.

Each attribute is built from the materialized demo repository (``builtins.fetchGit`` at a
revision, like nixsnake) with nix's sandbox forced on where the kernel allows it
(helpers.py), then run under bubblewrap with nothing but /nix/store visible -- no host
/usr, /lib or /etc -- so whatever a tool needs at run time must be in its closure. A
tool whose Debian packages the host lacks is skipped, naming the ``apt-get`` line
(scripts/setup.sh installs them all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_in_mounted_image, write_env
from helpers import bwrap, closure, demo_nix_build, elf_files, git, nix_env, nix_option_args

from snakemake_deploy_nixsnake import demo
from snakemake_deploy_nixsnake.demo import hostpkgs
from snakemake_deploy_nixsnake.errors import Exit

REPO = Path(__file__).resolve().parent.parent

TOOLS_EXPR = """
{ url, rev, config ? "{}" }:
let pkgs = import (builtins.fetchGit { inherit url rev; }) { config = builtins.fromJSON config; }; in
pkgs // {
  rEnv = pkgs.rWrapper.override { packages = [ pkgs.rPackages.ggplot2 ]; };
  perlEnv = pkgs.perl.withPackages (ps: with ps; [ BioPerl DBI JSON SetIntervalTree BioDBHTS PerlIOgzip ListMoreUtils LWP ]);
}
"""
#: The modules VEP loads (issue 13), one per perlPackages attribute.
PERL_MODULES = ["Bio::SeqIO", "DBI", "JSON", "Set::IntervalTree", "Bio::DB::HTS", "PerlIO::gzip", "List::MoreUtils",
                "LWP::Simple"]  # fmt: skip
PERL_ATTRS = [f"perlPackages.{a}" for a in hostpkgs.PERL_PACKAGES]
#: what each test builds, by the demo attribute (or TOOLS_EXPR name) it needs
NEEDS = {
    "htslib": ["htslib"], "samtools": ["samtools"], "bcftools": ["bcftools"], "R": ["R"],
    "rEnv": ["R", "rPackages.ggplot2"], "perl": ["perl"], "perlEnv": ["perl", *PERL_ATTRS],
    "perlPackages.BioDBHTS": ["perl", "perlPackages.BioDBHTS", "perlPackages.BioPerl"],
}  # fmt: skip


def manifest() -> dict:
    return json.loads(demo.host_manifest().read_text())


def missing(*attrs: str) -> str | None:
    """Why the host cannot offer ``attrs`` (None when it can)."""
    unavailable = manifest()["debian"]["unavailable"]
    gone = [a for a in attrs if a in unavailable]
    if not gone:
        return None
    debs = sorted({p for a in gone for p in hostpkgs.DEBIAN_PACKAGES[a]})
    return (
        "; ".join(f"{a}: {unavailable[a]}" for a in gone)
        + f" (apt-get install {' '.join(debs)}; scripts/setup.sh does)"
    )


def needs(*names: str) -> None:
    why = missing(*(a for n in names for a in NEEDS.get(n, [n])))
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return demo.materialize(tmp_path_factory.mktemp("demo-tools") / "nixpkgs")


@pytest.fixture(scope="module")
def built(repo) -> dict[str, str]:
    """Every attribute this host can offer, built sandboxed in one nix-build."""
    if not Path("/nix/store").is_dir():
        pytest.skip("nix is not installed")
    names = ["bash", "coreutils", "gnugrep", *(n for n in NEEDS if missing(*NEEDS[n]) is None)]
    return dict(zip(names, demo_nix_build(repo, TOOLS_EXPR, *names, timeout=1200)))


# ------------------------------------------------------------------ htslib, samtools, bcftools

SAM = (
    "@HD\\tVN:1.6\\tSO:unsorted\\n@SQ\\tSN:chr1\\tLN:2000\\n"
    "r2\\t0\\tchr1\\t300\\t60\\t8M\\t*\\t0\\t0\\tACGTACGT\\tIIIIIIII\\n"
    "r1\\t16\\tchr1\\t100\\t60\\t8M\\t*\\t0\\t0\\tACGTACGT\\tIIIIIIII\\n"
    "r3\\t4\\t*\\t0\\t0\\t*\\t*\\t0\\t0\\tACGTACGT\\tIIIIIIII\\n"
)
VCF = (
    "##fileformat=VCFv4.2\\n##contig=<ID=chr1,length=2000>\\n"
    '##INFO=<ID=DP,Number=1,Type=Integer,Description=\\"Depth\\">\\n'
    "#CHROM\\tPOS\\tID\\tREF\\tALT\\tQUAL\\tFILTER\\tINFO\\n"
    "chr1\\t100\\t.\\tA\\tG\\t50\\tPASS\\tDP=10\\nchr1\\t150\\t.\\tC\\tCT\\t50\\tPASS\\tDP=12\\n"
    "chr1\\t900\\t.\\tG\\tT\\t50\\tPASS\\tDP=7\\n"
)


@pytest.mark.nix
def test_samtools_bcftools_htslib_do_real_work_without_the_host(built):
    needs("samtools", "bcftools", "htslib")
    script = f"""set -eu -o pipefail
cd /tmp
printf '{SAM}' > in.sam
samtools view -b -o in.bam in.sam
samtools sort -o sorted.bam in.bam
samtools index sorted.bam
echo "region: $(samtools view sorted.bam chr1:250-400 | cut -f1)"
echo "order: $(samtools view sorted.bam | cut -f1 | tr '\\n' ' ')"
samtools flagstat sorted.bam | head -n 1
samtools idxstats sorted.bam | head -n 1
printf '{VCF}' > in.vcf
bgzip -c in.vcf > in.vcf.gz
tabix -p vcf in.vcf.gz
echo "tabix: $(tabix in.vcf.gz chr1:120-1000 | cut -f2 | tr '\\n' ' ')"
htsfile in.vcf.gz
echo "view: $(bcftools view -H -r chr1:1-200 in.vcf.gz | wc -l)"
bcftools stats in.vcf.gz | grep -E '^SN.*number of (SNPs|indels):' | cut -f3,4
bcftools +counts in.vcf.gz
bcftools --version | head -n 2
"""
    path = ":".join(f"{built[p]}/bin" for p in ("samtools", "bcftools", "htslib", "bash", "coreutils", "gnugrep"))
    res = bwrap([f"{built['bash']}/bin/bash", "-c", script], env={"PATH": path})
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert "region: r2" in out and "order: r1 r2 r3 " in out, out
    assert "3 + 0 in total (QC-passed reads + QC-failed reads)" in out
    assert "chr1\t2000\t2\t0" in out  # idxstats: 2 mapped reads on chr1
    assert "tabix: 150 900 " in out
    assert any(line.startswith("in.vcf.gz:\tVCF version 4.2") and "BGZF-compressed" in line for line in out), out
    assert "view: 2" in out
    assert "number of SNPs:\t2" in out and "number of indels:\t1" in out
    assert "Number of SNPs:    2" in out and "Number of INDELs:  1" in out  # a bcftools plugin, from libexec
    versions = manifest()
    assert (
        f"bcftools {versions['bcftools']['version']}" in out and f"Using htslib {versions['htslib']['version']}" in out
    )


@pytest.mark.nix
def test_htslib_layout_and_no_host_plugin_path(built):
    needs("htslib", "samtools", "bcftools")
    lib = Path(built["htslib"], "lib")
    assert Path(lib, "libhts.so.3").is_file() and os.readlink(lib / "libhts.so") == "libhts.so.3"
    assert {"bgzip", "tabix", "htsfile"} <= {p.name for p in Path(built["htslib"], "bin").iterdir()}
    # the compiled-in search paths of host directories are gone from every copy
    for name in ("htslib", "samtools", "bcftools"):
        for patch in manifest()[name]["patches"]:
            data = Path(built[name], patch["file"]).read_bytes()
            assert patch["old"].encode() + b"\0" not in data and patch["new"].encode() + b"\0" in data, (name, patch)
    # bcftools finds its own plugins, unless told otherwise
    assert "BCFTOOLS_PLUGINS" in Path(built["bcftools"], "bin", "bcftools").read_text()


# ------------------------------------------------------------------ R


@pytest.mark.nix
def test_r_loads_ggplot2_and_writes_a_pdf_without_the_host(built, tmp_path):
    needs("rEnv")
    code = (
        'library(ggplot2); pdf("/out/plot.pdf", width = 4, height = 3);'
        " print(ggplot(data.frame(x = 1:3, y = c(2, 1, 3)), aes(x, y)) + geom_point());"
        ' invisible(dev.off()); cat(as.character(packageVersion("ggplot2")), R.version.string, "\\n");'
        ' cat(.libPaths(), sep = "\\n")'
    )
    res = bwrap([f"{built['rEnv']}/bin/Rscript", "-e", code], rw_binds={str(tmp_path): "/out"})
    assert res.returncode == 0, res.stderr
    pdf = (tmp_path / "plot.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 2000
    first, *libpaths = res.stdout.splitlines()
    assert first.split()[0] == manifest()["rPackages"]["ggplot2"]["package"]["version"]
    assert first.split()[3] == manifest()["R"]["version"]  # "3.4.1 R version 4.2.2 Patched ..."
    assert libpaths and all(p.startswith("/nix/store/") for p in libpaths), libpaths

    # bin/R too (its -e goes through sed: the demo busybox's)
    res = bwrap([f"{built['rEnv']}/bin/R", "--no-echo", "-e", 'cat(nchar("a b c"), "\\n")'])
    assert res.returncode == 0 and res.stdout.strip() == "5", res.stderr
    res = bwrap([f"{built['rEnv']}/bin/R", "--vanilla", "--no-echo"], stdin='library(ggplot2); cat("ok\\n")\n')
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.nix
def test_plain_r_has_no_host_library_and_runs_programs_only_with_a_shell(built):
    needs("rEnv")
    r = built["R"]
    # the host has ggplot2 in /usr/lib/R/site-library; R from the store must not see it
    res = subprocess.run([f"{r}/bin/Rscript", "-e", "library(ggplot2)"], capture_output=True, text=True, check=False)
    assert res.returncode != 0 and "there is no package called" in res.stderr, res.stderr
    res = subprocess.run([f"{r}/bin/Rscript", "-e", 'cat(.libPaths(), R.home(), sep = "\\n")'], capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout.split() == [f"{r}/lib/R/library", f"{r}/lib/R"], res.stdout
    # R runs programs through /bin/sh (system(), pipe()): without one Sys.which finds
    # nothing and R still starts; with one (an image has /bin -> the env's bin) both work
    path = {"PATH": f"{built['coreutils']}/bin"}
    code = 'cat(Sys.which("ls"), "\\n"); if (nzchar(Sys.which("ls"))) system("echo from-sh")'
    bare = bwrap([f"{r}/bin/Rscript", "-e", code], env=path)
    assert bare.returncode == 0 and bare.stdout.strip() == "", bare.stderr
    shell = bwrap([f"{r}/bin/Rscript", "-e", code], env=path, symlinks={"/bin/sh": f"{built['bash']}/bin/bash"})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == [f"{built['coreutils']}/bin/ls", "from-sh"], shell.stdout


@pytest.mark.nix
def test_r_package_set_like_nixpkgs(built, repo):
    needs("rEnv")
    env = built["rEnv"]
    rpkgs = manifest()["rPackages"]
    # library/ holds ggplot2 and its dependency closure, each package its own store path
    linked = {p.name: os.readlink(p) for p in Path(env, "library").iterdir()}
    assert "ggplot2" in linked and {"scales", "rlang", "MASS", "mgcv", "nlme", "lattice"} <= set(linked)
    assert all(t.startswith("/nix/store/") and t.endswith(f"/library/{n}") for n, t in linked.items())
    ggplot2 = Path(linked["ggplot2"]).parent.parent
    deps = Path(ggplot2, "nix-support", "propagated-build-inputs").read_text().split()
    assert {Path(d).name.split("-")[1] for d in deps} == {"r"} and len(deps) == len(rpkgs["ggplot2"]["deps"])
    assert set(closure(env)) >= set(deps)

    # a name the host has no Debian package for is a stand-in that says so when loaded
    standin = next((n for n in ("DESeq2", "data.table", "dplyr", "limma") if n not in rpkgs), None)
    if standin is None:
        pytest.skip("this host has Debian packages for every stand-in candidate")
    (out,) = demo_nix_build(repo, TOOLS_EXPR, f"rPackages.{standin.replace('.', '_')}")
    res = bwrap([f"{env}/bin/Rscript", "-e", f'library("{standin}"); cat("loaded\\n")'],
                env={"R_LIBS_SITE": f"{out}/library"})  # fmt: skip
    assert res.returncode == 0 and res.stdout == "loaded\n", res.stderr
    assert f"nixsnake demo stand-in for the R package {standin} (NOT the real package" in res.stderr


# ------------------------------------------------------------------ perl


PERL_CODE = r"""
use strict; use warnings;
my $seq = Bio::Seq->new(-id => "s1", -seq => "ATGGCC");
print "revcom ", $seq->revcom->seq, "\n";
print "json ", JSON->new->canonical->encode({b => 1, a => [1, 2]}), "\n";
my $tree = Set::IntervalTree->new; $tree->insert("gene", 10, 20);
print "tree ", join(",", @{$tree->fetch(12, 13)}), "\n";
print "uniq ", join(",", List::MoreUtils::uniq(1, 1, 2)), "\n";
open(my $gz, ">:gzip", "/tmp/x.gz") or die $!; print $gz "zipped\n"; close $gz;
open($gz, "<:gzip", "/tmp/x.gz") or die $!; print "gzip ", scalar(<$gz>); close $gz;
open(my $fa, ">", "/tmp/ref.fa") or die $!; print $fa ">chr1\nACGTTGCA\n"; close $fa;
my ($region) = Bio::DB::HTS::Faidx->new("/tmp/ref.fa")->get_sequence("chr1:3-6");
print "faidx $region\n";
my $page = LWP::Simple::get("file:///tmp/ref.fa");
print "lwp ", ($page =~ tr/\n//), "\n";
print "dbi ", join(",", grep { $_ eq "ExampleP" } DBI->available_drivers), "\n";
print "inc $_\n" for @INC;
"""


@pytest.mark.nix
def test_perl_loads_the_vep_modules_without_the_host(built):
    needs("perlEnv")
    args = [f"-M{m}" for m in ["Bio::Seq", *PERL_MODULES, "Bio::DB::HTS::Faidx"]]
    res = bwrap([f"{built['perlEnv']}/bin/perl", *args, "-e", PERL_CODE])
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[:8] == ["revcom GGCCAT", 'json {"a":[1,2],"b":1}', "tree gene", "uniq 1,2", "gzip zipped",
                       "faidx GTTG", "lwp 2", "dbi ExampleP"], out  # fmt: skip
    inc = [line[4:] for line in out if line.startswith("inc ")]
    # @INC: the modules' store paths, perl's own library, and the compiled-in host
    # directories overwritten with names of directories that do not exist
    assert inc and all(d.startswith("/nix/store/") or set(d[1:]) == {"~"} for d in inc), inc
    assert any("-BioPerl-" in d for d in inc) and any(d.endswith("/lib/perl5/core/lib") for d in inc)


@pytest.mark.nix
def test_plain_perl_and_perl_packages_like_nixpkgs(built):
    needs("perlEnv", "perlPackages.BioDBHTS")
    perl = built["perl"]
    # core modules (XS too) load from the store; the host's Debian modules are not seen
    res = bwrap([f"{perl}/bin/perl", "-MPOSIX", "-MStorable", "-MCompress::Zlib", "-MEncode", "-e", "print 42"])
    assert res.returncode == 0 and res.stdout == "42", res.stderr
    res = subprocess.run([f"{perl}/bin/perl", "-MBio::SeqIO", "-e", "1"], capture_output=True, text=True, check=False,
                         env={"PATH": "/nonexistent"})  # fmt: skip
    assert res.returncode != 0 and "Can't locate Bio/SeqIO.pm" in res.stderr, res.stderr
    # perlPackages.X: lib/perl5/site_perl, dependencies propagated (BioDBHTS -> BioPerl)
    hts = built["perlPackages.BioDBHTS"]
    assert Path(hts, "lib/perl5/site_perl/Bio/DB/HTS.pm").is_file()
    deps = Path(hts, "nix-support", "propagated-build-inputs").read_text().split()
    assert any("-BioPerl-" in d for d in deps), deps
    # the caller's PERL5LIB comes first, as with a real perl
    res = bwrap([f"{built['perlEnv']}/bin/perl", "-e", "print $INC[0]"], env={"PERL5LIB": "/mine"})
    assert res.returncode == 0 and res.stdout == "/mine", res.stderr


@pytest.mark.nix
def test_perl_packages_in_an_env_file_are_found_by_its_perl(workspace, run_cli, mount_image, tmp_path):
    """`[nixpkgs] packages = ["perl", "perlPackages.X"]`: the image's PERL5LIB names
    lib/perl5/site_perl of X and of everything X propagates (nix/mkenv.sh), so that perl
    finds them -- as nixpkgs' perl.withPackages would."""
    needs("perlEnv")
    attrs = ["perl", "perlPackages.BioDBHTS", "perlPackages.JSON", "hello"]
    spec = write_env(workspace, "perlmods", f"date = 2024-06-01\n[nixpkgs]\npackages = {json.dumps(attrs)}\n")
    r = run_cli("build", str(spec))
    assert r.returncode == 0, r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[1]), tmp_path / "m")
    res = run_in_mounted_image(
        root,
        'echo "$PERL5LIB"; perl -MBio::DB::HTS -MBio::SeqIO -MIO::String -MJSON '
        "-e 'print JSON->new->canonical->encode({ok => 1}), qq(\\n)'",
    )
    assert res.returncode == 0, res.stderr
    perl5lib, out = res.stdout.splitlines()
    assert out == '{"ok":1}'
    dirs = perl5lib.split(":")
    assert all(d.startswith("/nix/store/") and d.endswith("/lib/perl5/site_perl") for d in dirs), dirs
    # the requested modules first, in order, then what they propagate (BioDBHTS -> BioPerl
    # -> libio-string-perl, ...): no duplicates
    assert "-BioDBHTS-" in dirs[0] and len(set(dirs)) == len(dirs)
    assert any("-BioPerl-" in d for d in dirs) and any("io-string" in d.lower() for d in dirs), dirs
    # an env without Perl modules sets no PERL5LIB
    plain = write_env(workspace, "plain", 'date = 2024-06-01\n[nixpkgs]\npackages = ["perl", "hello"]\n')
    r = run_cli("build", str(plain))
    assert r.returncode == 0, r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[1]), tmp_path / "p")
    res = run_in_mounted_image(root, 'echo "${PERL5LIB-unset}"; perl -MJSON -e 1')
    assert res.stdout.splitlines()[0] == "unset" and "Can't locate JSON.pm" in res.stderr, res


# ------------------------------------------------------------------ closures


@pytest.mark.nix
def test_tool_closures_are_store_only(built):
    outs = [v for k, v in built.items() if k not in ("bash", "coreutils", "gnugrep")]
    if not outs:
        pytest.skip(missing(*hostpkgs.DEBIAN_PACKAGES) or "nothing built")
    glibc = next(p for p in closure(*outs) if p.endswith("-glibc-host-demo"))
    checked = 0
    for root in closure(*outs):
        for f in elf_files(root):
            if f.startswith(f"{glibc}/lib/lib"):
                continue  # (glibc's own libraries keep the host PT_INTERP: used only when run as a program)
            interp = subprocess.run(["patchelf", "--print-interpreter", f], check=False, capture_output=True, text=True)
            if interp.returncode == 0:
                assert interp.stdout.strip().startswith("/nix/store/"), (f, interp.stdout)
            rpath = subprocess.run(["patchelf", "--print-rpath", f], check=False, capture_output=True, text=True)
            assert all(d.startswith("/nix/store/") for d in rpath.stdout.strip().split(":") if d), (f, rpath.stdout)
            checked += 1
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    target = os.readlink(p)
                    assert target.startswith("/nix/store/") or not target.startswith("/"), (p, target)
                    assert os.path.exists(p), (p, target)
    assert checked > 20


# ------------------------------------------------------------------ a host without the Debian packages


def _without_samtools(path: Path) -> None:
    m = json.loads(path.read_text())
    m["samtools"] = None
    m["debian"]["unavailable"]["samtools"] = "Debian package samtools not installed"
    path.write_text(json.dumps(m))


@pytest.mark.nix
def test_missing_debian_package_throws_for_its_attribute_only(repo, tmp_path):
    fake = tmp_path / "host.json"
    fake.write_text(demo.host_manifest().read_text())
    _without_samtools(fake)
    rev = git(repo, "rev-parse", "nixos-unstable")
    env = nix_env(NIXSNAKE_DEMO_HOST=str(fake))

    def evaluate(fields: str) -> subprocess.CompletedProcess:
        expr = f"{{ url, rev }}: let pkgs = import (builtins.fetchGit {{ inherit url rev; }}) {{ }}; in {{ {fields} }}"
        return subprocess.run(["nix-instantiate", *nix_option_args(), "--eval", "--strict", "--json", "-E", expr,
                               "--argstr", "url", f"file://{repo}", "--argstr", "rev", rev],
                              capture_output=True, text=True, env=env, check=False, timeout=300)  # fmt: skip

    bad = evaluate("samtools = pkgs.samtools.name;")
    assert bad.returncode != 0
    assert ("nixsnake demo package set: samtools is not available on this host (Debian package samtools not "
            "installed); install it with: apt-get install samtools") in bad.stderr, bad.stderr  # fmt: skip
    err = demo.unavailable_error(bad.stderr)
    assert err is not None and err.code == Exit.UNAVAILABLE and err.hint == "apt-get install samtools"
    # everything else evaluates
    ok = evaluate("hello = pkgs.hello.name; python = pkgs.python3.name; hasSamtools = pkgs ? samtools;")
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)) == {"hello", "python", "hasSamtools"} and json.loads(ok.stdout)["hasSamtools"]


@pytest.mark.nix
def test_nixsnake_build_exits_69_with_the_apt_get_line(workspace, run_cli, tmp_path):
    cache = tmp_path / "cache"
    env = {"NIXSNAKE_CACHE_DIR": str(cache)}
    manifest_path = subprocess.run(
        [sys.executable, "-c", "from snakemake_deploy_nixsnake import demo; print(demo.host_manifest())"],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    ).stdout.strip()  # fmt: skip
    _without_samtools(Path(manifest_path))  # (its stamps still match: nixsnake reuses it)
    spec = write_env(workspace, "tools", 'date = 2024-06-01\n[nixpkgs]\npackages = ["samtools"]\n')
    res = run_cli("build", str(spec), env=env)
    assert res.returncode == 69, res.stderr
    assert "samtools is not available on this host" in res.stderr and "apt-get install samtools" in res.stderr


# ------------------------------------------------------------------ discovery (no nix)


def test_setup_installs_every_debian_package():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    for pkgs in hostpkgs.DEBIAN_PACKAGES.values():
        for p in pkgs:
            assert f" {p} " in setup.replace("\n", " ").replace("(", " ").replace(")", " "), p


def test_versions_and_descriptions(tmp_path):
    assert hostpkgs.upstream_version("1.16+ds-3") == "1.16"
    assert hostpkgs.upstream_version("1:3.4.1+dfsg-1") == "3.4.1"
    assert hostpkgs.upstream_version("5.36.0-7+deb12u4") == "5.36.0"
    assert hostpkgs.same_length_void("/usr/share/perl5") == "/~~~~~~~~~~~~~~~"
    desc = tmp_path / "DESCRIPTION"
    desc.write_text("Package: ggplot2\nVersion: 3.4.1\nDepends: R (>= 3.3)\n"
                    "Imports: cli, glue, grDevices, gtable (>= 0.1.1),\n        lifecycle (> 1.0.1), MASS\n"
                    "LinkingTo: cpp11\n")  # fmt: skip
    fields = hostpkgs.read_dcf(desc)
    assert fields["Version"] == "3.4.1"
    assert hostpkgs.r_dependencies(fields) == ["cli", "glue", "grDevices", "gtable", "lifecycle", "MASS"]
    assert hostpkgs.r_dependencies(fields, ("LinkingTo",)) == ["cpp11"]


def test_dpkg_dependencies_pick_installed_alternatives():
    d = hostpkgs.Dpkg.__new__(hostpkgs.Dpkg)
    d._files = {}
    d.installed = {
        "a": {"version": "1", "depends": "perl:any, libb-perl (>= 2) | libc-perl, libblas3 | libblas.so.3, missing"},
        "libc-perl": {"version": "1", "depends": ""}, "perl": {"version": "5", "depends": ""},
        "libblas3": {"version": "3", "depends": ""},
    }  # fmt: skip
    assert d.depends("a") == ["perl", "libc-perl", "libblas3"]


def test_host_package_trees(tmp_path):
    root = tmp_path / "root"
    (root / "keep" / "sub").mkdir(parents=True)
    (root / "drop").mkdir()
    (root / "keep" / "a.txt").write_text("a")
    (root / "keep" / "sub" / "b.pod").write_text("b")
    (root / "drop" / "c").write_text("c")
    (tmp_path / "outside.conf").write_text("conf")
    (root / "keep" / "conf").symlink_to(tmp_path / "outside.conf")  # leaves the tree: copied as a file
    (root / "keep" / "inner").symlink_to("a.txt")  # stays a link
    (root / "keep" / "dangling").symlink_to("/nonexistent/x")
    pkg = hostpkgs.HostPackage("t", "1", {})
    pkg.tree("share/t", root, exclude=["drop"], skip=lambda rel, is_dir: rel.endswith(".pod"))
    (tree,) = pkg.trees
    assert tree["root"] == str(root.resolve())
    assert set(tree["exclude"]) == {"drop", "keep/sub/b.pod", "keep/conf", "keep/dangling"}
    assert pkg.files == [{"dest": "share/t/keep/conf", "path": str((tmp_path / "outside.conf").resolve())}]
    only = hostpkgs.HostPackage("u", "1", {})
    only.tree("lib/perl5/site_perl", root, only=["keep/sub/b.pod"])
    assert only.trees[0]["only"] == ["keep", "keep/sub", "keep/sub/b.pod"]
    with pytest.raises(Exception, match="not usable"):
        pkg.file("../escape", tmp_path / "outside.conf")
