"""The small, non-store part of an image: directories, /etc files, apptainer's /.singularity.d.

A pure function of its arguments, returned sorted, so the image stays reproducible.
What apptainer needs (see docs/notes): real directories for every bind destination
(``/etc /tmp /var/tmp /proc /sys /dev /home /root /run /usr/bin``), ``/etc/passwd`` and
``/etc/group`` as files, a ``/.singularity.d/env/99-base.sh`` (apptainer injects
``--env``/``APPTAINERENV_*`` right after a file of exactly that name).

GPUs. ``--nv`` binds the host's driver libraries -- and with them the host's GL, EGL,
GLX and OpenCL libraries, all of nvliblist.conf -- into ``/.singularity.d/libs``, and
``nvidia-smi`` & co. into ``/usr/bin``; nvidia-container-cli puts the libraries into
``/usr/lib64`` instead. So:

* ``/run/opengl-driver/lib`` -> ``/.singularity.d/libs``: nix-built CUDA code finds the
  driver through that RUNPATH (nixpkgs' ``addDriverRunpath``).
* ``LD_LIBRARY_PATH`` does NOT contain ``/.singularity.d/libs`` (apptainer's own
  99-base.sh appends it; ours does not): it would put the host's GL/OpenCL libraries,
  built for the host's glibc, ahead of every RUNPATH in the image. Instead the image
  has three directories of links named after NVIDIA's own libraries only
  (:data:`NVIDIA_LIBS`: ``libcuda.so.1``, ``libnvidia-ml.so.1``, ...), pointing into
  ``/.singularity.d/libs``, ``/usr/lib64`` and the multiarch directory, and 90-nixsnake.sh
  appends each to ``LD_LIBRARY_PATH`` when the runtime put the driver there
  (:data:`NVIDIA_PROBE_LIBS`): without a GPU no program start pays a lookup per library
  in three directories of dangling links (through FUSE, where misses are not cached).
  PyPI wheels that ``dlopen("libcuda.so.1")`` find the driver there.
* The glibc loader at the path host programs name as their interpreter
  (``/lib64/ld-linux-x86-64.so.2``; aarch64: ``/lib/ld-linux-aarch64.so.1``), pointing
  to the image's own glibc loader: ``nvidia-smi`` bound from the host then runs on the
  image's glibc (it works when that glibc is at least as new as the one the tool was
  built for; NVIDIA builds its tools for very old glibcs). conda's binaries use it too.

User strings (env values, paths) only ever appear quoted with :func:`shlex.quote`:
they never become shell code.
"""

from __future__ import annotations

import json
import shlex
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .. import envvars
from ..errors import Exit, NixsnakeError
from .sif import labels_json

Kind = Literal["dir", "file", "symlink"]

LIBS_DIR = "/.singularity.d/libs"
METADATA_PATH = ".nixsnake/metadata.json"
#: the env scripts' result as NAME=VALUE lines (:func:`environment_file`)
ENVIRONMENT_PATH = ".nixsnake/environment"
#: the image's env scripts (/.singularity.d/env/), the only ones that file stands for
ENV_SCRIPT, BASE_SCRIPT = "90-nixsnake.sh", "99-base.sh"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"

#: glibc loader file name -> (where host programs expect it in the image, multiarch triplet)
LOADERS: dict[str, tuple[str, str]] = {
    "ld-linux-x86-64.so.2": ("lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu"),
    "ld-linux-aarch64.so.1": ("lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu"),
}
DEFAULT_LOADER = "ld-linux-x86-64.so.2"

#: NVIDIA's own user-space libraries: CUDA driver API, NVML, the PTX JIT and NVVM compilers
#: libcuda loads, the debugger, OpenCL ICD, video codec and optical flow, and the
#: unversioned names some programs dlopen. Nothing here exists under that name in an
#: image or from another vendor, so these are the only host libraries on LD_LIBRARY_PATH.
#: (Helpers named after the driver version, e.g. libnvidia-gpucomp.so.550.54.14, cannot
#: be linked ahead of time; nix-built code reaches them through /run/opengl-driver/lib.)
NVIDIA_LIBS: tuple[str, ...] = (
    "libcuda.so", "libcuda.so.1", "libcudadebugger.so.1", "libnvidia-ml.so", "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so.1", "libnvidia-nvvm.so.4", "libnvidia-nvvm70.so.4", "libnvidia-opencl.so.1",
    "libnvidia-cfg.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1", "libnvidia-opticalflow.so.1",
)  # fmt: skip

#: The directories of links to :data:`NVIDIA_LIBS` (image path -> where they point, with
#: ``{triplet}`` the multiarch triplet): legacy --nv, then nvidia-container-cli's two.
NVIDIA_LINK_DIRS: dict[str, str] = {
    ".nixsnake/nvidia/libs": LIBS_DIR,
    ".nixsnake/nvidia/lib64": "/usr/lib64",
    ".nixsnake/nvidia/multiarch": "/usr/lib/{triplet}",
}
#: A runtime put the host's NVIDIA driver into a directory when one of these is there
#: (every driver install has both: CUDA's and nvidia-smi's)
NVIDIA_PROBE_LIBS: tuple[str, ...] = ("libcuda.so.1", "libnvidia-ml.so.1")

#: Real directories every image has (bind destinations must not be symlinks into the store).
DIRS: tuple[str, ...] = (
    "dev",
    "etc",
    "etc/ssl",
    "etc/ssl/certs",
    "home",
    "mnt",
    "opt",
    "proc",
    "root",
    "run",
    "run/opengl-driver",
    "srv",
    "sys",
    "tmp",
    "usr",
    "usr/bin",
    "var",
    "var/tmp",
    ".nixsnake",
    ".singularity.d",
    ".singularity.d/env",
    ".singularity.d/libs",
)
STICKY_DIRS = frozenset({"tmp", "var/tmp"})

#: /etc/localtime of an image: a TZif file meaning UTC (one zone, offset 0, "UTC"), which
#: is also what glibc assumes without the file; a host's own /etc/localtime is bound over it.
UTC_TZIF = b"TZif" + bytes(16) + struct.pack(">6l", 0, 0, 0, 0, 1, 4) + struct.pack(">lBB", 0, 0, 0) + b"UTC\0"


@dataclass(frozen=True)
class Entry:
    """One path of the image: ``path`` is relative (no leading ``/``)."""

    path: str
    kind: Kind
    mode: int
    data: bytes = b""
    target: str = ""


def _file(path: str, text: str | bytes, mode: int = 0o644) -> Entry:
    return Entry(path, "file", mode, text.encode() if isinstance(text, str) else text)


def _abs(what: str, value: str) -> str:
    if not value.startswith("/") or "\x00" in value or "\n" in value:
        raise NixsnakeError(f"image skeleton: {what} must be an absolute path, got {value!r}", Exit.SOFTWARE)
    return value.rstrip("/") or "/"


def _check_env_name(name: str) -> None:
    envvars.check_name(name)
    if envvars.refused_in_env_file(name):
        raise NixsnakeError(
            f"environment variable {name!r} is set by nixsnake or apptainer and cannot be set in [env]",
            Exit.DATAERR,
            hint="add directories to the environment's packages instead of setting PATH-like variables",
        )


def _check_value(name: str, value: str) -> None:
    if "\x00" in value:
        raise NixsnakeError(f"environment variable {name!r} contains a NUL byte", Exit.DATAERR)


def _export(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}\nexport {name}\n"


#: What 99-base.sh sets (apptainer's own also appends /.singularity.d/libs to
#: LD_LIBRARY_PATH; ours does not, see the module docstring).
BASE_ENV: tuple[tuple[str, str], ...] = (("PS1", "Apptainer> "),)


def base_sh() -> str:
    """Apptainer injects --env/APPTAINERENV_* values right after a file of this name."""
    return (
        "#!/bin/sh\n"
        "# Written by nixsnake; apptainer injects --env/APPTAINERENV_* values after this file.\n"
        f"# (Unlike apptainer's own, it does not append {LIBS_DIR} to LD_LIBRARY_PATH: the host's\n"
        "# GL/OpenCL libraries there would shadow the image's. 90-nixsnake.sh links NVIDIA's.)\n"
        + "".join(_export(n, v) for n, v in BASE_ENV)
    )


def _loader_info(loader: str | None) -> tuple[str, str]:
    name = loader.rsplit("/", 1)[-1] if loader else DEFAULT_LOADER
    if name not in LOADERS:
        raise NixsnakeError(
            f"image skeleton: unknown glibc loader {name!r} (known: {', '.join(LOADERS)})", Exit.SOFTWARE
        )
    return LOADERS[name]


def env_pairs(
    *,
    path_dirs: Sequence[str],
    ld_library_path: Sequence[str],
    env_vars: Mapping[str, str],
    ssl_cert_file: str | None,
    perl5lib: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The image's environment in the order 90-nixsnake.sh sets it: the one list both
    that script and :data:`ENVIRONMENT_PATH` are written from."""
    path = [_abs("PATH entry", p) for p in path_dirs]
    if "/usr/bin" not in path:
        path.append("/usr/bin")  # where --nv binds nvidia-smi and friends
    libs = [_abs("LD_LIBRARY_PATH entry", p) for p in ld_library_path]
    perl = [_abs("PERL5LIB entry", p) for p in perl5lib]
    for p in path + libs + perl:
        if ":" in p:
            raise NixsnakeError(f"image skeleton: search path entry {p!r} contains ':'", Exit.SOFTWARE)
    pairs = [("PATH", ":".join(path)), ("LD_LIBRARY_PATH", ":".join(libs))]
    if perl:  # only environments with Perl modules (an env file's perlPackages.*)
        pairs.append(("PERL5LIB", ":".join(perl)))
    if ssl_cert_file:
        cert = _abs("ssl_cert_file", ssl_cert_file)
        pairs += [("SSL_CERT_FILE", cert), ("NIX_SSL_CERT_FILE", cert)]
    for name in sorted(env_vars):
        value = env_vars[name]
        _check_env_name(name)
        _check_value(name, value)
        pairs.append((name, value))
    return pairs


def nvidia_link_dirs(triplet: str) -> list[tuple[str, str]]:
    """(link directory, the directory its links point into) in LD_LIBRARY_PATH order."""
    return [("/" + d, target.format(triplet=triplet)) for d, target in NVIDIA_LINK_DIRS.items()]


def env_sh(pairs: Sequence[tuple[str, str]], triplet: str) -> str:
    text = "#!/bin/sh\n# Written by nixsnake: the environment of this image.\n\n"
    text += "".join(_export(n, v) for n, v in pairs)
    text += "# NVIDIA's libraries, where the runtime put the host driver's (--nv, nvidia-container-cli)\n"
    for link_dir, target in nvidia_link_dirs(triplet):
        probe = " || ".join(f"[ -e {target}/{lib} ]" for lib in NVIDIA_PROBE_LIBS)
        text += f"if {probe}; then\n"
        text += f"    LD_LIBRARY_PATH=${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}{link_dir}\nfi\n"
    return text


def environment_file(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The env scripts' result as ``NAME=VALUE`` lines, for runtimes that start the
    command without a shell (bwrap-exec.sh: no /bin/sh, no script read through FUSE per
    job), as it is without a GPU: such a runtime appends the NVIDIA link directory for
    what it binds itself. None when a value holds a newline: the runtimes then source the
    scripts."""
    if any("\n" in v for _, v in pairs):
        return None
    return "".join(f"{n}={v}\n" for n, v in pairs)


def runscript(bash: str) -> str:
    q = shlex.quote(bash)
    return (
        f"#!{bash}\n"
        "# apptainer run IMAGE [CMD ARGS...]: run CMD, or a shell without one.\n"
        'if [ "$#" -gt 0 ]; then\n'
        '    exec "$@"\n'
        "fi\n"
        f"exec {q}\n"
    )


def skeleton(
    env_root: str,
    *,
    path_dirs: list[str],
    ld_library_path: list[str],
    env_vars: dict[str, str],
    ssl_cert_file: str | None,
    bash: str,
    metadata_json: bytes,
    loader: str | None = None,
    perl5lib: list[str] | None = None,
) -> list[Entry]:
    """All non-store entries of the image, sorted by path (parents before children)."""
    env_root = _abs("env_root", env_root)
    bash = _abs("bash", bash)
    if " " in bash or "\t" in bash:
        raise NixsnakeError(f"image skeleton: bash path {bash!r} contains whitespace", Exit.SOFTWARE)
    try:
        metadata = json.loads(metadata_json)
    except ValueError as exc:
        raise NixsnakeError(f"image skeleton: metadata is not JSON: {exc}", Exit.SOFTWARE) from exc
    interpreter, triplet = _loader_info(loader)
    pairs = env_pairs(
        path_dirs=path_dirs,
        ld_library_path=ld_library_path,
        env_vars=env_vars,
        ssl_cert_file=ssl_cert_file,
        perl5lib=perl5lib or (),
    )
    entries: list[Entry] = [Entry(d, "dir", 0o1777 if d in STICKY_DIRS else 0o755) for d in DIRS]
    environment = environment_file([*pairs, *BASE_ENV])
    if environment is not None:
        entries.append(_file(ENVIRONMENT_PATH, environment))
    entries += [
        Entry("bin", "symlink", 0o777, target=f"{env_root}/bin"),
        Entry("usr/bin/env", "symlink", 0o777, target=f"{env_root}/bin/env"),
        Entry("run/opengl-driver/lib", "symlink", 0o777, target=LIBS_DIR),
        _file(
            "etc/passwd",
            f"root:x:0:0:root:/root:{bash}\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        _file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        _file("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        _file("etc/resolv.conf", ""),
        # the runtimes bind the host's /etc/localtime here; a file to bind onto spares every
        # job an /etc underlay (a tmpfs with the image's /etc bound in entry by entry)
        _file("etc/localtime", UTC_TZIF),
        _file("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
        _file(f".singularity.d/env/{ENV_SCRIPT}", env_sh(pairs, triplet), 0o755),
        _file(f".singularity.d/env/{BASE_SCRIPT}", base_sh(), 0o755),
        _file(".singularity.d/runscript", runscript(bash), 0o755),
        _file(".singularity.d/labels.json", labels_json(metadata if isinstance(metadata, dict) else {})),
        _file(METADATA_PATH, metadata_json),
    ]
    if ssl_cert_file:
        entries.append(Entry(CA_BUNDLE, "symlink", 0o777, target=_abs("ssl_cert_file", ssl_cert_file)))
    if loader:  # host tools bound by --nv (and conda's binaries) name this interpreter
        entries += [
            Entry(interpreter.split("/")[0], "dir", 0o755),
            Entry(interpreter, "symlink", 0o777, target=_abs("loader", loader)),
        ]
    entries.append(Entry(".nixsnake/nvidia", "dir", 0o755))
    for link_dir, target in nvidia_link_dirs(triplet):
        entries.append(Entry(link_dir[1:], "dir", 0o755))
        entries += [Entry(f"{link_dir[1:]}/{n}", "symlink", 0o777, target=f"{target}/{n}") for n in NVIDIA_LIBS]
    return sorted(entries, key=lambda e: e.path.split("/"))
