"""`nixsnake run`, `nixsnake shell` and `nixsnake doctor` as users call them; the order
of `nixsnake run`'s options and command, and every command's help text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_env

STANDIN = Path(__file__).parent / "standin"
TOOLS = 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n[gpu]\ncuda = false\n'

nix = pytest.mark.nix  # (the option-order and help tests below need no nix)


@nix
def test_run_builds_then_runs_inside_and_keeps_exit_code(workspace, run_cli):
    env = write_env(workspace, "tools", TOOLS)
    r = run_cli(
        "run", "--runtime", "bwrap", str(env), "--", "sh", "-c", "hello && test -e /.nixsnake/metadata.json && exit 5"
    )
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() == "Hello, world!"
    assert list((workspace / "store" / "images").glob("*.sif"))  # built on demand


@nix
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


@nix
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


@nix
def test_shell_reads_commands_from_stdin(workspace, tmp_path):
    """`nixsnake shell` is nixpkgs' bashInteractive (readline: line editing, history),
    not the plain bash builders use; so is the image's /bin/bash and the login shell."""
    env = write_env(workspace, "tools", TOOLS)
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


@nix
def test_doctor_ok_and_refuses_tampered_store(workspace, run_cli):
    ok = run_cli("doctor", "--runtime", "bwrap")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all needed checks passed" in ok.stdout
    (workspace / "store").chmod(0o777)
    bad = run_cli("doctor", "--runtime", "bwrap")
    assert bad.returncode == 69
    assert "writable by everyone" in " ".join(bad.stdout.split())


@nix
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
    no_tools = tmp_path / "empty-path"  # not /usr/bin: distributions install apptainer there
    no_tools.mkdir()
    not_on_path = run_cli(*argv, env={"PATH": str(no_tools)})
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


@nix
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
    from helpers import publish_with_metadata

    publish_with_metadata(workspace / "store", tmp_path, "c" * 40, {"glibc": "2.31", "store_paths": []})
    env = {"PATH": fake_driver.path(f"{STANDIN}:{os.environ['PATH']}")}
    r = run_cli("doctor", "--slurm-partition", "main", env=env, cwd=workspace)
    out = " ".join(r.stdout.split())
    assert "GPU devices on main" in out, r.stdout + r.stderr
    assert "GPU libs vs images on main fail" in out, r.stdout
    assert "cccccccccccc (glibc 2.31): libnvidia-ml.so.1 needs GLIBC_2.36" in out
    assert "GPU driver vs CUDA on main ok" in out and "driver supports CUDA 12.4" in out
    assert r.returncode == 69


@nix
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


# --- nixsnake run: where options may go, where the command starts -------------------------


@nix
def test_run_takes_options_after_the_env_file_and_passes_the_rest_verbatim(workspace, run_cli):
    """The bug of issue 14: `--runtime bwrap` after ENV became the command. Options after
    `--` belong to the command."""
    env = write_env(workspace, "tools", TOOLS)
    r = run_cli("run", str(env), "--runtime", "bwrap", "--", "sh", "-c", 'hello; echo "$@"', "sh", "--store", "x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Hello, world!", "--store x"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # (store, runtime, binds) reach nixsnake; the command is what is left, verbatim
        (["E.toml", "--", "echo", "hi"], ((None, None, None), ["echo", "hi"])),
        (["--store", "S", "E.toml", "--", "echo", "hi"], (("S", None, None), ["echo", "hi"])),
        (["E.toml", "--store", "S", "--", "echo", "hi"], (("S", None, None), ["echo", "hi"])),
        (["E.toml", "--store=S", "--runtime", "bwrap", "--", "x"], (("S", "bwrap", None), ["x"])),
        (
            ["-B", "/a:/b", "E.toml", "-B/c", "--bind", "/d:/e:ro", "--", "x"],
            ((None, None, ["/a:/b", "/c", "/d:/e:ro"]), ["x"]),
        ),
        (
            ["E.toml", "--", "cmd", "--flag", "--store", "T", "--", "y"],
            ((None, None, None), ["cmd", "--flag", "--store", "T", "--", "y"]),
        ),
        (["E.toml", "--", "--help"], ((None, None, None), ["--help"])),
        # without --: the command starts at the first word after the env file
        (["E.toml", "echo", "hi"], ((None, None, None), ["echo", "hi"])),
        (["E.toml", "--gpu", "never", "echo", "--store", "T"], ((None, None, None), ["echo", "--store", "T"])),
        (["E.toml", "cmd", "--", "x"], ((None, None, None), ["cmd", "--", "x"])),
    ],
)
def test_run_option_order(args, expected, monkeypatch):
    from typer.testing import CliRunner

    from snakemake_deploy_nixsnake import commands, runtime

    seen = []
    monkeypatch.setattr(commands, "_config", lambda **kw: kw)
    monkeypatch.setattr(commands, "_require_runtime", lambda cfg: None)
    monkeypatch.setattr(commands, "_run_request", lambda spec, cfg, binds: (spec, cfg, binds))
    monkeypatch.setattr(runtime, "exec_argv", lambda req, cmd: (req, cmd))
    monkeypatch.setattr(commands, "_exec", seen.append)
    r = CliRunner().invoke(commands.app, ["run", *args])
    assert r.exit_code == 0, r.output
    [((spec, cfg, binds), command)] = seen
    assert spec == Path("E.toml")
    store = cfg["store"]
    assert ((str(store) if store else None), cfg["runtime"], binds) == expected[0]
    assert cfg["gpu"] == ("never" if args[1:3] == ["--gpu", "never"] else None)
    assert command == expected[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["E.toml"], "Missing argument 'CMD [ARGS]...'"),
        (["E.toml", "--store"], "Option '--store' requires an argument"),
        (["E.toml", "--no-such-option", "--", "x"], "No such option: --no-such-option"),
    ],
)
def test_run_usage_errors(args, message, monkeypatch):
    from typer.testing import CliRunner

    from snakemake_deploy_nixsnake import commands

    monkeypatch.setattr(commands, "_exec", lambda argv: pytest.fail(f"ran {argv}"))
    r = CliRunner().invoke(commands.app, ["run", *args])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split()), r.output


# --- help text: what a user types, at a fixed width ----------------------------------------

#: Key lines of `nixsnake COMMAND --help` at COLUMNS=100 (trailing spaces stripped).
HELP: dict[str, list[str]] = {
    "": [
        "Usage: nixsnake [OPTIONS] COMMAND [ARGS]...",
        "  --version  show the version and exit",
        "  --help     Show this message and exit.",
        "  run      Run a command inside the env's image (built first if needed).",
    ],
    "check": ["Usage: nixsnake check [OPTIONS] ENV.toml...", "  ENV.toml...  env files, e.g. envs/vep.toml"],
    "lock": [
        "Usage: nixsnake lock [OPTIONS] ENV.toml...",
        "  --check                  exit 65 if a lock is missing or stale; write nothing",
        "  --nixpkgs-source SOURCE  Where nixpkgs comes from: github:OWNER/REPO (GitHub's API and",
    ],
    "build": [
        "Usage: nixsnake build [OPTIONS] ENV.toml...",
        "  --store PATH             Image store directory: shared storage on a cluster; one store serves",
        "  --compression NAME       Image compression: zstd, gzip (old squashfuse or kernels), xz or lz4.",
        "  --jobs, -j N             Images nixsnake build builds in parallel. Default: 2.",
    ],
    "ls": [
        "Usage: nixsnake ls [OPTIONS]",
        "  --store PATH  Image store directory: shared storage on a cluster; one store serves all users and",
        "  --json        machine-readable output",
    ],
    "gc": [
        "Usage: nixsnake gc [OPTIONS]",
        "  --older-than DAYS    remove images not used for this many days",
        "  --keep-workflow DIR  workflow dir whose env files' images are kept; others are removed",
        "  --dry-run, -n        only show what would be removed",
    ],
    "verify": [
        "Usage: nixsnake verify [OPTIONS] [IMAGE_ID...]",
        "  IMAGE_ID...  image ids (default: every image in the store)",
    ],
    "inspect": [
        "Usage: nixsnake inspect [OPTIONS] IMAGE.sif|ENV.toml",
        "  IMAGE.sif|ENV.toml  a .sif image, or an env file (its image in the store)",
        "  --json        the image's metadata as JSON",
    ],
    "run": [
        "Usage: nixsnake run [OPTIONS] ENV.toml [--] CMD [ARGS]...",
        "  ENV.toml       env file",
        "  CMD [ARGS]...  the command, after -- or after ENV.toml",
        "  --store PATH               Image store directory: shared storage on a cluster; one store serves",
        "  --runtime NAME             Container runtime on compute nodes: apptainer, singularity or bwrap.",
        "  --gpu MODE                 --nv for jobs: auto (decided on the node when the job starts), always",
        "  --bind, -B SRC[:DST[:ro]]  an extra bind (repeatable)",
        "    nixsnake run envs/x.toml --store /shared/nixsnake -- python -c 'print(1)'",
    ],
    "shell": [
        "Usage: nixsnake shell [OPTIONS] ENV.toml",
        "  --bind, -B SRC[:DST[:ro]]  an extra bind (repeatable)",
    ],
    "doctor": [
        "Usage: nixsnake doctor [OPTIONS] [ENV.toml...]",
        "  --slurm-partition NAME   also run a short job there to check the compute nodes",
    ],
}


def _help(run_cli, command: str) -> str:
    r = run_cli(*([command] if command else []), "--help", env={"COLUMNS": "100", "LINES": "50"}, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_lists_every_command(run_cli):
    from typer.main import get_command

    from snakemake_deploy_nixsnake.commands import app

    names = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    assert names == sorted(c for c in HELP if c)
    root = _help(run_cli, "")
    for name in names:
        assert re.search(rf"^  {name} +\S", root, re.MULTILINE), name


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_text(run_cli, command):
    text = _help(run_cli, command)
    lines = [line.rstrip() for line in text.splitlines()]
    for want in HELP[command]:
        assert want in lines, f"{want!r} not in:\n{text}"
    # what a user types, never a Python type: no <bool>, <path>, <list[str]>, {specs}
    assert not re.search(r"<[a-z]|list\[|\{", text), text
    assert max(map(len, lines)) <= 100, text
