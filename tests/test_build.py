"""Building images: real nix (demo package set), real mksquashfs, real SIF, real store."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import PY_ENV, run_in_mounted_image, write_env
from helpers import git

from snakemake_deploy_nixsnake.config import Config
from snakemake_deploy_nixsnake.deploy import ensure_image, image_id, resolve
from snakemake_deploy_nixsnake.errors import Exit, SpecError
from snakemake_deploy_nixsnake.lock import parse_lock
from snakemake_deploy_nixsnake.spec import lock_path_for, parse_spec

pytestmark = [pytest.mark.nix]


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.network
def test_same_env_two_empty_stores_byte_identical(workspace, run_cli, mount_image, tmp_path):
    env = write_env(workspace, "py", PY_ENV)
    r1 = run_cli("build", str(env), "--store", str(tmp_path / "s1"))
    assert r1.returncode == 0, r1.stderr
    r2 = run_cli("build", str(env), "--store", str(tmp_path / "s2"))
    assert r2.returncode == 0, r2.stderr
    [a] = (tmp_path / "s1" / "images").glob("*.sif")
    [b] = (tmp_path / "s2" / "images").glob("*.sif")
    assert a.name == b.name
    assert sha256(a) == sha256(b)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644

    listing = subprocess.run(["siftool", "list", str(a)], capture_output=True, text=True, check=True).stdout
    assert listing.count("Squashfs/*System/amd64") == 1

    root = mount_image(a, tmp_path / "mnt")
    r = run_in_mounted_image(
        root, "python -c 'import numpy, sys; print(numpy.__version__, sys.executable)' && echo \"$GREETING\""
    )
    assert r.returncode == 0, r.stderr
    version, exe, greeting = r.stdout.split(None, 2)
    assert version == "1.26.4" and exe.startswith("/nix/store/") and greeting == "it's $HOME\n", r.stdout
    # nothing of the host: no /usr/lib, no /lib, no nix database
    for path in ("/usr/lib", "/lib", "/nix/var"):
        probe = run_in_mounted_image(root, f"test -e {path}")
        assert probe.returncode == 1, (path, probe.stderr)


def test_unchanged_env_does_no_nix_work(workspace, run_cli, tmp_path):
    env = write_env(workspace, "tools", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    assert run_cli("build", str(env)).returncode == 0
    shim = _counting_nix_build(tmp_path)
    r = run_cli("build", str(env), env={"PATH": f"{shim.parent}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "nix-build-calls").exists()


def _counting_nix_build(tmp_path: Path) -> Path:
    """A nix-build on PATH that records each call, then runs the real one."""
    real = subprocess.run(["which", "nix-build"], capture_output=True, text=True, check=True).stdout.strip()
    shim = tmp_path / "shim" / "nix-build"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\necho "$$" >> {tmp_path}/nix-build-calls\nexec {real} "$@"\n')
    shim.chmod(0o755)
    return shim


def test_eight_concurrent_builds_one_nix_build(workspace, tmp_path):
    # a fresh env (unique [env] value -> unique image) so nothing is cached in the store
    env = write_env(
        workspace, "conc", f'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n[env]\nRUN = "{time.time_ns()}"\n'
    )
    shim = _counting_nix_build(tmp_path)
    environ = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", "build", str(env)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        for _ in range(8)
    ]
    results = [(*p.communicate(timeout=600), p.returncode) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [e for _, e, _ in results]
    assert len((tmp_path / "nix-build-calls").read_text().split()) == 1
    images = list((workspace / "store" / "images").glob("*.sif"))
    assert len(images) == 1
    assert {out.strip().split(": ")[1] for out, _, _ in results} == {str(images[0])}
    assert list((workspace / "store" / "tmp").iterdir()) == []
    assert not any(p.name.endswith(".lock") for p in (workspace / "store" / "locks").iterdir())


def _start_build(workspace: Path, name: str) -> tuple[Path, subprocess.Popen]:
    """``nixsnake build`` of a new env in its own process group, returned once it holds
    the build lock and has its work directory (the moment to interrupt it)."""
    env = write_env(
        workspace, name, f'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n[env]\nRUN = "{time.time_ns()}"\n'
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", "build", str(env)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C as on a terminal: a shell that starts the suite in the background (`&`)
        # hands its children SIGINT ignored, and Python then installs no handler for it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workdirs = Path(tempfile.gettempdir()).glob
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(workdirs(f"nixsnake-build-{p.pid}-*")):
        time.sleep(0.005)
    assert any(f.suffix == ".lock" for f in (workspace / "store" / "locks").iterdir()), "builder never took the lock"
    return env, p


def test_kill_9_mid_build_then_rebuild_leaves_no_debris(workspace, tmp_path):
    env, p = _start_build(workspace, "killed")
    locks = workspace / "store" / "locks"
    workdirs = Path(tempfile.gettempdir()).glob
    [workdir] = workdirs(f"nixsnake-build-{p.pid}-*")  # the builder's nix GC root and squashfs live here
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert workdir.exists() and any("|" in f.name for f in locks.iterdir())  # what kill -9 leaves
    # the crash left a held lock (dead holder); also plant the partial image such a crash
    # leaves when it happens while the SIF is written (same host, dead pid)
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    debris = workspace / "store" / "tmp" / f"{'0' * 40}.{socket.gethostname()}.{dead.pid}.part"
    debris.write_bytes(b"partial")
    assert not list((workspace / "store" / "images").glob("*.sif"))

    t0 = time.monotonic()
    image = ensure_image(resolve(env, _cfg(workspace)), _cfg(workspace))
    assert time.monotonic() - t0 < 120  # the dead holder's lock was taken over, not waited out
    assert image.exists()
    assert list((workspace / "store" / "tmp").iterdir()) == []
    assert list(locks.iterdir()) == []  # no lock, no claim file of the dead builder
    assert not workdir.exists()  # its work directory (and GC root) removed


def _cfg(ws: Path) -> Config:
    from snakemake_deploy_nixsnake.config import load_config

    return load_config(ws)


def test_image_id_covers_everything_and_cannot_be_spliced():
    """Ids hash canonical JSON of (format, env, lock, compression): every field changes
    the id, and moving text between fields cannot produce the same id (JSON framing)."""
    lock_text = (
        f'lock_version = 1\nspec_sha256 = "{"0" * 64}"\ndate = "2024-01-01"\n[nixpkgs]\nbranch = "b"\n'
        f'rev = "{"a" * 40}"\ncommit_time = "2024-01-01T00:00:00Z"\npinned = false\n'
    )
    lock = parse_lock(lock_text, "l")
    a = parse_spec(b'date = 2024-01-01\n[nixpkgs]\npackages = ["ab", "c"]\n', "a")
    b = parse_spec(b'date = 2024-01-01\n[nixpkgs]\npackages = ["a", "bc"]\n', "b")
    c = parse_spec(b'date = 2024-01-01\n[env]\nX = "1"\n', "c")
    d = parse_spec(b'date = 2024-01-01\n[env]\nX1 = ""\n', "d")
    ids = {image_id(s, lock, "zstd") for s in (a, b, c, d)}
    assert len(ids) == 4
    assert image_id(a, lock, "zstd") != image_id(a, lock, "gzip")
    lock2 = parse_lock(lock_text.replace("a" * 40, "b" * 40), "l")
    assert image_id(a, lock, "zstd") != image_id(a, lock2, "zstd")


def test_gzip_compression_and_inspect(workspace, run_cli, mount_image, tmp_path):
    env = write_env(workspace, "tools", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    r = run_cli("build", str(env), "--compression", "gzip")
    assert r.returncode == 0, r.stderr
    img = Path(r.stdout.strip().split(": ")[1])
    root = mount_image(img, tmp_path / "m")
    assert run_in_mounted_image(root, "hello").stdout.strip() == "Hello, world!"
    info = run_cli("inspect", str(img), "--json")
    meta = json.loads(info.stdout)
    assert meta["compression"] == "gzip" and "hello" in meta["executables"]
    ls = json.loads(run_cli("ls", "--json").stdout)
    assert [e["path"] for e in ls] == [str(img)]


def test_unknown_attribute_fails_clearly_and_leaves_nothing(workspace, run_cli):
    env = write_env(workspace, "bad", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello", "no-such-tool"]\n')
    r = run_cli("build", str(env))
    assert r.returncode == 65, r.stderr
    from snakemake_deploy_nixsnake.lock import read_lock

    rev = read_lock(env).nixpkgs.rev
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"nixsnake: {env}: nixpkgs.packages[1]: nixpkgs (rev {rev}) has no attribute 'no-such-tool'; fix: "
    )
    assert "error:" not in r.stderr and "show-trace" not in r.stderr  # nixsnake's line, not nix's trace
    assert not list((workspace / "store" / "images").glob("*"))
    assert list((workspace / "store" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ('[nixpkgs]\nlibraries = ["zlib", "libnope"]\n', "nixpkgs.libraries[1]", "has no attribute 'libnope'"),
        ('[nixpkgs]\npackages = ["python311Packages.nope"]\n', "nixpkgs.packages[0]", "has no attribute 'python311Packages.nope'"),
        ('[R]\npackages = ["ggplot2", "notAnRPackage"]\n', "R.packages[1]", "has no R package rPackages.notAnRPackage"),
        ('[nixpkgs]\npackages = ["openssl_1_1"]\n', "nixpkgs.permitted_insecure", "refuses openssl-1.1.1w: it is marked as insecure (OpenSSL 1.1 reached its end of life"),
        ('[nixpkgs]\npackages = ["cudaPackages.cudatoolkit"]\n', "nixpkgs.allow_unfree", "refuses cudatoolkit-0.0.0-demo: it has an unfree license"),
    ],
)  # fmt: skip
def test_what_nixpkgs_lacks_or_refuses_is_one_line_65(workspace, run_cli, body, key, says):
    """A missing attribute, library or R package, and nixpkgs' refusals (insecure,
    unfree): one line naming the env file's key, the rev and the fix -- not nix's trace."""
    env = write_env(workspace, "bad", "date = 2024-06-01\n" + body)
    r = run_cli("build", str(env))
    if key.startswith("R.") and "apt-get install" in r.stderr:
        pytest.skip("this host lacks R's Debian packages")
    assert r.returncode == 65, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"nixsnake: {env}: {key}: nixpkgs (rev ") and says in line and "; fix: " in line, line
    assert "show-trace" not in r.stderr


def test_permitted_insecure_accepts_a_package_nixpkgs_refuses(workspace, run_cli):
    bad = write_env(workspace, "insecure", 'date = 2024-06-01\n[nixpkgs]\npackages = ["openssl_1_1"]\n')
    r = run_cli("build", str(bad))
    assert r.returncode == 65 and 'add "openssl-1.1.1w" to [nixpkgs] permitted_insecure' in r.stderr, r.stderr
    ok = write_env(
        workspace,
        "accepted",
        'date = 2024-06-01\n[nixpkgs]\npackages = ["openssl_1_1"]\npermitted_insecure = ["openssl-1.1.1w"]\n',
    )
    r = run_cli("build", str(ok))
    assert r.returncode == 0, r.stderr


def test_gc_keeps_referenced_and_recent(workspace, run_cli):
    env = write_env(workspace, "tools", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    assert run_cli("build", str(env)).returncode == 0
    [img] = (workspace / "store" / "images").glob("*.sif")
    # recent: never removed
    r = run_cli("gc", "--older-than", "0")
    assert r.returncode == 0 and img.exists()
    old = time.time() - 40 * 86400
    meta = workspace / "store" / "meta" / f"{img.stem}.json"
    os.utime(meta, (old, old))
    # referenced by the workflow: kept
    r = run_cli("gc", "--keep-workflow", str(workspace))
    assert img.exists(), r.stdout
    r = run_cli("gc", "--older-than", "30")
    assert r.returncode == 0 and not img.exists() and "removed" in r.stdout


def test_gc_keep_workflow_stops_on_anything_doubtful(workspace, run_cli):
    """A typo'd directory, one without locked env files, or a stale lock would mark images
    unused: gc stops before removing anything."""
    env = write_env(workspace, "tools", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    assert run_cli("build", str(env)).returncode == 0
    [img] = (workspace / "store" / "images").glob("*.sif")
    old = time.time() - 40 * 86400
    os.utime(workspace / "store" / "meta" / f"{img.stem}.json", (old, old))
    (workspace / "empty").mkdir()
    for wf, code, words in [
        (workspace / "no-such-dir", 66, "no such directory; nothing was removed"),
        (workspace / "empty", 66, "no locked env file"),
    ]:
        r = run_cli("gc", "--keep-workflow", str(wf))
        assert (r.returncode, r.stderr.count("\n")) == (code, 1) and words in r.stderr, r.stderr
        assert img.exists()
    env.write_text(env.read_text().replace('"hello"', '"hello", "gawk"'))
    r = run_cli("gc", "--keep-workflow", str(workspace))
    assert r.returncode == 65 and "stale lock" in r.stderr and img.exists(), r.stderr


def test_nixpkgs_python_packages_are_importable_with_their_dependencies(workspace, run_cli, mount_image, tmp_path):
    env = write_env(
        workspace,
        "pypkgs",
        'date = 2024-06-01\n[nixpkgs]\npackages = ["python311Packages.demo-greet"]\n[python]\nversion = "3.11"\n',
    )
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    img = Path(r.stdout.strip().split(": ")[1])
    root = mount_image(img, tmp_path / "m")
    # demo-greet imports demo-base, which only its nix-support/propagated-build-inputs names
    out = run_in_mounted_image(root, "python -c 'import demo_greet; print(demo_greet.greet())'")
    assert out.stdout.strip() == "hello from the demo package set", out.stderr


def test_nixpkgs_libraries_go_on_ld_library_path(workspace, run_cli, mount_image, tmp_path):
    env = write_env(workspace, "libs", 'date = 2024-06-01\n[nixpkgs]\nlibraries = ["demoPythonDeps"]\n')
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[1]), tmp_path / "m")
    entries = run_in_mounted_image(root, 'echo "$LD_LIBRARY_PATH"').stdout.strip().split(":")
    # gcc runtime libs, zlib, the env file's library, the glibc (the demo set's loader does
    # not search its own lib/ by default: host tools bound by --nv need it); no GPU here, so
    # no links to NVIDIA's libraries -- and never /.singularity.d/libs itself
    assert len(entries) == 4, entries
    assert all(e.startswith("/nix/store/") and e.endswith("/lib") for e in entries[:4])
    assert (root / entries[2].lstrip("/")).is_dir()
    assert "-glibc-" in entries[3] and (root / entries[3].lstrip("/") / "libc.so.6").is_file()
    loader = root / "lib64/ld-linux-x86-64.so.2"
    assert os.readlink(loader) == f"{entries[3]}/ld-linux-x86-64.so.2"


def test_packages_without_bin_are_in_the_image(workspace, run_cli, mount_image, tmp_path):
    # demoPythonDeps is only lib/ (no bin/), and nothing else in this env refers to it
    env = write_env(workspace, "data", 'date = 2024-06-01\n[nixpkgs]\npackages = ["demoPythonDeps", "hello"]\n')
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    img = Path(r.stdout.strip().split(": ")[1])
    meta = json.loads(run_cli("inspect", str(img), "--json").stdout)
    root = mount_image(img, tmp_path / "m")
    requested = (root / meta["env_root"].lstrip("/") / "nix-support" / "nixsnake-paths").read_text().split()
    assert len(requested) >= 2 + 6  # the two packages and the base set
    assert set(requested) <= set(meta["store_paths"])
    [deps] = [p for p in requested if p.endswith("-python-host-libs-demo")]  # the package with only lib/
    assert (root / deps.lstrip("/") / "lib").is_dir() and not (root / deps.lstrip("/") / "bin").exists()


def test_ctrl_c_mid_build_exits_130_and_leaves_nothing(workspace):
    """SIGINT (Ctrl-C) to the process group while nix builds: exit 130, one line, no image,
    no partial file, the build lock released (what the user gets back is a clean store)."""
    _, p = _start_build(workspace, "int")
    locks = workspace / "store" / "locks"
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "nixsnake: interrupted", err
    assert not list((workspace / "store" / "images").glob("*"))
    assert list((workspace / "store" / "tmp").iterdir()) == []
    assert list(locks.iterdir()) == []


def test_waiting_too_long_for_another_build_is_75(workspace, run_cli):
    """Another process holds the build lock of the same image; with build_wait = 1 s the
    build gives up with exit 75 (try again later) and its message names the lock."""
    from snakemake_deploy_nixsnake.config import load_config
    from snakemake_deploy_nixsnake.store import Store

    env = write_env(workspace, "held", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    assert run_cli("lock", str(env)).returncode == 0
    cfg = load_config(workspace)
    r = resolve(env, cfg)
    with Store(cfg.store).ensure().build_lock(r.image_id):
        cp = run_cli("build", str(env), env={"NIXSNAKE_BUILD_WAIT": "1"}, timeout=120)
    assert cp.returncode == 75, cp.stderr
    assert f"timed out waiting for the build lock {cfg.store}/locks/{r.image_id}.lock" in cp.stderr
    assert not list((workspace / "store" / "images").glob("*"))


@pytest.mark.parametrize(
    ("search_path", "appended"),
    [
        ("  {lib} (system search path)\n", False),  # nixpkgs' glibc: its own lib/ is built in
        ("  /lib/x86_64-linux-gnu (system search path)\n", True),  # a loader that does not
        ("", True),  # could not ask (an old glibc without it in --help, another architecture)
    ],
)
def test_mkenv_puts_glibc_on_ld_library_path_only_for_a_loader_that_needs_it(tmp_path, search_path, appended):
    """mkenv.sh: host tools bound into the image run on its glibc loader and need that
    glibc's libc; only a loader whose built-in search path lacks its own lib/ (the demo set's
    host copy) gets that lib/ on LD_LIBRARY_PATH."""
    from snakemake_deploy_nixsnake.nixbuild import nix_dir

    lib = tmp_path / "glibc" / "lib"
    lib.mkdir(parents=True)
    loader = lib / "ld-linux-x86-64.so.2"
    help_text = f"Shared library search path:\n  (libraries located via /etc/ld.so.cache)\n{search_path}".format(
        lib=lib
    )
    loader.write_text(f"#!/bin/sh\n[ \"$1\" = --help ] && printf '%s' '{help_text}'\n")
    loader.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "out": str(tmp_path / "out"), "paths": "", "python": "", "pythonVersion": "",
           "pythonPackages": "", "ldLibraryPath": "/nix/store/a-gcc/lib", "sslCertFile": "/c", "bash": "/b",
           "loader": str(loader), "system": "x86_64-linux"}  # fmt: skip
    subprocess.run(["bash", "-eu", "-o", "pipefail", str(nix_dir() / "mkenv.sh")], env=env, check=True)
    info = json.loads((tmp_path / "out" / "nix-support" / "nixsnake-env.json").read_text())
    assert info["loader"] == str(loader)
    assert info["ld_library_path"] == "/nix/store/a-gcc/lib" + (f":{lib}" if appended else "")


def test_libraries_of_a_bin_first_package_come_from_its_lib_output(workspace, run_cli, mount_image, tmp_path):
    """glib, curl, openssl, libtiff, cyrus_sasl: the first output is `bin`, so "${pkg}/lib"
    does not exist; the library directory is the one lib.makeLibraryPath finds (the lib
    output, else out). The demo's libdemo has nixpkgs' shape (outputs bin, out, dev)."""
    env = write_env(
        workspace,
        "binfirst",
        'date = 2024-06-01\n[nixpkgs]\nlibraries = ["libdemo"]\n[python]\nversion = "3.11"\n',
    )
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[1]), tmp_path / "m")
    entries = run_in_mounted_image(root, 'echo "$LD_LIBRARY_PATH"').stdout.strip().split(":")
    assert entries[2].endswith("-libdemo-1.0-demo/lib"), entries  # out, not libdemo-1.0-demo-bin
    assert (root / entries[2].lstrip("/") / "libdemo.so.1").is_file()
    out = run_in_mounted_image(root, "python -c 'import ctypes; print(ctypes.CDLL(\"libdemo.so.1\").zlibVersion)'")
    assert out.returncode == 0 and "_FuncPtr" in out.stdout, out.stderr


def test_a_pinned_rev_that_is_not_on_the_branch_builds(workspace, run_cli, tmp_path):
    """[nixpkgs] rev from another branch (the branch stays nixos-unstable): nix must fetch
    it by commit from all refs (fetchGit allRefs), not only refs/heads/<branch> ("Cannot
    find Git revision ... in ref"). (A fresh nix cache: nix would otherwise find the
    commit in its own git cache from earlier fetches.)"""
    from snakemake_deploy_nixsnake import demo

    rev = demo.demo_revs(demo.default_repo())["nixos-24.05"]
    env = write_env(workspace, "pinned", f'date = 2024-06-01\n[nixpkgs]\nrev = "{rev}"\npackages = ["hello"]\n')
    r = run_cli("build", str(env), env={"XDG_CACHE_HOME": str(tmp_path / "fresh-nix-cache")})
    assert r.returncode == 0, r.stderr
    lock = (workspace / "envs" / "pinned.lock.toml").read_text()
    assert f'rev = "{rev}"' in lock and "pinned = true" in lock and 'branch = "nixos-unstable"' in lock


def test_a_git_url_source_builds_from_nixsnake_s_mirror(workspace, run_cli, tmp_path):
    """nixpkgs_source = a git URL: nixsnake keeps a bare mirror and nix fetches from that
    mirror (file://), never from the remote (which would make nix clone all of nixpkgs
    again into its own cache): with the remote gone, a build of a locked env still works."""
    import socket

    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.nixbuild import NixInput
    from snakemake_deploy_nixsnake.nixpkgs import parse_source

    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(
        ["git", "clone", "-q", "--mirror", str(demo.default_repo()), str(served / "nixpkgs.git")], check=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={served}", "--listen=127.0.0.1", f"--port={port}", "--reuseaddr", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"git://127.0.0.1:{port}/nixpkgs.git"
    try:
        for _ in range(100):
            if subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        (workspace / "nixsnake.toml").write_text(
            (workspace / "nixsnake.toml").read_text().replace('nixpkgs_source = "demo"', f'nixpkgs_source = "{url}"')
        )
        env = write_env(workspace, "mirrored", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
        r = run_cli("lock", str(env))
        assert r.returncode == 0, r.stderr
        # env.nix itself, handed the remote URL: a commit that is not on the branch is
        # fetched (allRefs; nix only fetches refs/heads/<ref> otherwise)
        _instantiate_with_remote(url, tmp_path)
    finally:
        daemon.terminate()
        daemon.wait()
    source = parse_source(url)  # (the mirror exists: no network)
    assert source.location.startswith(os.environ["NIXSNAKE_CACHE_DIR"]) and source.remote == url
    spec = parse_spec(env.read_bytes())
    from snakemake_deploy_nixsnake.lock import read_lock

    data = NixInput.of(spec, read_lock(env), source)
    assert data.nixpkgs.url == f"file://{source.location}" and data.nixpkgs.type == "git"
    # the remote is gone: nixsnake does not fetch it, nix fetches from the mirror
    from snakemake_deploy_nixsnake import demo as demo_mod

    r = run_cli("build", str(env), env=demo_mod.nix_env())
    assert r.returncode == 0, r.stderr


def _instantiate_with_remote(url: str, tmp_path: Path) -> None:
    import dataclasses

    from helpers import instantiate_env

    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixbuild import NixInput, NixpkgsFetch
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin, NixpkgsSource

    rev = demo.demo_revs(demo.default_repo())["nixos-24.05"]
    spec = parse_spec(f'date = 2024-06-01\n[nixpkgs]\nrev = "{rev}"\npackages = ["hello"]\n'.encode())
    lock = Lock(spec.spec_hash(), "2024-06-01", NixpkgsPin("nixos-unstable", rev, "2025-03-01T12:00:00Z", True))
    data = NixInput.of(spec, lock, NixpkgsSource("git", "/unused", url))
    data = dataclasses.replace(data, nixpkgs=NixpkgsFetch("git", url, rev, "nixos-unstable", ""))
    instantiate_env(data, tmp_path, timeout=300, XDG_CACHE_HOME=str(tmp_path / "fresh-nix-cache"))


def _nar_hash_of_archive(repo: Path, rev: str, tmp: Path) -> str:
    """The NAR hash of ``git archive REV`` unpacked, computed without the nix store."""
    tree = tmp / "unpacked"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return subprocess.run(
        ["nix-hash", "--type", "sha256", "--base32", str(tree)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_github_tarball_is_pinned_by_its_nar_hash(workspace, run_cli, tmp_path):
    """A GitHub source: the lock records the NAR hash of the rev's tarball (as
    nix-prefetch-url --unpack gives it), the build passes it to fetchTarball -- so it
    works offline from the store the prefetch seeded, and a tarball with other content
    is refused (one line, 65) instead of being built."""
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import read_lock

    repo = demo.default_repo()
    settings = workspace / "nixsnake.toml"
    demo_settings = settings.read_text()
    env = write_env(workspace, "gh", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    with GitHubStandIn(repo) as gh:
        settings.write_text(demo_settings.replace('nixpkgs_source = "demo"', f'nixpkgs_source = "{gh.source}"'))
        r = run_cli("lock", str(env))
        assert r.returncode == 0, r.stderr
        assert any(p.endswith(".tar.gz") for p in gh.requests)
    lock = read_lock(env)
    rev = demo.demo_revs(repo)["nixos-unstable"]
    first_parent = ("rev-list", "-1", "--first-parent", "--before=2024-06-01T00:00:00Z", "nixos-unstable")
    assert lock.nixpkgs.rev == git(repo, *first_parent) != rev
    assert lock.nixpkgs.sha256 == _nar_hash_of_archive(repo, lock.nixpkgs.rev, tmp_path)
    assert f'sha256 = "{lock.nixpkgs.sha256}"' in lock_path_for(env).read_text()

    # the server is gone: the build takes nixpkgs from the store (fetchTarball with sha256)
    r = run_cli("build", str(env), env={**demo.nix_env(), "XDG_CACHE_HOME": str(tmp_path / "c1")})
    assert r.returncode == 0, r.stderr

    # GitHub now serves other content for the rev: refused before anything is built
    store_path = subprocess.run(
        ["nix-store", "--print-fixed-path", "--recursive", "sha256", lock.nixpkgs.sha256, "source"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(["nix-store", "--delete", store_path], capture_output=True, check=True)
    tampered = tmp_path / "tampered"
    subprocess.run(["git", "clone", "-q", str(repo), str(tampered)], check=True)
    subprocess.run(["git", "-C", str(tampered), "checkout", "-q", lock.nixpkgs.rev], check=True)
    (tampered / "pkgs.nix").write_text((tampered / "pkgs.nix").read_text() + "\n# changed\n")
    name = "nixpkgs"
    data = subprocess.run(
        ["tar", "-czf", "-", f"--transform=s,^\\.,{name}-{lock.nixpkgs.rev},", "--exclude=.git", "-C", str(tampered), "."],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    with GitHubStandIn(repo) as gh:
        gh.tarballs[lock.nixpkgs.rev] = data
        settings.write_text(demo_settings.replace('nixpkgs_source = "demo"', f'nixpkgs_source = "{gh.source}"'))
        r = run_cli(
            "build", str(env), "--store", str(tmp_path / "store2"),
            env={**demo.nix_env(), "XDG_CACHE_HOME": str(tmp_path / "c2")},
        )  # fmt: skip
    assert r.returncode == 65, r.stderr
    assert f"{env.with_name('gh.lock.toml')}: nixpkgs.sha256: the nixpkgs tarball {gh.base}/" in r.stderr
    assert "does not match the lock" in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not list((tmp_path / "store2" / "images").glob("*.sif"))


def test_a_github_lock_without_the_tarball_hash_is_stale(workspace, run_cli):
    """Locks written before nixsnake recorded the hash: `lock --check` and builds say
    what is missing (65) instead of fetching nixpkgs unchecked."""
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import Lock, render_lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin

    env = write_env(workspace, "old", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    rev = demo.demo_revs(demo.default_repo())["nixos-24.05"]
    lock = Lock(
        parse_spec(env.read_bytes()).spec_hash(),
        "2024-06-01",
        NixpkgsPin("nixos-unstable", rev, "2025-03-01T12:00:00Z", False),
    )
    lock_path_for(env).write_text(render_lock(lock, env.name))
    with GitHubStandIn(demo.default_repo()) as gh:
        r = run_cli("lock", "--check", "--nixpkgs-source", gh.source, str(env))
        assert r.returncode == 65, r.stderr
        assert "old.lock.toml: nixpkgs.sha256: missing" in r.stderr
        settings = workspace / "nixsnake.toml"
        settings.write_text(settings.read_text().replace('nixpkgs_source = "demo"', f'nixpkgs_source = "{gh.source}"'))
        r = run_cli("build", str(env))
        assert r.returncode == 65 and "nixpkgs.sha256: missing" in r.stderr, r.stderr


# ------------------------------------------------------------------ the env's Python


def test_python_package_of_another_python_fails_the_build_naming_the_right_attribute(workspace, run_cli):
    """python312Packages.x in an env whose Python is 3.11 would not be importable: the
    build fails (65) naming the attribute for the env's Python, not silently."""
    env = write_env(
        workspace,
        "mismatch",
        'date = 2025-06-01\n[nixpkgs]\npackages = ["hello", "python3Packages.demo-greet"]\n[python]\nversion = "3.11"\n',
    )
    r = run_cli("build", str(env))
    assert r.returncode == 65, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"nixsnake: {env}: nixpkgs.packages[1]: 'python3Packages.demo-greet' is built for Python 3.12"
    )
    assert "the env's Python is 3.11" in line and "fix: use python311Packages.demo-greet" in line
    assert 'or set [python] version = "3.12"' in line
    assert not list((workspace / "store" / "images").glob("*.sif"))


def test_python_version_defaults_to_the_nixpkgs_python3_of_the_date(workspace, run_cli, mount_image, tmp_path):
    """Without [python] version the env gets the locked nixpkgs' python3 (the least
    surprising choice: python3Packages match it), recorded in the lock."""
    from snakemake_deploy_nixsnake.lock import read_lock

    old = write_env(workspace, "py2024", "date = 2024-06-01\n[python]\n")
    new = write_env(
        workspace, "py2025", 'date = 2025-06-01\n[nixpkgs]\npackages = ["python3Packages.demo-greet"]\n[python]\n'
    )
    r = run_cli("lock", str(old), str(new))
    assert r.returncode == 0, r.stderr
    assert read_lock(old).python_version == "3.11"  # the 2024-01-15 commit's python3
    assert read_lock(new).python_version == "3.12"  # the 2025-03-01 commit's python3
    assert 'version = "3.12"' in lock_path_for(new).read_text()
    r = run_cli("build", str(new))
    assert r.returncode == 0, r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[1]), tmp_path / "m")
    out = run_in_mounted_image(
        root, "python -c 'import sys, demo_greet; print(sys.version_info[:2], demo_greet.greet())'"
    )
    assert out.stdout.strip() == "(3, 12) hello from the demo package set", out.stderr


def test_a_python_version_nixpkgs_lacks_is_65(workspace, run_cli):
    env = write_env(workspace, "py39", 'date = 2024-06-01\n[python]\nversion = "3.9"\n')
    r = run_cli("build", str(env))
    assert r.returncode == 65, r.stderr
    assert f"{env}: python.version: nixpkgs (rev " in r.stderr and "has no python39" in r.stderr
    assert "its python3 is 3.11" in r.stderr


# ------------------------------------------------------------------ [gpu]


def _env_drv(workspace: Path, body: str, tmp: Path) -> str:
    """The .drv of an env (nixsnake's env.nix, instantiated, nothing built)."""
    from helpers import instantiate_env

    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixbuild import NixInput
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin, parse_source

    spec = parse_spec(body.encode())
    repo = demo.default_repo()
    rev = demo.demo_revs(repo)["nixos-unstable"]
    lock = Lock(spec.spec_hash(), "2025-06-01", NixpkgsPin("nixos-unstable", rev, "2025-03-01T12:00:00Z", False))
    return instantiate_env(NixInput.of(spec, lock, parse_source("demo")), tmp, timeout=300)


def test_cuda_true_is_driver_and_unfree_not_a_mass_rebuild(workspace, tmp_path):
    """cuda = true: --nv at run time and allowUnfree (CUDA wheels need only the driver),
    but not config.cudaSupport, which changes every package that takes it (libdemo here;
    opencv, mpi, torch ... in nixpkgs) and misses the binary cache. cuda_support = true is
    the separate opt-in for that."""
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixbuild import NixInput
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin, parse_source
    from snakemake_deploy_nixsnake.runtime import gpu_mode

    base = 'date = 2025-06-01\n[nixpkgs]\nlibraries = ["libdemo"]\n'
    auto = _env_drv(workspace, base, tmp_path)
    cuda = _env_drv(workspace, base + "[gpu]\ncuda = true\n", tmp_path)
    support = _env_drv(workspace, base + "[gpu]\ncuda = true\ncuda_support = true\n", tmp_path)
    assert cuda == auto  # the same derivations: nothing is rebuilt
    assert support != auto
    spec = parse_spec(b'date = 2025-06-01\n[nixpkgs]\npackages = ["cudaPackages.cudatoolkit"]\n[gpu]\ncuda = true\n')
    lock = Lock(spec.spec_hash(), "2025-06-01", NixpkgsPin("nixos-unstable", "a" * 40, "2025-03-01T12:00:00Z", False))
    data = NixInput.of(spec, lock, parse_source("demo"))
    assert data.allow_unfree and not data.cuda_support
    assert gpu_mode(spec.gpu.cuda, "auto") == "always"  # --nv on every node
    _env_drv(
        workspace,
        'date = 2025-06-01\n[nixpkgs]\npackages = ["cudaPackages.cudatoolkit"]\n[gpu]\ncuda = true\n',
        tmp_path,
    )


def _wheel(path: Path, files: dict[str, str]) -> str:
    """A minimal wheel (zip with dist-info) at ``path``; returns its sha256."""
    import zipfile

    name, version = path.name.split("-")[:2]
    dist = f"{name}-{version}.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: nixsnake-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/RECORD": "",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(zipfile.ZipInfo(arc, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_wheel_file_python_cannot_compile_is_a_warning(workspace, run_cli, mount_image, tmp_path):
    """Wheels ship .py files that are not Python (templates, Python 2 examples):
    byte-compiling them fails, which must not fail the build: the build warns, naming
    them, and the package works (those files are never imported, or compiled on import)."""
    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import Lock, render_lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin
    from snakemake_deploy_nixsnake.pypi import Wheel

    whl = tmp_path / "wheels" / "tplpkg-1.0-py3-none-any.whl"
    sha = _wheel(
        whl,
        {
            "tplpkg/__init__.py": "VALUE = 42\n",
            "tplpkg/templates/page.py": "{% if user %}hello {{ user }}{% endif %}\n",
            "tplpkg/examples/old.py": "print 'python 2'\n",
        },
    )
    subprocess.run(["nix-store", "--add-fixed", "sha256", str(whl)], check=True, capture_output=True)
    env = write_env(workspace, "tpl", 'date = 2024-06-01\n[python]\nversion = "3.11"\npackages = ["tplpkg"]\n')
    rev = git(
        demo.default_repo(), "rev-list", "-1", "--first-parent", "--before=2024-06-01T00:00:00Z", "nixos-unstable"
    )
    url = "https://files.pythonhosted.org/packages/00/00/tplpkg-1.0-py3-none-any.whl"
    lock = Lock(
        parse_spec(env.read_bytes()).spec_hash(), "2024-06-01",
        NixpkgsPin("nixos-unstable", rev, "2024-01-15T12:00:00Z", False),
        "3.11", "x86_64-manylinux_2_28", (Wheel("tplpkg", "1.0", url, sha),),
    )  # fmt: skip
    lock_path_for(env).write_text(render_lock(lock, env.name))
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    assert f"warning: {env}: python.packages: 2 files of the locked wheels could not be byte-compiled" in r.stderr
    assert "tplpkg/examples/old.py, tplpkg/templates/page.py" in r.stderr
    root = mount_image(Path(r.stdout.strip().split(": ")[-1]), tmp_path / "m")
    code = "import os, importlib.util, tplpkg; print(tplpkg.VALUE, os.path.exists(importlib.util.cache_from_source(tplpkg.__file__)))"
    out = run_in_mounted_image(root, f'python -c "{code}"')
    assert out.stdout.strip() == "42 True", out.stderr  # the rest is byte-compiled


def test_sif_arch_and_wheels_follow_the_build_system(workspace, run_cli, monkeypatch):
    """The SIF header's architecture is nix's system of the build (amd64 here; arm64 for
    an aarch64-linux build), and a lock whose wheels are for another architecture is
    refused before building."""
    from snakemake_deploy_nixsnake import arch, nixbuild
    from snakemake_deploy_nixsnake.config import load_config
    from snakemake_deploy_nixsnake.image.sif import read_sif

    env = write_env(workspace, "arch", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    r = run_cli("build", str(env))
    assert r.returncode == 0, r.stderr
    assert read_sif(Path(r.stdout.strip().split(": ")[-1])).arch == "amd64"

    # the same pipeline where nix reports aarch64-linux (this machine cannot run such a build)
    real = nixbuild.nix_build

    def as_aarch64(*a, **k):
        import dataclasses

        res = real(*a, **k)
        return dataclasses.replace(res, info=dataclasses.replace(res.info, system="aarch64-linux"))

    monkeypatch.setattr(nixbuild, "nix_build", as_aarch64)
    monkeypatch.setattr(arch, "host_system", lambda: "aarch64-linux")
    from snakemake_deploy_nixsnake import deploy

    monkeypatch.setattr(deploy, "host_system", lambda: "aarch64-linux")
    cfg = load_config(workspace)
    image = ensure_image(resolve(env, cfg), cfg)
    assert read_sif(image).arch == "arm64"

    locked = lock_path_for(env)
    locked.write_text(
        locked.read_text()
        + '\n[python]\nversion = "3.11"\nplatform = "x86_64-manylinux_2_28"\n\n[[python.wheels]]\nname = "six"\n'
        'version = "1.16.0"\nurl = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl"\n'
        'sha256 = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"\n'
    )
    env.write_text(env.read_text() + '[python]\nversion = "3.11"\npackages = ["six"]\n')
    from snakemake_deploy_nixsnake.spec import load_spec

    text = locked.read_text()
    import re as _re

    locked.write_text(_re.sub(r'spec_sha256 = "[0-9a-f]+"', f'spec_sha256 = "{load_spec(env).spec_hash()}"', text))
    with pytest.raises(SpecError) as e:
        ensure_image(resolve(env, cfg, auto_lock=False), cfg)
    assert e.value.code == Exit.DATAERR
    assert (
        "python.platform: the wheels were locked for x86_64-manylinux_2_28, this machine builds aarch64-linux images"
        in str(e.value)
    )
