"""A FAKE GPU driver for tests, made of REAL ELF files compiled here with gcc.

No GPU and no NVIDIA driver exist on the test machines. What apptainer's ``--nv`` does with
a driver is, though, only file work: find libraries through the host's ``ldconfig -p``,
tools on ``PATH``, and bind them into the container. So a test can present a driver by
putting a directory first on ``PATH`` that holds

* ``ldconfig`` -- a script whose ``-p`` output lists the libraries below (and the host's
  own cache after them), the way the real one lists a driver's;
* ``lib/libcuda.so.1`` -- exports ``cuDriverGetVersion`` (CUDA 12.4) and ``cuInit``;
* ``lib/libnvidia-ml.so.1`` -- exports a GPU name; it calls ``arc4random``, so it needs
  ``GLIBC_2.36`` (a driver library built against a newer glibc than some images have);
* ``lib/libGL.so.1`` -- a host GL library (glvnd's name, in apptainer's nvliblist.conf);
* ``nvidia-smi`` -- a dynamically linked host program (interpreter
  ``/lib64/ld-linux-x86-64.so.2``, needs ``GLIBC_2.34``) that ``dlopen``s
  ``libnvidia-ml.so.1`` like the real one and prints ``GPU 0: ...`` for ``-L`` and a
  header with ``CUDA Version: 12.4`` otherwise;
* ``rocm-smi`` and ``lib/libdrm_amdgpu.so.1`` for ``--rocm`` (with ``amd=True``);
* ``probe/dlprobe LIB...`` -- a host program (bind ``probe`` into an image) that says for
  each library whether ``dlopen`` finds it and from which file.

Everything is built once per test session (gcc takes a moment); tests skip without gcc.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CUDA_DRIVER_VERSION = 12040  # what cuDriverGetVersion reports: CUDA 12.4
GPU_NAME = "NixsnakeFake GPU"

LIBCUDA_C = f"""
int cuDriverGetVersion(int *v) {{ *v = {CUDA_DRIVER_VERSION}; return 0; }}
int cuInit(unsigned int flags) {{ (void)flags; return 100; /* CUDA_ERROR_NO_DEVICE */ }}
"""
LIBNVML_C = f"""
#include <stdlib.h>
const char *nixsnake_fake_gpu_name(void) {{ (void)arc4random(); return "{GPU_NAME}"; }}
"""
LIBGL_C = """
const char *nixsnake_fake_gl(void) { return "host libGL"; }
"""
LIBDRM_C = """
int nixsnake_fake_drm(void) { return 1; }
"""
NVIDIA_SMI_C = """
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!h) { fprintf(stderr, "NVIDIA-SMI has failed: %s\\n", dlerror()); return 9; }
    const char *(*name)(void) = (const char *(*)(void))dlsym(h, "nixsnake_fake_gpu_name");
    if (argc > 1 && strcmp(argv[1], "-L") == 0) {
        printf("GPU 0: %s (UUID: GPU-00000000-0000-0000-0000-000000000000)\\n", name());
    } else {
        printf("| NVIDIA-SMI 550.54.14    Driver Version: 550.54.14    CUDA Version: 12.4     |\\n");
        printf("|   0  %s |\\n", name());
    }
    return 0;
}
"""

DLPROBE_C = """
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW);
        struct link_map *m = 0;
        if (h && dlinfo(h, RTLD_DI_LINKMAP, &m) == 0) printf("%s => %s\\n", argv[i], m->l_name);
        else printf("%s => not found\\n", argv[i]);
    }
    return 0;
}
"""


@dataclass(frozen=True)
class FakeDriver:
    bin: Path  # put first on PATH: ldconfig, nvidia-smi (, rocm-smi)
    lib: Path
    probe: Path  # holds dlprobe
    libs: dict[str, Path]  # soname -> file

    def path(self, rest: str) -> str:
        return f"{self.bin}:{rest}"


def gcc() -> str | None:
    return shutil.which("gcc")


def _cc(out: Path, source: str, *args: str) -> None:
    src = out.with_suffix(out.suffix + ".c")
    src.write_text(source)
    cp = subprocess.run([gcc() or "gcc", "-O1", "-o", str(out), str(src), *args], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    src.unlink()


def build(root: Path, *, amd: bool = False, host_cache: bool = True) -> FakeDriver:
    """Compile the fake driver into ``root`` (see the module docstring)."""
    bin_dir, lib = root / "bin", root / "lib"
    bin_dir.mkdir(parents=True)
    lib.mkdir()
    libs: dict[str, Path] = {}
    sources = [("libcuda.so.1", LIBCUDA_C), ("libnvidia-ml.so.1", LIBNVML_C), ("libGL.so.1", LIBGL_C)]
    if amd:
        sources.append(("libdrm_amdgpu.so.1", LIBDRM_C))
    for soname, source in sources:
        _cc(lib / soname, source, "-shared", "-fPIC", f"-Wl,-soname,{soname}")
        libs[soname] = lib / soname
    _cc(bin_dir / "nvidia-smi", NVIDIA_SMI_C)
    (root / "probe").mkdir()
    _cc(root / "probe" / "dlprobe", DLPROBE_C)
    if amd:
        (bin_dir / "rocm-smi").write_text("#!/bin/sh\necho 'fake rocm-smi'\n")
        (bin_dir / "rocm-smi").chmod(0o755)
    cache = root / "ld.so.cache.txt"
    cache.write_text(
        f"{len(libs)} libs found in cache `/etc/ld.so.cache'\n"
        + "".join(f"\t{name} (libc6,x86-64) => {path}\n" for name, path in libs.items())
    )
    host = "/sbin/ldconfig -p | tail -n +2" if host_cache else "true"
    (bin_dir / "ldconfig").write_text(
        "#!/bin/sh\n# TEST FAKE of ldconfig -p: a driver's libraries, then the host's cache\n"
        f'[ "$1" = -p ] || exec /sbin/ldconfig "$@"\ncat \'{cache}\'\n{host}\n'
    )
    (bin_dir / "ldconfig").chmod(0o755)
    return FakeDriver(bin_dir, lib, root / "probe", libs)


def no_driver(root: Path) -> Path:
    """A PATH directory whose ``ldconfig -p`` lists no GPU library at all (a CPU node)."""
    root.mkdir(parents=True)
    (root / "ldconfig").write_text(
        '#!/bin/sh\n[ "$1" = -p ] || exec /sbin/ldconfig "$@"\n'
        "/sbin/ldconfig -p | grep -v -e libcuda -e libnvidia -e libGL -e libEGL -e libOpenCL -e libdrm\n"
    )
    (root / "ldconfig").chmod(0o755)
    return root
