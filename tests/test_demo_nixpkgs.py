"""The embedded demo package set: real git repositories, real nix builds, no mocks.

The nix tests build from the materialized repository the way nixsnake does (through
``builtins.fetchGit`` at a revision, with the host manifest named by NIXSNAKE_DEMO_HOST),
run the results, and check their closures inside bubblewrap with nothing but /nix/store
visible.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    bwrap,
    can_sandbox,
    closure,
    demo_nix_build,
    elf_files,
    git,
    instantiate_env,
    nix_env,
    nix_option_args,
)

from snakemake_deploy_nixsnake import demo
from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError

# numpy 1.26.2, cp311 manylinux wheel (what `uv pip compile --exclude-newer 2024-01-01` picks)
NUMPY_URL = (
    "https://files.pythonhosted.org/packages/b6/ab/5b893944b1602a366893559bfb227fdfb3ad7c7629b2a80d039bb5924367/"
    "numpy-1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
)
NUMPY_SHA256 = "96ca5482c3dbdd051bcd1fce8034603d6ebfc125a7bd59f55b40d8f5d246832b"

# User data reaches nix as --argstr values, never spliced into nix source.
PKGS_EXPR = """
{ url, rev, config ? "{}" }:
let
  src = builtins.fetchGit { inherit url rev; };
  pkgs = import src { config = builtins.fromJSON config; };
in pkgs // {
  ccLib = pkgs.stdenv.cc.cc.lib;
  numpyWheel = pkgs.fetchurl { url = "@NUMPY_URL@"; sha256 = "@NUMPY_SHA256@"; };
  numpySite = pkgs.runCommand "numpy-1.26.2-site" { nativeBuildInputs = [ pkgs.unzip ]; } ''
    mkdir -p $out
    unzip -q ${pkgs.fetchurl { url = "@NUMPY_URL@"; sha256 = "@NUMPY_SHA256@"; }} -d $out
    test -f $out/numpy/__init__.py
  '';
}
""".replace("@NUMPY_URL@", NUMPY_URL).replace("@NUMPY_SHA256@", NUMPY_SHA256)


def nix_build(repo: Path, *attrs: str, rev: str | None = None, config: dict | None = None) -> list[str]:
    return demo_nix_build(repo, PKGS_EXPR, *attrs, rev=rev, config=config)


def nix_eval(repo: Path, expr: str, rev: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Evaluate ``expr`` (a function of ``pkgsFor``: config -> package set) to JSON."""
    rev = rev or git(repo, "rev-parse", "nixos-unstable")
    full = "{ url, rev }: let src = builtins.fetchGit { inherit url rev; }; pkgsFor = args: import src args; in " + expr
    cp = subprocess.run(
        [
            "nix-instantiate",
            *nix_option_args(),
            "--eval",
            "--strict",
            "--json",
            "-E",
            full,
            "--argstr",
            "url",
            f"file://{repo}",
            "--argstr",
            "rev",
            rev,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=nix_env(),
    )
    if check:
        assert cp.returncode == 0, cp.stderr[-3000:]
    return cp


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return demo.materialize(tmp_path_factory.mktemp("demo") / "nixpkgs")


@pytest.fixture(scope="module")
def built(repo) -> dict[str, str]:
    names = [
        "hello",
        "bash",
        "coreutils",
        "findutils",
        "gnugrep",
        "gnused",
        "which",
        "gawk",
        "gzip",
        "glibc",
        "zlib",
        "ccLib",
        "cacert",
        "python311",
        "python312",
        "python3",
    ]
    return dict(zip(names, nix_build(repo, *names)))


# ------------------------------------------------------------------ the git repository


def test_commit_dates_are_utc_and_sorted():
    dates = demo.demo_commit_dates()
    assert dates == sorted(dates) and len(dates) >= 4
    assert all(d.tzinfo is not None and d.utcoffset() == dt.timedelta(0) for d in dates)
    assert dt.datetime(2024, 1, 15, 12, tzinfo=dt.UTC) in dates
    assert demo.SOURCE_NAME == "demo" and demo.DEMO_BRANCHES[0] == "nixos-unstable"


def test_materialize_is_deterministic_and_dated(tmp_path):
    a = demo.materialize(tmp_path / "a")
    b = demo.materialize(tmp_path / "sub" / "b")
    assert a == tmp_path / "a"
    for branch in demo.DEMO_BRANCHES:
        assert git(a, "rev-parse", branch) == git(b, "rev-parse", branch)
    assert git(a, "symbolic-ref", "--short", "HEAD") == "nixos-unstable"
    assert git(a, "status", "--porcelain") == ""  # version.json is committed
    # the host's files are an input of builds, never part of a commit
    assert not (a / "host.json").exists() and "host.json" not in git(a, "ls-tree", "-r", "--name-only", "HEAD")

    # every commit at one of the fixed dates, by the fixed author
    log = git(a, "log", "--all", "--format=%an <%ae>|%cn|%aI|%cI")
    stamps = {d.strftime("%Y-%m-%dT%H:%M:%S+00:00") for d in demo.demo_commit_dates()}
    for line in log.splitlines():
        who, committer, adate, cdate = line.split("|")
        assert who == "nixsnake demo <demo@nixsnake.invalid>" and committer == "nixsnake demo"
        assert adate == cdate and adate in stamps

    # date locking as nixsnake does it on a nixpkgs clone
    rev = git(a, "rev-list", "-1", "--first-parent", "--before=2024-03-01T00:00:00Z", "nixos-unstable")
    assert json.loads(git(a, "show", f"{rev}:version.json"))["demoRelease"] == "24.01-demo"
    tip_2405 = git(a, "show", "nixos-24.05:version.json")
    assert (
        json.loads(tip_2405)["demoRelease"] != json.loads(git(a, "show", "nixos-unstable:version.json"))["demoRelease"]
    )
    assert git(a, "merge-base", "nixos-unstable", "nixos-24.05") == rev

    # idempotent: a second call reuses the complete repository
    marker = a / ".git" / "nixsnake-demo.json"
    before = marker.stat().st_mtime_ns
    assert demo.materialize(a) == a
    assert marker.stat().st_mtime_ns == before
    assert demo.demo_revs(a) == {br: git(a, "rev-parse", br) for br in demo.DEMO_BRANCHES}


def test_materialize_concurrently(tmp_path):
    dest = tmp_path / "shared"
    code = (
        "import sys; from pathlib import Path; from snakemake_deploy_nixsnake import demo; "
        "demo.materialize(Path(sys.argv[1])); print(demo.demo_revs(Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, dest], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert len({out for out, _ in results}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no temp dirs or locks left
    assert git(dest, "status", "--porcelain") == ""


def test_materialize_refuses_foreign_dir_and_replaces_stale(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    with pytest.raises(NixsnakeError) as err:
        demo.materialize(foreign)
    assert err.value.code == Exit.DATAERR and (foreign / "x").read_text() == "mine"

    dest = demo.materialize(tmp_path / "d")
    good = demo.demo_revs(dest)
    marker = dest / ".git" / "nixsnake-demo.json"
    marker.write_text(json.dumps({"fingerprint": "from another nixsnake version", "revs": {}}))
    (dest / "default.nix").write_text("stale")
    assert demo.materialize(dest) == dest
    assert demo.demo_revs(dest) == good and "stale" not in (dest / "default.nix").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "foreign"]


# ------------------------------------------------------------------ nix builds


@pytest.mark.nix
def test_hello_and_python_from_fetchgit(repo, built):
    # (R, samtools, perl & co, the host's Debian packages: tests/test_demo_tools.py)
    hello = subprocess.run([f"{built['hello']}/bin/hello"], capture_output=True, text=True, check=True)
    assert hello.stdout == "Hello, world!\n"

    py = built["python311"]
    assert built["python3"] == built["python312"]  # the tip's python3 (nixpkgs 24.11/25.05: 3.12)
    assert {"python", "python3", "python3.11"} <= {p.name for p in Path(py, "bin").iterdir()}
    assert Path(py, "lib/python3.11/site-packages").is_dir()
    assert not Path(py, "lib/python3.11/test").exists() and not Path(py, "lib/python3.11/tkinter").exists()
    code = (
        "import sys, ssl, sqlite3, ctypes, zlib, bz2, lzma, hashlib, json, readline, uuid, decimal; "
        "print(sys.version.split()[0], sys.prefix); print(sqlite3.connect(':memory:').execute('select 41+1').fetchone()[0])"
    )
    res = bwrap([f"{py}/bin/python3", "-c", code])
    assert res.returncode == 0, res.stderr
    version, prefix = res.stdout.splitlines()[0].split()
    assert version.startswith("3.11.") and prefix == py and res.stdout.splitlines()[1] == "42"

    # running it as root on the host must not write __pycache__ into the store
    subprocess.run([f"{py}/bin/python3", "-c", "import json, email.mime.text, asyncio, http.client"], check=True)
    subprocess.run(["nix-store", "--verify-path", py], check=True)


@pytest.mark.nix
def test_small_tools_run_without_host(built):
    bash = f"{built['bash']}/bin/bash"
    path = ":".join(f"{built[p]}/bin" for p in ("coreutils", "findutils", "gnugrep", "gnused", "which", "gawk", "gzip"))
    script = (
        "set -eu\ntrue && echo abc | tr a-z A-Z\ncat <<EOF\nheredoc $((6 * 7))\nEOF\n"
        "printf 'x\\ny\\n' | grep y | sed s/y/z/ | gawk '{print $1 \"!\"}'\n"
        "echo hi | gzip | gzip -d\nfind /nix/store -maxdepth 0\nwhich ls\nsh -c 'echo from-sh'\n"
    )
    res = bwrap([bash, "-c", script], env={"PATH": f"{built['bash']}/bin:{path}"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "ABC",
        "heredoc 42",
        "z!",
        "hi",
        "/nix/store",
        f"{built['coreutils']}/bin/ls",
        "from-sh",
    ]
    assert os.readlink(f"{built['bash']}/bin/sh") == "bash"


@pytest.mark.nix
def test_library_packages_layout(built):
    glibc = Path(built["glibc"], "lib")
    assert {"libc.so.6", "libm.so.6", "libpthread.so.0", "ld-linux-x86-64.so.2"} <= {p.name for p in glibc.iterdir()}
    loader = (glibc / "ld-linux-x86-64.so.2").read_bytes()  # patched: no host cache, no host /lib
    assert b"\0/etc/ld.so.cache\0" not in loader and b"\0/usr/lib/\0" not in loader and b"\0/~~~/\0" in loader
    assert Path(built["zlib"], "lib/libz.so.1").is_file()
    assert Path(built["ccLib"], "lib/libstdc++.so.6").is_file() and Path(built["ccLib"], "lib/libgcc_s.so.1").is_file()
    bundle = Path(built["cacert"], "etc/ssl/certs/ca-bundle.crt").read_text()
    assert "-----BEGIN CERTIFICATE-----" in bundle


@pytest.mark.nix
def test_closures_are_store_only(built):
    paths = closure(*built.values())
    assert all(p.startswith("/nix/store/") for p in paths)
    checked = 0
    for root in paths:
        for f in elf_files(root):
            interp = subprocess.run(["patchelf", "--print-interpreter", f], check=False, capture_output=True, text=True)
            if interp.returncode == 0 and not f.startswith(f"{built['glibc']}/lib/lib"):
                # (glibc's libc.so.6 & co keep the host PT_INTERP: used only when run as a program)
                assert interp.stdout.strip().startswith("/nix/store/"), (f, interp.stdout)
            # (static busybox has no dynamic section: patchelf fails and prints nothing)
            rpath = subprocess.run(
                ["patchelf", "--print-rpath", f], check=False, capture_output=True, text=True
            ).stdout.strip()
            assert all(d.startswith("/nix/store/") for d in rpath.split(":") if d), (f, rpath)
            checked += 1
    assert checked > 50
    # every binary in the closures starts with nothing but the store visible
    for prog, args in (("bash", ["-c", "echo ok"]), ("hello", []), ("python311", ["-c", "print('ok')"])):
        exe = f"{built[prog]}/bin/{'python3' if prog.startswith('python') else prog}"
        res = bwrap([exe, *args])
        assert res.returncode == 0 and res.stdout.strip() in ("ok", "Hello, world!"), (prog, res.stderr)


@pytest.mark.nix
def test_nixpkgs_like_interface(repo):
    old_2405 = git(repo, "rev-list", "-1", "--first-parent", "--before=2024-07-01T00:00:00Z", "nixos-24.05")
    got = json.loads(
        nix_eval(
            repo,
            """
      let p = pkgsFor { };
          q = pkgsFor { config = { allowUnfree = true; cudaSupport = true; }; system = "x86_64-linux";
                        overlays = [ (final: prev: { greeting = prev.hello.name; hello2 = final.hello; }) ]; };
      in {
        config = p.config; config2 = q.config; release = p.demoRelease;
        overlay = q.greeting; overlayFinal = q.hello2.name;
        pythonVersion = p.python3.pythonVersion; sitePackages = p.python3.sitePackages;
        interpreter = p.python311.interpreter; python311 = p.python311.outPath;
        unfree = q.cudaPackages.cudatoolkit.name;
        rHas = builtins.hasAttr "data_table" p.rPackages;
        libPath = p.lib.makeLibraryPath [ p.stdenv.cc.cc.lib p.zlib ];
        pythons = builtins.filter (n: builtins.match "python3[0-9]+" n != null) (builtins.attrNames p);
      }""",
        ).stdout
    )
    assert got["config"] == {"allowUnfree": False, "cudaSupport": False}
    assert got["config2"] == {"allowUnfree": True, "cudaSupport": True}
    assert got["release"] == "25.03-demo"
    assert got["overlay"].startswith("hello-") and got["overlayFinal"] == got["overlay"]
    assert got["pythonVersion"] == "3.12" and got["sitePackages"] == "lib/python3.12/site-packages"
    assert got["interpreter"] == got["python311"] + "/bin/python3.11"
    assert got["unfree"].startswith("cudatoolkit") and got["rHas"]
    assert got["libPath"].count("/nix/store/") == 2 and got["libPath"].endswith("/lib")
    assert "python311" in got["pythons"]

    assert json.loads(nix_eval(repo, "(pkgsFor {}).demoRelease", rev=old_2405).stdout) == "24.05-demo"
    missing = nix_eval(repo, "(pkgsFor {}).rPackages.notAnRPackage.name", check=False)
    assert missing.returncode != 0 and "attribute 'notAnRPackage' missing" in missing.stderr
    unfree = nix_eval(repo, "(pkgsFor {}).cudaPackages.cudatoolkit.name", check=False)
    assert unfree.returncode != 0 and "unfree license" in unfree.stderr and "allowUnfree" in unfree.stderr


def test_commits_carry_nixpkgs_nix_check_and_python3(tmp_path):
    """Each commit has the Nix version check nixpkgs had at its date (lib/minver.nix, then
    lib/minfeatures.nix) and its python3 in version.json; nixos-25.11 needs Nix >= 2.18."""
    a = demo.materialize(tmp_path / "a")
    plan = demo.demo_plan()
    assert set(plan) == set(demo.DEMO_BRANCHES) and "nixos-25.11" in plan
    seen = set()
    for branch, commits in plan.items():
        revs = git(a, "rev-list", "--first-parent", "--reverse", branch).split()
        assert len(revs) == len(commits)
        for rev, c in zip(revs, commits):
            info = json.loads(git(a, "show", f"{rev}:version.json"))
            assert info == {"demoRelease": c.release, "python3": c.python3}
            files = set(git(a, "ls-tree", "--name-only", rev, "lib/").split())
            kind, version = c.min_nix
            assert files == {f"lib/{kind}.nix"}
            text = git(a, "show", f"{rev}:lib/{kind}.nix")
            assert (f'"{version}"' in text) and (kind == "minver" or "builtins.nixVersion" in text)
            seen.add((c.python3, c.min_nix))
    assert ("3.13", ("minfeatures", "2.18")) in seen and ("3.12", ("minver", "2.18")) in seen
    assert ("3.12", ("minver", "2.3.17")) in seen and ("3.10", ("minver", "2.3")) in seen


@pytest.mark.nix
def test_real_nixpkgs_shapes(repo):
    """What the first build against the real nixpkgs meets, in the demo set: a library
    whose first output is bin, python packages that name their interpreter, a per-date
    python3, an insecure package, bash vs bashInteractive, nixpkgs' abort below its
    minimum Nix version."""
    got = json.loads(
        nix_eval(
            repo,
            """
      let p = pkgsFor { }; in {
        outputs = p.libdemo.outputs; default = "${p.libdemo}"; bin = p.libdemo.bin.outPath; out = p.libdemo.out.outPath;
        libPath = p.lib.makeLibraryPath [ p.libdemo ]; getLib = "${p.lib.getLib p.libdemo}";
        cudaDrv = (pkgsFor { config.cudaSupport = true; }).libdemo.drvPath; drv = p.libdemo.drvPath;
        py311 = p.python311Packages.demo-greet.pythonModule.pythonVersion;
        py312 = p.python312Packages.demo-greet.pythonModule.pythonVersion;
        py3 = p.python3Packages.demo-greet.pythonModule.pythonVersion; python3 = p.python3.pythonVersion;
        app = p.hello ? pythonModule;
        bash = p.bash.name; bashInteractive = p.bashInteractive.name;
        permitted = (pkgsFor { config.permittedInsecurePackages = [ "openssl-1.1.1w" ]; }).openssl_1_1.name;
      }""",
        ).stdout
    )
    assert got["outputs"] == ["bin", "out", "dev"] and got["default"] == got["bin"] != got["out"]
    assert got["libPath"] == got["out"] + "/lib" and got["getLib"] == got["out"]
    assert got["cudaDrv"] != got["drv"]  # config.cudaSupport rebuilds it (like opencv, mpi)
    assert (got["py311"], got["py312"], got["py3"], got["python3"]) == ("3.11", "3.12", "3.12", "3.12")
    assert got["app"] is False
    assert got["bash"] == "bash-host-demo" and got["bashInteractive"] == "bash-interactive-host-demo"
    assert got["permitted"] == "openssl-1.1.1w"
    insecure = nix_eval(repo, "(pkgsFor { }).openssl_1_1.name", check=False)
    assert insecure.returncode != 0
    assert (
        "Package ‘openssl-1.1.1w’" in insecure.stderr
        and "is marked as insecure, refusing to evaluate" in insecure.stderr
    )
    assert "permittedInsecurePackages" in insecure.stderr
    bin_out, out = nix_build(repo, "libdemo.bin", "libdemo.out")
    assert not Path(bin_out, "lib").exists() and Path(bin_out, "bin", "libdemo-config").is_file()
    assert Path(out, "lib", "libdemo.so.1").is_file()
    # python3 follows the date: 23.05 -> 3.10, 24.05 -> 3.11
    old = git(repo, "rev-list", "-1", "--first-parent", "--before=2024-01-01T00:00:00Z", "nixos-unstable")
    assert json.loads(nix_eval(repo, "(pkgsFor { }).python3.pythonVersion", rev=old).stdout) == "3.10"
    assert (
        json.loads(
            nix_eval(repo, "(pkgsFor { }).python3.pythonVersion", rev=git(repo, "rev-parse", "nixos-24.05")).stdout
        )
        == "3.11"
    )
    # below the minimum Nix version importing aborts, worded like nixpkgs (Nix 2.8 < 2.18)
    from snakemake_deploy_nixsnake.nixpkgs import compare_versions, local_nix_version

    if compare_versions("2.18", local_nix_version() or "0") <= 0:
        return  # (a nix this new evaluates them)
    for ref, says in (
        ("nixos-25.11~1", "requires Nix >= 2.18, please upgrade"),
        ("nixos-25.11", "requires an implementation of Nix with the following features:"),
    ):
        res = nix_eval(repo, "(pkgsFor { }).hello.name", rev=git(repo, "rev-parse", ref), check=False)
        assert res.returncode != 0 and "This version of Nixpkgs" in res.stderr and says in res.stderr, res.stderr
    assert "reports at least 2.18" in res.stderr


@pytest.mark.nix
def test_every_host_python(repo):
    host = json.loads(demo.host_manifest().read_text())
    attrs = ["python" + v.replace(".", "") for v in host["pythons"]]
    assert "python311" in attrs
    for attr, out in zip(attrs, nix_build(repo, *attrs)):
        minor = attr[len("python3") :]
        res = bwrap(
            [
                f"{out}/bin/python3.{minor}",
                "-c",
                "import sys, ssl, sqlite3, ctypes, zlib, lzma; print('%d.%d' % sys.version_info[:2])",
            ]
        )
        assert res.returncode == 0 and res.stdout.strip() == f"3.{minor}", (attr, res.stderr)


@pytest.mark.nix
@pytest.mark.network
def test_manylinux_numpy_needs_exactly_cclib_and_zlib(repo, built):
    (site,) = nix_build(repo, "numpySite")
    ld_path = f"{built['ccLib']}/lib:{built['zlib']}/lib"
    code = "import numpy; print(numpy.__version__, int((numpy.ones((40, 40)) @ numpy.ones((40, 40)))[0, 0]))"
    ok = bwrap([f"{built['python311']}/bin/python3", "-c", code], env={"PYTHONPATH": site, "LD_LIBRARY_PATH": ld_path})
    assert ok.returncode == 0 and ok.stdout.split() == ["1.26.2", "40"], ok.stderr
    # like nixpkgs: without the runtime libraries on LD_LIBRARY_PATH the wheel cannot load,
    # on the host as well (the demo loader does not search the host's /lib or ld.so.cache)
    for run in (bwrap, None):
        if run is None:
            bad = subprocess.run(
                [f"{built['python311']}/bin/python3", "-c", code],
                check=False,
                capture_output=True,
                text=True,
                env={"PYTHONPATH": site, "PATH": "/nonexistent"},
            )
        else:
            bad = run([f"{built['python311']}/bin/python3", "-c", code], env={"PYTHONPATH": site})
        assert bad.returncode != 0 and "libgcc_s.so.1: cannot open shared object file" in bad.stderr


# ------------------------------------------------------------------ nix's sandbox

#: Top-level host directories: no demo builder, argument or environment may name one.
_HOST_PATH = re.compile(
    r"(?<![\w@}.~+-])/(usr|lib|lib32|lib64|libx32|bin|sbin|etc|root|home|opt|srv|var|tmp|run|mnt|media|snap)(?=/|\b)"
)


def debian_tools() -> list[str]:
    """The demo attributes made from the host's Debian packages that this host has
    (scripts/setup.sh installs them all): samtools, perl, perlPackages.BioPerl, R, ..."""
    from snakemake_deploy_nixsnake.demo.hostpkgs import DEBIAN_PACKAGES

    missing = json.loads(demo.host_manifest().read_text())["debian"]["unavailable"]
    return [a for a in DEBIAN_PACKAGES if a not in missing]


def _env_drv(repo: Path, tmp_path: Path) -> str:
    """The .drv of a nixsnake environment on the demo set: python + a locked wheel, a
    nixpkgs python package, a library, R packages, the Debian tools (samtools, bcftools,
    htslib, perl + Perl modules) the host has (nixsnake's own env.nix, as a build)."""
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixbuild import NixInput
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin, NixpkgsSource
    from snakemake_deploy_nixsnake.pypi import Wheel
    from snakemake_deploy_nixsnake.spec import parse_spec

    tools = debian_tools()
    packages = [
        "hello",
        "gawk",
        "python311Packages.demo-greet",
        *(a for a in tools if not a.startswith(("R", "rPackages."))),
    ]
    r = '[R]\npackages = ["ggplot2"]\n' if {"R", "rPackages.ggplot2"} <= set(tools) else ""
    spec = parse_spec(
        f"date = 2024-06-01\n[nixpkgs]\npackages = {json.dumps(packages)}\n"
        f'libraries = ["zlib"]\n[python]\nversion = "3.11"\n{r}'.encode()
    )
    rev = git(repo, "rev-parse", "nixos-unstable")
    lock = Lock(
        spec.spec_hash(),
        "2024-06-01",
        NixpkgsPin("nixos-unstable", rev, "2024-01-15T12:00:00Z", False),
        "3.11",
        "x86_64-manylinux_2_28",
        (Wheel("numpy", "1.26.2", NUMPY_URL, NUMPY_SHA256),),
    )
    data = NixInput.of(spec, lock, NixpkgsSource("git", str(repo), f"file://{repo}", demo=True))
    return instantiate_env(data, tmp_path)


def _derivations(drv: str) -> dict[str, dict]:
    cp = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "show-derivation", "-r", drv],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(cp.stdout)


@pytest.mark.nix
def test_no_demo_derivation_names_a_host_path(repo, tmp_path):
    """On every machine: host files enter the store at evaluation time, so no builder,
    argument or environment value of any derivation in an env's closure names a host
    directory (a builder reading one fails inside nix's sandbox)."""
    drvs = _derivations(_env_drv(repo, tmp_path))
    assert len(drvs) > 15 and any("python3-3.11" in d for d in drvs) and any("patchelf" in d for d in drvs)
    # the Debian tools are among them (with every R package and Perl module they need)
    names = {d.split("-", 1)[1] for d in drvs}
    expected = {
        "samtools": r"samtools-\d",
        "bcftools": r"bcftools-\d",
        "htslib": r"htslib-\d",
        "perl": r"perl-\d",
        "R": r"R-\d",
        "rPackages.ggplot2": r"r-ggplot2-\d",
        "perlPackages.BioDBHTS": r"perl[\d.]+-BioDBHTS-\d",
    }
    for attr in debian_tools():
        if attr in expected:
            assert any(re.match(expected[attr], n) for n in names), (attr, sorted(names))
    offenders = []
    for path, d in drvs.items():
        for where, value in [("builder", d["builder"]), *(("args", a) for a in d["args"]), *d["env"].items()]:
            offenders += [(path, where, m.group(0)) for m in _HOST_PATH.finditer(value)]
    assert offenders == []
    # and the check itself sees a host path where there is one
    assert _HOST_PATH.search("cp /usr/bin/busybox $out") and not _HOST_PATH.search("@out@/lib /nix/store/x-y/lib")


@pytest.mark.nix
@pytest.mark.network
def test_every_demo_derivation_rebuilds_in_the_sandbox(repo, tmp_path):
    """Every derivation of an env's closure (fixed-output fetches aside) is built again
    with the sandbox forced on -- no silent fallback -- and must give the same bytes
    (``nix-store --check``)."""
    if not can_sandbox():
        pytest.skip("this machine's kernel does not let nix sandbox builds (the static test above still runs)")
    drv = _env_drv(repo, tmp_path)
    subprocess.run(
        ["nix-store", "--realise", *nix_option_args(), drv],
        check=True,
        capture_output=True,
        env=nix_env(),
        timeout=1200,
    )
    drvs = [p for p, d in _derivations(drv).items() if not any("hash" in o for o in d["outputs"].values())]
    assert len(drvs) > 15
    opts = [
        "--option",
        "substituters",
        "",
        "--option",
        "build-users-group",
        "",
        "--option",
        "sandbox",
        "true",
        "--option",
        "sandbox-fallback",
        "false",
    ]
    cp = subprocess.run(
        ["nix-store", "--realise", "--check", *opts, *drvs], capture_output=True, text=True, env=nix_env(), timeout=1800
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert cp.stderr.count("checking outputs of") == len(drvs)


@pytest.mark.nix
@pytest.mark.network
def test_the_env_builds_without_the_sandbox_in_a_fresh_store(repo, tmp_path):
    """Where the kernel forbids sandboxing nix builds unsandboxed: the same closure builds
    from nothing that way too (a fresh, empty nix store: every builder runs once)."""
    drv_input = _env_drv(repo, tmp_path)  # (instantiated in the real store; only its input JSON is reused)
    fresh = tmp_path / "fresh"
    env = nix_env(
        XDG_CACHE_HOME=str(fresh / "cache"),
        NIX_STORE_DIR=str(fresh / "store"),
        NIX_STATE_DIR=str(fresh / "state"),
        NIX_LOG_DIR=str(fresh / "log"),
    )
    from snakemake_deploy_nixsnake.nixbuild import nix_dir

    cp = subprocess.run(
        [
            "nix-build",
            "--no-out-link",
            "--option",
            "substituters",
            "",
            "--option",
            "build-users-group",
            "",
            "--option",
            "sandbox",
            "false",
            str(nix_dir() / "env.nix"),
            "--argstr",
            "inputFile",
            str(tmp_path / "input.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    out = cp.stdout.strip()
    assert out.startswith(f"{fresh}/store/") and out.endswith("-nixsnake-env") and drv_input.endswith(".drv")
    built = cp.stderr.count("building '")
    assert built > 15, cp.stderr[-2000:]
    assert Path(out, "bin", "hello").exists() and Path(out, "bin", "python3").exists()
