"""The Snakemake plugin: the interface's own conformance suite with real nix builds and
the apptainer stand-in, plus the failure modes a user meets."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import nix_options
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_software_deployment_plugins import EnvBase, EnvSpecSourceFile, ShellExecutable
from snakemake_interface_software_deployment_plugins.tests import TestSoftwareDeploymentBase

from snakemake_deploy_nixsnake.plugin import Env, EnvSpec, Settings

STANDIN = Path(__file__).parent / "standin"
# one directory per test session (get_env_spec is called many times and must be stable)
WORKDIR = Path(tempfile.gettempdir()) / f"nixsnake-conformance-{os.getpid()}"

ENV_TEXT = """date = 2024-06-01
[nixpkgs]
packages = ["hello"]
[python]
version = "3.11"
packages = ["six"]
"""


@pytest.fixture(autouse=True)
def _standin_on_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")


def _settings(store: Path) -> Settings:
    # absolute path: the conformance suite runs commands with `bash -l`, whose profile resets PATH
    return Settings(
        store=store,
        runtime="apptainer",
        runtime_bin=str(STANDIN / "apptainer"),
        gpu="never",
        nixpkgs_source="demo",
        nix_options=";".join(f"{k}={v}" for k, v in nix_options().items()),
    )


@pytest.mark.nix
class TestConformance(TestSoftwareDeploymentBase):
    __test__ = True

    def get_env_spec(self):
        spec = WORKDIR / "envs" / "conformance.toml"
        spec.parent.mkdir(parents=True, exist_ok=True)
        if not spec.exists() or spec.read_text() != ENV_TEXT:
            spec.write_text(ENV_TEXT)
        # A workflow ships its env file with a committed lock; interface 0.18.6's suite
        # deploys without calling pin() first, so lock here the way a user would.
        from snakemake_deploy_nixsnake.lock import lock_file, stale_reason
        from snakemake_deploy_nixsnake.spec import load_spec

        if stale_reason(load_spec(spec), spec):
            lock_file(spec, _settings_config(self.get_settings()))
        return EnvSpec(spec=EnvSpecSourceFile(str(spec)))

    def get_env_cls(self):
        return Env

    def get_settings(self):
        return _settings(WORKDIR / "store")

    def get_settings_cls(self):
        return Settings

    def get_test_cmd(self):
        # runs wholly inside the image: both sides of && and the pipe
        return (
            "python -c \"import six, sys; assert sys.prefix.startswith('/nix/store/')\" && "
            "test -e /.nixsnake/metadata.json && hello | grep -q 'Hello, world!'"
        )

    def get_contained_executable(self):
        return "python"


def _settings_config(settings: Settings):
    from snakemake_deploy_nixsnake.plugin import _config

    return _config(settings)


def _env(tmp_path: Path, text: str | None = ENV_TEXT, lock: bool = False, **settings) -> Env:
    spec = tmp_path / "envs" / "e.toml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        spec.write_text(text)
    es = EnvSpec(spec=EnvSpecSourceFile(str(spec)))
    es.spec.cached = spec
    (tmp_path / "p").mkdir(exist_ok=True)
    kwargs = dict(
        spec=es,
        within=None,
        settings=_settings(tmp_path / "store") if not settings else Settings(**settings),
        shell_executable=ShellExecutable("bash", command_arg="-c"),
        mountpoints=[],
        tempdir=tmp_path / "t",
        cache_prefix=tmp_path / "p",
        deployment_prefix=tmp_path / "p",
        pinfile_prefix=tmp_path / "p",
    )
    if "envvars" in inspect.signature(EnvBase.__init__).parameters:  # interface >= 0.19
        kwargs["envvars"] = set()
    env = Env(**kwargs)
    if lock:
        asyncio.run(env.pin())
    return env


def test_missing_env_file_names_it(tmp_path):
    env = _env(tmp_path, text=None)
    with pytest.raises(WorkflowError, match=r"env file .*e\.toml not found"):
        env.decorate_shellcmd("true")


def test_missing_lock_says_how_to_fix(tmp_path):
    env = _env(tmp_path)
    with pytest.raises(WorkflowError, match=r"e\.lock\.toml is missing .*`nixsnake lock .*e\.toml`"):
        env.decorate_shellcmd("true")


@pytest.mark.nix
def test_stale_lock_is_refused(tmp_path):
    _env(tmp_path, lock=True)
    spec = tmp_path / "envs" / "e.toml"
    spec.write_text(ENV_TEXT.replace('"six"', '"six", "packaging"'))
    fresh = _env(tmp_path, text=None)
    with pytest.raises(WorkflowError, match="stale"):
        fresh.decorate_shellcmd("true")


@pytest.mark.nix
def test_record_hash_follows_the_lock_not_the_path(tmp_path):
    a = _env(tmp_path / "a", lock=True)
    b = _env(tmp_path / "b", lock=True)  # same content elsewhere: same software, same hash
    assert a.hash() == b.hash()
    c = _env(tmp_path / "c", text=ENV_TEXT.replace("2024-06-01", "2024-01-20"), lock=True)
    assert c.hash() != a.hash()


@pytest.mark.nix
def test_exit_code_passes_through_and_missing_image_fails_fast(tmp_path, monkeypatch):
    env = _env(tmp_path, lock=True)
    cmd = env.decorate_shellcmd("echo inside; exit 3")
    # not deployed: the job fails at once, saying where to build
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.returncode == 69
    assert "head node" in r.stderr and "nixsnake build" in r.stderr
    asyncio.run(env.deploy())
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.returncode == 3 and r.stdout.strip() == "inside", r.stderr


@pytest.mark.nix
def test_deploy_inside_slurm_job_refuses_to_build(tmp_path, monkeypatch):
    env = _env(tmp_path, lock=True)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURMD_NODENAME", "node1")
    with pytest.raises(WorkflowError, match="head node"):
        asyncio.run(env.deploy())


@pytest.mark.nix
def test_report_software_is_from_the_lock(tmp_path):
    env = _env(tmp_path, lock=True)
    rep = {(s.name, s.version) for s in env.report_software()}
    assert ("six", "1.16.0") in rep
    assert any(name == "hello" and version.startswith("nixpkgs nixos-unstable@") for name, version in rep)


@pytest.mark.nix
def test_contains_executable_from_image_metadata(tmp_path):
    env = _env(tmp_path, lock=True)
    asyncio.run(env.deploy())
    assert env.contains_executable("hello") and env.contains_executable("python")
    assert not env.contains_executable("R")


@pytest.mark.nix
def test_per_job_calls_read_and_parse_once_per_env(tmp_path, monkeypatch):
    """Snakemake keeps one Env per env file and calls hash(), decorate_shellcmd() and
    contains_executable() for every job (issue 14: DAG time of 10,000 jobs). None of them
    may read the settings, the env file, the lock or the image again: a count, not a time."""
    from collections import Counter

    from snakemake_deploy_nixsnake import deploy, plugin
    from snakemake_deploy_nixsnake.image import sif

    text = 'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n'
    asyncio.run(_env(tmp_path, text=text, lock=True).deploy())  # locked and built: the per-job state
    counts: Counter[str] = Counter()

    def counting(owner, name):
        orig = getattr(owner, name)

        def wrapper(*a, **kw):
            counts[name] += 1
            return orig(*a, **kw)

        monkeypatch.setattr(owner, name, wrapper)

    for name in ("load_config", "parse_spec", "parse_lock", "resolved_env", "image_id", "_source_bytes"):
        counting(plugin, name)
    counting(sif, "read_sif")
    counting(deploy, "run_request")
    env = _env(tmp_path, text=None)  # a new Env over the same files, as Snakemake makes it
    env.mountpoints = [tmp_path / "t", tmp_path / "later"]
    first = env.decorate_shellcmd("echo 0")
    for j in range(300):
        env.hash()
        assert env.decorate_shellcmd(f"echo {j}") == first.replace("'echo 0'", f"'echo {j}'")
        assert env.contains_executable("hello") and not env.contains_executable("R")
    assert dict(counts) == {
        "load_config": 1, "_source_bytes": 1, "parse_spec": 1, "parse_lock": 1, "image_id": 1,
        "resolved_env": 1, "read_sif": 1, "run_request": 1,
    }  # fmt: skip
    # what may change between jobs is looked at each time: a mount point that appears
    # is bound from then on (as a fresh Env would), in another working directory too
    (tmp_path / "later").mkdir()
    later = env.decorate_shellcmd("echo 1")
    assert str(tmp_path / "later") in later and str(tmp_path / "later") not in first
    assert counts["run_request"] == 2
    fresh = _env(tmp_path, text=None)
    fresh.mountpoints = env.mountpoints
    assert later == fresh.decorate_shellcmd("echo 1")
    monkeypatch.chdir(tmp_path / "later")
    assert f"--pwd {tmp_path / 'later'}" in env.decorate_shellcmd("echo 1")
    assert counts["run_request"] == 4  # (the fresh Env's one, and this one)


def test_settings_are_all_optional_with_help():
    for f in dataclasses.fields(Settings):
        assert f.default is None and f.metadata.get("help")


def test_snakemake_discovers_plugin_and_parses_its_flags():
    """What `snakemake --sdm nixsnake --sdm-nixsnake-*` does: module-name discovery,
    settings types usable by argparse (a string annotation would break this)."""
    pytest.importorskip("snakemake")
    from snakemake.common.argparse import ArgumentParser
    from snakemake_interface_software_deployment_plugins.registry import SoftwareDeploymentPluginRegistry

    registry = SoftwareDeploymentPluginRegistry()
    plugin = registry.get_plugin("nixsnake")
    assert plugin.settings_cls is Settings
    parser = ArgumentParser()
    registry.register_cli_args(parser)
    args = parser.parse_args(
        [
            "--sdm-nixsnake-store",
            "/shared/images",
            "--sdm-nixsnake-gpu",
            "always",
            "--sdm-nixsnake-runtime",
            "singularity",
        ]
    )
    settings = plugin.get_settings(args)
    assert settings.store == Path("/shared/images") and settings.gpu == "always" and settings.runtime == "singularity"
    with pytest.raises(SystemExit):
        parser.parse_args(["--sdm-nixsnake-gpu", "sometimes"])


@pytest.mark.nix
def test_scheduler_gpu_assignment_reaches_the_job(tmp_path, monkeypatch):
    """--cleanenv must not drop CUDA_VISIBLE_DEVICES / SLURM_* (a job would see every GPU), nor
    Snakemake's per-job thread limits and temp dir (jobs would oversubscribe the cores)."""
    env = _env(tmp_path, lock=True)
    asyncio.run(env.deploy())
    cmd = env.decorate_shellcmd(
        'echo "cvd=$CUDA_VISIBLE_DEVICES rocr=$ROCR_VISIBLE_DEVICES job=$SLURM_JOB_ID omp=$OMP_NUM_THREADS '
        "blas=$OPENBLAS_NUM_THREADS tmp=$TMP mps=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE "
        'unset=${SLURM_ARRAY_TASK_ID-none} ${NOT_PASSED-not-passed}"'
    )
    scheduler = {"CUDA_VISIBLE_DEVICES": "1", "ROCR_VISIBLE_DEVICES": "1", "SLURM_JOB_ID": "77",
                 "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50"}  # fmt: skip
    snakemake = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "TMP": str(tmp_path / "t")}  # shell.py's
    r = subprocess.run(
        ["bash", "-c", cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **scheduler, **snakemake, "NOT_PASSED": "x"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"cvd=1 rocr=1 job=77 omp=2 blas=2 tmp={tmp_path / 't'} mps=50 unset=none not-passed"


def _job_args(settings: Settings) -> str:
    """The ``--sdm-nixsnake-*`` part of a spawned job's command line, as snakemake builds
    it: with the plugin branch's own collector when that snakemake is installed, else by
    its rule (stated in spawn_jobs.PluginArgCollectorBase.get_cli_args: every set field,
    except those marked env_var, becomes ``format_cli_arg(plugin.get_cli_arg(name), value)``),
    through the interface package's registry."""
    from snakemake_interface_executor_plugins.utils import format_cli_arg, join_cli_args
    from snakemake_interface_software_deployment_plugins.registry import SoftwareDeploymentPluginRegistry

    plugin = SoftwareDeploymentPluginRegistry().get_plugin("nixsnake")
    try:
        from snakemake.spawn_jobs import SoftwareDeploymentPluginArgCollector  # the plugin branch
    except ImportError:
        args = []
        for f in dataclasses.fields(plugin.settings_cls):
            value = getattr(settings, f.name)
            if value is None or f.metadata.get("env_var"):
                continue
            args.append(format_cli_arg(plugin.get_cli_arg(f.name), f.metadata.get("unparse", lambda v: v)(value)))
        return join_cli_args(args)
    workflow = type("W", (), {"software_deployment_provider_settings": {"nixsnake": settings}})()
    return join_cli_args(SoftwareDeploymentPluginArgCollector(workflow).get_cli_args())


def test_every_setting_reaches_cluster_jobs_on_their_command_line():
    """With --executor slurm a job gets snakemake's command line, not the head node's
    environment: a setting declared env_var would be lost (jobs looking in the wrong
    store). Head-node settings -> job command line -> the job's parsed settings."""
    import shlex

    pytest.importorskip("snakemake")
    from snakemake.common.argparse import ArgumentParser
    from snakemake_interface_software_deployment_plugins.registry import SoftwareDeploymentPluginRegistry

    registry = SoftwareDeploymentPluginRegistry()
    plugin = registry.get_plugin("nixsnake")
    assert all(info["env_var"] is None for info in plugin.get_settings_info())
    head = Settings(
        store=Path("/shared/nix snake/images"),
        runtime="singularity",
        gpu="never",
        runtime_bin="/opt/apptainer/bin/apptainer",
        binds="/ref:/ref:ro,/scratch",
        nixpkgs_source="demo",
        compression="gzip",
        nix_options="sandbox=false;substituters=",
    )
    assert {f.name for f in dataclasses.fields(Settings)} == {
        f for f in vars(head) if getattr(head, f) is not None
    }  # (every field is set above)
    line = _job_args(head)
    parser = ArgumentParser()
    registry.register_cli_args(parser)
    job = plugin.get_settings(parser.parse_args(shlex.split(line)))
    assert job == head, line


def test_nix_options_flag_adds_to_the_project_table(tmp_path, monkeypatch):
    from snakemake_deploy_nixsnake.plugin import _config

    (tmp_path / "nixsnake.toml").write_text('[nixsnake]\nnix_options = { build-users-group = "", substituters = "" }\n')
    monkeypatch.chdir(tmp_path)
    cfg = _config(Settings(nix_options="sandbox=false;substituters=https://cache.example"))
    assert dict(cfg.nix_options) == {
        "build-users-group": "",
        "sandbox": "false",
        "substituters": "https://cache.example",
    }
