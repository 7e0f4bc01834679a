"""The env file: one small TOML per rule, validated strictly.

Every string in an env file ends up somewhere dangerous: nix attribute lookups, the
Python resolver, environment scripts sourced by a shell inside the image, apptainer's
``--bind``. So each kind of string has one narrow grammar here, and everything the
user writes is carried to nix and the shell only as data (JSON, ``shlex.quote``).
Errors name the file, the key and the fix in one line, with exit code 65.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from . import envvars
from .binds import BindError, parse_user_bind
from .errors import MissingFileError, SpecError, ToolMissingError, UnreadableFileError

#: Env files are hand-written and tiny; anything bigger is a mistake (or an attack).
MAX_SPEC_BYTES = 256 * 1024


def _bad(problem: str, fix: str) -> PydanticCustomError:
    return PydanticCustomError("nixsnake", "{problem}", {"problem": problem, "fix": fix})


# --- grammars -------------------------------------------------------------------------

_ATTR_SEGMENT = r"[A-Za-z_][A-Za-z0-9_+-]*"
ATTR_PATH_RE = re.compile(rf"{_ATTR_SEGMENT}(\.{_ATTR_SEGMENT})*")
PY_VERSION_RE = re.compile(r"3\.[0-9]{1,2}")
REV_RE = re.compile(r"[0-9a-f]{40}")
BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
#: A channel name (``conda-forge``, ``bioconda/label/main``) ...
CONDA_CHANNEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")
#: ... or a channel URL: https/http for mirrors, file:// for a channel on a file system.
CONDA_CHANNEL_URL_RE = re.compile(
    r"(https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9_.~+%@-]+)*|file://(/[A-Za-z0-9_.~+%@-]+)+)/?"
)
CONDA_NAME_RE = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
R_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
#: "name-version" as nixpkgs' permittedInsecurePackages lists them (openssl-1.1.1w)
INSECURE_NAME_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]*-[0-9][A-Za-z0-9_+.-]*")
#: Characters a shell (or nix) would treat as code, or a requirements file as a comment;
#: never allowed in requirement strings. (Quotes stay allowed: PEP 508 markers use them.)
SHELL_META = set("$`|&\\\n\r\t{}#?")


def check_attr_path(value: str) -> str:
    if not ATTR_PATH_RE.fullmatch(value):
        raise _bad(
            f"{value!r} is not a nixpkgs attribute path",
            "use dotted attribute names made of letters, digits, '_', '-' or '+', e.g. python312Packages.pysam",
        )
    return value


def _requirement(value: str):  # -> packaging.requirements.Requirement
    # (imported here: ~20 ms that `nixsnake check` of an env without [python] should not pay)
    from packaging.requirements import Requirement

    return Requirement(value)


def check_branch(v: str) -> str:
    if not BRANCH_RE.fullmatch(v) or ".." in v or v.endswith((".lock", "/")):
        raise _bad(f"{v!r} is not a branch name", "use e.g. nixos-unstable or nixos-24.05")
    return v


def check_py_version(v: str) -> str:
    if not PY_VERSION_RE.fullmatch(v):
        raise _bad(f"{v!r} is not a Python version", 'write the minor version as a string, e.g. version = "3.12"')
    return v


def check_requirement(value: str) -> str:
    bad = sorted(SHELL_META.intersection(value))
    if bad:
        raise _bad(
            f"requirement {value!r} contains {''.join(bad)!r}",
            "write a plain PEP 508 requirement such as 'pandas>=2,<3'",
        )
    try:
        req = _requirement(value)
    except ValueError as exc:  # (packaging's InvalidRequirement)
        why = str(exc).splitlines()[0] if str(exc) else "unparsable"
        raise _bad(f"{value!r} is not a PEP 508 requirement ({why})", "write e.g. 'numpy' or 'pandas>=2,<3'") from None
    if req.url:
        raise _bad(
            f"requirement {value!r} points to a URL",
            "name a package from the index (URL requirements cannot be date-locked)",
        )
    return value


def check_r_name(value: str) -> str:
    if not R_NAME_RE.fullmatch(value):
        raise _bad(f"{value!r} is not an R package name", "use the CRAN name, e.g. ggplot2 or data.table")
    return value


def conda_spec_name(value: str) -> str:
    """The package name of a conda match spec, parsed with rattler's ``MatchSpec``
    (normalized: lower case). Raises a pydantic error for anything nixsnake refuses:
    unparsable specs, globs, a channel or URL inside the spec."""
    try:
        from rattler import MatchSpec  # imported only for env files that have [conda]
    except ImportError:  # nixsnake installed without its dependencies (pip --no-deps)
        raise ToolMissingError(
            "py-rattler",
            "[conda] needs py-rattler, a dependency of nixsnake: install nixsnake with its dependencies "
            "(pip install snakemake-software-deployment-plugin-nixsnake, without --no-deps)",
        ) from None

    fix = "write a conda match spec such as name=version (samtools=1.19) or 'bwa >=0.7,<0.8'"
    if any(c in value for c in "\n\r\t\x00"):
        raise _bad(f"{value!r} contains a control character", fix)
    try:
        ms = MatchSpec(value, extras=False, conditionals=False, flags=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # InvalidMatchSpecError; a Rust panic would be a PanicException (BaseException)
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise _bad(f"{value!r} is not a conda match spec ({reason})", fix) from None
    if ms.name is None:
        raise _bad(f"{value!r} names no package", fix)
    if ms.channel is not None or "::" in value:
        raise _bad(
            f"{value!r} names a channel",
            "list the channel in [conda] channels (their order is the priority) and write only the package",
        )
    if "url=" in ms.to_canonical_string() or "://" in value:
        raise _bad(f"{value!r} points to a URL", "name a package from the channels (a URL cannot be date-locked)")
    return ms.name.normalized


def check_conda_spec(value: str) -> str:
    conda_spec_name(value)
    return value


def check_channel(value: str) -> str:
    if "://" in value:
        if not CONDA_CHANNEL_URL_RE.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
            raise _bad(
                f"{value!r} is not a channel URL nixsnake accepts",
                "write https://HOST/PATH or file:///ABSOLUTE/PATH (letters, digits, '_.~+%@-' in the path)",
            )
        return value
    if not CONDA_CHANNEL_RE.fullmatch(value) or len(value) > 100 or ".." in value:
        raise _bad(
            f"{value!r} is not a conda channel name or URL",
            "use a channel name such as conda-forge or bioconda, or a full URL",
        )
    return value


def check_conda_name(value: str) -> str:
    if not CONDA_NAME_RE.fullmatch(value):
        raise _bad(
            f"{value!r} is not a conda package name",
            "write the package name in lower case, without a version, e.g. ensembl-vep",
        )
    return value


def check_insecure_name(value: str) -> str:
    if not INSECURE_NAME_RE.fullmatch(value):
        raise _bad(
            f"{value!r} is not a package name with its version",
            'write the name nixpkgs refuses, with its version, e.g. "openssl-1.1.1w"',
        )
    return value


def check_bind(value: str) -> str:
    try:
        parse_user_bind(value)
    except BindError as exc:
        raise _bad(exc.problem, exc.fix) from None
    return value


def unique(kind: str, key=lambda s: s):
    """A list validator refusing duplicates (after normalising with ``key``)."""

    def _check(values: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for v in values:
            k = key(v)
            if k in seen:
                raise _bad(f"{kind} {v!r} is listed twice", "remove the duplicate")
            seen[k] = v
        return values

    return AfterValidator(_check)


def _req_name(v: str) -> str:
    try:
        from packaging.utils import canonicalize_name

        return canonicalize_name(_requirement(v).name)
    except ValueError:
        return v


NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]
AttrPath = Annotated[NonEmpty, AfterValidator(check_attr_path)]
PyReq = Annotated[NonEmpty, AfterValidator(check_requirement)]
RName = Annotated[NonEmpty, AfterValidator(check_r_name)]
CondaSpec = Annotated[NonEmpty, AfterValidator(check_conda_spec)]
Channel = Annotated[Annotated[str, Field(min_length=1, max_length=1000)], AfterValidator(check_channel)]
CondaName = Annotated[NonEmpty, AfterValidator(check_conda_name)]
InsecureName = Annotated[NonEmpty, AfterValidator(check_insecure_name)]
BindSpec = Annotated[Annotated[str, Field(min_length=1, max_length=1000)], AfterValidator(check_bind)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Nixpkgs(_Strict):
    packages: Annotated[list[AttrPath], unique("attribute")] = Field(
        default_factory=list,
        max_length=500,
        description=(
            "Attribute paths: dot-separated segments, each `[A-Za-z_][A-Za-z0-9_+-]*` (so `samtools`, "
            "`python312Packages.pysam`, `gcc13`, `gtk+3`). No quotes, spaces, `;`, `${`, `..`."
        ),
    )
    libraries: Annotated[list[AttrPath], unique("library")] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Attribute paths (same grammar as `packages`) whose library directory goes on `LD_LIBRARY_PATH` "
            "in the image, after libstdc++/libgcc and zlib: for PyPI wheels that load system libraries "
            "(`libGL`, ...). The directory is what nixpkgs' `lib.makeLibraryPath` gives: the package's `lib` "
            "output, else its `out` output, plus `/lib`. Many nixpkgs packages have several outputs and the "
            "first one, which `${pkg}` means, is `bin` (glib, curl, openssl, libtiff, cyrus_sasl): their "
            "libraries are in `out`, and that is what you get. To name one output yourself write it as an "
            "attribute (`openssl.out`)."
        ),
    )
    branch: str = Field(
        default="nixos-unstable",
        description=(
            "`[A-Za-z0-9][A-Za-z0-9._/-]*`, at most 100 characters, no `..`, not ending in `.lock` or `/`. "
            "The branch whose history the date is looked up in."
        ),
    )
    rev: str | None = Field(
        default=None,
        description=(
            "Exactly 40 lowercase hex digits. When given it wins over `date` for nixpkgs (the lock says "
            "`pinned = true`); `date` still applies to Python. The commit must exist in the nixpkgs source."
        ),
    )
    allow_unfree: StrictBool = Field(
        default=False,
        description=(
            "Passed to nixpkgs as `config.allowUnfree` (also turned on by `[gpu] cuda = true` and "
            "`cuda_support = true`: CUDA is unfree)."
        ),
    )
    permitted_insecure: Annotated[list[InsecureName], unique("permitted_insecure entry")] = Field(
        default_factory=list,
        max_length=100,
        description=(
            '`"name-version"` of packages nixpkgs refuses because of known vulnerabilities '
            '(`meta.knownVulnerabilities`: "is marked as insecure, refusing to evaluate"), accepted anyway: '
            "passed as `config.permittedInsecurePackages`. The name is the one in nixpkgs' message, version "
            'included (`"openssl-1.1.1w"`, `"python-2.7.18.8"`), so a newer version is refused again until '
            "you look at it. Unique."
        ),
    )

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        return check_branch(v)

    @field_validator("rev")
    @classmethod
    def _rev(cls, v: str | None) -> str | None:
        if v is not None and not REV_RE.fullmatch(v):
            raise _bad(
                f"{v!r} is not a full commit hash", "give all 40 lowercase hex digits, or drop rev to use the date"
            )
        return v


class Python(_Strict):
    version: str | None = Field(
        default=None,
        description=(
            '`"3.N"` or `"3.NN"`. Selects the nixpkgs attribute `python3NN` (`"3.12"` -> `python312`) of the '
            "locked nixpkgs; the patch release is whatever that nixpkgs had. The attribute must exist at that "
            "date (else the build fails, 65, `python.version: nixpkgs (rev ...) has no python39 (its python3 "
            "is 3.11)`). Also the target version for resolving wheels. **Without it**, `nixsnake lock` "
            "evaluates the locked nixpkgs' `python3.pythonVersion` (with nix) and records it as the lock's "
            "`[python] version`: the env gets the Python that nixpkgs' own `python3Packages` are built for "
            "(3.11 for a 2024-06-01 date, 3.12 for 2025-06-01, 3.13 from 25.11)."
        ),
        json_schema_extra={"default_doc": "the locked nixpkgs' `python3`"},
    )
    packages: Annotated[list[PyReq], unique("requirement", _req_name)] = Field(
        default_factory=list,
        max_length=500,
        description=(
            "PEP 508 requirements (`numpy`, `pandas>=2,<3`, `pandas[excel]`, markers allowed). Refused: URL "
            "requirements (`name @ https://...`, they cannot be date-locked) and any of `` $ ` \\| & \\ { } # ? "
            "`` or tab/newline. All PEP 440 operators work (`!=1.0`, `~=2.1.0`, `==1.26.*`). Duplicates are "
            "detected after name normalisation (`Foo_Bar` = `foo-bar`)."
        ),
    )
    package_dates: dict[str, dt.date] = Field(
        default_factory=dict,
        description=(
            "Gives one package its own date (the escape hatch for \"I need a newer torch than the env's date "
            'allows"). Names `[A-Za-z0-9][A-Za-z0-9._-]*`; same date rules as `date`. Passed to uv as '
            "`--exclude-newer-package NAME=<date>T00:00:00Z`."
        ),
    )

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        return v if v is None else check_py_version(v)

    @field_validator("package_dates")
    @classmethod
    def _dates(cls, v: dict[str, dt.date]) -> dict[str, dt.date]:
        for name, day in v.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise _bad(f"{name!r} is not a package name", "use the package's name from the index")
            _check_not_future(day)
        return v


class R(_Strict):
    packages: Annotated[list[RName], unique("R package")] = Field(
        default_factory=list,
        max_length=500,
        description=(
            "R package names, `[A-Za-z][A-Za-z0-9_.]*`, unique. Looked up in the same nixpkgs as "
            "`rPackages.<name>` with `.` replaced by `_` (`data.table` -> `rPackages.data_table`). The image "
            "gets `R` and `Rscript` from `rWrapper` with these packages."
        ),
    )


def _conda_key(value: str) -> str:
    try:
        return conda_spec_name(value)
    except PydanticCustomError:
        return value


class Conda(_Strict):
    channels: Annotated[list[Channel], unique("channel", lambda s: s.rstrip("/"))] = Field(
        default_factory=lambda: ["conda-forge"],
        max_length=20,
        description=(
            "Highest priority first (strict channel priority: a package comes from the first channel that has "
            "it). A channel **name** (`conda-forge`, `bioconda`, `bioconda/label/main`: segments "
            "`[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 100 characters) means `https://conda.anaconda.org/<name>`. "
            "A **URL** is a site mirror or a channel on disk: `https://HOST[:PORT]/PATH`, `http://...`, or "
            "`file:///ABSOLUTE/PATH` (path characters `A-Z a-z 0-9 _ . ~ + % @ -`, no `..`). At least 1, no "
            "duplicates."
        ),
    )
    packages: Annotated[list[CondaSpec], unique("conda package", _conda_key)] = Field(
        default_factory=list,
        max_length=500,
        description=(
            "Conda match specs, parsed with rattler's `MatchSpec`: `samtools`, `samtools=1.19` (= `1.19.*`), "
            "`samtools==1.19`, `bwa >=0.7,<0.8`, `samtools 1.19 h50ea8bc_0` / `samtools=1.19=h50ea8bc_0` "
            "(with a build string), `htslib[version='>=1.19']`. Refused: anything `MatchSpec` refuses (globs "
            "such as `sam*`, bad names), a channel inside the spec (`bioconda::samtools`: list the channel in "
            "`channels`), URL specs (cannot be date-locked), control characters. Unique by package name "
            "(case-insensitive)."
        ),
    )
    exempt: Annotated[list[CondaName], unique("exempt package")] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Package names (lower case, `[a-z0-9_][a-z0-9_.-]*`, no version) resolved **without** the date: "
            'the escape hatch for "this one tool must be newer than the env\'s date". Only the named packages: '
            "their dependencies still obey the date. Each must be part of the solution (else exit 65 naming "
            "`conda.exempt[i]`)."
        ),
    )

    @field_validator("channels")
    @classmethod
    def _some_channel(cls, v: list[str]) -> list[str]:
        if not v:
            raise _bad("no channel is listed", 'name at least one, e.g. channels = ["conda-forge", "bioconda"]')
        return v


class Gpu(_Strict):
    cuda: Any = Field(
        default="auto",
        description=(
            "`true`: always run with `--nv` (the host's NVIDIA driver in the image) and turn on "
            "`allow_unfree` (CUDA is unfree). Nothing is rebuilt: PyPI and conda CUDA packages (torch, jax, "
            'cupy, ...) need only the driver. `false`: never `--nv`. `"auto"`: `--nv` follows the `gpu` '
            "setting (default `auto`: decided on the node when the job starts)."
        ),
        json_schema_extra={"type_doc": '`true`, `false` or `"auto"`'},
    )
    cuda_support: StrictBool = Field(
        default=False,
        description=(
            "`true`: evaluate nixpkgs with `config.cudaSupport = true` (and `allowUnfree`), for nix-built "
            "CUDA code (nixpkgs' torch, opencv, MPI with CUDA). **A mass rebuild**: every package that takes "
            "the flag gets another hash, the binary cache does not have them (Hydra does not build unfree "
            "CUDA), and nix compiles them on the head node, for hours. Not allowed with `cuda = false`."
        ),
    )

    @field_validator("cuda")
    @classmethod
    def _cuda(cls, v: Any) -> bool | Literal["auto"]:
        if v is True or v is False or v == "auto":
            return v
        raise _bad(f'{v!r} is not true, false or "auto"', 'write cuda = true, cuda = false or cuda = "auto"')

    @field_validator("cuda_support")
    @classmethod
    def _support(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("cuda") is False:
            raise _bad(
                "builds for CUDA, but cuda = false never gives the jobs a GPU",
                'set cuda = true (or "auto"), or drop cuda_support',
            )
        return v


class Run(_Strict):
    binds: Annotated[list[BindSpec], unique("bind")] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "`SRC[:DST[:ro\\|rw]]`, at most 100 entries of at most 1000 characters. Both paths absolute; no "
            "`..` component; no `,` `:` `^` or line break inside a path and no leading or trailing whitespace "
            "(apptainer's `--bind` splits on the first three and trims the last, with no escapes). `DST` "
            "defaults to `SRC`."
        ),
    )


def _check_not_future(day: dt.date) -> dt.date:
    if day > dt.datetime.now(dt.UTC).date():
        raise _bad(f"{day.isoformat()} is in the future", "use today's date or an earlier one")
    if day < dt.date(2015, 1, 1):
        raise _bad(f"{day.isoformat()} is before 2015", "use a date from 2015 on")
    return day


#: (section, key, default) of keys that joined the env file later (see normalized())
_LATER_KEYS: tuple[tuple[str, str, Any], ...] = (("nixpkgs", "permitted_insecure", []), ("gpu", "cuda_support", False))


class EnvFile(_Strict):
    """The whole env file. Field aliases keep the TOML spelling (``[R]``)."""

    date: dt.date = Field(
        description=(
            "A bare TOML date (`2024-01-01`), not a string, not a date-time. Not after today (UTC), not "
            "before 2015-01-01. Everything resolves as it was at **00:00 UTC** of this day "
            "([date-locking.md](date-locking.md))."
        )
    )
    nixpkgs: Nixpkgs = Field(default_factory=Nixpkgs)
    python: Python | None = None
    r: R | None = Field(default=None, alias="R")
    conda: Conda | None = None
    gpu: Gpu = Field(default_factory=Gpu)
    env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict)
    run: Run = Field(default_factory=Run)

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        if isinstance(v, dt.datetime):
            raise _bad(
                f"{v.isoformat()} is a date-time", "write a plain TOML date such as 2024-01-01 (no time, no quotes)"
            )
        if isinstance(v, str):
            raise _bad(f"{v!r} is a string", "write a plain TOML date such as 2024-01-01 (no quotes)")
        return v

    @field_validator("date")
    @classmethod
    def _date_range(cls, v: dt.date) -> dt.date:
        return _check_not_future(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not envvars.valid_name(name):
                raise _bad(f"{name!r} is not a variable name", "use letters, digits and '_', not starting with a digit")
            if envvars.refused_in_env_file(name):
                raise _bad(
                    f"{name} is managed by nixsnake or can hijack every process in the image",
                    "pick another name; use [nixpkgs]/[python] packages instead of loader or path variables",
                )
            if "\x00" in value:
                raise _bad(f"value of {name} contains a NUL byte", "remove it")
        return v

    def normalized(self) -> dict[str, Any]:
        """Canonical data: what the image's software depends on, in a stable form.

        Keys added after env files were in use appear only when they differ from their
        default, so that existing env files keep their data, and their locks stay
        current, when nixsnake learns a new key."""
        data = self.model_dump(mode="json", by_alias=True)
        for section, key, default in _LATER_KEYS:
            if data[section].get(key) == default:
                del data[section][key]
        return data

    def spec_hash(self) -> str:
        return sha256_json(self.normalized())

    def summary(self) -> str:
        """What ``nixsnake check`` says about a valid env file."""

        def n(count: int, noun: str) -> str:
            return f"{count} {noun}" + ("" if count == 1 else "s")

        parts = [f"date {self.date}", n(len(self.nixpkgs.packages), "nixpkgs package")]
        if self.python:
            version = self.python.version or "(nixpkgs' python3)"
            parts.append(f"python {version} with {n(len(self.python.packages), 'requirement')}")
        if self.r:
            parts.append(n(len(self.r.packages), "R package"))
        if self.conda:
            parts.append(n(len(self.conda.packages), "conda package"))
        return ", ".join(parts)


def day_start(day: dt.date) -> dt.datetime:
    """What "as of this date" means everywhere: the instant the day starts, in UTC. A
    package published during that day is not included."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def cutoff(day: dt.date) -> str:
    """:func:`day_start` as the ISO string git, GitHub and uv take."""
    return day_start(day).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_json(data: Any) -> str:
    """SHA-256 of canonical JSON: unambiguous framing, so distinct data cannot collide by
    concatenation tricks; only a SHA-256 collision could."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- loading ----------------------------------------------------------------------------


def _known_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        if not isinstance(part, str):
            return []
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        field = fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        cands = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cands:
            return []
        model = cands[0]
    return [f.alias or n for n, f in model.model_fields.items()]


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


#: Fixes for pydantic's generic error types, by type.
_GENERIC_FIX = {
    "missing": "add it",
    "string_type": "write a quoted TOML string",
    "list_type": 'write a TOML array, e.g. ["a", "b"]',
    "bool_type": "write true or false",
    "date_type": "write a plain TOML date such as 2024-01-01",
    "date_from_datetime_inexact": "write a plain TOML date such as 2024-01-01",
    "dict_type": "write a TOML table",
    "model_type": "write a TOML table ([section])",
    "too_short": "add at least one character",
    "string_too_short": "remove the empty string",
    "string_too_long": "shorten it",
    "too_long": "shorten the list",
    "literal_error": "use one of the allowed values",
}


def error_from_validation(path: str, exc: ValidationError, root: type[BaseModel]) -> SpecError:
    """pydantic's first error as one SpecError line (file, key, problem, fix). A misspelt
    key is reported before the "missing" error it causes: "did you mean 'date'?" is the fix."""
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err.get("loc", ()))
    # Annotated validators append the function name to loc; drop non-key parts.
    loc = tuple(
        p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "constrained-", "lax-", "strict-")))
    )
    key = _fmt_loc(loc) or "(top level)"
    etype = err["type"]
    if etype == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        known = _known_keys(root, loc[:-1])
        by_lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or [
            by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        ]
        if close:
            fix = f"did you mean {close[0]!r}?"
        else:
            fix = "remove it; allowed here: " + ", ".join(sorted(known)) if known else "remove it"
        return SpecError(path, key, f"unknown key {name!r}", fix)
    if etype == "nixsnake":
        ctx = err.get("ctx") or {}
        return SpecError(path, key, str(ctx.get("problem", err["msg"])), str(ctx.get("fix", "see docs/env-file.md")))
    msg = err["msg"]
    fix = _GENERIC_FIX.get(etype, "see docs/env-file.md for this key")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return SpecError(path, key, msg.replace("\n", " ") + more, fix)


def parse_spec(text: bytes, path: str = "<env>") -> EnvFile:
    """Validate env file bytes; every failure is a one-line SpecError (exit 65)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(path, "", f"file is {len(text)} bytes", f"env files must be under {MAX_SPEC_BYTES // 1024} KiB")
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, "", f"not UTF-8 (byte {exc.start})", "save the file as UTF-8") from None
    try:
        data = tomllib.loads(s)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(
            path, "", f"invalid TOML: {str(exc).splitlines()[0]}", "fix the TOML syntax at that position"
        ) from None
    except RecursionError:
        raise SpecError(path, "", "invalid TOML: nested too deeply", "flatten the file") from None
    try:
        return EnvFile.model_validate(data)
    except ValidationError as exc:
        raise error_from_validation(path, exc, EnvFile) from None
    except RecursionError:
        raise SpecError(path, "", "nested too deeply", "flatten the file") from None


def load_spec(path: Path) -> EnvFile:
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise MissingFileError(str(path), "check the path, or create the env file (see docs/env-file.md)") from None
    except IsADirectoryError:
        raise SpecError(str(path), "", "is a directory", "name the .toml env file") from None
    except OSError as exc:  # unreadable, a symlink loop, an I/O error: 66 with the reason
        raise UnreadableFileError(str(path), exc.strerror or str(exc), "make it a readable env file") from None
    return parse_spec(text, str(path))


def env_files(paths: list[Path], note: Callable[[str], None]) -> list[Path]:
    """Accept ``envs/*.toml`` on a command line: lock files (``*.lock.toml``) are
    skipped, with a note."""
    keep = []
    for p in paths:
        if p.name.endswith(".lock.toml"):
            note(f"nixsnake: skipping {p} (a lock file; its env file is {p.name[: -len('.lock.toml')]}.toml)")
        else:
            keep.append(p)
    return keep


def lock_path_for(spec_path: Path) -> Path:
    """``envs/vep.toml`` -> ``envs/vep.lock.toml``."""
    name = spec_path.name
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    return spec_path.with_name(stem + ".lock.toml")
