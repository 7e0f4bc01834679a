"""Tests for snakemake_deploy_nixsnake.slurm.

Parsers run on REAL output captured from the one-node CI cluster (.ci/slurm-up.sh,
Slurm 22.05.8) under tests/data/slurm/, plus one hand-written multi-node example
(files named handwritten_*, labelled as such inside). Tests marked ``slurm`` talk to the
running slurmctld and skip only when ``scontrol ping`` fails.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.slurm import (
    CliBackend,
    Node,
    Partition,
    PyslurmBackend,
    cluster_info,
    expand_hostlist,
    gpu_partitions,
    in_slurm_job,
    job_context,
    nodes_from_records,
    parse_gres,
    parse_scontrol_oneliner,
    partitions_from_records,
)

DATA = Path(__file__).parent / "data" / "slurm"
RIG_HOST = "vm"  # hostname of the machine the real captures were taken on


def read(name: str) -> str:
    return (DATA / name).read_text()


def read_env(name: str) -> dict[str, str]:
    env = {}
    for line in read(name).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


# ------------------------------------------------------------------ scontrol parsing


def test_oneliner_real_node_record():
    (rec,) = parse_scontrol_oneliner(read("scontrol_show_node_o.txt"))
    assert rec["NodeName"] == RIG_HOST
    assert rec["Gres"] == "gpu:2"
    assert rec["CPUTot"] == "2"
    assert rec["Partitions"] == "main"
    assert rec["State"] == "IDLE"
    assert rec["AvailableFeatures"] == "(null)"
    # values with spaces and with "=" inside stay whole
    assert rec["OS"].startswith("Linux ") and " #1 SMP" in rec["OS"]
    assert rec["CfgTRES"].startswith("cpu=2,mem=")
    assert rec["AllocTRES"] == ""
    assert rec["MCS_label"] == "N/A"


def test_multiline_and_oneliner_formats_agree():
    one = parse_scontrol_oneliner(read("scontrol_show_node_o.txt"))
    multi = parse_scontrol_oneliner(read("scontrol_show_node_multiline.txt"))
    assert len(multi) == 1
    for key in ("NodeName", "Gres", "CPUTot", "Partitions", "State", "OS", "CfgTRES"):
        assert multi[0][key] == one[0][key]
    p_one = parse_scontrol_oneliner(read("scontrol_show_partition_o.txt"))
    p_multi = parse_scontrol_oneliner(read("scontrol_show_partition_multiline.txt"))
    assert p_one == p_multi


def test_real_partition_record():
    (rec,) = parse_scontrol_oneliner(read("scontrol_show_partition_o.txt"))
    assert rec["PartitionName"] == "main"
    assert rec["Default"] == "YES"
    assert rec["Nodes"] == RIG_HOST
    assert rec["TRES"].startswith("cpu=2,")


def test_real_draining_node_with_reason():
    (rec,) = parse_scontrol_oneliner(read("scontrol_show_node_o_draining.txt"))
    assert rec["State"] == "MIXED+DRAIN"
    assert rec["Reason"].startswith("nixsnake test capture: drain while a job runs [root@")
    (node,) = nodes_from_records([rec])
    assert node.gpus == 2
    assert not node.usable


def test_real_detailed_node_while_gpu_job_runs():
    (rec,) = parse_scontrol_oneliner(read("scontrol_d_show_node_o_gpu_job_running.txt"))
    assert rec["State"] == "MIXED"
    assert rec["GresUsed"] == "gpu:1"
    assert rec["GresDrain"] == "N/A"
    assert parse_gres(rec["GresUsed"]) == (("gpu:1",), 1)
    (node,) = nodes_from_records([rec])
    assert node.usable and node.gpus == 2


def test_non_records_are_ignored():
    assert parse_scontrol_oneliner("") == []
    assert parse_scontrol_oneliner("No nodes in the system\n") == []
    assert parse_scontrol_oneliner(read("scontrol_ping_up.txt")) == []


def test_typed_nodes_from_real_output():
    (node,) = nodes_from_records(parse_scontrol_oneliner(read("scontrol_show_node_o.txt")))
    assert node == Node(
        name=RIG_HOST,
        partitions=("main",),
        state="IDLE",
        cpus=2,
        gres=("gpu:2",),
        gpus=2,
    )
    assert node.usable


def test_typed_partitions_from_real_output():
    nodes = nodes_from_records(parse_scontrol_oneliner(read("scontrol_show_node_o.txt")))
    parts = partitions_from_records(parse_scontrol_oneliner(read("scontrol_show_partition_o.txt")), nodes)
    assert parts == [Partition(name="main", nodes=(RIG_HOST,), default=True, gpu_nodes=(RIG_HOST,))]


# ------------------------------------------------- hand-written multi-GPU cluster


@pytest.fixture
def handwritten():
    """HAND-WRITTEN (not captured) 7-node cluster: typed, multi-type and MIG GPUs."""
    nodes = nodes_from_records(parse_scontrol_oneliner(read("handwritten_multi_gpu_node_o.txt")))
    parts = partitions_from_records(parse_scontrol_oneliner(read("handwritten_multi_gpu_partition_o.txt")), nodes)
    return SimpleNamespace(nodes=lambda: list(nodes), partitions=lambda: list(parts))


def test_handwritten_nodes(handwritten):
    by = {n.name: n for n in handwritten.nodes()}
    assert set(by) == {"cn001", "cn002", "cn003", "gpu01", "gpu02", "gpu03", "big01"}
    assert by["cn001"].gpus == 0 and by["cn001"].gres == ()
    assert by["gpu01"].gres == ("gpu:a100:4", "shard:a100:8")
    assert by["gpu01"].gpus == 4  # shards are slices of those 4 GPUs, not more GPUs
    assert by["gpu03"].gres == ("gpu:v100:2", "gpu:t4:1") and by["gpu03"].gpus == 3
    assert by["big01"].gpus == 8 and "mps:1024" in by["big01"].gres
    assert [n for n, v in by.items() if not v.usable] == ["cn003", "gpu03"]


def test_handwritten_partitions_and_gpu_partitions(handwritten):
    parts = {p.name: p for p in handwritten.partitions()}
    assert parts["cpu"].default and parts["cpu"].nodes == ("cn001", "cn002", "cn003")
    assert parts["gpu"].nodes == ("gpu01", "gpu02", "gpu03")
    assert parts["all"].nodes == tuple(n.name for n in handwritten.nodes())  # Nodes=ALL
    assert parts["debug"].gpu_nodes == ("gpu01",)
    assert parts["empty"].nodes == ()
    assert [p.name for p in gpu_partitions(handwritten)] == ["gpu", "mig", "debug", "all"]
    usable = {p.name: p.gpu_nodes for p in gpu_partitions(handwritten, usable_only=True)}
    assert usable["gpu"] == ("gpu01", "gpu02")  # gpu03 is DOWN*+NOT_RESPONDING
    assert "cpu" not in usable


# ------------------------------------------------------------------- parse_gres


@pytest.mark.parametrize(
    ("text", "entries", "gpus"),
    [
        ("gpu:2,gpu:a100:4(S:0-1),shard:8", ("gpu:2", "gpu:a100:4", "shard:8"), 6),
        ("gpu:2", ("gpu:2",), 2),  # the rig's real value
        ("(null)", (), 0),
        ("", (), 0),
        ("N/A", (), 0),
        ("gpu", ("gpu:1",), 1),
        ("gpu:tesla", ("gpu:tesla:1",), 1),
        ("gpu:tesla:2(S:0),gpu:k80:1(S:1)", ("gpu:tesla:2", "gpu:k80:1"), 3),
        ("gpu:a100:4(S:0,2)", ("gpu:a100:4",), 4),  # comma inside the socket list
        ("gpu:nvidia_a100-sxm4-80gb:8(S:0-1)", ("gpu:nvidia_a100-sxm4-80gb:8",), 8),
        ("gpu:1g.10gb:7", ("gpu:1g.10gb:7",), 7),
        ("gres:gpu:v100:2", ("gpu:v100:2",), 2),
        ("mps:200,gpu:2", ("mps:200", "gpu:2"), 2),
        ("mps:1K", ("mps:1024",), 0),
        ("gpu:(null):0(IDX:N/A)", ("gpu:0",), 0),
        ("gpu:a100:2(IDX:0-1)", ("gpu:a100:2",), 2),
        ("bandwidth:lustre:4G", ("bandwidth:lustre:4294967296",), 0),
    ],
)
def test_parse_gres(text, entries, gpus):
    assert parse_gres(text) == (entries, gpus)


@pytest.mark.parametrize("bad", ["gpu:a:b:c", ":2", "gpu:a100:x", "gp u:2"])
def test_parse_gres_rejects_garbage(bad):
    with pytest.raises(NixsnakeError) as ei:
        parse_gres(bad)
    assert ei.value.code == Exit.DATAERR


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("vm", ("vm",)),
        ("cn[001-003]", ("cn001", "cn002", "cn003")),
        ("gpu[01-02,07],cn1", ("gpu01", "gpu02", "gpu07", "cn1")),
        ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
        ("gpu[9-11]-ib", ("gpu9-ib", "gpu10-ib", "gpu11-ib")),
        ("(null)", ()),
        ("", ()),
    ],
)
def test_expand_hostlist(expr, names):
    assert expand_hostlist(expr) == names


def test_expand_hostlist_errors():
    for bad in ("cn[1-", "cn[3-1]", "cn[a-b]"):
        with pytest.raises(NixsnakeError):
            expand_hostlist(bad)


# ------------------------------------------------------------------ in_slurm_job


def test_job_context_from_real_environments():
    # captured on the rig: batch script, srun step inside it, plain salloc shell
    assert job_context(read_env("env_batch.txt")) == "job"
    assert job_context(read_env("env_step.txt")) == "job"
    assert job_context(read_env("env_salloc.txt")) == "allocation"
    assert in_slurm_job(read_env("env_batch.txt"))
    assert in_slurm_job(read_env("env_step.txt"))
    assert not in_slurm_job(read_env("env_salloc.txt"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"PATH": "/usr/bin"}, False),
        ({"SLURM_JOB_ID": ""}, False),
        ({"SLURM_JOB_ID": "42"}, False),  # salloc shell on the submit host / stale export
        ({"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "cn001"}, True),
        ({"SLURM_JOBID": "42", "SLURMD_NODENAME": "cn001"}, True),  # legacy name
        ({"SLURMD_NODENAME": "cn001"}, False),  # no job id: not a job
    ],
)
def test_in_slurm_job_truthiness(env, expected):
    assert in_slurm_job(env) is expected


def test_in_slurm_job_defaults_to_os_environ(monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURMD_NODENAME"):
        monkeypatch.delenv(k, raising=False)
    assert in_slurm_job() is False
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURMD_NODENAME", "vm")
    assert in_slurm_job() is True


# -------------------------------------------------------- backend selection / errors


def test_cluster_info_without_scontrol_is_unavailable(tmp_path):
    with pytest.raises(NixsnakeError) as ei:
        cluster_info({"PATH": str(tmp_path)})
    assert ei.value.code == Exit.UNAVAILABLE
    assert ei.value.hint and "scontrol" in ei.value.hint


def _stand_in_scontrol(bin_dir: Path, ping_file: str, ping_rc: int) -> None:
    """TEST STAND-IN for scontrol: replays a REAL captured `scontrol ping` output."""
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(
        "#!/bin/sh\n# test stand-in for scontrol (replays captured output)\n"
        f'[ "$1" = ping ] || exit 2\n/bin/cat "{DATA / ping_file}"\nexit {ping_rc}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_cluster_info_controller_down_is_unavailable(tmp_path):
    _stand_in_scontrol(tmp_path / "bin", "scontrol_ping_down.txt", 1)
    with pytest.raises(NixsnakeError) as ei:
        cluster_info({"PATH": str(tmp_path / "bin")})
    assert ei.value.code == Exit.UNAVAILABLE
    assert "DOWN" in str(ei.value)


def test_cli_backend_ping_accepts_real_up_output(tmp_path):
    _stand_in_scontrol(tmp_path / "bin", "scontrol_ping_up.txt", 0)
    CliBackend({"PATH": str(tmp_path / "bin")}).ping()


def test_pyslurm_backend_with_stand_in_module():
    """TEST STAND-IN for pyslurm (it cannot be built against Slurm 22.05 here).

    The stand-in mimics the attribute names of pyslurm >= 23.2's Node/Partition
    objects and the dict shape of ``configured_gres``.
    """
    fake_nodes = {
        "c1": SimpleNamespace(
            name="c1", partitions=["cpu"], state="IDLE", total_cpus=8, configured_gres={}, available_features=["avx2"]
        ),
        "g1": SimpleNamespace(
            name="g1",
            partitions=["gpu"],
            state="MIXED",
            total_cpus=32,
            configured_gres={"gpu:a100": 4, "shard": 8},
            available_features=[],
        ),
    }
    fake_parts = {
        "cpu": SimpleNamespace(name="cpu", nodes="c1", is_default=True),
        "gpu": SimpleNamespace(name="gpu", nodes="g[1]", is_default=False),
    }
    module = SimpleNamespace(
        Nodes=SimpleNamespace(load=lambda: fake_nodes),
        Partitions=SimpleNamespace(load=lambda: fake_parts),
    )
    info = PyslurmBackend(module)
    by = {n.name: n for n in info.nodes()}
    assert by["g1"].gpus == 4 and by["g1"].gres == ("gpu:a100:4", "shard:8")
    assert [p.name for p in gpu_partitions(info)] == ["gpu"]
    assert info.partitions()[0].default

    def boom():
        raise RuntimeError("slurm_load_node error: Unable to contact slurm controller")

    broken = PyslurmBackend(SimpleNamespace(Nodes=SimpleNamespace(load=boom), Partitions=None))
    with pytest.raises(NixsnakeError) as ei:
        broken.nodes()
    assert ei.value.code == Exit.UNAVAILABLE
    with pytest.raises(NixsnakeError):
        PyslurmBackend(SimpleNamespace())  # an old pyslurm without the object API


# ------------------------------------------------------------- live, real slurmctld


def _slurm_up() -> str | None:
    if shutil.which("scontrol") is None:
        return "scontrol not installed"
    try:
        cp = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    if cp.returncode != 0 or "is UP" not in cp.stdout:
        return f"slurm not running (scontrol ping: {(cp.stdout + cp.stderr).strip()[:200]}); run .ci/slurm-up.sh"
    return None


_SKIP = _slurm_up()


@pytest.mark.slurm
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_live_cluster_has_two_gpus_and_main_is_gpu_partition():
    info = cluster_info()
    assert isinstance(info, CliBackend)  # pyslurm is not installable against Slurm 22.05
    nodes = info.nodes()
    assert len(nodes) == 1
    (node,) = nodes
    assert node.gpus == 2
    assert node.gres == ("gpu:2",)
    assert node.cpus == len(os.sched_getaffinity(0))  # slurm-up.sh writes CPUs=$(nproc)
    assert "main" in node.partitions
    gp = gpu_partitions(info)
    assert [p.name for p in gp] == ["main"]
    assert gp[0].default and gp[0].gpu_nodes == (node.name,)
    assert [p.name for p in gpu_partitions(info, usable_only=True)] == ["main"]


def _run_job(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slurm
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_live_gpu_batch_job_sees_itself_in_a_job(tmp_path):
    out = tmp_path / "job.out"
    probe = f"{sys.executable} -c 'from snakemake_deploy_nixsnake.slurm import in_slurm_job; print(in_slurm_job())'"
    wrap = f"env | grep ^SLURM_JOB_ID=; ls /dev/nvidia0; echo batch=$({probe}); echo step=$(srun -n1 {probe})"
    cp = _run_job(["sbatch", "--wait", "--gres=gpu:1", "-t", "2", "-o", str(out), "--wrap", wrap])
    text = out.read_text() if out.exists() else ""
    assert cp.returncode == 0, (cp.stdout, cp.stderr, text)
    lines = text.splitlines()
    assert any(line.startswith("SLURM_JOB_ID=") for line in lines), text
    assert "/dev/nvidia0" in lines, text
    assert "batch=True" in lines, text
    assert "step=True" in lines, text


@pytest.mark.slurm
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_live_salloc_shell_on_submit_host_is_not_a_job():
    probe = (
        "import os; from snakemake_deploy_nixsnake.slurm import in_slurm_job, job_context; "
        "print(bool(os.environ.get('SLURM_JOB_ID')), job_context(), in_slurm_job())"
    )
    cp = _run_job(["salloc", "-N1", "-t", "2", sys.executable, "-c", probe])
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert cp.stdout.strip().splitlines()[-1] == "True allocation False"
