"""The small, non-store part of an image: directories, /etc files, apptainer's /.singularity.d.

A pure function of its arguments, returned sorted, so the image stays reproducible.
What apptainer needs (see docs/notes): real directories for every bind destination
(``/etc /tmp /var/tmp /proc /sys /dev /home /root /run /usr/bin``), ``/etc/passwd`` and
``/etc/group`` as files, a ``/.singularity.d/env/99-base.sh`` (apptainer injects
``--env``/``APPTAINERENV_*`` right after a file of exactly that name), and
``/run/opengl-driver/lib`` -> ``/.singularity.d/libs`` so nix-built CUDA code finds the
driver libraries that ``--nv`` binds there.

User strings (env values, paths) only ever appear quoted with :func:`shlex.quote`:
they never become shell code.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .. import envvars
from ..errors import Exit, NixsnakeError
from .sif import labels_json

Kind = Literal["dir", "file", "symlink"]

LIBS_DIR = "/.singularity.d/libs"
METADATA_PATH = ".nixsnake/metadata.json"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
ELF_INTERPRETER = "lib64/ld-linux-x86-64.so.2"

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


def base_sh() -> str:
    """Like apptainer's own 99-base.sh: append the driver libs dir, set the prompt."""
    return (
        "#!/bin/sh\n"
        "# Written by nixsnake; apptainer injects --env/APPTAINERENV_* values after this file.\n"
        'case ":${LD_LIBRARY_PATH:-}:" in\n'
        f"    *:{LIBS_DIR}:*) ;;\n"
        f'    *) LD_LIBRARY_PATH="${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}{LIBS_DIR}" ;;\n'
        "esac\n"
        'PS1="Apptainer> "\n'
        "export LD_LIBRARY_PATH PS1\n"
    )


def env_sh(
    *,
    path_dirs: Sequence[str],
    ld_library_path: Sequence[str],
    env_vars: Mapping[str, str],
    ssl_cert_file: str | None,
    perl5lib: Sequence[str] = (),
) -> str:
    path = [_abs("PATH entry", p) for p in path_dirs]
    if "/usr/bin" not in path:
        path.append("/usr/bin")  # where --nv binds nvidia-smi and friends
    libs = [_abs("LD_LIBRARY_PATH entry", p) for p in ld_library_path]
    if LIBS_DIR not in libs:
        libs.append(LIBS_DIR)
    perl = [_abs("PERL5LIB entry", p) for p in perl5lib]
    for p in path + libs + perl:
        if ":" in p:
            raise NixsnakeError(f"image skeleton: search path entry {p!r} contains ':'", Exit.SOFTWARE)
    lines = ["#!/bin/sh", "# Written by nixsnake: the environment of this image.", ""]
    text = "\n".join(lines) + "\n"
    text += _export("PATH", ":".join(path))
    text += _export("LD_LIBRARY_PATH", ":".join(libs))
    if perl:  # only environments with Perl modules (an env file's perlPackages.*)
        text += _export("PERL5LIB", ":".join(perl))
    if ssl_cert_file:
        cert = _abs("ssl_cert_file", ssl_cert_file)
        text += _export("SSL_CERT_FILE", cert)
        text += _export("NIX_SSL_CERT_FILE", cert)
    for name in sorted(env_vars):
        value = env_vars[name]
        _check_env_name(name)
        _check_value(name, value)
        text += _export(name, value)
    return text


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
    entries: list[Entry] = [Entry(d, "dir", 0o1777 if d in STICKY_DIRS else 0o755) for d in DIRS]
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
        _file("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
        _file(
            ".singularity.d/env/90-nixsnake.sh",
            env_sh(
                path_dirs=path_dirs,
                ld_library_path=ld_library_path,
                env_vars=env_vars,
                ssl_cert_file=ssl_cert_file,
                perl5lib=perl5lib or (),
            ),
            0o755,
        ),
        _file(".singularity.d/env/99-base.sh", base_sh(), 0o755),
        _file(".singularity.d/runscript", runscript(bash), 0o755),
        _file(".singularity.d/labels.json", labels_json(metadata if isinstance(metadata, dict) else {})),
        _file(METADATA_PATH, metadata_json),
    ]
    if ssl_cert_file:
        entries.append(Entry(CA_BUNDLE, "symlink", 0o777, target=_abs("ssl_cert_file", ssl_cert_file)))
    if loader:  # [conda]: conda's ELF binaries name this interpreter; nixpkgs' glibc serves it
        entries += [
            Entry("lib64", "dir", 0o755),
            Entry(ELF_INTERPRETER, "symlink", 0o777, target=_abs("loader", loader)),
        ]
    return sorted(entries, key=lambda e: e.path.split("/"))
