"""`nixsnake run`, `nixsnake shell` and `nixsnake doctor` as users call them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import write_env

STANDIN = Path(__file__).parent / "standin"
TOOLS = 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n[gpu]\ncuda = false\n'

pytestmark = [pytest.mark.nix]


def test_run_builds_then_runs_inside_and_keeps_exit_code(workspace, run_cli):
    env = write_env(workspace, "tools", TOOLS)
    r = run_cli(
        "run", "--runtime", "bwrap", str(env), "--", "sh", "-c", "hello && test -e /.nixsnake/metadata.json && exit 5"
    )
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() == "Hello, world!"
    assert list((workspace / "store" / "images").glob("*.sif"))  # built on demand


def test_run_through_apptainer_standin(workspace, run_cli, tmp_path):
    env = write_env(workspace, "tools", TOOLS)
    log = tmp_path / "standin.log"
    r = run_cli(
        "run",
        str(env),
        "--",
        "hello",
        env={"PATH": f"{STANDIN}:{os.environ['PATH']}", "NIXSNAKE_STANDIN_LOG": str(log)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Hello, world!"
    assert '"exec", "--cleanenv"' in log.read_text()


def test_host_tools_bound_by_nv_run_in_a_built_image(workspace, run_cli, fake_driver):
    """A real image (demo package set): apptainer --nv (the stand-in) binds the host's
    nvidia-smi, a dynamically linked host program, into /usr/bin; it runs on the image's
    glibc through /lib64/ld-linux-x86-64.so.2 and finds NVIDIA's library through the
    image's links, while the host's libGL stays out of reach. The image records its glibc."""
    import json

    env = write_env(workspace, "gpu", 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    path = {"PATH": fake_driver.path(f"{STANDIN}:{os.environ['PATH']}")}
    r = run_cli("run", "--gpu", "always", "--bind", f"{fake_driver.probe}:/opt/probe:ro", str(env), "--",
                "sh", "-c", "nvidia-smi -L && /opt/probe/dlprobe libGL.so.1 libnvidia-ml.so.1", env=path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "GPU 0: NixsnakeFake GPU (UUID: GPU-00000000-0000-0000-0000-000000000000)",
        "libGL.so.1 => not found",
        "libnvidia-ml.so.1 => /.nixsnake/nvidia/libs/libnvidia-ml.so.1",
    ]
    meta = json.loads(run_cli("inspect", "--json", str(env)).stdout)
    host = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]  # the demo set's glibc is the host's
    assert meta["glibc"] == host


def test_shell_reads_commands_from_stdin(workspace, tmp_path):
    """`nixsnake shell` is nixpkgs' bashInteractive (readline: line editing, history),
    not the plain bash builders use; so is the image's /bin/bash and the login shell."""
    env = write_env(workspace, "tools", TOOLS)
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", "shell", "--runtime", "bwrap", str(env)],
        input='hello; echo "in:$(test -e /.nixsnake/metadata.json && echo yes)"; '
        'echo "sh:$(readlink -f /proc/$$/exe)"; echo "bin:$(readlink -f /bin/bash)"; '
        'echo "login:$(grep ^root: /etc/passwd | cut -d: -f7)"; exit 0\n',
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Hello, world!" in r.stdout and "in:yes" in r.stdout
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if line.startswith(("sh:", "bin:", "login:")))
    assert lines["sh"].endswith("-bash-interactive-host-demo/bin/bash"), r.stdout
    assert lines["bin"] == lines["sh"] and lines["login"] == lines["sh"], r.stdout


def test_doctor_ok_and_refuses_tampered_store(workspace, run_cli):
    ok = run_cli("doctor", "--runtime", "bwrap")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all needed checks passed" in ok.stdout
    (workspace / "store").chmod(0o777)
    bad = run_cli("doctor", "--runtime", "bwrap")
    assert bad.returncode == 69
    assert "writable by everyone" in " ".join(bad.stdout.split())


def test_doctor_without_runtime_fails(workspace, run_cli, tmp_path):
    r = run_cli("doctor", "--runtime", "apptainer", env={"NIXSNAKE_RUNTIME_BIN": str(tmp_path / "no-such-apptainer")})
    assert r.returncode == 69 and "not found" in r.stdout


@pytest.mark.parametrize("command", [["run", "ENV", "--", "true"], ["shell", "ENV"]])
def test_run_and_shell_without_the_runtime_are_69_before_building(workspace, run_cli, tmp_path, command):
    env = write_env(workspace, "tools", TOOLS)
    argv = [str(env) if a == "ENV" else a for a in command]
    bad_bin = run_cli(*argv, env={"NIXSNAKE_RUNTIME_BIN": str(tmp_path / "no-such-apptainer")})
    assert bad_bin.returncode == 69, bad_bin.stderr
    assert bad_bin.stderr.startswith(f"nixsnake: required tool '{tmp_path / 'no-such-apptainer'}' not found")
    assert "the runtime_bin setting names it" in bad_bin.stderr
    not_on_path = run_cli(*argv, env={"PATH": "/usr/bin:/bin"})
    assert not_on_path.returncode == 69, not_on_path.stderr
    assert not_on_path.stderr.startswith("nixsnake: required tool 'apptainer' not found")
    assert "set runtime_bin to its absolute path" in not_on_path.stderr
    assert not (workspace / "store" / "images").exists() or not list((workspace / "store" / "images").iterdir())


def test_doctor_refuses_apptainer_without_no_eval(workspace, run_cli):
    env = {"PATH": f"{STANDIN}:{os.environ['PATH']}", "NIXSNAKE_STANDIN_VERSION": "1.0.3"}
    r = run_cli("doctor", "--runtime", "apptainer", env=env)
    assert r.returncode == 69, r.stdout
    assert "--no-eval" in r.stdout and "runtime = singularity" in r.stdout
    r = run_cli("doctor", "--runtime", "apptainer", env={**env, "NIXSNAKE_STANDIN_VERSION": "1.1.0"})
    assert "apptainer version 1.1.0" in r.stdout and "--no-eval" not in r.stdout


@pytest.mark.slurm
def test_doctor_checks_compute_nodes_with_a_job(workspace, run_cli):
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        pytest.skip("no SLURM controller running (start it with .ci/slurm-up.sh)")
    r = run_cli("doctor", "--slurm-partition", "main", env={"PATH": f"{STANDIN}:{os.environ['PATH']}"}, cwd=workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "apptainer on main" in r.stdout and "found in a job" in r.stdout
    assert "GPU devices on main" in r.stdout


@pytest.mark.slurm
def test_doctor_gpu_job_compares_the_nodes_driver_with_the_images(workspace, run_cli, fake_driver, tmp_path):
    """`doctor --slurm-partition P` on a GPU partition: a job there reads what --nv would
    bind (the fake driver, presented through PATH, which sbatch passes on) and the doctor
    names the library an image's glibc is too old for."""
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        pytest.skip("no SLURM controller running (start it with .ci/slurm-up.sh)")
    from test_store import publish_with_metadata

    publish_with_metadata(workspace / "store", tmp_path, "c" * 40, {"glibc": "2.31", "store_paths": []})
    env = {"PATH": fake_driver.path(f"{STANDIN}:{os.environ['PATH']}")}
    r = run_cli("doctor", "--slurm-partition", "main", env=env, cwd=workspace)
    out = " ".join(r.stdout.split())
    assert "GPU devices on main" in out, r.stdout + r.stderr
    assert "GPU libs vs images on main fail" in out, r.stdout
    assert "cccccccccccc (glibc 2.31): libnvidia-ml.so.1 needs GLIBC_2.36" in out
    assert "GPU driver vs CUDA on main ok" in out and "driver supports CUDA 12.4" in out
    assert r.returncode == 69


@pytest.mark.parametrize("terminal", [True, False])
def test_build_failures_that_are_bugs_reach_the_exit_code(workspace, monkeypatch, capsys, terminal):
    """On a terminal the builds run under a live progress board: an exception that is not
    a NixsnakeError (a bug) must still end the command with 70, not 0."""
    from rich.console import Console

    from snakemake_deploy_nixsnake import cli, commands, deploy

    env = write_env(workspace, "x", "date = 2024-01-01\n")

    def boom(*_a, **_k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(deploy, "ensure_image", boom)
    monkeypatch.setattr(commands, "err", Console(stderr=True, force_terminal=terminal, highlight=False, soft_wrap=True))
    with pytest.raises(SystemExit) as e:
        cli.main(["build", str(env)])
    assert e.value.code == 70
    assert "internal error: RuntimeError: simulated bug" in capsys.readouterr().err
