"""The Snakemake software-deployment plugin: ``software: nixsnake(spec="envs/x.toml")``.

Works with interface 0.18.6 (what snakemake's plugin branch needs) and 0.21.x: the
``envvars`` attribute and the ``deployment_prefix`` property are read defensively.

Where things happen:
- DAG time (head node, dry runs, and again in every spawned job): read two small TOML
  files; never call nix or apptainer.
- ``deploy()`` (head node, before jobs): build the image into the shared store, then
  point ``deployment_path`` at it (snakemake only checks that path exists).
- ``decorate_shellcmd`` (every job): one shell string; no Python starts per job.
"""

# No "from __future__ import annotations": snakemake reads Settings field types at run time.
import asyncio
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_common.software import SoftwareReport
from snakemake_interface_software_deployment_plugins import (
    DeployableEnvBase,
    EnvSpecBase,
    EnvSpecSourceFile,
    PinnableEnvBase,
)
from snakemake_interface_software_deployment_plugins.settings import (
    CommonSettings,
    SoftwareDeploymentSettingsBase,
)

from . import conda as conda_layer
from .config import COMPRESSIONS, Config, load_config, parse_nix_options, setting_help
from .deploy import ResolvedEnv, image_id, resolved_env
from .errors import NixsnakeError
from .lock import Lock, parse_lock
from .runtime import GPU_MODES, RUNTIMES
from .spec import EnvFile, lock_path_for, parse_spec

common_settings = CommonSettings(provides="nixsnake")


def _help(name: str) -> dict[str, Any]:
    """A ``--sdm-nixsnake-*`` setting, described where the setting is (config.Config).

    env_var stays False: snakemake's plugin branch puts only non-env-var settings on a
    spawned job's command line, and the SLURM executor forwards no environment, so an
    env-var setting would never reach cluster jobs. None of these is a secret."""
    return {
        "help": f"{setting_help(name)} Unset: nixsnake.toml, NIXSNAKE_{name.upper()}, or the default.",
        "env_var": False,
    }


@dataclass
class Settings(SoftwareDeploymentSettingsBase):
    """``--sdm-nixsnake-*``; unset values fall back to nixsnake.toml / NIXSNAKE_* / defaults."""

    store: Optional[Path] = field(default=None, metadata=_help("store"))
    runtime: Optional[str] = field(default=None, metadata={**_help("runtime"), "choices": RUNTIMES})
    gpu: Optional[str] = field(default=None, metadata={**_help("gpu"), "choices": GPU_MODES})
    runtime_bin: Optional[str] = field(default=None, metadata=_help("runtime_bin"))
    binds: Optional[str] = field(default=None, metadata=_help("binds"))
    nixpkgs_source: Optional[str] = field(default=None, metadata=_help("nixpkgs_source"))
    compression: Optional[str] = field(default=None, metadata={**_help("compression"), "choices": tuple(COMPRESSIONS)})
    nix_options: Optional[str] = field(default=None, metadata=_help("nix_options"))


def _config(settings: Any) -> Config:
    cfg = load_config()
    if settings is None:
        return cfg
    overrides: dict[str, Any] = {}
    for name in ("store", "runtime", "runtime_bin", "gpu", "nixpkgs_source", "compression"):
        value = getattr(settings, name, None)
        if value is not None:
            overrides[name] = Path(value) if name == "store" else str(value)
    binds = getattr(settings, "binds", None)
    if binds:
        overrides["binds"] = tuple(b for b in str(binds).split(",") if b)
    opts = getattr(settings, "nix_options", None)
    if opts is not None:
        overrides["nix_options"] = parse_nix_options(str(opts))
    return cfg.with_overrides(**overrides)


@dataclass(eq=False)
class EnvSpec(EnvSpecBase):
    spec: Optional[EnvSpecSourceFile] = None
    lock: Optional[EnvSpecSourceFile] = None

    def __post_init__(self) -> None:
        if isinstance(self.spec, (str, Path)):
            self.spec = EnvSpecSourceFile(self.spec)
        if self.spec is not None and self.lock is None:
            self.lock = self.spec.replace_suffix([".toml"], ".lock.toml")

    @classmethod
    def identity_attributes(cls) -> Iterable[str]:
        yield "spec"

    @classmethod
    def source_path_attributes(cls) -> Iterable[str]:
        yield "spec"
        yield "lock"

    def __str__(self) -> str:
        return f"nixsnake({self.spec.path_or_uri if self.spec else None})"


def _source_bytes(f: EnvSpecSourceFile, what: str, fix: str) -> bytes:
    path = f.cached if f.cached is not None else Path(str(f.path_or_uri))
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise WorkflowError(f"nixsnake: {what} {f.path_or_uri} not found; fix: {fix}") from None
    except OSError as exc:
        raise WorkflowError(f"nixsnake: cannot read {what} {f.path_or_uri}: {exc.strerror}") from None


class Env(DeployableEnvBase, PinnableEnvBase):
    spec: EnvSpec

    def __post_init__(self) -> None:
        if self.spec.spec is None:
            raise WorkflowError('nixsnake: give the env file: software: nixsnake(spec="envs/x.toml")')
        self.config = _config(self.settings)
        self.spec_name = str(self.spec.spec.path_or_uri)
        self._parsed: EnvFile | None = None
        self._lock: tuple[Lock | None, str | None] | None = None  # (lock, why unusable)
        self._resolved: ResolvedEnv | None = None
        self._image: Path | None = None
        self._executables: frozenset[str] | None = None  # from the image, once it exists
        self._requests: dict[tuple, tuple[Any, str]] = {}  # decorate_shellcmd's, see there

    # --- reading the env file and its lock (cheap, no tools) ---------------------------

    def env_file(self) -> EnvFile:
        if self._parsed is None:
            data = _source_bytes(self.spec.spec, "env file", "check the path given to nixsnake(spec=...)")
            try:
                self._parsed = parse_spec(data, self.spec_name)
            except NixsnakeError as exc:
                raise WorkflowError(f"nixsnake: {exc}") from None
        return self._parsed

    def lock_bytes(self) -> bytes | None:
        """The lock beside a local env file (where `pin`/`nixsnake lock` write it), else
        snakemake's cached copy (env files given as URLs)."""
        candidates = [lock_path_for(Path(self.spec_name))]
        if self.spec.lock is not None and self.spec.lock.cached is not None:
            candidates.append(Path(self.spec.lock.cached))
        for path in candidates:
            if path.is_file():
                return path.read_bytes()
        return None

    def lock(self) -> tuple[Lock | None, str | None]:
        """The lock, parsed once per Env: (lock, None), or (None, why there is none)."""
        if self._lock is None:
            lock_name = str(lock_path_for(Path(self.spec_name)))
            raw = self.lock_bytes()
            if raw is None:
                self._lock = (None, f"{lock_name} is missing for env file {self.spec_name}")
            else:
                try:
                    self._lock = (parse_lock(raw.decode("utf-8", "replace"), lock_name), None)
                except NixsnakeError as exc:
                    self._lock = (None, str(exc))
        return self._lock

    def resolved(self) -> ResolvedEnv:
        """The pipeline's first stage (deploy.resolved_env), from snakemake's copies."""
        if self._resolved is None:
            env = self.env_file()  # (a missing env file is reported before its lock)
            lock, problem = self.lock()
            if lock is None:
                raise WorkflowError(
                    f"nixsnake: {problem}; fix: run `nixsnake lock {self.spec_name}` "
                    "(or `snakemake --pin-software`) and commit the lock"
                )
            try:
                self._resolved = resolved_env(Path(self.spec_name), env, lock, self.config)
            except NixsnakeError as exc:
                raise WorkflowError(f"nixsnake: {exc}") from None
        return self._resolved

    def image_path(self) -> Path:
        if self._image is None:
            from .store import Store

            self._image = Store(self.config.store).image_path(self.resolved().image_id)
        return self._image

    # --- EnvBase ------------------------------------------------------------------------

    def record_hash(self, hash_object) -> None:
        spec = self.env_file()
        hash_object.update(b"nixsnake-env\0" + spec.spec_hash().encode())
        lock, _ = self.lock()
        if lock is not None:
            try:  # (this machine's system is part of the id: an unsupported one is refused)
                iid = image_id(spec, lock, self.config.compression)
            except NixsnakeError as exc:
                raise WorkflowError(f"nixsnake: {exc}") from None
            hash_object.update(b"\0lock\0" + iid.encode())
        elif self.lock_bytes() is not None:
            hash_object.update(b"\0invalid-lock")

    def decorate_shellcmd(self, cmd: str) -> str:
        """Called for every job. What the request depends on that can change between jobs
        (the working directory, which mount points exist, the pass-through variables) is
        looked at each time; the request and the image check built from it are made once
        per combination (the rest -- env file, lock, settings -- is fixed per Env)."""
        from .runtime import shell_command

        # like snakemake's own apptainer support: bind what exists of these
        mounts = [Path(self.tempdir), *map(Path, self.mountpoints)]
        envvars = frozenset(getattr(self, "envvars", set()) or ())  # (interface 0.18.6 has no envvars)
        key = (Path.cwd(), tuple(m for m in mounts if m.exists()), envvars)
        made = self._requests.get(key)
        if made is None:
            made = self._requests[key] = self._run_request(*key)
        req, check = made
        return check + shell_command(req, cmd)

    def _run_request(self, workdir: Path, mounts: tuple[Path, ...], envvars: frozenset[str]) -> tuple[Any, str]:
        from .deploy import run_request

        req = run_request(
            self.resolved(),
            self.image_path(),
            self.config,
            workdir=workdir,
            mounts=mounts,
            envvars=envvars,
            shell=Path(self.shell_executable.executable).name or "bash",
        )
        image = shlex.quote(str(req.image))
        missing = shlex.quote(
            f"nixsnake: image {req.image} for {self.spec_name} is missing on this node; images are built on "
            f"the head node: run snakemake there (it deploys before submitting) or `nixsnake build {self.spec_name}`"
        )
        # fail fast (exit 69) instead of an obscure runtime error when deploy did not happen
        return req, f"if [ ! -f {image} ]; then echo {missing} >&2; exit 69; fi; "

    def contains_executable(self, executable: str) -> bool:
        """Snakemake asks this per job (``script:``, notebooks): the image's list is read
        once per Env (images are immutable); before the image exists, the env file decides."""
        if self._executables is None:
            path = self.image_path()
            if path.exists():
                from .image.metadata import ImageMetadata
                from .image.sif import read_sif

                try:
                    self._executables = frozenset(ImageMetadata.from_dict(read_sif(path).metadata).executables)
                except (NixsnakeError, ValueError):
                    self._executables = frozenset()
        if self._executables is not None:
            return executable in self._executables
        spec = self.env_file()
        if executable in ("python", "python3"):
            return spec.python is not None
        return (
            executable in ("bash", "sh", "env")
            or executable in {p.rsplit(".", 1)[-1] for p in spec.nixpkgs.packages}
            or executable in conda_layer.requested_names(spec)
        )

    def report_software(self) -> Iterable[SoftwareReport]:
        spec = self.env_file()
        reports = []
        lock, _ = self.lock()
        rev = lock.nixpkgs.rev[:12] if lock else "unlocked"
        for attr in spec.nixpkgs.packages:
            reports.append(SoftwareReport(name=attr, version=f"nixpkgs {spec.nixpkgs.branch}@{rev}"))
        if lock:
            for name, version in lock.software():
                reports.append(SoftwareReport(name=name, version=version))
        elif spec.python:
            for req in spec.python.packages:
                reports.append(SoftwareReport(name=req, version=None))
        if spec.r:
            for name in spec.r.packages:
                reports.append(SoftwareReport(name=f"R:{name}", version=f"nixpkgs@{rev}"))
        if lock:  # [conda]: every locked package; the dependencies as secondary
            for name, version, requested in conda_layer.software(lock.conda, spec):
                reports.append(SoftwareReport(name=f"conda:{name}", version=version, is_secondary=not requested))
        elif spec.conda:
            for name in conda_layer.requested_names(spec):
                reports.append(SoftwareReport(name=f"conda:{name}", version=None))
        return reports

    # --- PinnableEnvBase ------------------------------------------------------------------

    @classmethod
    def pinfile_extension(cls) -> str:
        return ".lock.toml"

    async def pin(self) -> None:
        """Write the lock beside the env file (what users commit) and into the pinfile."""
        from .lock import lock_file

        spec_path = Path(self.spec_name)
        if not spec_path.exists():
            raise WorkflowError(f"nixsnake: can only lock a local env file; {self.spec_name} is not one")
        try:
            await asyncio.to_thread(lock_file, spec_path, self.config)
        except NixsnakeError as exc:
            raise WorkflowError(f"nixsnake: {exc}") from None
        self._image = None
        self._executables = None
        self._requests = {}
        self._lock = None
        self._resolved = None
        self.clear_hashes()
        self.pinfile.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lock_path_for(spec_path), self.pinfile)

    # --- DeployableEnvBase ----------------------------------------------------------------

    def is_deployment_path_portable(self) -> bool:
        return True  # images are position independent

    async def deploy(self) -> None:
        from .deploy import ensure_image

        r = self.resolved()
        try:
            image = await asyncio.to_thread(ensure_image, r, self.config, reporter=_LogReporter())
        except NixsnakeError as exc:
            raise WorkflowError(f"nixsnake: {exc}") from None
        self._image = image
        self._requests = {}
        target = self.deployment_path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(image)
        os.replace(tmp, target)

    def remove(self) -> None:
        """Forget this workflow's pointer; the shared image is removed by `nixsnake gc`."""
        p = self.deployment_path
        if p.is_symlink() or p.exists():
            p.unlink()


class _LogReporter:
    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("snakemake.logging")

    def stage(self, message: str) -> None:
        self.logger.info(f"nixsnake: {message}")

    def log(self, line: str) -> None:
        pass
