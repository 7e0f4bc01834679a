"""The [conda] layer: real rattler solves against a channel the tests build themselves
(tests/conda_channel.py), real nix builds (sandbox on where the kernel allows it), real
images run with the bwrap runtime and the apptainer stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest
from conda_channel import make_channel
from conftest import write_env
from helpers import nix_option_args

from snakemake_deploy_nixsnake import conda as conda_layer
from snakemake_deploy_nixsnake.deploy import image_id
from snakemake_deploy_nixsnake.errors import SpecError
from snakemake_deploy_nixsnake.lock import parse_lock, render_lock
from snakemake_deploy_nixsnake.spec import parse_spec

STANDIN = Path(__file__).parent / "standin"

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is needed to build the test channel's ELF package"
)


@pytest.fixture(scope="session")
def channel(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test channel's ELF package (apt-get install gcc)")
    return make_channel(tmp_path_factory.mktemp("conda") / "channel")


@pytest.fixture(scope="session")
def second_channel(tmp_path_factory) -> Path:
    return make_channel(tmp_path_factory.mktemp("conda2") / "channel", second=True)


def env_text(
    channels: list[Path | str],
    packages: list[str],
    date: str = "2024-01-01",
    extra: str = "",
    exempt: list[str] | None = None,
) -> str:
    chans = ", ".join(json.dumps(c if isinstance(c, str) else c.as_uri()) for c in channels)
    text = f"date = {date}\n{extra}\n[conda]\nchannels = [{chans}]\npackages = {json.dumps(packages)}\n"
    if exempt:
        text += f"exempt = {json.dumps(exempt)}\n"
    return text


def solve(text: str):
    return conda_layer.resolve(parse_spec(text.encode(), "envs/c.toml"), "envs/c.toml")


def versions(lock) -> dict[str, str]:
    return {p.name: p.version for p in lock.packages}


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --- locking (real rattler solves, no nix) ------------------------------------------------


def test_the_date_picks_the_older_version(channel):
    assert versions(solve(env_text([channel], ["greet"], "2024-01-01"))) == {"greet": "1.0"}
    assert versions(solve(env_text([channel], ["greet"], "2024-06-01"))) == {"greet": "2.0"}
    # the cut-off is 00:00 UTC of the date, exclusive: greet 2.0 was built 2024-03-01T00:00Z
    assert versions(solve(env_text([channel], ["greet"], "2024-03-01"))) == {"greet": "1.0"}
    assert versions(solve(env_text([channel], ["greet"], "2024-03-02"))) == {"greet": "2.0"}


def test_lock_section_records_every_package_by_url_and_sha256(channel):
    lock = solve(env_text([channel], ["elfdemo"], "2024-01-01"))
    assert lock.channels == (channel.as_uri(),)
    assert lock.subdir == "linux-64" and lock.cutoff == "2024-01-01T00:00:00Z"
    assert lock.virtual_packages == ("__archspec=1=x86_64", "__glibc=2.28=0", "__linux=4.18=0", "__unix=0=0")
    assert lock.installer.name == "py-rattler" and lock.installer.url.startswith("https://files.pythonhosted.org/")
    assert [p.name for p in lock.packages] == ["elfdemo", "greet"]  # dependency included, sorted by name
    for p in lock.packages:
        f = channel / p.subdir / p.file_name
        assert p.url == f.as_uri() and p.channel == channel.as_uri()
        assert p.sha256 == sha256(f) and p.size == f.stat().st_size
    elf = lock.packages[0]
    assert (elf.version, elf.build, elf.subdir, elf.timestamp) == ("1.0", "h0_0", "linux-64", "2023-06-01T00:00:00Z")


def test_lock_is_byte_stable_and_checked(workspace, run_cli, channel):
    env = write_env(workspace, "c", env_text([channel], ["elfdemo", "hello"]))
    r1 = run_cli("lock", str(env))
    assert r1.returncode == 0, r1.stderr
    lock_path = workspace / "envs" / "c.lock.toml"
    first = lock_path.read_bytes()
    r2 = run_cli("lock", str(env))
    assert r2.returncode == 0 and "unchanged" in r2.stdout + r2.stderr, r2.stdout + r2.stderr
    assert lock_path.read_bytes() == first
    lock_path.unlink()
    assert run_cli("lock", str(env)).returncode == 0
    assert lock_path.read_bytes() == first  # from scratch: the same bytes
    assert run_cli("lock", "--check", str(env)).returncode == 0
    data = tomllib.loads(first.decode())
    assert data["conda"]["channels"] == [channel.as_uri()] and [p["name"] for p in data["conda"]["packages"]] == [
        "elfdemo",
        "greet",
        "hello",
    ]
    # the parsed lock renders to the same bytes
    assert render_lock(parse_lock(first.decode(), "l"), "c.toml") == first.decode()
    env.write_text(env_text([channel], ["elfdemo"]))
    stale = run_cli("lock", "--check", str(env))
    assert stale.returncode == 65 and "stale" in stale.stderr


def test_exempt_package_ignores_the_date_its_dependencies_do_not(channel):
    # toolkit 1.0 was built 2024-05-01, after the date; it depends on greet
    text = env_text([channel], ["toolkit"], "2024-01-01")
    with pytest.raises(SpecError) as e:
        solve(text)
    assert "conda.packages[0]" in str(e.value) and "toolkit" in str(e.value)
    lock = solve(env_text([channel], ["toolkit"], "2024-01-01", exempt=["toolkit"]))
    assert versions(lock) == {"toolkit": "1.0", "greet": "1.0"}  # greet 2.0 is after the date
    assert lock.exempt == ("toolkit",)
    assert versions(solve(env_text([channel], ["greet"], "2024-01-01", exempt=["greet"]))) == {"greet": "2.0"}


def test_exempt_must_name_a_package_of_the_solution(channel):
    with pytest.raises(SpecError) as e:
        solve(env_text([channel], ["greet"], exempt=["gret"]))
    assert "conda.exempt[0]" in str(e.value) and "'gret'" in str(e.value)


def test_strict_channel_priority(channel, second_channel):
    # the first channel that has greet is the only one used for it, even with newer versions elsewhere
    assert versions(solve(env_text([second_channel, channel], ["greet"], "2024-06-01"))) == {"greet": "1.5"}
    assert versions(solve(env_text([channel, second_channel], ["greet"], "2024-06-01"))) == {"greet": "2.0"}
    lock = solve(env_text([second_channel, channel], ["greet"], "2024-06-01", exempt=["greet"]))
    assert versions(lock) == {"greet": "1.5"} and lock.packages[0].channel == second_channel.as_uri()


def test_fixed_virtual_packages_decide_not_the_host(channel):
    # newglibc needs __glibc >=2.30; this host has 2.36, the lock's fixed value is 2.28
    with pytest.raises(SpecError) as e:
        solve(env_text([channel], ["newglibc"]))
    assert "__glibc" in str(e.value)


def test_unsatisfiable_is_65_naming_the_package(workspace, run_cli, channel):
    env = write_env(workspace, "bad", env_text([channel], ["hello", "greet>=3"]))
    r = run_cli("lock", str(env))
    assert r.returncode == 65, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in r.stderr
    assert f"{env}: conda.packages[1]: 'greet>=3': no date-locked solution" in line
    assert "greet >=3" in line and "fix:" in line and not (workspace / "envs" / "bad.lock.toml").exists()


@pytest.mark.parametrize("url", ["file:///nonexistent/conda-channel", "https://conda.invalid/bioconda"])
def test_unreachable_channel_is_69_with_a_hint(workspace, run_cli, url):
    env = write_env(workspace, "off", env_text([url], ["greet"]))
    r = run_cli("lock", str(env))
    assert r.returncode == 69, r.stderr
    assert "conda.channels: cannot read a channel" in r.stderr and "file://" in r.stderr and "mirror" in r.stderr
    assert "Traceback" not in r.stderr


def test_virtual_packages_are_fixed_and_cuda_only_when_asked():
    plain = parse_spec(b'date = 2024-01-01\n[conda]\npackages = ["x"]\n', "c")
    cuda = parse_spec(b'date = 2024-01-01\n[gpu]\ncuda = true\n[conda]\npackages = ["x"]\n', "c")
    assert ("__glibc", "2.28", "0") in conda_layer.virtual_packages(plain)
    assert not any(n == "__cuda" for n, _, _ in conda_layer.virtual_packages(plain))
    assert ("__cuda", "12.0", "0") in conda_layer.virtual_packages(cuda)


def test_channel_names_become_urls():
    assert conda_layer.channel_url("bioconda") == "https://conda.anaconda.org/bioconda"
    assert conda_layer.channel_url("conda-forge/label/main") == "https://conda.anaconda.org/conda-forge/label/main"
    assert conda_layer.channel_url("file:///srv/conda/bioconda/") == "file:///srv/conda/bioconda"


def test_bad_conda_lock_sections_are_refused(channel):
    lock = solve(env_text([channel], ["greet"]))
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin

    pin = NixpkgsPin("b", "a" * 40, "2024-01-01T00:00:00Z", False)
    text = render_lock(Lock("0" * 64, "2024-01-01", pin, conda=lock), "c.toml")
    assert parse_lock(text, "l").conda == lock
    sha = lock.packages[0].sha256
    for bad, key in [
        (text.replace(sha, "0" * 63), "conda.packages[0].sha256"),
        (text.replace(f'url = "{lock.packages[0].url}"', 'url = "ftp://x/greet-1.0-0.conda"'), "conda.packages[0].url"),
        (text.replace(sha, sha[:-1] + "\\n"), "conda.packages[0].sha256"),
        (text.replace('subdir = "linux-64"', 'subdir = "osx-64"', 1), "conda.subdir"),
    ]:
        with pytest.raises(SpecError) as e:
            parse_lock(bad, "l")
        assert f"l: {key}:" in str(e.value)


def test_image_id_covers_the_conda_lock(channel):
    spec = parse_spec(env_text([channel], ["greet"]).encode(), "c")
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin

    pin = NixpkgsPin("b", "a" * 40, "t", False)
    a = solve(env_text([channel], ["greet"], "2024-01-01"))
    b = solve(env_text([channel], ["greet"], "2024-06-01"))
    ids = {image_id(spec, Lock("x", "d", pin, conda=c), "zstd") for c in (a, b, None)}
    assert len(ids) == 3


# --- building and running (real nix, real images) ------------------------------------------


def _build(run_cli, env: Path, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    r = run_cli("build", str(env), *args)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip().split(": ")[-1]), r


def _run(run_cli, env: Path, script: str) -> subprocess.CompletedProcess:
    return run_cli("run", "--runtime", "bwrap", "--gpu", "never", str(env), "--", "sh", "-c", script)


MIXED = '[nixpkgs]\npackages = ["hello"]\n[python]\nversion = "3.11"\n'


@pytest.mark.nix
@pytest.mark.network  # the py-rattler wheel, fetched once from PyPI by nix (a fixed-output fetch)
@needs_gcc
def test_conda_image_runs_the_rewritten_binary_with_activation_and_path_order(workspace, run_cli, channel):
    env = write_env(workspace, "c", env_text([channel], ["elfdemo", "hello"], "2024-01-01", extra=MIXED))
    image, build = _build(run_cli, env)
    # link scripts are never run; the build says which packages had one
    assert "conda link scripts were not run" in build.stderr and "elfdemo (post-link)" in build.stderr
    r = _run(
        run_cli,
        env,
        'elfdemo; elfdemo-where; greet; echo "cp=$CONDA_PREFIX"; '
        'echo "home=$ELFDEMO_HOME mode=$ELFDEMO_MODE unexported=${NOT_EXPORTED-unset}"; '
        'hello; "$CONDA_PREFIX/bin/hello"; command -v python; echo "path=$PATH"; '
        'test -e "$CONDA_PREFIX/linked-by-post-link" && echo LINKED; '
        'grep -c nixsnake_conda_placeholder "$CONDA_PREFIX/bin/elfdemo" || true',
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    prefix = next(line for line in out if line.startswith("cp=")).removeprefix("cp=")
    assert prefix.startswith("/nix/store/") and prefix.endswith("-nixsnake-conda-env")
    # the binary's placeholder (a C string) now names the store path, and the binary runs
    # in the image: on nixpkgs' glibc through /lib64, with its own library from $PREFIX/lib
    assert out[0] == f"prefix={prefix} message=hello from condagreeting from libelfdemo.so"
    assert out[1] == f"installed in {prefix}"  # text placeholder
    assert out[2] == "greet 1.0"  # the dependency, at the env's date
    assert f"home={prefix}/share/elfdemo mode=fast unexported=unset" in out
    # PATH: the environment's bin (nixpkgs, python, base) first, then the conda prefix's bin
    assert "Hello, world!" in out and "hello from conda" in out
    assert any(line.startswith("/nix/store/") and line.endswith("-nixsnake-env/bin/python") for line in out)
    path = next(line for line in out if line.startswith("path=")).removeprefix("path=").split(":")
    assert path[0].endswith("-nixsnake-env/bin") and path[1] == f"{prefix}/bin"
    assert "LINKED" not in out and out[-1] == "0"  # no placeholder left in the binary
    meta = json.loads(run_cli("inspect", str(image), "--json").stdout)
    assert {"elfdemo", "greet", "hello", "python"} <= set(meta["executables"])
    assert meta["lock"]["conda"]["packages"][0]["name"] == "elfdemo"


def _store_paths(image_meta: dict, suffix: str) -> list[str]:
    return [p for p in image_meta["store_paths"] if p.endswith(suffix)]


@pytest.mark.nix
@pytest.mark.network
@needs_gcc
def test_two_builds_give_byte_identical_images(workspace, run_cli, channel, tmp_path):
    env = write_env(workspace, "c", env_text([channel], ["elfdemo"], "2024-01-01"))
    a, _ = _build(run_cli, env, "--store", str(tmp_path / "s1"))
    meta = json.loads(run_cli("inspect", str(a), "--json").stdout)
    conda_out = _store_paths(meta, "-nixsnake-conda-env")
    env_out = _store_paths(meta, "-nixsnake-env")
    assert len(conda_out) == 1 and len(env_out) == 1
    # rebuild the conda prefix and compare (nix --check: same NAR hash or an error)
    drv = subprocess.run(
        ["nix-store", "--query", "--deriver", conda_out[0]], capture_output=True, text=True, check=True
    ).stdout.strip()
    chk = subprocess.run(["nix-store", "--realise", "--check", drv, *nix_option_args()], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stderr
    # and from nothing: delete both outputs, build into another store, same bytes
    rm = subprocess.run(["nix-store", "--delete", *env_out, *conda_out], capture_output=True, text=True)
    assert rm.returncode == 0, rm.stderr
    assert not Path(conda_out[0]).exists()
    b, _ = _build(run_cli, env, "--store", str(tmp_path / "s2"))
    assert a.name == b.name and sha256(a) == sha256(b)


@pytest.mark.nix
@pytest.mark.network
@needs_gcc
def test_https_lock_builds_offline_from_a_seeded_store(workspace, run_cli, channel, tmp_path):
    """A lock made against a public channel, built where the channel is unreachable: the
    archives were put into the nix store (nix-store --add-fixed sha256), so the
    fixed-output fetch of each locked URL is satisfied without network."""
    env = write_env(workspace, "pub", env_text([channel], ["greet"], "2024-06-01"))
    assert run_cli("lock", str(env)).returncode == 0
    lock_path = workspace / "envs" / "pub.lock.toml"
    text = lock_path.read_text()
    lock = parse_lock(text, "l")
    seed = tmp_path / "seed"
    seed.mkdir()
    for p in lock.conda.packages:
        text = text.replace(p.url, f"https://conda.invalid/test/{p.subdir}/{p.file_name}")
        f = seed / conda_layer.store_name(p.file_name)
        shutil.copy(channel / p.subdir / p.file_name, f)
        add = subprocess.run(["nix-store", "--add-fixed", "sha256", str(f)], capture_output=True, text=True)
        assert add.returncode == 0, add.stderr
    text = text.replace(channel.as_uri(), "https://conda.invalid/test")
    lock_path.write_text(text)
    assert "file://" not in text
    _build(run_cli, env)
    r = _run(run_cli, env, "greet")
    assert r.returncode == 0 and r.stdout.strip() == "greet 2.0", r.stderr


@pytest.mark.nix
@needs_gcc
def test_sha256_mismatch_refuses_to_build_and_publishes_nothing(workspace, run_cli, channel, tmp_path):
    mine = tmp_path / "channel"
    shutil.copytree(channel, mine)
    env = write_env(workspace, "t", env_text([mine], ["greet"], "2024-01-01"))
    assert run_cli("lock", str(env)).returncode == 0
    target = mine / "noarch" / "greet-1.0-0.conda"
    target.write_bytes(target.read_bytes() + b"tampered")
    r = run_cli("build", str(env))
    assert r.returncode == 65, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("nixsnake:")][-1]
    assert "t.lock.toml: conda.packages: greet-1.0-0.conda: sha256 mismatch" in line and "fix:" in line
    assert not list((workspace / "store" / "images").glob("*"))
    target.unlink()
    r = run_cli("build", str(env))
    assert r.returncode == 66, r.stderr
    assert f"nixsnake: {target}: no such file; fix: restore the channel" in r.stderr
    assert not list((workspace / "store" / "images").glob("*"))


@contextlib.contextmanager
def serve(directory: Path):
    """The channel over HTTP on the loopback interface, for the lifetime of the block."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.nix
@pytest.mark.network
@needs_gcc
def test_http_channel_is_fetched_by_nix_and_checked_against_the_lock(workspace, run_cli, channel, tmp_path):
    """A channel served over HTTP (a site mirror, here on 127.0.0.1): rattler solves from
    its repodata, nix fetches each archive as a fixed-output derivation; an archive that
    does not match its locked sha256 fails the build with one line, nothing published."""
    mine = tmp_path / "channel"
    shutil.copytree(channel, mine)
    with serve(mine) as url:
        env = write_env(workspace, "h", env_text([url], ["hello"], "2024-01-01"))
        assert run_cli("lock", str(env)).returncode == 0
        lock_path = workspace / "envs" / "h.lock.toml"
        lock = parse_lock(lock_path.read_text(), "l")
        assert lock.conda.packages[0].url == f"{url}/noarch/hello-1.0-0.conda"
        _build(run_cli, env)
        r = _run(run_cli, env, "hello")
        assert r.returncode == 0 and r.stdout.strip() == "hello from conda", r.stderr
        # the lock says another sha256 than the file at the URL has: nix fetches and refuses
        shutil.rmtree(workspace / "store")
        lock_path.write_text(
            lock_path.read_text().replace(lock.conda.packages[0].sha256, hashlib.sha256(b"other").hexdigest())
        )
        r = run_cli("build", str(env))
    assert r.returncode == 65, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("nixsnake:")][-1]
    assert (
        "h.lock.toml: conda.packages: hello-1.0-0.conda: the file at its locked URL does not match the lock's sha256"
        in line
    )
    assert not list((workspace / "store" / "images").glob("*"))


# --- the Snakemake plugin: a job inside the image --------------------------------------------


@pytest.mark.nix
@pytest.mark.network
@needs_gcc
def test_plugin_job_sees_activation_variables_and_reports_conda_packages(tmp_path, channel, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    from test_plugin import _env

    env = _env(tmp_path, text=env_text([channel], ["elfdemo"], "2024-01-01"), lock=True)
    before = {(s.name, s.version, s.is_secondary) for s in env.report_software()}
    assert {("conda:elfdemo", "1.0", False), ("conda:greet", "1.0", True)} <= before
    assert env.contains_executable("elfdemo")  # from the env file, before the image exists
    asyncio.run(env.deploy())
    assert env.contains_executable("elfdemo-where") and env.contains_executable("greet")
    cmd = env.decorate_shellcmd('echo "mode=$ELFDEMO_MODE"; elfdemo | cut -d" " -f1')
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "mode=fast" and lines[1].startswith("prefix=/nix/store/"), r.stdout


def test_without_py_rattler_a_conda_env_is_69_naming_the_dependency(run_cli, tmp_path):
    """nixsnake installed without its dependencies (pip --no-deps): an env file with
    [conda] packages gets one line naming py-rattler and exit 69, not a traceback."""
    hide = tmp_path / "hide"
    (hide / "rattler").mkdir(parents=True)
    (hide / "rattler" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = tmp_path / "c.toml"
    env.write_text('date = 2024-01-01\n[conda]\nchannels = ["conda-forge"]\npackages = ["samtools"]\n')
    r = run_cli("check", str(env), env={"PYTHONPATH": str(hide)})
    assert r.returncode == 69, r.stderr
    assert "required tool 'py-rattler' not found" in r.stderr and "without --no-deps" in r.stderr
    assert "Traceback" not in r.stderr
    # with rattler importable the same file is fine
    assert run_cli("check", str(env)).returncode == 0
