"""doctor's GPU check (gpucheck.py): what --nv would bind on a node, the glibc each file
needs and the CUDA version the driver supports, against the images' glibc and CUDA runtime.
The node side runs on a fake driver of real ELF files (tests/_fake_driver.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.gpucheck import (
    ImageGpuInfo,
    compare,
    image_gpu_info,
    node_report,
    parse_report,
)

STANDIN = Path(__file__).parent / "standin"


def _report(files, driver="12.4"):
    return {"liblist": "test", "driver_cuda": driver, "files": files}


LIBCUDA = {"kind": "library", "name": "libcuda.so.1", "path": "/x/libcuda.so.1", "glibc": "2.17"}
NVML = {"kind": "library", "name": "libnvidia-ml.so.1", "path": "/x/libnvidia-ml.so.1", "glibc": "2.36"}
GLX = {"kind": "library", "name": "libGLX.so.0", "path": "/x/libGLX.so.0", "glibc": "2.34"}
SMI = {"kind": "binary", "name": "nvidia-smi", "path": "/x/nvidia-smi", "glibc": "2.34"}


def test_compare_names_the_library_that_needs_a_newer_glibc():
    new = ImageGpuInfo("a" * 40, "2.38", "")
    old = ImageGpuInfo("b" * 40, "2.35", "")
    got = compare(_report([LIBCUDA, GLX]), [new])
    assert got["glibc"].status == "ok" and "newest need GLIBC_2.34" in got["glibc"].detail
    # only a GL library is too new for the image: GL programs break, CUDA does not
    got = compare(_report([LIBCUDA, GLX]), [ImageGpuInfo("c" * 40, "2.31", "")])
    assert (
        got["glibc"].status == "warn"
        and "cccccccccccc (glibc 2.31): libGLX.so.0 needs GLIBC_2.34" in got["glibc"].detail
    )
    # a CUDA library (or a bound tool) is: that is a failure
    got = compare(_report([LIBCUDA, NVML, GLX, SMI]), [new, old])
    assert got["glibc"].status == "fail"
    assert "bbbbbbbbbbbb (glibc 2.35): libnvidia-ml.so.1 needs GLIBC_2.36" in got["glibc"].detail
    assert "aaaaaaaaaaaa" not in got["glibc"].detail


def test_compare_cuda_runtime_against_the_driver():
    imgs = [ImageGpuInfo("a" * 40, "2.38", "12.2"), ImageGpuInfo("b" * 40, "2.38", "")]
    assert compare(_report([LIBCUDA]), imgs)["cuda"].status == "ok"
    got = compare(_report([LIBCUDA]), [ImageGpuInfo("c" * 40, "2.38", "12.6")])
    assert got["cuda"].status == "warn" and "minor version compatibility" in got["cuda"].detail
    got = compare(_report([LIBCUDA]), [ImageGpuInfo("d" * 40, "2.38", "13.0")])
    assert (
        got["cuda"].status == "fail"
        and "driver supports CUDA 12.4; dddddddddddd has CUDA runtime 13.0" in got["cuda"].detail
    )
    assert compare(_report([LIBCUDA], driver=None), imgs)["cuda"].status == "warn"
    # no driver at all: nothing to compare, said so
    got = compare(_report([GLX]), imgs)
    assert got["glibc"].status == "warn" and "no NVIDIA driver" in got["glibc"].detail


@pytest.mark.parametrize(
    ("meta", "glibc", "cuda"),
    [
        ({"glibc": "2.39", "store_paths": ["/nix/store/x-glibc-2.38-44"]}, "2.39", ""),  # format 3 records it
        ({"store_paths": ["/nix/store/x-glibc-2.38-44", "/nix/store/y-cuda_cudart-12.2.140"]}, "2.38", "12.2"),
        ({"store_paths": ["/nix/store/y-cudatoolkit-11.8.0"]}, "", "11.8"),
        ({"lock": {"wheels": [{"name": "nvidia-cuda-runtime-cu12", "version": "12.1.105"}]}}, "", "12.1"),
        ({"lock": {"conda": {"packages": [{"name": "cuda-cudart", "version": "12.4.127"}]}}}, "", "12.4"),
        (
            {
                "lock": {"conda": {"packages": [{"name": "cudatoolkit", "version": "11.2.2"}]}},
                "store_paths": ["/nix/store/y-cuda_cudart-12.0.1"],
            },
            "",
            "12.0",
        ),  # (both: the newest wins)
        ({}, "", ""),
    ],
)
def test_image_info_from_metadata(meta, glibc, cuda):
    assert image_gpu_info("i" * 40, meta) == ImageGpuInfo("i" * 40, glibc, cuda)


def test_node_report_reads_what_apptainer_would_bind(fake_driver, monkeypatch):
    """Through the stand-in's `buildcfg` it reads the stand-in's nvliblist.conf; the fake
    driver's libraries are real ELF files (libnvidia-ml calls arc4random: GLIBC_2.36)."""
    monkeypatch.setenv("PATH", f"{fake_driver.bin}:{STANDIN}:{os.environ['PATH']}")
    r = node_report("apptainer")
    assert r["liblist"] == str(STANDIN / "etc" / "nvliblist.conf") and r["nvccli"] is False
    assert r["driver_cuda"] == "12.4"  # cuDriverGetVersion of the fake libcuda
    files = {f["name"]: f for f in r["files"]}
    assert files["libnvidia-ml.so.1"]["glibc"] == "2.36" and files["libnvidia-ml.so.1"]["kind"] == "library"
    assert files["nvidia-smi"] == {"kind": "binary", "name": "nvidia-smi", "path": str(fake_driver.bin / "nvidia-smi"),
                                   "glibc": "2.34"}  # fmt: skip
    assert "libGL.so.1" in files and "libdrm_amdgpu.so.1" not in files
    # a site with nvidia-container-cli: its compute and utility libraries instead
    conf = fake_driver.bin.parent / "nvccli-etc"
    conf.mkdir(exist_ok=True)
    (conf / "apptainer.conf").write_text("use nvidia-container-cli = yes\n")
    fake_rt = fake_driver.bin.parent / "rt"
    fake_rt.mkdir(exist_ok=True)
    (fake_rt / "apptainer").write_text(f"#!/bin/sh\necho '{conf}'\n")
    (fake_rt / "apptainer").chmod(0o755)
    r = node_report(str(fake_rt / "apptainer"))
    assert r["nvccli"] is True and r["liblist"].startswith("nvidia-container-cli")
    assert {f["name"] for f in r["files"]} == {"libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi"}
    # the printed form a job's output carries
    out = subprocess.run(
        [sys.executable, "-m", "snakemake_deploy_nixsnake.gpucheck", "--runtime", "apptainer"],
        capture_output=True, text=True, check=True, env={**os.environ},
    ).stdout  # fmt: skip
    assert parse_report("job says hi\n" + out)["driver_cuda"] == "12.4"
    assert parse_report("no report") is None


def test_node_report_for_the_bwrap_runtime_judges_what_it_binds(fake_driver, monkeypatch):
    """bwrap-exec.sh --nv binds NVIDIA's own libraries only (the same list, from its
    generated header): the host's libGL is not judged, the driver's libraries and tools are."""
    monkeypatch.setenv("PATH", f"{fake_driver.bin}:{os.environ['PATH']}")
    r = node_report("bwrap")
    assert r["liblist"].startswith("nixsnake's bwrap runtime") and r["nvccli"] is False
    names = {f["name"] for f in r["files"]}
    assert {"libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi"} <= names and "libGL.so.1" not in names
    assert r["driver_cuda"] == "12.4"


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs")
def test_doctor_on_a_gpu_node_names_the_offending_library(tmp_path, run_cli, fake_driver):
    """`nixsnake doctor` on a node with a driver: the store's image with glibc 2.31 cannot
    load libnvidia-ml.so.1 (GLIBC_2.36), another's CUDA 13 runtime is too new for the driver."""
    from helpers import publish_with_metadata

    store = tmp_path / "store"
    publish_with_metadata(store, tmp_path, "a" * 40, {"glibc": "2.31", "store_paths": []})
    publish_with_metadata(
        store, tmp_path, "b" * 40, {"glibc": "2.40", "store_paths": ["/nix/store/x-cuda_cudart-13.0.1"]}
    )
    env = {"PATH": f"{fake_driver.bin}:{STANDIN}:{os.environ['PATH']}", "NIXSNAKE_STORE": str(store)}
    r = run_cli("doctor", "--runtime", "apptainer", env=env, cwd=tmp_path)
    assert r.returncode == 69, r.stdout
    out = " ".join(r.stdout.split())  # (rich wraps the table)
    assert "GPU libs vs images fail" in out and "aaaaaaaaaaaa (glibc 2.31): libnvidia-ml.so.1 needs GLIBC_2.36" in out
    assert "bbbbbbbbbbbb" not in out.split("GPU libs vs images")[1].split("GPU driver vs CUDA")[0]
    assert "GPU driver vs CUDA fail" in out and "bbbbbbbbbbbb has CUDA runtime 13.0" in out
    # the head node (no driver): says where to look instead
    r = run_cli(
        "doctor", "--runtime", "apptainer", env={**env, "PATH": f"{STANDIN}:{os.environ['PATH']}"}, cwd=tmp_path
    )
    assert "--slurm-partition" in " ".join(r.stdout.split())
