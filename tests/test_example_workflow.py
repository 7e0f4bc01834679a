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

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import _image_fixtures as fx
import pytest
from example_helpers import (
    ENV_NAMES,
    EXAMPLE,
    RULES,
    STANDIN,
    base_env,
    check_committed_locks,
    check_proofs,
    check_results,
    copy_example,
    nix_calls,
    nix_shims,
    proof_files,
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
    """Snakefile.sdm is Snakefile with `software: nixsnake(spec=...)` for `container:`."""
    a = (EXAMPLE / "Snakefile").read_text()
    b = (EXAMPLE / "Snakefile.sdm").read_text()

    def rules(text: str) -> str:
        body = text[text.index('configfile: "config.yaml"') :]
        body = body.replace(
            '\n\ndef image(env):\n    return nixsnake_image(f"envs/{env}.toml", workflow_dir=workflow.basedir)\n', ""
        )
        return re.sub(
            r'container:\n        image\("(\w+)"\)', r'software:\n        nixsnake(spec="envs/\1.toml")', body
        )

    assert rules(a) == rules(b)
    assert b.count("software:\n        nixsnake(spec=") == len(RULES)
    for name in ENV_NAMES:
        assert (EXAMPLE / "envs" / f"{name}.toml").is_file() and (EXAMPLE / "envs" / f"{name}.lock.toml").is_file()


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
        '    container: nixsnake_image("envs/count.toml", workflow_dir=workflow.basedir)\n'
        '    shell: "test -e /.nixsnake/metadata.json && which gawk > ran-inside.txt && exit 3; touch {output}"\n'
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
