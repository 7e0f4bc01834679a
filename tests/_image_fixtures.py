"""A tiny but real nixsnake-shaped SIF image for runtime tests (no nix needed).

Layout, like the images ``nixsnake build`` makes: a store path holding a statically
linked busybox (``sh``, ``cat``...) and a ``bash`` wrapper around it, ``/bin`` a symlink
into the store (so runtimes must recreate symlinks, not follow them on the host), real
``/etc /tmp /home /root /run /usr/bin ...`` directories, ``/.singularity.d/env/90-nixsnake.sh``
(PATH, LD_LIBRARY_PATH, a user variable) and ``99-base.sh``, ``/.singularity.d/libs``,
``/run/opengl-driver/lib -> /.singularity.d/libs``, ``/.nixsnake/metadata.json``. Packed
with mksquashfs and wrapped into a SIF whose squashfs starts at byte 32768.
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
IMAGE_PATH_VAR = f"{STORE_PATH}/bin:/usr/bin"
IMAGE_LD_LIBRARY_PATH = f"{STORE_PATH}/lib:/.singularity.d/libs"
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


BASE_SH = """#!/bin/sh
case ":${LD_LIBRARY_PATH:-}:" in
    *:/.singularity.d/libs:*) ;;
    *) LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs" ;;
esac
PS1="Apptainer> "
export LD_LIBRARY_PATH PS1
"""


def build_tree(root: Path) -> None:
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
    for d in (
        "dev", "etc", "home", "mnt", "opt", "proc", "root", "run/opengl-driver", "srv", "sys",
        "tmp", "usr/bin", "var/tmp", ".nixsnake", ".singularity.d/env", ".singularity.d/libs",
    ):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    (root / "bin").symlink_to(f"{STORE_PATH}/bin")
    (root / "usr/bin/env").symlink_to(f"{STORE_PATH}/bin/env")
    (root / "run/opengl-driver/lib").symlink_to("/.singularity.d/libs")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    env = root / ".singularity.d/env/90-nixsnake.sh"
    env.write_text(
        "#!/bin/sh\n"
        f"PATH={IMAGE_PATH_VAR}\nexport PATH\n"
        f"LD_LIBRARY_PATH={IMAGE_LD_LIBRARY_PATH}\nexport LD_LIBRARY_PATH\n"
        f"NIXSNAKE_TEST_IMAGE_VAR='{IMAGE_VAR_VALUE}'\nexport NIXSNAKE_TEST_IMAGE_VAR\n"
    )
    base = root / ".singularity.d/env/99-base.sh"
    base.write_text(BASE_SH)
    env.chmod(0o755)
    base.chmod(0o755)
    (root / ".nixsnake/metadata.json").write_text(json.dumps({"name": "runtime-test"}) + "\n")


def build_image(workdir: Path, name: str = "env.sif") -> Path:
    """Build the test image under ``workdir``; returns the SIF path."""
    from snakemake_deploy_nixsnake.image.sif import write_sif

    root = workdir / "root"
    build_tree(root)
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
