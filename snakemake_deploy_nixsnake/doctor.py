"""``nixsnake doctor``: check a site end to end before users hit the problems in jobs.

Each check returns one row (name, status, detail). Status is ``ok``, ``warn`` (works,
but something is worth knowing) or ``fail`` (nixsnake cannot work this way); doctor
exits 0 only when nothing failed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import proc
from .config import Config
from .errors import NixsnakeError

if TYPE_CHECKING:
    from .gpucheck import ImageGpuInfo


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str


def _version(argv: list[str]) -> str | None:
    try:
        r = proc.run(argv, check=False, timeout=30)
    except NixsnakeError:
        return None
    if r.returncode != 0:
        return None
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else ""


def check_nix() -> list[Check]:
    v = _version(["nix-build", "--version"])
    if v is None:
        return [
            Check(
                "nix (head node)",
                "fail",
                "nix-build not found: builds need nix on the node that runs snakemake "
                "(Debian: apt-get install nix-bin)",
            )
        ]
    out = [Check("nix (head node)", "ok", v)]
    out.append(Check("nix flakes", "ok", "not needed: nixsnake builds a pinned non-flake expression (nix 2.x works)"))
    for tool in ("nix-store",):
        if proc.which(tool) is None:
            out.append(Check(tool, "fail", "missing: install nix completely"))
    return out


def check_image_tools() -> list[Check]:
    v = _version(["mksquashfs", "-version"])
    if v is None:
        return [Check("mksquashfs", "fail", "missing: apt-get install squashfs-tools (needed to build images)")]
    return [Check("mksquashfs", "ok", v)]


def check_store(cfg: Config) -> list[Check]:
    from .store import Store

    st = Store(cfg.store)
    try:
        st.ensure()
    except NixsnakeError as exc:
        return [Check("image store", "fail", str(exc))]
    probe = st.tmp / f".doctor.{os.getpid()}"
    try:
        probe.write_text("x")
        probe.unlink()
    except OSError as exc:
        return [
            Check("image store", "fail", f"{cfg.store} not writable here ({exc.strerror}); builds need write access")
        ]
    listing = st.listing()
    if listing.problems:
        return [
            Check(
                "image store",
                "fail",
                f"{listing.problems[0]} (+{len(listing.problems) - 1} more)"
                if len(listing.problems) > 1
                else listing.problems[0],
            )
        ]
    mode = oct(cfg.store.stat().st_mode & 0o7777)
    return [Check("image store", "ok", f"{cfg.store} (mode {mode}, {len(listing.entries)} images)")]


def check_runtime(cfg: Config) -> list[Check]:
    out = []
    if cfg.runtime == "bwrap":
        for tool, pkg in (("bwrap", "bubblewrap"), ("squashfuse", "squashfuse fuse3")):
            found = proc.which(tool)
            out.append(Check(tool, "ok" if found else "fail", found or f"missing: apt-get install {pkg}"))
        return out
    exe = cfg.runtime_bin or cfg.runtime
    v = _version([exe, "--version"])
    if v is None:
        out.append(
            Check(
                f"{cfg.runtime} (this node)",
                "fail",
                f"'{exe}' not found: install it on compute nodes, set runtime_bin, or use --runtime bwrap",
            )
        )
    elif cfg.runtime == "apptainer" and (old := _apptainer_before_1_1(v)):
        out.append(
            Check(
                f"{cfg.runtime} (this node)",
                "fail",
                f"{v}: nixsnake's job lines pass --no-eval, which apptainer has from 1.1 on ({old} rejects it); "
                "upgrade apptainer, or use runtime = singularity (which asks the version and escapes values instead)",
            )
        )
    else:
        out.append(Check(f"{cfg.runtime} (this node)", "ok", v))
    out.append(
        Check(
            "squashfuse",
            "ok" if proc.which("squashfuse") else "warn",
            "present" if proc.which("squashfuse") else "missing: unprivileged apptainer mounts SIFs with it",
        )
    )
    return out


def _apptainer_before_1_1(version_line: str) -> str | None:
    """The version, when ``apptainer --version`` names a release without --no-eval."""
    m = re.search(r"apptainer version (\d+)\.(\d+)", version_line)
    if m and (int(m.group(1)), int(m.group(2))) < (1, 1):
        return f"{m.group(1)}.{m.group(2)}"
    return None


def image_gpu_infos(cfg: Config) -> list[ImageGpuInfo]:
    """glibc version and CUDA runtime of every image in the store (from its metadata)."""
    from .gpucheck import image_gpu_info
    from .image.sif import read_sif
    from .store import Store

    out: list[ImageGpuInfo] = []
    try:
        entries = Store(cfg.store).listing().entries
    except NixsnakeError:
        return out
    for e in entries:
        try:
            meta = read_sif(e.path).metadata
        except NixsnakeError:
            continue
        out.append(image_gpu_info(e.id, meta))
    return out


def gpu_rows(report: dict, cfg: Config, where: str) -> list[Check]:
    """The node's GPU files (gpucheck.node_report) against the store's images."""
    from .gpucheck import compare

    found = compare(report, image_gpu_infos(cfg))
    return [
        Check(f"GPU libs vs images{where}", found["glibc"].status, found["glibc"].detail),
        Check(f"GPU driver vs CUDA{where}", found["cuda"].status, found["cuda"].detail),
    ]


def _gpu_runtime(cfg: Config) -> str:
    """Whose --nv the GPU check judges: nixsnake's bwrap runtime binds its own list, the
    others what their configuration names."""
    return "bwrap" if cfg.runtime == "bwrap" else (cfg.runtime_bin or cfg.runtime)


def check_gpu_here(cfg: Config) -> list[Check]:
    """On a node with an NVIDIA driver, compare what --nv would bind with the images; on
    others (the head node, usually) say where to check."""
    from .gpucheck import has_driver, node_report

    report = node_report(_gpu_runtime(cfg))
    if not has_driver(report):
        return [
            Check(
                "GPU libs vs images",
                "ok",
                "no GPU driver on this node; `nixsnake doctor --slurm-partition <GPU partition>` checks a GPU node "
                "(the glibc the driver's libraries need, the CUDA version it supports)",
            )
        ]
    return gpu_rows(report, cfg, "")


def check_slurm(partition: str | None, cfg: Config) -> list[Check]:
    from .slurm import Partition, cluster_info, gpu_partitions

    try:
        info = cluster_info()
        parts = info.partitions()
    except NixsnakeError as exc:
        return [Check("SLURM", "warn", f"no cluster here ({exc.message}); fine for local runs")]
    gparts = gpu_partitions(info)
    usable = {p.name: p.gpu_nodes for p in gpu_partitions(info, usable_only=True)}
    nodes = {n.name: n for n in info.nodes()}

    def describe(p: Partition) -> str:
        up = usable.get(p.name, ())
        gpus = sum(nodes[n].gpus for n in up if n in nodes)
        cpus = sum(nodes[n].cpus for n in up if n in nodes)
        return f"{p.name} ({len(up)} of {len(p.gpu_nodes)} GPU nodes up: {gpus} GPUs, {cpus} CPUs)"

    out = [
        Check("SLURM", "ok", f"{len(parts)} partitions: {', '.join(p.name for p in parts)}"),
        Check(
            "GPU partitions",
            "ok" if usable else "warn",
            ", ".join(describe(p) for p in gparts) or "none found (gres gpu)",
        ),
    ]
    if partition:
        out.extend(check_compute_node(partition, cfg, gpu=any(p.name == partition for p in gparts)))
    return out


def check_compute_node(partition: str, cfg: Config, gpu: bool) -> list[Check]:
    """A short job on the partition: is the runtime there, are GPU devices visible?"""
    import shlex
    import sys

    exe = cfg.runtime_bin or ("bwrap" if cfg.runtime == "bwrap" else cfg.runtime)
    script = (
        f"command -v {shlex.quote(exe)} >/dev/null && echo RUNTIME=ok || echo RUNTIME=missing; "
        "ls /dev/nvidia0 >/dev/null 2>&1 && echo GPUDEV=yes || echo GPUDEV=no"
    )
    if gpu:  # what --nv would bind there, read by nixsnake itself (installed on the nodes too)
        script += (
            f"; {shlex.quote(sys.executable)} -m snakemake_deploy_nixsnake.gpucheck"
            f" --runtime {shlex.quote(_gpu_runtime(cfg))}"
            " || echo GPUCHECK=failed"
        )
    argv = ["sbatch", "--wait", "--quiet", "-p", partition, "-t", "2", "--mem=100", "-o", "/dev/stdout"]
    if gpu:
        argv.append("--gres=gpu:1")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nixsnake-doctor-") as d:
        out_file = Path(d) / "out"
        argv[argv.index("/dev/stdout")] = str(out_file)
        try:
            r = proc.run([*argv, "--wrap", script], check=False, timeout=300, cwd=d)
        except NixsnakeError as exc:
            return [Check(f"job on {partition}", "fail", str(exc))]
        text = out_file.read_text() if out_file.exists() else ""
    if r.returncode != 0:
        return [Check(f"job on {partition}", "fail", f"sbatch failed: {proc.tail(r.stderr, 2)}")]
    rows = [
        Check(
            f"{exe} on {partition}",
            "ok" if "RUNTIME=ok" in text else "fail",
            "found in a job" if "RUNTIME=ok" in text else f"'{exe}' not on PATH inside jobs",
        )
    ]
    if gpu:
        from .gpucheck import parse_report

        rows.append(
            Check(
                f"GPU devices on {partition}",
                "ok" if "GPUDEV=yes" in text else "warn",
                "/dev/nvidia0 visible: --nv will bind the driver"
                if "GPUDEV=yes" in text
                else "no /dev/nvidia0 in a --gres=gpu:1 job",
            )
        )
        report = parse_report(text)
        if report is None:
            rows.append(
                Check(
                    f"GPU libs vs images on {partition}",
                    "warn",
                    f"nixsnake's GPU check did not run in the job ({sys.executable} -m "
                    "snakemake_deploy_nixsnake.gpucheck): install nixsnake on the compute nodes too",
                )
            )
        else:
            rows += gpu_rows(report, cfg, f" on {partition}")
    return rows


def check_env_nix(cfg: Config, paths: list[Path]) -> list[Check]:
    """Per env file: can the nix here evaluate its nixpkgs? (the lock's rev when the lock is
    current, else the date resolved now, without writing a lock)"""
    from .lock import read_lock, stale_reason
    from .nixpkgs import (
        NEWER_NIX_HINT,
        compare_versions,
        local_nix_version,
        missing_rev,
        parse_source,
        required_nix,
        resolve_nixpkgs,
    )
    from .spec import load_spec, lock_path_for

    rows = []
    try:
        source = parse_source(cfg.nixpkgs_source)
    except NixsnakeError as exc:
        return [Check("nixpkgs source", "fail", str(exc))]
    local = local_nix_version() if paths else None  # (a nix evaluation: only when there is an env to compare)
    for path in paths:
        name = f"nix for {path}"
        try:
            env = load_spec(path)
            lock = read_lock(path) if lock_path_for(path).exists() else None
            if lock is not None and stale_reason(env, path, lock) is None:
                pin, how = lock.nixpkgs, "locked"
            else:
                pin, how = resolve_nixpkgs(env, source, str(path)), "no current lock: resolved now"
            gone = missing_rev(pin.rev, source)
            if gone is not None:
                rows.append(Check(name, "fail", f"{gone}: re-run `nixsnake lock {path}`"))
                continue
            need = required_nix(source, pin.rev)
        except NixsnakeError as exc:
            rows.append(Check(name, "fail", str(exc)))
            continue
        where = f"nixpkgs {pin.rev[:12]} ({pin.commit_time[:10]}, {how})"
        if need is None:
            rows.append(
                Check(name, "ok", f"{where} states no minimum Nix version; the nix here is {local or 'missing'}")
            )
        elif local is None:
            rows.append(Check(name, "fail", f"{where} needs Nix >= {need.version}; there is no nix here"))
        elif compare_versions(need.version, local) > 0:
            rows.append(
                Check(
                    name,
                    "fail",
                    f"{where} needs Nix >= {need.version} (its {need.file}); the nix here is {local}: {NEWER_NIX_HINT}",
                )
            )
        else:
            rows.append(Check(name, "ok", f"{where} needs Nix >= {need.version}; the nix here is {local}"))
    return rows


def run_checks(cfg: Config, partition: str | None = None, envs: list[Path] | None = None) -> list[Check]:
    return [
        *check_nix(),
        *check_env_nix(cfg, envs or []),
        *check_image_tools(),
        *check_store(cfg),
        *check_runtime(cfg),
        *check_gpu_here(cfg),
        *check_slurm(partition, cfg),
    ]
