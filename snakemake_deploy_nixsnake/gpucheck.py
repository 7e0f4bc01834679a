"""What apptainer's ``--nv`` would bring into a container on THIS node, and whether the
store's images can use it. For ``nixsnake doctor`` (run on a GPU node, or in the short
SLURM job ``doctor --slurm-partition P`` submits there).

Two things break GPU jobs that a head node cannot see:

* **glibc.** Host libraries and tools bound into a container (``libcuda``,
  ``libnvidia-ml``, the host's ``libGL``/``libEGL``/``libOpenCL``, ``nvidia-smi``) run
  on the image's glibc. Each needs the newest ``GLIBC_x.y`` version it references
  (``DT_VERNEED``, read with :mod:`.elf`); an image whose glibc is older fails with
  ``version 'GLIBC_2.xx' not found``. NVIDIA's own CUDA libraries need very old versions
  (2.17 and below in current drivers); the host's GL stack and Tegra libraries are what
  usually needs new ones.
* **CUDA.** The driver supports CUDA up to some version (``cuDriverGetVersion``, or
  ``nvidia-smi``'s "CUDA Version"); an image's CUDA runtime (cudart from nixpkgs,
  ``nvidia-cuda-runtime-cuXX`` wheels, conda's ``cuda-cudart``/``cudatoolkit``) newer in
  its major version does not start (``CUDA driver version is insufficient``); newer in
  its minor version runs only through CUDA's minor version compatibility (no PTX JIT).

The libraries are found the way apptainer finds them (internal/pkg/util/paths: the
names of the site's ``nvliblist.conf``, read from ``<runtime> buildcfg``'s configuration
directory, else apptainer 1.5.3's list; each matched as a prefix against the host's
``ldconfig -p``, first entry of this machine's ELF class and machine; binaries on
``PATH``), and -- where the site configures ``use nvidia-container-cli = yes`` --
libnvidia-container's compute and utility libraries.

``python -m snakemake_deploy_nixsnake.gpucheck --runtime apptainer`` prints the node's
report as JSON between two marker lines.
"""

from __future__ import annotations

import argparse
import ctypes
import fnmatch
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import proc
from .elf import ElfError, format_version, ld_cache, read_elf
from .errors import NixsnakeError

BEGIN, END = "NIXSNAKE-GPU-REPORT-BEGIN", "NIXSNAKE-GPU-REPORT-END"

#: apptainer 1.5.3's etc/nvliblist.conf (names only), for sites whose list cannot be read
NVLIBLIST_DEFAULT: tuple[str, ...] = (
    "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server",
    "libcuda.so", "libcudadebugger.so", "libEGL_installertest.so", "libEGL_nvidia.so", "libEGL.so",
    "libGLdispatch.so", "libGLESv1_CM_nvidia.so", "libGLESv1_CM.so", "libGLESv2_nvidia.so", "libGLESv2.so",
    "libGL.so", "libGLX_installertest.so", "libGLX_nvidia.so", "libglx.so", "libGLX.so", "libnvcuvid.so",
    "libnvidia-cbl.so", "libnvidia-cfg.so", "libnvidia-compiler.so", "libnvidia-eglcore.so",
    "libnvidia-egl-wayland.so", "libnvidia-encode.so", "libnvidia-fatbinaryloader.so", "libnvidia-fbc.so",
    "libnvidia-glcore.so",
    "libnvidia-glsi.so", "libnvidia-glvkspirv.so", "libnvidia-gpucomp.so", "libnvidia-gtk2.so", "libnvidia-gtk3.so",
    "libnvidia-ifr.so", "libnvidia-ml.so", "libnvidia-nvvm.so", "libnvidia-opencl.so", "libnvidia-opticalflow.so",
    "libnvidia-ptxjitcompiler.so", "libnvidia-rtcore.so", "libnvidia-tls.so", "libnvidia-wfb.so", "libnvoptix.so",
    "libOpenCL.so", "libOpenGL.so", "libvdpau_nvidia.so", "nvidia_drv.so", "tls_test_.so"
)  # fmt: skip

#: libnvidia-container's libraries for the default capabilities (compute, utility)
NVCCLI_LIBS = (
    "libcuda.so", "libcudadebugger.so", "libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-opencl.so",
    "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so", "libnvidia-allocator.so", "libnvidia-pkcs11.so",
    "libnvidia-gpucomp.so",
)  # fmt: skip

#: What nixsnake's own bwrap runtime binds for --nv (bwrap-exec.sh gets both lists from
#: its generated header): the host's ld-cache entries whose names match one of these
#: patterns (shell `case` patterns; fnmatch here) -- NVIDIA's own libraries, never the
#: host's libGL/libEGL/libOpenCL -- and these tools.
BWRAP_NV_LIBS = (
    "libcuda.so*", "libcudadebugger.so*", "libnvidia-*.so*", "libnvcuvid.so*", "libnvoptix.so*", "libEGL_nvidia.so*",
    "libGLESv1_CM_nvidia.so*", "libGLESv2_nvidia.so*", "libGLX_nvidia.so*", "libvdpau_nvidia.so*",
)  # fmt: skip
BWRAP_NV_BINARIES = (
    "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server",
)  # fmt: skip

#: NVIDIA's CUDA libraries: a glibc problem with one of these breaks CUDA itself
CUDA_LIBS = ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm", "libcudadebugger.so")


# --- on the node ------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 30) -> str:
    """stdout of a successful run, else "": the report says what it could not learn."""
    try:
        r = proc.run(argv, check=False, timeout=timeout)
    except NixsnakeError:
        return ""
    return r.stdout if r.returncode == 0 else ""


def conf_dir(runtime: str) -> Path | None:
    """The runtime's configuration directory (``apptainer buildcfg APPTAINER_CONFDIR``)."""
    for key in ("APPTAINER_CONFDIR", "SINGULARITY_CONFDIR"):
        out = _run([runtime, "buildcfg", key]).strip()
        if out:
            value = out.splitlines()[-1].split("=", 1)[-1].strip()
            if value and Path(value).is_dir():
                return Path(value)
    return None


def conf_names(directory: Path | None, name: str = "nvliblist.conf") -> tuple[list[str], str]:
    """The names of a liblist and where they came from."""
    if directory is not None:
        try:
            text = (directory / name).read_text()
        except OSError:
            pass
        else:
            names = [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
            return names, str(directory / name)
    return list(NVLIBLIST_DEFAULT), "apptainer 1.5.3's default list"


def uses_nvccli(directory: Path | None) -> bool:
    if directory is None:
        return False
    for name in ("apptainer.conf", "singularity.conf"):
        try:
            text = (directory / name).read_text()
        except OSError:
            continue
        m = re.search(r"(?m)^\s*use nvidia-container-cli\s*=\s*(\w+)", text)
        return bool(m and m.group(1) == "yes")
    return False


def _machine(path: str) -> tuple[int, int] | None:
    try:
        info = read_elf(path)
    except (OSError, ElfError):
        return None
    return info.elf_class, info.machine


def resolve(names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """(library name -> path, binaries) the way apptainer resolves a liblist: a name with
    ``.so`` is a prefix of ld-cache names (a pattern, when it holds ``*``), others are
    programs on PATH."""
    me = _machine(sys.executable) or _machine("/proc/self/exe")
    cache = [(name, path) for name, _flags, path in ld_cache()]  # (same-machine ELF files only, below)
    libs: dict[str, str] = {}
    bins: list[str] = []
    for name in names:
        if ".so" in name:
            for lib, path in cache:
                match = fnmatch.fnmatchcase(lib, name) if "*" in name else lib.startswith(name)
                if match and lib not in libs and _machine(path) == me:
                    libs[lib] = path
        elif not name.startswith("/"):
            found = shutil.which(name)
            if found and found not in bins:
                bins.append(found)
    return libs, bins


def driver_cuda_version(libcuda: str | None) -> str | None:
    """The CUDA version the driver supports: ``cuDriverGetVersion`` of libcuda, else the
    "CUDA Version" ``nvidia-smi`` prints."""
    if libcuda:
        try:
            lib = ctypes.CDLL(libcuda)
            v = ctypes.c_int(0)
            if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
                return f"{v.value // 1000}.{v.value % 1000 // 10}"
        except (OSError, AttributeError):
            pass
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", _run(["nvidia-smi"]))
    return m.group(1) if m else None


def node_report(runtime: str) -> dict[str, Any]:
    """What ``--nv`` of ``runtime`` (an apptainer/singularity executable, or ``bwrap`` for
    nixsnake's own runtime) would bind on this node, with the glibc each file needs."""
    nvccli = False
    if runtime == "bwrap":
        names, source = [*BWRAP_NV_LIBS, *BWRAP_NV_BINARIES], "nixsnake's bwrap runtime: NVIDIA's own libraries"
    else:
        directory = conf_dir(runtime)
        names, source = conf_names(directory)
        nvccli = uses_nvccli(directory)
        if nvccli:
            names = [*NVCCLI_LIBS, *(n for n in names if ".so" not in n and not n.startswith("/"))]
            source = "nvidia-container-cli's compute and utility libraries"
    libs, bins = resolve(names)
    files = []
    for kind, items in (("library", libs.items()), ("binary", ((Path(b).name, b) for b in bins))):
        for name, path in items:
            try:
                info = read_elf(path)
                need = info.glibc_needed
                files.append({"kind": kind, "name": name, "path": path, "glibc": format_version(need) if need else ""})
            except (OSError, ElfError) as exc:
                files.append({"kind": kind, "name": name, "path": path, "glibc": "", "error": str(exc)})
    libcuda = next((p for n, p in libs.items() if n.startswith("libcuda.so")), None)
    return {
        "runtime": shutil.which(runtime) or "",
        "liblist": source,
        "nvccli": nvccli,
        "devices": {d: os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")},
        "driver_cuda": driver_cuda_version(libcuda),
        "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m snakemake_deploy_nixsnake.gpucheck", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--runtime", default="apptainer", help="the apptainer/singularity executable, or bwrap (nixsnake's runtime)"
    )
    args = ap.parse_args(argv)
    print(BEGIN)
    print(json.dumps(node_report(args.runtime), sort_keys=True))
    print(END)
    return 0


def parse_report(text: str) -> dict[str, Any] | None:
    """The report printed by :func:`main` inside ``text`` (a job's output), or None."""
    m = re.search(rf"{BEGIN}\n(.*?)\n{END}", text, re.S)
    if not m:
        return None
    try:
        data = json.loads(m.group(1))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageGpuInfo:
    image_id: str
    glibc: str  # "" unknown
    cuda: str  # CUDA runtime major.minor, "" none


_CUDART_PATH = re.compile(r"-(?:cuda_cudart|cudatoolkit|cuda-cudart)-(\d+)\.(\d+)")
_CUDART_WHEEL = re.compile(r"nvidia[-_]cuda[-_]runtime[-_]cu\d+")
_GLIBC_PATH = re.compile(r"-glibc-(\d+\.\d+)")


def image_gpu_info(image_id: str, meta: Mapping[str, Any]) -> ImageGpuInfo:
    """glibc version and CUDA runtime of an image, from its metadata."""
    paths = [str(p) for p in meta.get("store_paths") or []]
    glibc = str(meta.get("glibc") or "")
    if not glibc:
        found = [m.group(1) for p in paths if (m := _GLIBC_PATH.search(p))]
        glibc = found[0] if found else ""
    cudas: list[tuple[int, int]] = [(int(m.group(1)), int(m.group(2))) for p in paths if (m := _CUDART_PATH.search(p))]
    lock: Mapping[str, Any] = meta["lock"] if isinstance(meta.get("lock"), dict) else {}
    for w in lock.get("wheels") or []:
        if isinstance(w, dict) and _CUDART_WHEEL.fullmatch(str(w.get("name", "")).lower()):
            cudas += _major_minor(str(w.get("version", "")))
    conda: Mapping[str, Any] = lock["conda"] if isinstance(lock.get("conda"), dict) else {}
    for p in conda.get("packages") or []:
        if isinstance(p, dict) and p.get("name") in ("cuda-cudart", "cudatoolkit"):
            cudas += _major_minor(str(p.get("version", "")))
    cuda = max(cudas) if cudas else None
    return ImageGpuInfo(image_id, glibc, f"{cuda[0]}.{cuda[1]}" if cuda else "")


def _major_minor(v: str) -> list[tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", v)
    return [(int(m.group(1)), int(m.group(2)))] if m else []


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(".")) if s else ()


@dataclass(frozen=True)
class Finding:
    status: str  # ok | warn | fail
    detail: str


def has_driver(report: Mapping[str, Any]) -> bool:
    """Did the node's ldconfig know an NVIDIA driver (libcuda)?"""
    return any(
        isinstance(f, dict) and str(f.get("name", "")).startswith("libcuda.so") for f in report.get("files") or []
    )


def compare(report: Mapping[str, Any], images: Iterable[ImageGpuInfo]) -> dict[str, Finding]:
    """What the node's GPU files mean for each image: "glibc" and "cuda" findings."""
    files = [f for f in report.get("files") or [] if isinstance(f, dict)]
    driver = str(report.get("driver_cuda") or "")
    glibc_bad: list[str] = []
    glibc_cuda_bad = False
    cuda_bad: list[str] = []
    cuda_minor: list[str] = []
    checked = 0
    for img in images:
        checked += 1
        if img.glibc:
            have = _v(img.glibc)
            worse = [f for f in files if f.get("glibc") and _v(str(f["glibc"])) > have]
            if worse:
                worse.sort(key=lambda f: _v(str(f["glibc"])), reverse=True)
                names = ", ".join(f"{f['name']} needs GLIBC_{f['glibc']}" for f in worse[:4])
                more = f" (+{len(worse) - 4} more)" if len(worse) > 4 else ""
                glibc_bad.append(f"{img.image_id[:12]} (glibc {img.glibc}): {names}{more}")
                glibc_cuda_bad |= any(f["kind"] == "binary" or str(f["name"]).startswith(CUDA_LIBS) for f in worse)
        if img.cuda and driver:
            if _v(img.cuda)[:1] > _v(driver)[:1]:
                cuda_bad.append(f"{img.image_id[:12]} has CUDA runtime {img.cuda}")
            elif _v(img.cuda) > _v(driver):
                cuda_minor.append(f"{img.image_id[:12]} has CUDA runtime {img.cuda}")
    newest = max((_v(str(f["glibc"])) for f in files if f.get("glibc")), default=())
    summary = f"{len(files)} files --nv binds ({report.get('liblist')}), newest need GLIBC_{'.'.join(map(str, newest)) or '-'}"
    out: dict[str, Finding] = {}
    if not has_driver(report):
        return {
            "glibc": Finding("warn", "no NVIDIA driver on the node (no libcuda in `ldconfig -p`): --nv binds no CUDA"),
            "cuda": Finding("warn", "no NVIDIA driver on the node: no CUDA version to compare"),
        }
    if glibc_bad:
        status = "fail" if glibc_cuda_bad else "warn"
        out["glibc"] = Finding(
            status,
            f"{summary}; older glibc in {'; '.join(glibc_bad[:3])}"
            + (f" (+{len(glibc_bad) - 3} images)" if len(glibc_bad) > 3 else "")
            + ": use a later env date for GPU rules",
        )
    else:
        out["glibc"] = Finding("ok", f"{summary}; every image of {checked} has a new enough glibc")
    if not driver:
        out["cuda"] = Finding("warn", "the driver's CUDA version is unknown (cuDriverGetVersion and nvidia-smi failed)")
    elif cuda_bad:
        out["cuda"] = Finding(
            "fail", f"driver supports CUDA {driver}; {'; '.join(cuda_bad[:3])}: update the driver or pin an older CUDA"
        )
    elif cuda_minor:
        out["cuda"] = Finding(
            "warn",
            f"driver supports CUDA {driver}; {'; '.join(cuda_minor[:3])}: runs through minor version "
            "compatibility only (no PTX JIT compilation)",
        )
    else:
        out["cuda"] = Finding("ok", f"driver supports CUDA {driver}; no image needs a newer CUDA runtime")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
