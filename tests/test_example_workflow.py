"""The example workflow with RELEASED Snakemake (9.x) through the `container:` path, and
the apptainer test stand-in's handling of the command line released Snakemake emits.

Released Snakemake runs every job as

    apptainer [--quiet --silent] exec --home '<cwd>' [--bind '<p>']... [--pwd ..]
        [--apptainer-args...] <image> bash -c '<cmd>'

(snakemake/deployment/singularity.py, ``shellcmd``): no --cleanenv, so apptainer forwards
the host environment except PATH, LD_LIBRARY_PATH & co., and the image's environment
scripts then set PATH. The stand-in (tests/standin/apptainer) must do the same.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import _image_fixtures as fx
import pytest
from example_helpers import (
    ENV_NAMES,
    EXAMPLE,
    RULES,
    STANDIN,
    VEP_ENV_NAMES,
    VEP_RULES,
    base_env,
    check_committed_locks,
    check_proofs,
    check_results,
    copy_example,
    nix_calls,
    nix_shims,
    proof_files,
    read_kv,
    standin_execs,
)

# --- the stand-in and released Snakemake's command line (no nix needed) ------------------------

_missing = fx.missing_requirements()
e2e = pytest.mark.skipif(_missing is not None, reason=f"needs: {_missing}")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    if _missing:
        pytest.skip(_missing)
    return fx.build_image(tmp_path_factory.mktemp("example-image"))


@pytest.fixture
def host_env(tmp_path) -> dict[str, str]:
    return fx.job_environment(tmp_path, LANG="en_US.UTF-8")


@e2e
def test_standin_runs_released_snakemakes_command_line(image, host_env, tmp_path, monkeypatch):
    """The exact string snakemake.deployment.singularity.shellcmd builds, run by bash."""
    from snakemake.deployment import singularity

    wd = tmp_path / "work dir"
    wd.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    monkeypatch.chdir(wd)
    monkeypatch.setenv("PATH", host_env["PATH"])
    singularity.Singularity.instance = None  # a fresh check() with the stand-in on PATH
    singularity.Singularity().check()
    cmd = singularity.shellcmd(
        str(image),
        'set -euo pipefail; echo "$HOME|$(pwd)|${PYTHONPATH-unset}|$LANG"; cat '
        + str(data / "in.txt")
        + " | tr a-z A-Z; test -e /.nixsnake/metadata.json && echo hi > 'out file'; exit 3",
        bind=[data, tmp_path / "does-not-exist"],
        args="--nv",
        shell_executable="/bin/bash",
    )
    assert re.search(r"apptainer\s+exec --home '.*work dir' --nv --bind '.*/data' ", cmd), cmd
    cp = subprocess.run(
        ["bash", "-c", cmd], env=host_env, cwd=wd, check=False, capture_output=True, text=True, timeout=60
    )
    # the job's exit status passes through; HOME is --home (the workdir); no --cleanenv:
    # host variables (PYTHONPATH, LANG) are forwarded, as apptainer does
    assert cp.returncode == 3, cp.stderr
    assert cp.stdout == f"{wd}|{wd}|/host/python|en_US.UTF-8\nINPUT\n", cp.stderr
    assert (wd / "out file").read_text() == "hi\n"
    [entry] = standin_execs(Path(host_env["NIXSNAKE_STANDIN_LOG"]))
    assert entry[:4] == ["apptainer", "exec", "--home", str(wd)] and "--cleanenv" not in entry


@e2e
def test_standin_without_cleanenv_forwards_host_env_like_apptainer(image, host_env, tmp_path):
    tricky = 'it\'s "q" $(id) `x` \\ end\nsecond line'
    env = {
        **host_env,
        "HOSTVAR": tricky,
        "APPTAINER_BINDPATH": "/nope",  # the runtime's own settings are never forwarded
        "SINGULARITY_FOO": "x",
        "APPTAINERENV_INJECTED": "inj",  # ...but APPTAINERENV_X sets X
        "_nx_image": "/evil",  # a name the shell script uses internally
    }
    script = (
        'printf "%s|" "$HOSTVAR" "$PATH" "$LD_LIBRARY_PATH" "$PYTHONPATH" "$LANG" "$INJECTED" '
        '"${APPTAINER_BINDPATH-unset}" "${SINGULARITY_FOO-unset}" "${APPTAINERENV_INJECTED-unset}" "$HOME"; '
        "env | grep -c '^NIXSNAKE_STANDIN_ENV_' || true"
    )
    cp = subprocess.run(
        [str(STANDIN / "apptainer"), "exec", str(image), "sh", "-c", script],
        env=env, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    # PATH and LD_LIBRARY_PATH come from the image's env scripts, never from the host
    assert cp.stdout == (
        f"{tricky}|{fx.IMAGE_PATH_VAR}|{fx.IMAGE_LD_LIBRARY_PATH}|/host/python|en_US.UTF-8|inj|"
        f"unset|unset|unset|{os.environ.get('HOME', '/')}|0\n"
    ), cp.stderr
    # with --cleanenv the same call forwards nothing but TERM/proxies, and LANG=C
    cp = subprocess.run(
        [str(STANDIN / "apptainer"), "exec", "--cleanenv", str(image), "sh", "-c", 'echo "${HOSTVAR-unset}|${PYTHONPATH-unset}|$LANG|$INJECTED"'],
        env=env, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (cp.returncode, cp.stdout) == (0, "unset|unset|C|inj\n"), cp.stderr
    for entry in standin_execs(Path(host_env["NIXSNAKE_STANDIN_LOG"])):
        assert not any(tricky in a for a in entry)


@e2e
def test_standin_home(image, host_env, tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "marker").write_text("m\n")

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(STANDIN / "apptainer"), "exec", *flags, str(image), "sh", "-c", 'echo "$HOME"; cat "$HOME/marker"'],
            env=host_env, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    cp = run("--home", str(home))
    assert (cp.returncode, cp.stdout) == (0, f"{home}\nm\n"), cp.stderr
    cp = run("-H", f"{home}:/home/me")  # src:dst -- bound at dst, HOME=dst
    assert (cp.returncode, cp.stdout) == (0, "/home/me\nm\n"), cp.stderr
    cp = run("--contain", f"--home={home}")  # a custom home is bound even with --contain
    assert (cp.returncode, cp.stdout) == (0, f"{home}\nm\n"), cp.stderr
    cp = run("--cleanenv", "--home", str(home / "missing"))
    assert cp.returncode == 255 and "FATAL:" in cp.stderr


def test_snakefile_sdm_mirrors_snakefile():
    """Snakefile.sdm is Snakefile with `software: nixsnake(spec=...)` for `container:`,
    apart from the header comment and the block marked "path-specific" (how a rule gets
    its image, and how the VEP cache is bound)."""
    a = (EXAMPLE / "Snakefile").read_text()
    b = (EXAMPLE / "Snakefile.sdm").read_text()

    def rules(text: str) -> str:
        body = text[text.index("import os\n") :]
        begin, end = body.index("# --- path-specific"), body.index("# --- end path-specific")
        body = body[:begin] + body[end:]
        body = re.sub(r'container:\n(\s+)image\("([\w-]+)"\)', r'software:\n\1nixsnake(spec="envs/\2.toml")', body)
        return re.sub(r"container:\n(\s+)image\(VEP_ENV\)", r'software:\n\1nixsnake(spec=f"envs/{VEP_ENV}.toml")', body)

    assert rules(a) == rules(b)
    assert "container:" not in b and "image(" not in b.replace("nixsnake_image(", "")
    rules_in_b = re.findall(r"^\s*rule (\w+):", b, re.M)
    assert sorted(rules_in_b) == sorted(["all", *RULES, *VEP_RULES])
    assert b.count("software:\n") == len(RULES) + len(VEP_RULES)
    for name in ENV_NAMES:
        assert (EXAMPLE / "envs" / f"{name}.toml").is_file() and (EXAMPLE / "envs" / f"{name}.lock.toml").is_file()


def test_example_conda_channel_is_byte_stable_and_fits_the_committed_lock(tmp_path):
    """The example's conda channel (scripts/conda_channel.py) is the same bytes in every
    process, and envs/tally.lock.toml names its archives by exactly those sha256s, so a
    fresh clone builds the `tally` image without re-locking."""
    script = EXAMPLE / "scripts" / "conda_channel.py"
    for d in ("a", "b"):
        subprocess.run([sys.executable, str(script), str(tmp_path / d)], check=True, capture_output=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(f) for f in files] == [
        "linux-64/repodata.json",
        "noarch/csq-tally-1.0-0.tar.bz2",
        "noarch/csq-tally-2.0-0.tar.bz2",
        "noarch/repodata.json",
    ]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    lock = tomllib.loads((EXAMPLE / "envs" / "tally.lock.toml").read_text())["conda"]
    channel = tomllib.loads((EXAMPLE / "envs" / "tally.toml").read_text())["conda"]["channels"]
    assert lock["channels"] == channel == ["file:///tmp/nixsnake-example-conda-channel"]
    (pkg,) = lock["packages"]
    assert (pkg["name"], pkg["version"]) == ("csq-tally", "1.0")  # 2.0 is after the env's date
    rel = pkg["url"].removeprefix(channel[0] + "/")
    blob = (tmp_path / "a" / rel).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == pkg["sha256"] and len(blob) == pkg["size"]


def test_every_env_file_passes_check_without_nix(run_cli, tmp_path):
    """`nixsnake check` validates all env files, the VEP ones too, without nix or network."""
    names = [*ENV_NAMES, *VEP_ENV_NAMES]
    assert sorted(p.stem for p in (EXAMPLE / "envs").glob("*.toml") if not p.name.endswith(".lock.toml")) == sorted(
        names
    )
    env = {"PATH": "/nonexistent", "NIXSNAKE_CACHE_DIR": str(tmp_path / "cache")}  # no nix, no tools
    r = run_cli("check", *[f"envs/{n}.toml" for n in names], cwd=EXAMPLE, env=env)
    assert r.returncode == 0, r.stderr
    assert all(f"envs/{n}.toml: ok" in r.stdout for n in names), r.stdout
    # vep.toml is locked (like every env file here, against the demo set); the bioconda
    # one cannot be locked where the channels are unreachable, and says so
    assert (EXAMPLE / "envs" / "vep.lock.toml").is_file()
    assert not (EXAMPLE / "envs" / "vep-bioconda.lock.toml").exists()
    assert "nixsnake lock envs/vep-bioconda.toml" in (EXAMPLE / "envs" / "vep-bioconda.toml").read_text()


# --- the whole example workflow, locally (nix + PyPI) --------------------------------------


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The example workflow run once with released Snakemake, --sdm apptainer, the stand-in."""
    if _missing:
        pytest.skip(_missing)
    if not shutil.which("nix-build"):
        pytest.skip("nix is not installed")
    tmp = tmp_path_factory.mktemp("example-local")
    wf = copy_example(tmp / "wf")
    env = base_env(tmp_path_factory.getbasetemp())
    nix_log = tmp / "nix-calls.log"
    env["PATH"] = f"{nix_shims(tmp / 'shims', nix_log)}:{STANDIN}:{env['PATH']}"
    env["NIXSNAKE_STANDIN_LOG"] = str(tmp / "standin.log")
    check_committed_locks(wf, env)
    cp = subprocess.run(
        [sys.executable, "-m", "snakemake", "--sdm", "apptainer", "--cores", "2"],
        cwd=wf, env=env, check=False, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return wf, env, cp, nix_log


@pytest.mark.nix
@pytest.mark.network
def test_example_workflow_local_container_path(local_run):
    wf, env, cp, nix_log = local_run
    assert cp.returncode == 0, cp.stderr[-4000:]
    store = wf / ".snakemake" / "nixsnake-store"
    assert len(list((store / "images").glob("*.sif"))) == len(ENV_NAMES)
    check_proofs(wf, store)
    check_results(wf)
    # snakemake ran every job through `apptainer exec --home <workdir>`, without --cleanenv
    execs = standin_execs(Path(env["NIXSNAKE_STANDIN_LOG"]))
    assert len(execs) == len(proof_files(wf))
    for entry in execs:
        assert entry[1:4] == ["exec", "--home", str(wf)] and "--cleanenv" not in entry, entry
    # one nix-build per image, all while snakemake parsed the Snakefile
    assert [c[1] for c in nix_calls(nix_log)].count("nix-build") == len(ENV_NAMES)

    # re-running: nothing to do, and no nix at all
    before = nix_calls(nix_log)
    again = subprocess.run(
        [sys.executable, "-m", "snakemake", "--sdm", "apptainer", "--cores", "2"],
        cwd=wf, env=env, check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    assert nix_calls(nix_log) == before


@pytest.mark.nix
@pytest.mark.network
def test_example_job_exit_code_reaches_snakemake(local_run, tmp_path):
    wf, env, _cp, nix_log = local_run
    (wf / "Snakefile.fail").write_text(
        "from snakemake_deploy_nixsnake.container import nixsnake_image\n\n"
        "rule fail:\n"
        '    output: "failed.txt"\n'
        '    container: nixsnake_image("envs/samtools.toml", workflow_dir=workflow.basedir)\n'
        '    shell: "test -e /.nixsnake/metadata.json && which samtools > ran-inside.txt && exit 3; touch {output}"\n'
    )
    before = nix_calls(nix_log)
    cp = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", "Snakefile.fail", "--sdm", "apptainer", "--cores", "1"],
        cwd=wf, env=env, check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, out[-3000:]
    assert "returned non-zero exit status 3" in out, out[-3000:]
    assert (wf / "ran-inside.txt").read_text().startswith("/nix/store/")  # the command ran in the image
    assert not (wf / "failed.txt").exists()
    assert nix_calls(nix_log) == before  # the image existed: no build


@pytest.mark.nix
@pytest.mark.network
def test_vep_cache_is_bound_read_only_into_jobs(local_run, tmp_path):
    """--config vep_cache=DIR: released Snakemake's jobs get `--bind DIR:/vep-cache:ro`
    (the Snakefile adds it to the apptainer arguments). Only the images of rules with jobs
    are built: running one other rule builds no VEP image."""
    wf, env, _cp, nix_log = local_run
    cache = tmp_path / "vep-cache"
    (cache / "homo_sapiens" / "115_GRCh38").mkdir(parents=True)
    log = tmp_path / "standin.log"
    before = nix_calls(nix_log)
    cp = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/gpu/gpu_check.txt", "--sdm", "apptainer", "--cores", "1",
         "--forcerun", "gpu_check", "--config", f"vep_cache={cache}"],
        cwd=wf, env={**env, "NIXSNAKE_STANDIN_LOG": str(log)}, check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-3000:]
    [entry] = standin_execs(log)
    i = entry.index(f"{cache}:/vep-cache:ro")
    assert entry[i - 1] == "--bind" and i < entry.index(
        read_kv(wf / "results" / "proof" / "gpu_check.txt")["container"]
    )
    assert nix_calls(nix_log) == before


# --- the VEP rule in dry runs (no nix, no images) ------------------------------------------


def _job_counts(out: str) -> dict[str, int]:
    table = out[out.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_lists_the_vep_jobs_and_builds_nothing(tmp_path):
    """`snakemake -n` never builds (nixsnake_container knows it is a dry run), so the VEP
    rule can be switched on and checked with the demo package set, which has no `vep`."""
    wf = copy_example(tmp_path / "wf")
    cache = tmp_path / "vep-cache"
    (cache / "homo_sapiens" / "115_GRCh38").mkdir(parents=True)
    nix_log = tmp_path / "nix-calls.log"
    env = base_env(tmp_path)
    env["PATH"] = f"{nix_shims(tmp_path / 'shims', nix_log)}:{STANDIN}:{env['PATH']}"

    def dry(*config: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "8", "--sdm", "apptainer", "--config", *config],
            cwd=wf, env=env, check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    cp = dry(f"vep_cache={cache}", "chunks=7", "vep_threads=3")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out[-4000:]
    jobs = _job_counts(out)
    assert jobs["annotate"] == jobs["vep"] == 7 and jobs["vep_gather"] == jobs["scatter"] == 1, jobs
    assert "vep --offline --cache --dir_cache /vep-cache --species homo_sapiens --assembly GRCh38 --fork 3" in out
    assert "nixsnake [envs/vep.toml]: dry run: not building the image (it will be " in out
    assert nix_calls(nix_log) == [] and not (wf / ".snakemake" / "nixsnake-store" / "images").exists()
    # off by default
    cp = dry("chunks=2")
    assert cp.returncode == 0, cp.stderr[-3000:]
    jobs = _job_counts(cp.stdout + cp.stderr)
    assert "vep" not in jobs and jobs["annotate"] == 2, jobs
    # the bioconda env has no lock in the repository: the dry run says what to do
    cp = dry(f"vep_cache={cache}", "vep_env=vep-bioconda")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1 and "vep-bioconda.lock.toml: no such file" in out and "nixsnake lock" in out, out[-3000:]
    # a cache that is not there, or a path apptainer's --bind cannot express
    cp = dry(f"vep_cache={tmp_path / 'nowhere'}")
    assert cp.returncode == 1 and "not a directory" in cp.stdout + cp.stderr, cp.stderr[-3000:]
    odd = tmp_path / "a:b"
    odd.mkdir()
    cp = dry(f"vep_cache={odd}")
    assert cp.returncode == 1 and "contains ':'" in cp.stdout + cp.stderr, cp.stderr[-3000:]
    assert nix_calls(nix_log) == []
