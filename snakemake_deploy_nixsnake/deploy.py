"""The pipeline: env file -> image in the store, once; and how to run it.

Every front end -- ``nixsnake build/run/shell``, the plugin's ``deploy()`` and
``decorate_shellcmd``, the ``container:`` helper -- goes through these functions, so an
env file means the same image, and the same binds, everywhere. The stages hand typed
values to each other::

    env file (+ lock)  --resolve-->  ResolvedEnv        (spec.EnvFile, lock.Lock, image id)
    ResolvedEnv        --NixInput--> nixbuild.NixResult (store path, closure, EnvInfo)
    NixResult          --plan----->  ImagePlan          (closure, skeleton, ImageMetadata)
    ImagePlan          --pack----->  published image    (store: images/<id>.sif + meta)
    image              --run_request--> runtime.RunRequest

The fast path (image exists) reads two small files and hashes a few KiB: no nix, no
network. The slow path takes the store's build lock, re-checks, builds with nix, packs
and publishes atomically.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import __version__, proc
from .arch import host_system
from .binds import Bind, parse_user_bind
from .config import Config
from .errors import Exit, NixsnakeError, SpecError
from .image.metadata import ImageMetadata
from .lock import Lock, lock_file, missing_rev_error, read_lock, stale_error, stale_reason
from .spec import EnvFile, load_spec, lock_path_for, sha256_json
from .store import Meta, Store

if TYPE_CHECKING:  # (imported where used: the fast path and the CLI's start-up stay light)
    from .image.skeleton import Entry
    from .nixbuild import NixResult
    from .runtime import RunRequest

#: Bump whenever the bytes of the image built from one env file and lock can change (the
#: image layout, the skeleton, the packing, the SIF writer, nix/*): the image id hashes
#: it, so every store then builds afresh. tests/test_image_identity.py fails when the bytes
#: change without a bump.
IMAGE_FORMAT_VERSION = 7


def image_id(env: EnvFile, lock: Lock, compression: str, system: str | None = None) -> str:
    """Content address of an image: normalized env file + lock + image format +
    compression + the system it is built for. Every byte of the image follows from these, so one id always means one
    SHA-256 (the nixsnake version is not part of it: a release that does not change the
    bytes rebuilds nothing).

    Hashing canonical JSON (not concatenated strings) means two different inputs can only
    share an id through a SHA-256 collision; the nixpkgs *source location* is left out on
    purpose: the same rev from a mirror or from GitHub is the same software. ``system``
    (default: this machine's, arch.py) is in: an x86_64 and an aarch64 image of one env
    are different images in a store shared by both.
    """
    return sha256_json(
        {
            "format": IMAGE_FORMAT_VERSION,
            "spec": env.normalized(),
            "lock": lock.as_data(),
            "compression": compression,
            "system": system or host_system(),
        }
    )[:40]


class Reporter(Protocol):
    def stage(self, message: str) -> None: ...
    def log(self, line: str) -> None: ...


class QuietReporter:
    def stage(self, message: str) -> None:
        pass

    def log(self, line: str) -> None:
        pass


# --- stage 1: env file + lock -> ResolvedEnv ---------------------------------------------


@dataclass(frozen=True)
class ResolvedEnv:
    """An env file with its (current) lock, and the image id they determine."""

    path: Path  # the env file, as the user named it
    env: EnvFile
    lock: Lock
    image_id: str


def resolved_env(path: Path, env: EnvFile, lock: Lock, cfg: Config) -> ResolvedEnv:
    """Check that ``lock`` belongs to ``env`` and compute the image id. (The plugin reads
    both files from snakemake's source cache; everything else through :func:`resolve`.)"""
    reason = stale_reason(env, path, lock)
    if reason:
        raise stale_error(path, reason)
    return ResolvedEnv(path, env, lock, image_id(env, lock, cfg.compression))


def resolve(path: Path, cfg: Config, *, auto_lock: bool = True, reporter: Reporter | None = None) -> ResolvedEnv:
    """Load env file + lock (locking first when there is no lock and ``auto_lock``)."""
    env = load_spec(path)
    if not lock_path_for(path).exists():
        if not auto_lock:
            read_lock(path)  # raises the clear "missing lock" error
        (reporter or QuietReporter()).stage(f"locking {path}")
        lock_file(path, cfg)
    return resolved_env(path, env, read_lock(path), cfg)


# --- stage 2-4: ResolvedEnv -> published image ------------------------------------------


def forbid_build_in_job(path: Path) -> None:
    """Compute nodes must never build: they may lack nix, and N jobs would build N times."""
    from .slurm import in_slurm_job

    if in_slurm_job() and not os.environ.get("NIXSNAKE_ALLOW_BUILD_IN_JOB"):
        raise NixsnakeError(
            f"the image for {path} is missing and this is a SLURM job: images are built on the head node",
            Exit.UNAVAILABLE,
            f"run `nixsnake build {path}` (or snakemake itself) on the head node first",
        )


def find_image(r: ResolvedEnv, cfg: Config) -> Path | None:
    """The image of ``r`` if it is published (and passes the store's checks), else None.
    Never builds: for jobs, and for NIXSNAKE_NO_BUILD."""
    store = Store(cfg.store)
    store.check()
    return store.image_path(r.image_id) if store.has(r.image_id) else None


def ensure_image(r: ResolvedEnv, cfg: Config, *, reporter: Reporter | None = None) -> Path:
    """The path of the image of ``r``, built and published first if needed."""
    rep = reporter or QuietReporter()
    store = Store(cfg.store).ensure()
    if store.has(r.image_id):
        store.record_use(r.image_id, str(r.path.absolute()))
        return store.image_path(r.image_id)
    forbid_build_in_job(r.path)
    from .nixbuild import nix_available

    if not nix_available():
        raise NixsnakeError(
            f"image for {r.path} is not in {cfg.store} and nix is not available here",
            Exit.UNAVAILABLE,
            f"build it on the head node: `nixsnake build {r.path}` (or run snakemake there)",
        )
    with store.build_lock(r.image_id, timeout=cfg.build_wait, on_wait=rep.stage):
        if store.has(r.image_id):  # someone else built it while we waited
            store.record_use(r.image_id, str(r.path.absolute()))
            return store.image_path(r.image_id)
        store.clean_debris()
        return _build(r, cfg, store, rep)


@dataclass(frozen=True)
class ImagePlan:
    """Everything the image is made of, decided before a byte is written."""

    closure: tuple[str, ...]
    entries: tuple[Entry, ...]  # sorted
    metadata: ImageMetadata


def plan_image(r: ResolvedEnv, built: NixResult, cfg: Config) -> ImagePlan:
    """What nix built + the env file -> the image's content. Pure but for listing the
    commands on the environment's PATH."""
    from .image.skeleton import skeleton

    info = built.info
    exes = sorted({f.name for d in map(Path, info.path) if d.is_dir() for f in d.iterdir()})
    glibc = glibc_of_loader(info.loader)
    meta = ImageMetadata(
        image_id=r.image_id,
        image_format=IMAGE_FORMAT_VERSION,
        env=r.env.normalized(),
        lock=r.lock.as_data(),
        env_root=str(built.out),
        executables=tuple(exes),
        store_paths=built.closure,
        compression=cfg.compression,
        labels={
            "org.nixsnake.image-id": r.image_id,
            "org.nixsnake.date": r.env.date.isoformat(),
            "org.nixsnake.nixpkgs.rev": r.lock.nixpkgs.rev,
        },
        glibc=glibc,
    )
    entries = skeleton(
        str(built.out),
        path_dirs=list(info.path),
        ld_library_path=list(info.ld_library_path),
        perl5lib=list(info.perl5lib),
        # the conda layer's activation variables; the env file's [env] wins on a clash
        env_vars={**(info.conda.image_env() if info.conda else {}), **r.env.env},
        ssl_cert_file=info.ssl_cert_file or None,
        bash=info.bash,
        metadata_json=meta.to_json(),
        loader=info.loader,
    )
    return ImagePlan(built.closure, tuple(entries), meta)


def glibc_of_loader(loader: str | None) -> str:
    """The glibc version next to ``loader``: the newest ``GLIBC_x.y`` its ``libc.so.6``
    defines (what a library needing ``GLIBC_x.y`` is checked against). "" if unknown."""
    from .elf import ElfError, format_version, read_elf

    if not loader:
        return ""
    try:
        newest = read_elf(Path(loader).parent / "libc.so.6").glibc_defined
    except (OSError, ElfError):
        return ""
    return format_version(newest) if newest else ""


def _build(r: ResolvedEnv, cfg: Config, store: Store, rep: Reporter) -> Path:
    from .arch import py_platform, sif_arch, wheel_arch
    from .conda import explain_build_failure
    from .conda import software as conda_software
    from .image.sif import write_sif
    from .image.squashfs import pack_squashfs
    from .nixbuild import NixInput, explain_failure, nix_build
    from .nixpkgs import parse_source
    from .store import temp_workdir

    t0 = time.monotonic()
    source = parse_source(cfg.nixpkgs_source)
    gone = missing_rev_error(r.lock, source, r.path)
    if gone is not None:
        raise gone
    system = host_system()
    if r.lock.python_platform and wheel_arch(r.lock.python_platform) != wheel_arch(py_platform(system)):
        raise SpecError(
            str(lock_path_for(r.path)),
            "python.platform",
            f"the wheels were locked for {r.lock.python_platform}, this machine builds {system} images",
            f"re-run `nixsnake lock {r.path}` on a machine of the architecture the images are for",
        )
    with temp_workdir() as wd:
        work = Path(wd)
        rep.stage(f"nix build of {r.path.name}")
        try:
            built = nix_build(NixInput.of(r.env, r.lock, source), source, cfg, work, on_line=rep.log)
        except NixsnakeError as exc:  # what the user can act on: one line (65 or 69)
            exc = explain_build_failure(exc, str(lock_path_for(r.path)))  # a conda archive that changed
            raise explain_failure(
                exc, rev=r.lock.nixpkgs.rev, env_file=str(r.path), lock_file=str(lock_path_for(r.path))
            ) from None
        for warning in built.info.warnings:
            rep.stage(f"warning: {r.path}: {warning}")
        if built.info.conda is not None:
            for warning in built.info.conda.warnings():
                rep.stage(f"warning: {r.path}: {warning}")
        if built.info.system != system:
            raise NixsnakeError(
                f"nix built for {built.info.system}, but this machine is {system} (nix's `system` setting?)",
                Exit.SOFTWARE,
                "build images with nix's default system for the machine",
            )
        plan = plan_image(r, built, cfg)
        # The squashfs is packed in the local work directory and then copied into the
        # SIF in the store (one sequential write to what is shared storage on a
        # cluster). Not `mksquashfs -offset` straight into the SIF: squashfs-tools 4.5.1
        # then intermittently writes corrupt images under load (its duplicate check
        # reads blocks back from the output file; see docs/performance.md).
        sqfs = work / "image.sqfs"
        rep.stage(f"packing {len(plan.closure)} store paths ({cfg.compression})")
        pack_squashfs(sqfs, list(plan.closure), list(plan.entries), compression=cfg.compression)
        tmp = store.temp_path(r.image_id)
        try:
            rep.stage("writing SIF")
            write_sif(tmp, sqfs, plan.metadata.to_dict(), arch=sif_arch(built.info.system))
            proc.check_interrupted()  # the last moment to stop: after this, it is published
            final, sha256 = store.publish(r.image_id, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    rep.stage(f"published {final}")
    try:
        store.write_meta(
            Meta(
                image_id=r.image_id,
                env_files=(str(r.path.absolute()),),
                built_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                built_by=f"{os.environ.get('USER', os.getuid())}@{socket.gethostname()} (nixsnake {__version__})",
                build_seconds=round(time.monotonic() - t0, 2),
                date=r.env.date.isoformat(),
                nixpkgs_rev=r.lock.nixpkgs.rev,
                software=tuple(f"{n}=={v}" for n, v in r.lock.software())
                + tuple(r.env.nixpkgs.packages)
                + tuple(f"conda:{n}=={v}" for n, v, _ in conda_software(r.lock.conda, r.env)),
                sha256=sha256,
            )
        )
    except NixsnakeError as exc:  # the image is published and usable; say what is missing
        rep.stage(f"warning: image published, but {exc}")
    return final


# --- running ------------------------------------------------------------------------------


def run_request(
    r: ResolvedEnv,
    image: Path,
    cfg: Config,
    *,
    workdir: Path,
    extra_binds: Sequence[str] = (),
    mounts: Iterable[Path] = (),
    envvars: Iterable[str] = (),
    shell: str = "bash",
) -> RunRequest:
    """How to run something in ``image``: the one place binds are merged.

    In order: the ``binds`` setting, the env file's ``[run] binds``, ``extra_binds`` (the
    caller's ``--bind``), each checked against the protected targets; then ``mounts``
    (directories the job needs, e.g. snakemake's temp dir) that exist, each at its own
    path unless an earlier bind already targets it; the working directory is bound by the
    runtime the same way. ``envvars`` are passed by name, with the scheduler's
    (:data:`envvars.JOB_ENVVARS`).
    """
    from . import envvars as ev
    from .runtime import RunRequest, gpu_mode

    binds = [parse_user_bind(b) for b in (*cfg.binds, *r.env.run.binds, *extra_binds)]
    taken = {b.dst for b in binds}
    for m in mounts:
        path = Path(m).absolute()
        if path.exists() and str(path) not in taken and path != workdir:
            binds.append(Bind(str(path), str(path)))
            taken.add(str(path))
    return RunRequest(
        image=image,
        runtime=cfg.runtime,  # type: ignore[arg-type]
        gpu=gpu_mode(r.env.gpu.cuda, cfg.gpu),
        binds=tuple(binds),
        workdir=workdir,
        envvars=tuple(sorted(set(envvars) | set(ev.JOB_ENVVARS))),
        shell=shell,
        runtime_bin=cfg.runtime_bin,
    )
