"""Env file -> image in the store, once: what ``nixsnake build``, the plugin's
``deploy()`` and the ``container:`` helper all call.

The fast path (image exists) reads two small files and hashes a few KiB: no nix, no
network. The slow path takes the store's build lock, re-checks, builds with nix, packs
and publishes atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import __version__
from . import conda as conda_layer
from .build import IMAGE_FORMAT_VERSION, image_id, nix_available, nix_build, nix_input, temp_workdir
from .config import Config
from .errors import Exit, NixsnakeError
from .lock import Lock, lock_file, parse_source, read_lock, stale_reason
from .spec import EnvFile, load_spec, lock_path_for
from .store import Store


class Reporter(Protocol):
    def stage(self, message: str) -> None: ...
    def log(self, line: str) -> None: ...


class QuietReporter:
    def stage(self, message: str) -> None:
        pass

    def log(self, line: str) -> None:
        pass


@dataclass(frozen=True)
class Resolved:
    """An env file with its lock, and the image id they determine."""

    spec_path: Path
    spec: EnvFile
    lock: Lock
    image_id: str


def resolve(spec_path: Path, cfg: Config, *, auto_lock: bool = True, reporter: Reporter | None = None) -> Resolved:
    """Load env + lock (locking first when there is no lock and ``auto_lock``)."""
    spec = load_spec(spec_path)
    if not lock_path_for(spec_path).exists():
        if not auto_lock:
            read_lock(spec_path)  # raises the clear "missing lock" error
        (reporter or QuietReporter()).stage(f"locking {spec_path}")
        lock_file(spec_path, cfg)
    lock = read_lock(spec_path)
    reason = stale_reason(spec, spec_path, lock)
    if reason:
        raise NixsnakeError(reason, Exit.DATAERR, f"run `nixsnake lock {spec_path}`")
    return Resolved(spec_path, spec, lock, image_id(spec, lock, cfg.compression))


def forbid_build_in_job(spec_path: Path) -> None:
    """Compute nodes must never build: they may lack nix, and N jobs would build N times."""
    from .slurm import in_slurm_job

    if in_slurm_job() and not os.environ.get("NIXSNAKE_ALLOW_BUILD_IN_JOB"):
        raise NixsnakeError(
            f"the image for {spec_path} is missing and this is a SLURM job: images are built on the head node",
            Exit.UNAVAILABLE,
            f"run `nixsnake build {spec_path}` (or snakemake itself) on the head node first",
        )


def image_metadata(r: Resolved, cfg: Config, closure: tuple[str, ...], env_root: str, executables: list[str] | None = None) -> dict:
    """What ``nixsnake inspect`` and the plugin read back from an image (no container start).

    Only things the image id covers go in (not the env file's name or path): the same id
    must always mean the same bytes.
    """
    return {
        "nixsnake_version": __version__,
        "image_format": IMAGE_FORMAT_VERSION,
        "image_id": r.image_id,
        "env": r.spec.normalized(),
        "lock": r.lock.resolved(),
        "env_root": env_root,
        "executables": sorted(executables or []),
        "store_paths": list(closure),
        "compression": cfg.compression,
        "labels": {
            "org.nixsnake.version": __version__,
            "org.nixsnake.image-id": r.image_id,
            "org.nixsnake.date": r.spec.date.isoformat(),
            "org.nixsnake.nixpkgs.rev": r.lock.nixpkgs.rev,
        },
    }


def ensure_image(spec_path: Path, cfg: Config, *, reporter: Reporter | None = None, auto_lock: bool = True) -> Path:
    """Return the path of the image for ``spec_path``, building it if needed."""
    rep = reporter or QuietReporter()
    return ensure_resolved(resolve(spec_path, cfg, auto_lock=auto_lock, reporter=rep), cfg, reporter=rep)


def ensure_resolved(r: Resolved, cfg: Config, *, reporter: Reporter | None = None) -> Path:
    rep = reporter or QuietReporter()
    store = Store(cfg.store).ensure()
    if store.has(r.image_id):
        store.record_use(r.image_id, str(r.spec_path.absolute()))
        return store.image_path(r.image_id)
    forbid_build_in_job(r.spec_path)
    if not nix_available():
        raise NixsnakeError(
            f"image for {r.spec_path} is not in {cfg.store} and nix is not available here",
            Exit.UNAVAILABLE,
            f"build it on the head node: `nixsnake build {r.spec_path}` (or run snakemake there)",
        )
    with store.build_lock(r.image_id, timeout=cfg.build_wait, on_wait=rep.stage):
        if store.has(r.image_id):  # someone else built it while we waited
            store.record_use(r.image_id, str(r.spec_path.absolute()))
            return store.image_path(r.image_id)
        store.clean_debris()
        return _build(r, cfg, store, rep)


def _build(r: Resolved, cfg: Config, store: Store, rep: Reporter) -> Path:
    from .image.sif import write_sif
    from .image.skeleton import skeleton
    from .image.squashfs import pack_squashfs

    t0 = time.monotonic()
    source = parse_source(cfg.nixpkgs_source)
    with temp_workdir() as wd:
        work = Path(wd)
        rep.stage(f"nix build of {r.spec_path.name}")
        try:
            built = nix_build(nix_input(r.spec, r.lock, source), source, cfg, work, on_line=rep.log)
        except NixsnakeError as exc:  # a conda archive that no longer matches the lock: one line, 65
            raise conda_layer.explain_build_failure(exc, str(lock_path_for(r.spec_path))) from None
        bin_dirs = [Path(d) for d in built.info.get("path", [f"{built.out}/bin"])]
        exes = sorted({f.name for d in bin_dirs if d.is_dir() for f in d.iterdir()})
        meta = image_metadata(r, cfg, built.closure, str(built.out), exes)
        meta_json = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        info = built.info
        ld = [p for p in str(info.get("ld_library_path", "")).split(":") if p]
        for warning in conda_layer.build_warnings(info):
            rep.stage(f"warning: {r.spec_path}: {warning}")
        entries = skeleton(
            str(built.out),
            path_dirs=list(info.get("path", [f"{built.out}/bin"])),
            ld_library_path=ld,
            env_vars={**conda_layer.image_env(info), **r.spec.env},
            ssl_cert_file=info.get("ssl_cert_file"),
            bash=str(info.get("bash", f"{built.out}/bin/bash")),
            metadata_json=meta_json,
            loader=conda_layer.loader(info),
        )
        # The squashfs is packed in the local work directory and then copied into the
        # SIF in the store (one sequential write to what is shared storage on a
        # cluster). Not `mksquashfs -offset` straight into the SIF: squashfs-tools 4.5.1
        # then intermittently writes corrupt images under load (its duplicate check
        # reads blocks back from the output file; see docs/performance.md).
        sqfs = work / "image.sqfs"
        rep.stage(f"packing {len(built.closure)} store paths ({cfg.compression})")
        pack_squashfs(sqfs, list(built.closure), entries, compression=cfg.compression)
        tmp = store.temp_path(r.image_id)
        try:
            rep.stage("writing SIF")
            write_sif(tmp, sqfs, meta)
            final = store.publish(
                r.image_id,
                tmp,
                {
                    "image_id": r.image_id,
                    "env_files": [str(r.spec_path.absolute())],
                    "built_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "built_by": f"{os.environ.get('USER', os.getuid())}@{socket.gethostname()}",
                    "build_seconds": round(time.monotonic() - t0, 2),
                    "date": r.spec.date.isoformat(),
                    "nixpkgs_rev": r.lock.nixpkgs.rev,
                    "software": [f"{n}=={v}" for n, v in r.lock.software()] + list(r.spec.nixpkgs.packages)
                    + [f"conda:{n}=={v}" for n, v, _ in conda_layer.software(r.lock.conda, r.spec)],
                },
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    rep.stage(f"published {final}")
    return final
