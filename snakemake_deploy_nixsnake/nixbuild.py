"""Resolved env -> nix store path: the nix stage of the pipeline (deploy.py runs it).

nix sees only the shipped ``nix/env.nix`` plus one JSON document, :class:`NixInput`, the
only producer of that JSON (env.nix's header names this class). We use a pinned
non-flake expression rather than a flake: it works on nix 2.x without experimental
features (many head nodes run old nix), passes the nixpkgs rev as data instead of
generating ``flake.nix``, and does not copy a workspace into the store or churn a
``flake.lock``. What nix built is read back once, from ``nix-support/nixsnake-env.json``,
into :class:`EnvInfo`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import proc
from .config import Config
from .errors import Exit, NixsnakeError, SpecError
from .lock import Lock

if TYPE_CHECKING:
    from .conda import CondaBuilt, CondaLock
from .nixpkgs import NixpkgsPin, NixpkgsSource
from .spec import EnvFile


def nix_dir() -> Path:
    return Path(str(resources.files("snakemake_deploy_nixsnake") / "nix"))


def wheel_store_name(url: str) -> str:
    """A valid store-path name for a wheel (the file name, restricted to nix's charset)."""
    base = url.rsplit("/", 1)[-1]
    return "".join(c if (c.isalnum() or c in "+-._?=") else "_" for c in base)[-200:].lstrip(".") or "wheel"


# --- what nix is given --------------------------------------------------------------


@dataclass(frozen=True)
class NixpkgsFetch:
    type: Literal["git", "tarball"]
    url: str
    rev: str
    ref: str  # the branch (git); "" for tarballs
    sha256: str  # the NAR hash of the unpacked tarball (tarballs); "" for git


@dataclass(frozen=True)
class WheelFetch:
    url: str
    sha256: str
    name: str  # store-path name


@dataclass(frozen=True)
class PythonInput:
    attr: str  # the interpreter's attribute, e.g. python311
    version: str
    wheels: tuple[WheelFetch, ...]


@dataclass(frozen=True)
class CondaInstaller:
    url: str
    sha256: str
    store_name: str


@dataclass(frozen=True)
class CondaArchive:
    name: str
    version: str
    build: str
    channel: str
    url: str
    sha256: str
    file_name: str
    store_name: str
    local: str | None  # the file of a file:// URL (imported at evaluation time), else None


@dataclass(frozen=True)
class CondaInput:
    """What ``nix/conda.nix`` installs: every archive of the lock's [conda] section."""

    subdir: str
    installer: CondaInstaller
    packages: tuple[CondaArchive, ...]


@dataclass(frozen=True)
class NixInput:
    """The JSON document ``nix/env.nix`` reads (its header lists these fields).

    Pure: the same env file, lock and source give the same document. Every user string
    reaches nix only inside it, as data."""

    nixpkgs: NixpkgsFetch
    allow_unfree: bool
    permitted_insecure: tuple[str, ...]  # "name-version" (nixpkgs' permittedInsecurePackages)
    cuda_support: bool
    packages: tuple[str, ...]  # attribute paths
    libraries: tuple[str, ...]  # attribute paths whose lib/ goes on LD_LIBRARY_PATH
    python: PythonInput | None
    r_packages: tuple[str, ...] | None  # rPackages attribute names
    conda: CondaInput | None

    @classmethod
    def of(cls, env: EnvFile, lock: Lock, source: NixpkgsSource) -> NixInput:
        python = None
        if env.python is not None:
            if lock.python_version is None:  # (a lock always records it with [python])
                raise NixsnakeError("the lock has no [python] version", Exit.DATAERR, "re-run `nixsnake lock`")
            major, minor = lock.python_version.split(".")
            python = PythonInput(
                f"python{major}{minor}",
                lock.python_version,
                tuple(WheelFetch(w.url, w.sha256, wheel_store_name(w.url)) for w in lock.wheels),
            )
        return cls(
            nixpkgs=nixpkgs_fetch(lock.nixpkgs, source),
            # CUDA is unfree in nixpkgs: asking for it is consent to use it. cuda = true is
            # the driver (--nv) only; nixpkgs' cudaSupport (a mass rebuild) is its own opt-in.
            allow_unfree=env.nixpkgs.allow_unfree or env.gpu.cuda is True or env.gpu.cuda_support,
            cuda_support=env.gpu.cuda_support,
            permitted_insecure=tuple(env.nixpkgs.permitted_insecure),
            packages=tuple(env.nixpkgs.packages),
            libraries=tuple(env.nixpkgs.libraries),
            python=python,
            r_packages=tuple(n.replace(".", "_") for n in env.r.packages) if env.r else None,
            conda=_conda_input(lock.conda) if lock.conda is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)


def nixpkgs_fetch(pin: NixpkgsPin, source: NixpkgsSource) -> NixpkgsFetch:
    """How nix fetches the locked nixpkgs from ``source`` (``nix/nixpkgs-src.nix``)."""
    if source.kind == "github":
        if pin.sha256 is None:  # (deploy refuses such a lock first, with the file's name)
            raise NixsnakeError("a lock for a GitHub source has no nixpkgs.sha256", Exit.DATAERR)
        return NixpkgsFetch("tarball", source.fetch_url.format(rev=pin.rev), pin.rev, "", pin.sha256)
    return NixpkgsFetch("git", source.fetch_url, pin.rev, pin.branch, "")


def nixpkgs_python3(source: NixpkgsSource, pin: NixpkgsPin, cfg: Config, spec_file: str) -> str:
    """The version of nixpkgs' ``python3`` at the pin (``nix/nixpkgs-info.nix``): the
    env's Python when the env file names none. Needs nix (it evaluates nixpkgs)."""
    import tempfile

    if proc.which("nix-instantiate") is None:
        raise NixsnakeError(
            f"{spec_file}: finding the default Python of nixpkgs {pin.rev[:12]} needs nix",
            Exit.UNAVAILABLE,
            f'{proc.INSTALL_HINTS["nix"]}, or write the version in the env file ([python] version = "3.12")',
        )
    with tempfile.TemporaryDirectory(prefix="nixsnake-info-") as tmp:
        input_file = Path(tmp) / "nixpkgs.json"
        input_file.write_text(json.dumps(asdict(nixpkgs_fetch(pin, source))))
        argv = ["nix-instantiate", "--eval", "--strict", "--json", str(nix_dir() / "nixpkgs-info.nix"),
                "--argstr", "inputFile", str(input_file), *nix_option_args(cfg)]  # fmt: skip
        try:
            out = proc.run(argv, env=nix_env(source), what="nix-instantiate (nixpkgs' python3)", timeout=1800)
        except NixsnakeError as exc:
            raise explain_failure(exc, rev=pin.rev, env_file=spec_file, lock_file=spec_file) from None
    version = json.loads(out.stdout).get("python3")
    if not isinstance(version, str) or not re.fullmatch(r"3\.[0-9]{1,2}", version):
        raise NixsnakeError(
            f"{spec_file}: nixpkgs {pin.rev[:12]} has no usable python3 ({version!r})",
            Exit.DATAERR,
            'write the version in the env file ([python] version = "3.12")',
        )
    return version


def _conda_input(c: CondaLock) -> CondaInput:
    from . import conda as conda_layer

    inst_file = c.installer.url.rsplit("/", 1)[-1]
    return CondaInput(
        c.subdir,
        CondaInstaller(c.installer.url, c.installer.sha256, conda_layer.store_name(inst_file)),
        tuple(
            CondaArchive(
                p.name,
                p.version,
                p.build,
                p.channel,
                p.url,
                p.sha256,
                p.file_name,
                conda_layer.store_name(p.file_name),
                conda_layer.local_path(p.url),
            )
            for p in c.packages
        ),
    )


def schema_fields(cls: type = NixInput, prefix: str = "") -> list[str]:
    """Dotted names of every field of the document (for env.nix's header and its test)."""
    out: list[str] = []
    for f in fields(cls):
        out.append(prefix + f.name)
        for t in (NixpkgsFetch, WheelFetch, PythonInput, CondaInput, CondaInstaller, CondaArchive):
            if re.search(rf"\b{t.__name__}\b", str(f.type)):
                out += schema_fields(t, prefix + f.name + ".")
    return out


# --- what nix built -------------------------------------------------------------------


@dataclass(frozen=True)
class EnvInfo:
    """``nix-support/nixsnake-env.json`` of the environment root (written by mkenv.sh):
    what the image's environment script must set."""

    path: tuple[str, ...]  # PATH entries
    ld_library_path: tuple[str, ...]
    ssl_cert_file: str
    bash: str  # the shell of `nixsnake shell` and the runscript
    python: str  # the interpreter's bin dir, "" without [python]
    #: PERL5LIB entries: lib/perl5/site_perl of the packages and their propagated inputs
    perl5lib: tuple[str, ...]
    conda: CondaBuilt | None  # the [conda] layer (mkenv-conda.sh)
    loader: str | None  # the glibc loader offered at /lib64 (None: no path known for this system)
    system: str  # nix's system of the build (the image's architecture)
    warnings: tuple[str, ...]  # what the build could not do, but went on (not conda's)

    @classmethod
    def parse(cls, text: str, where: Path) -> EnvInfo:
        from .conda import CondaBuilt

        try:
            data = json.loads(text)
            conda = data.get("conda")
            return cls(
                path=tuple(_strings(data["path"])),
                ld_library_path=tuple(p for p in str(data["ld_library_path"]).split(":") if p),
                ssl_cert_file=str(data["ssl_cert_file"]),
                bash=str(data["bash"]),
                python=str(data["python"]),
                perl5lib=tuple(p for p in str(data["perl5lib"]).split(":") if p),
                conda=CondaBuilt.parse(conda) if conda is not None else None,
                loader=str(data["loader"]) or None,
                system=str(data["system"]),
                warnings=tuple(_strings(data["warnings"])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NixsnakeError(f"nix built {where} with unusable environment data ({exc!r})", Exit.SOFTWARE) from None


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return value


@dataclass(frozen=True)
class NixResult:
    out: Path  # the environment root in /nix/store
    closure: tuple[str, ...]  # sorted store paths
    info: EnvInfo


def nix_env(source: NixpkgsSource) -> dict[str, str]:
    env = dict(os.environ)
    # Builds must not depend on the user's channels or NIX_PATH beyond <nix/...>.
    env.pop("NIX_PATH", None)
    if source.demo:
        from . import demo  # (the demo set's host manifest: only for demo builds)

        env.update(demo.nix_env())
    return env


def nix_option_args(cfg: Config) -> list[str]:
    return [a for name, value in cfg.nix_options for a in ("--option", name, value)]


def nix_build(
    data: NixInput, source: NixpkgsSource, cfg: Config, workdir: Path, on_line: Callable[[str], None] | None = None
) -> NixResult:
    """Run nix-build on env.nix with ``data``; keep a GC root in ``workdir`` until packed."""
    proc.require("nix-build")
    input_file = workdir / "nixsnake-input.json"
    input_file.write_text(data.to_json())
    link = workdir / "result"
    argv = [
        "nix-build", str(nix_dir() / "env.nix"), "--argstr", "inputFile", str(input_file),
        "--out-link", str(link), *nix_option_args(cfg),
    ]  # fmt: skip
    try:
        stdout = proc.stream(
            argv, on_line=on_line, env=nix_env(source), what="nix-build of the environment", code=Exit.SOFTWARE
        )
    except NixsnakeError as exc:
        if source.demo:  # an attribute whose Debian packages this host lacks: exit 69 + apt-get hint
            from . import demo

            if (missing := demo.unavailable_error(exc.message)) is not None:
                raise missing from None
        raise
    out = Path(stdout.strip().splitlines()[-1]) if stdout.strip() else link.resolve()
    closure = proc.run(
        ["nix-store", "--query", "--requisites", str(out)], what="nix-store --query --requisites"
    ).stdout.split()
    info_path = out / "nix-support" / "nixsnake-env.json"
    try:
        text = info_path.read_text()
    except OSError as exc:
        raise NixsnakeError(
            f"nix built {out} without a readable {info_path.name}: {exc.strerror}", Exit.SOFTWARE
        ) from None
    return NixResult(out, tuple(sorted(closure)), EnvInfo.parse(text, out))


_NIXPKGS_NEEDS_NIX = re.compile(r"This version of Nixpkgs.*?requires Nix >= ([0-9][^\s,:'\"]*)")
_NIXPKGS_NEEDS_FEATURES = re.compile(
    r"This version of Nixpkgs.*?requires an implementation of Nix with the following features"
    r"(?:.|\n)*?reports at least ([0-9][^\s`'\"]*)"
)


#: env.nix's envError (one line: "nixsnake-env-file-error KEY: PROBLEM; fix: FIX")
_ENV_FILE_ERROR = re.compile(r"nixsnake-env-file-error (\S+): (.+?); fix: ([^\n]+)")
#: nixpkgs' check-meta refusals, in its older ("Package ‘x’ in ... has an unfree license
#: (‘unfree’), refusing to evaluate.") and newer ("Refusing to evaluate package 'x' in ...
#: because it has an unfree license") wording
_REFUSED = re.compile(
    r"Package ‘(?P<a>[^’]+)’ in .*? (?P<why_a>has an unfree license|is marked as insecure|is marked as broken)"
    r"|Refusing to evaluate package '(?P<b>[^']+)' in .*? because it (?P<why_b>has an unfree license|is marked as insecure|is marked as broken)"
)
_KNOWN_ISSUE = re.compile(r"Known issues:\s*\n\s*-\s*([^\n]+)")
_TARBALL_MISMATCH = re.compile(r"hash mismatch in file downloaded from '([^']+)':\s*specified:\s*(\S+)\s*got:\s*(\S+)")


def explain_failure(exc: NixsnakeError, *, rev: str, env_file: str, lock_file: str) -> NixsnakeError:
    """A failed nix build whose cause the user can act on, as nixsnake's one line;
    any other failure is returned unchanged."""
    text = exc.message
    m = _ENV_FILE_ERROR.search(text)
    if m is not None:  # env.nix: something the env file names does not fit this nixpkgs
        return SpecError(env_file, m[1], m[2], m[3])
    m = _REFUSED.search(text)
    if m is not None:  # nixpkgs refuses a package for its meta: say which setting accepts it
        name, why = m["a"] or m["b"], m["why_a"] or m["why_b"]
        if why == "has an unfree license":
            return SpecError(
                env_file,
                "nixpkgs.allow_unfree",
                f"nixpkgs (rev {rev}) refuses {name}: it has an unfree license",
                "set [nixpkgs] allow_unfree = true if its license allows your use ([gpu] cuda = true implies it)",
            )
        if why == "is marked as insecure":
            issue = _KNOWN_ISSUE.search(text)
            return SpecError(
                env_file,
                "nixpkgs.permitted_insecure",
                f"nixpkgs (rev {rev}) refuses {name}: it is marked as insecure"
                + (f" ({issue[1].strip()})" if issue else ""),
                f'if you accept its known vulnerabilities, add "{name}" to [nixpkgs] permitted_insecure',
            )
        return SpecError(
            env_file,
            "nixpkgs.packages",
            f"nixpkgs (rev {rev}) marks {name} as broken",
            "pick another date (or a [nixpkgs] rev) where it builds, or another package",
        )
    m = _TARBALL_MISMATCH.search(text)
    if m is not None and rev in m[1]:  # fetchTarball of nixpkgs: the content is not the locked one
        return SpecError(
            lock_file,
            "nixpkgs.sha256",
            f"the nixpkgs tarball {m[1]} does not match the lock (the lock says {m[2]}, the download is {m[3]}); "
            "refusing to build",
            "the source served other content for this commit: check it (or a proxy in between); "
            "if the change is expected, re-run `nixsnake lock` and review it",
        )
    m = _NIXPKGS_NEEDS_NIX.search(text) or _NIXPKGS_NEEDS_FEATURES.search(text)
    if m is not None:  # nixpkgs' own abort: the nix here is too old for this rev
        from .nixpkgs import NEWER_NIX_HINT, local_nix_version

        return NixsnakeError(
            f"{env_file}: nixpkgs {rev[:12]} needs Nix >= {m[1]}; the nix here is {local_nix_version() or '?'}",
            Exit.UNAVAILABLE,
            NEWER_NIX_HINT,
        )
    return exc


def nix_available() -> bool:
    return proc.which("nix-build") is not None and proc.which("nix-store") is not None
