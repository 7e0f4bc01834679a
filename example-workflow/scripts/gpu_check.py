"""Report whether this job sees an NVIDIA GPU, and which driver, from inside the image.

Succeeds on CPU nodes too (the report then says so). What it looks at:
  - /dev/nvidia* device nodes (apptainer --nv / SLURM's gres binding expose them),
  - nvidia-smi (apptainer --nv binds it into /usr/bin),
  - libcuda.so.1, loaded with ctypes the way PyPI CUDA wheels load it: apptainer --nv
    binds the host driver into /.singularity.d/libs, which nixsnake images put on
    LD_LIBRARY_PATH (and /run/opengl-driver/lib, where nix-built CUDA code looks);
  - CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS (SLURM may set neither).

usage: gpu_check.py OUT_TXT
"""

import ctypes
import glob
import os
import shutil
import stat
import subprocess
import sys

out = sys.argv[1]
lines = []


def say(key, value):
    lines.append(f"{key}={value}")


devices = []
for p in sorted(glob.glob("/dev/nvidia*")):
    try:
        kind = "char-device" if stat.S_ISCHR(os.stat(p).st_mode) else "not-a-device(placeholder?)"
    except OSError as exc:
        kind = f"unreadable({exc.strerror})"
    devices.append(f"{p}:{kind}")
say("dev_nvidia", ",".join(devices) or "none")
real_devices = [d for d in devices if d.endswith(":char-device")]

smi = shutil.which("nvidia-smi")
say("nvidia_smi", smi or "none")
if smi:
    try:
        cp = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        say("nvidia_smi_gpus", cp.stdout.strip().replace("\n", "; ") or f"(exit {cp.returncode}) {cp.stderr.strip()}")
    except (OSError, subprocess.SubprocessError) as exc:
        say("nvidia_smi_gpus", f"failed: {exc}")

try:
    with open("/proc/driver/nvidia/version") as fh:
        say("proc_driver_version", fh.readline().strip())
except OSError:
    say("proc_driver_version", "none")

say("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))
libs_dir = "/.singularity.d/libs"
say("singularity_libs", ",".join(sorted(os.listdir(libs_dir))) if os.path.isdir(libs_dir) else "missing")
say("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
say("SLURM_JOB_GPUS", os.environ.get("SLURM_JOB_GPUS", "unset"))

gpus = 0
driver = None
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    say("libcuda", f"not loadable ({exc})")
else:
    say("libcuda", getattr(cuda, "_name", "libcuda.so.1"))
    rc = cuda.cuInit(0)
    say("cuInit", rc)
    if rc == 0:
        v = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0:
            driver = f"{v.value // 1000}.{(v.value % 1000) // 10}"
            say("cuda_driver_api", driver)
        n = ctypes.c_int()
        if cuda.cuDeviceGetCount(ctypes.byref(n)) == 0:
            gpus = n.value
        for i in range(gpus):
            dev = ctypes.c_int()
            name = ctypes.create_string_buffer(256)
            if cuda.cuDeviceGet(ctypes.byref(dev), i) == 0 and cuda.cuDeviceGetName(name, 256, dev) == 0:
                say(f"gpu{i}", name.value.decode(errors="replace"))

if gpus:
    verdict = f"GPU: {gpus} usable CUDA device(s), driver CUDA API {driver}"
elif real_devices:
    verdict = "GPU device nodes present but the CUDA driver is not usable here (was --nv given?)"
else:
    verdict = "no usable GPU (a CPU node, or placeholder device files): fine, nothing to do"
say("verdict", verdict)
with open(out, "w") as fh:
    fh.write("\n".join(lines) + "\n")
print(verdict)
