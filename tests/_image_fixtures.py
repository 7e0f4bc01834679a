"""A tiny but real nixsnake-shaped SIF image for runtime tests (no nix needed).

Layout: what ``nixsnake build`` makes, since the non-store part IS nixsnake's skeleton
(image/skeleton.py: /etc files, real /tmp /home /run /usr/bin ..., ``/bin`` a symlink into
the store, /.singularity.d/env/90-nixsnake.sh and 99-base.sh, /run/opengl-driver/lib,
the NVIDIA link directories, /lib64/ld-linux-x86-64.so.2). The store holds a statically
linked busybox (``sh``, ``cat``...) with a ``bash`` wrapper around it, and a copy of the
host's glibc loader and libc (a "glibc" store path) that the loader link points to, so a
dynamically linked host program bound in (``nvidia-smi`` by --nv) can run. That loader's
built-in search paths are the host's /lib dirs, which the image lacks, so its lib/ is on
LD_LIBRARY_PATH -- as nixsnake's mkenv.sh does for such a loader. Packed with mksquashfs
and wrapped into a SIF whose squashfs starts at byte 32768.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

STORE_NAME = "0123456789abcdfghijklmnpqrsvwxyz-nixsnake-testenv"  # nix base32 alphabet: a valid hash
STORE_PATH = f"/nix/store/{STORE_NAME}"
GLIBC_PATH = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-host-copy"
HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
IMAGE_PATH_VAR = f"{STORE_PATH}/bin:/usr/bin"
IMAGE_LD_LIBRARY_PATH = f"{STORE_PATH}/lib:{GLIBC_PATH}/lib"
IMAGE_VAR_VALUE = "set by the image"
APPLETS = (
    "sh", "env", "cat", "echo", "test", "[", "ls", "pwd", "id", "printf", "true", "false",
    "sleep", "wc", "head", "tr", "grep", "sed", "touch", "mkdir", "rm", "readlink", "stat",
)  # fmt: skip
TOOLS = ("mksquashfs", "squashfuse", "bwrap")


def is_static_elf(path: str) -> bool:
    """True for an ELF64 executable without a program interpreter (statically linked)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            endian = "<" if head[5] == 1 else ">"
            phoff = struct.unpack_from(endian + "Q", head, 32)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))  # PT_INTERP


def find_static_busybox() -> str | None:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if cand and os.path.exists(cand) and is_static_elf(cand):
            return cand
    return None


def missing_requirements() -> str | None:
    """Why the end-to-end tests cannot run here, or None."""
    for tool in TOOLS:
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install squashfs-tools squashfuse fuse3 bubblewrap)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not find_static_busybox():
        return "no statically linked busybox (apt-get install busybox-static)"
    return None


def _host_glibc() -> list[Path]:
    """The host's loader and libc (what the image's glibc store path holds), if any."""
    loader = Path(HOST_LOADER)
    if not loader.exists():
        return []
    libc = [Path(d) / "libc.so.6" for d in ("/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")]
    return [loader.resolve(), *[p.resolve() for p in libc if p.exists()][:1]]


def build_tree(root: Path, env_vars: dict[str, str] | None = None) -> None:
    from snakemake_deploy_nixsnake.image.skeleton import skeleton

    busybox = find_static_busybox()
    assert busybox, missing_requirements()
    store = root / STORE_PATH.lstrip("/")
    (store / "bin").mkdir(parents=True)
    (store / "lib").mkdir()
    shutil.copy2(busybox, store / "bin" / "busybox")
    for applet in APPLETS:
        (store / "bin" / applet).symlink_to("busybox")
    # busybox has no 'bash' applet: a wrapper that accepts (and drops) --norc
    bash = store / "bin" / "bash"
    bash.write_text(f'#!{STORE_PATH}/bin/sh\n[ "${{1-}}" != --norc ] || shift\nexec {STORE_PATH}/bin/sh "$@"\n')
    bash.chmod(0o755)
    glibc = root / GLIBC_PATH.lstrip("/") / "lib"
    glibc.mkdir(parents=True)
    host = _host_glibc()
    for f, name in zip(host, ("ld-linux-x86-64.so.2", "libc.so.6"), strict=False):
        shutil.copy2(f, glibc / name)
    for e in skeleton(
        STORE_PATH,
        path_dirs=[f"{STORE_PATH}/bin"],
        ld_library_path=[f"{STORE_PATH}/lib", f"{GLIBC_PATH}/lib"],
        env_vars={"TEST_IMAGE_VAR": IMAGE_VAR_VALUE} if env_vars is None else env_vars,
        ssl_cert_file=None,
        bash=f"{STORE_PATH}/bin/bash",
        metadata_json=json.dumps({"name": "runtime-test"}).encode() + b"\n",
        loader=f"{GLIBC_PATH}/lib/ld-linux-x86-64.so.2" if host else None,
    ):
        path = root / e.path
        if e.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif e.kind == "symlink":
            path.symlink_to(e.target)
        else:
            path.write_bytes(e.data)
        if e.kind != "symlink":
            path.chmod(e.mode)


def build_image(
    workdir: Path, name: str = "env.sif", env_vars: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> Path:
    """Build the test image under ``workdir`` (``env_vars``: its [env]; ``extra``: more
    files, path -> text, as an image derived from ours would add); returns the SIF path."""
    from snakemake_deploy_nixsnake.image.sif import write_sif

    root = workdir / "root"
    build_tree(root, env_vars)
    for path, text in (extra or {}).items():
        (root / path).write_text(text)
    sqfs = workdir / "env.sqfs"
    subprocess.run(
        ["mksquashfs", str(root), str(sqfs), "-comp", "gzip", "-all-root", "-noappend", "-quiet", "-no-progress"],
        check=True,
        capture_output=True,
    )
    sif = workdir / name
    write_sif(sif, sqfs, {"name": "runtime-test"})
    return sif


@contextlib.contextmanager
def mounted(image: Path, mnt: Path, offset: int = 0) -> Iterator[Path]:
    """squashfuse-mount an image (or a SIF's partition at ``offset``), unmounted after."""
    mnt.mkdir(parents=True, exist_ok=True)
    argv = ["squashfuse"] + (["-o", f"offset={offset}"] if offset else []) + [str(image), str(mnt)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


STANDIN_DIR = Path(__file__).resolve().parent / "standin"


def job_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a Snakemake job has on a node (apptainer stand-in first on PATH),
    plus host values that must not leak into the image."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{STANDIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LD_LIBRARY_PATH": "/host/lib",
        "PYTHONPATH": "/host/python",
        "NIXSNAKE_STANDIN_LOG": str(tmp_path / "standin.log"),
        "TMPDIR": str(tmpdir),
        **extra,
    }
