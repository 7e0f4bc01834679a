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
    assert "writable by everyone" in bad.stdout


def test_doctor_without_runtime_fails(workspace, run_cli, tmp_path):
    r = run_cli("doctor", "--runtime", "apptainer", env={"NIXSNAKE_RUNTIME_BIN": str(tmp_path / "no-such-apptainer")})
    assert r.returncode == 69 and "not found" in r.stdout


@pytest.mark.slurm
def test_doctor_checks_compute_nodes_with_a_job(workspace, run_cli):
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        pytest.skip("no SLURM controller running (start it with .ci/slurm-up.sh)")
    r = run_cli("doctor", "--slurm-partition", "main", env={"PATH": f"{STANDIN}:{os.environ['PATH']}"}, cwd=workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "apptainer on main" in r.stdout and "found in a job" in r.stdout
    assert "GPU devices on main" in r.stdout


@pytest.mark.parametrize("terminal", [True, False])
def test_build_failures_that_are_bugs_reach_the_exit_code(workspace, monkeypatch, capsys, terminal):
    """On a terminal the builds run under a live progress board: an exception that is not
    a NixsnakeError (a bug) must still end the command with 70, not 0."""
    from rich.console import Console

    from snakemake_deploy_nixsnake import cli, deploy

    env = write_env(workspace, "x", "date = 2024-01-01\n")

    def boom(*_a, **_k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(deploy, "ensure_image", boom)
    monkeypatch.setattr(cli, "err", Console(stderr=True, force_terminal=terminal, highlight=False, soft_wrap=True))
    with pytest.raises(SystemExit) as e:
        cli.main(["build", str(env)])
    assert e.value.code == 70
    assert "internal error: RuntimeError: simulated bug" in capsys.readouterr().err
