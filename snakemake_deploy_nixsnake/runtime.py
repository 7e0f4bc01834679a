"""How a job's command runs inside its image: apptainer, singularity, or bwrap.

Pure functions that build command lines; nothing here starts a process or touches the
file system. Three callers:

* :func:`shell_command` -- the one shell string Snakemake's ``decorate_shellcmd`` returns.
  Snakemake runs it with bash on the compute node; no Python starts per job.
* :func:`exec_argv` -- ``nixsnake run ENV -- CMD...`` (an argv list, no shell string).
* :func:`shell_argv` -- ``nixsnake shell ENV`` (an interactive shell in the image).

Choices, each one deliberate:

* ``--cleanenv``: host ``PATH``/``LD_LIBRARY_PATH``/``PYTHONPATH`` & co. never reach the
  job; the image's ``/.singularity.d/env/*.sh`` set ``PATH`` etc. Apptainer still passes
  ``TERM`` and the proxy variables, sets ``LANG=C`` and ``HOME``.
* Variables named in ``envvars`` (Snakemake's ``envvars:``, often secrets) travel as
  ``APPTAINERENV_NAME`` in the environment (also ``SINGULARITYENV_NAME`` for singularity,
  which SingularityCE needs and apptainer's ``singularity`` accepts), exported only when
  ``NAME`` is set, so their values never appear on a command line (``ps``) and an unset
  variable stays unset. Apptainer sets them right after the image's ``99-base.sh``.
* ``--no-eval``: without it apptainer writes each passed value into its injection script
  as ``export NAME="VALUE"`` with only ``"`` escaped, so ``$``, backticks and ``\\`` in a
  value are evaluated inside the container (``$(cmd)`` runs). The ``apptainer`` runtime
  always passes ``--no-eval`` (apptainer >= 1.1; ``doctor`` refuses older). The
  ``singularity`` runtime covers releases without it (SingularityCE < 3.10, legacy
  Singularity): :func:`no_eval_snippet` decides when the job starts.
* ``$HOME`` is bound (apptainer's default; HPC users expect it). Python's user site in
  ``~/.local`` is then visible unless the image sets ``PYTHONNOUSERSITE``.
* The work directory is bound read-write and used as ``--pwd``; the caller adds
  Snakemake's temp dir and other mount points as :class:`Bind`. When ``TMPDIR`` is among
  the passed variables (it is for every job: :data:`envvars.JOB_ENVVARS`), the line also
  binds the directory it names when the job starts (:func:`tmpdir_snippet`): Snakemake sets
  it per job (the ``tmpdir`` resource), so only the job's shell knows it.
* GPUs: ``gpu="always"`` adds ``--nv``; ``"never"`` adds ``--no-nv --no-rocm`` (hidden
  flags that cancel a site's ``always use nv/rocm = yes``); ``"auto"`` decides when the
  job starts, with :func:`gpu_probe_snippet`: NVIDIA device files -> ``--nv``, AMD's
  ``/dev/kfd`` -> ``--rocm``, else SLURM gave GPUs, ``CUDA_VISIBLE_DEVICES`` names
  devices or ``nvidia-smi -L`` works -> ``--nv``, else ``--no-nv --no-rocm``. On a node
  without a driver, legacy ``--nv`` is harmless (apptainer 1.1-1.3 warn, later releases
  say nothing), but where apptainer uses nvidia-container-cli (``--nvccli``, ``use
  nvidia-container-cli = yes``) it is FATAL -- hence the explicit ``--no-nv`` on CPU
  nodes. The ``singularity`` runtime passes the "no" case as ``SINGULARITY_NO_NV=1``
  & co. instead (releases before SingularityCE 3.8 have neither the flags nor the
  setting they cancel, and ignore the variables); ``bwrap`` knows only ``--nv``.
* The user's command goes in as ``<shell> -c '<cmd>'`` so ``a && b``, pipes and heredocs
  run wholly inside the image; ``exec`` everywhere, so the job's exit status is the
  command's own.
* ``bwrap``: ``/bin/sh bwrap-exec.sh`` (shipped next to this module) mounts the image
  with squashfuse and runs the command under bubblewrap, mimicking
  ``apptainer exec --cleanenv``.

Binds follow the one grammar of :mod:`.binds` (what apptainer's ``--bind`` can express).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from . import envvars
from .binds import Bind, check_target
from .errors import Exit, NixsnakeError

Runtime = Literal["apptainer", "singularity", "bwrap"]
Gpu = Literal["auto", "always", "never"]

RUNTIMES: tuple[str, ...] = get_args(Runtime)
GPU_MODES: tuple[str, ...] = get_args(Gpu)


#: ``bwrap-exec.sh``, shipped as package data.
BWRAP_EXEC: Path = Path(__file__).resolve().parent / "data" / "bwrap-exec.sh"

#: The shell variable :func:`gpu_probe_snippet` sets to ``--nv``, ``--rocm`` or nothing.
GPU_VAR = "nixsnake_gpu"

#: The words that keep GPUs out (cancel a site's ``always use nv/rocm = yes``).
NO_GPU_FLAGS = ("--no-nv", "--no-rocm")
#: The same for the singularity runtime, as environment variables every release ignores
#: that lacks them (apptainer reads APPTAINER_*, SingularityCE SINGULARITY_*).
NO_GPU_ENV = ("APPTAINER_NO_NV", "SINGULARITY_NO_NV", "APPTAINER_NO_ROCM", "SINGULARITY_NO_ROCM")

#: The shell variable :func:`tmpdir_snippet` sets to ``$TMPDIR`` when it is to be bound.
TMP_VAR = "nixsnake_tmp"

#: The shell variable :func:`no_eval_snippet` sets to ``--no-eval`` or to nothing (singularity).
NO_EVAL_VAR = "nixsnake_ne"

#: Characters apptainer's injection evaluates inside ``"..."`` when ``--no-eval`` is off
#: (``"`` it escapes itself), as a shell bracket expression.
_EVALUATED = r"[\\\$\`]"

#: ``<runtime> --version`` lines of releases WITHOUT ``--no-eval`` (apptainer < 1.1,
#: SingularityCE < 3.10) and of releases with it, as ``case`` patterns; anything else
#: (legacy Singularity, unknown builds) counts as without.
_VERSIONS_WITHOUT_NO_EVAL = (
    '"apptainer version "0* | "apptainer version "1.0* | '
    '"singularity-ce version "3.[0-9] | "singularity-ce version "3.[0-9][!0-9]*'
)
_VERSIONS_WITH_NO_EVAL = '"apptainer version "[1-9]* | "singularity-ce version "[3-9]*'

#: POSIX sh tests for NVIDIA GPUs, in order: device files first (SLURM does not always
#: set its variables), AMD's device next (its allocations get CUDA_VISIBLE_DEVICES and
#: SLURM_JOB_GPUS too), then what the scheduler says, last -- it is slow -- nvidia-smi.
NVIDIA_DEVICES: tuple[str, ...] = ("[ -e /dev/nvidiactl ]", "[ -e /dev/nvidia0 ]")
AMD_DEVICE = "[ -e /dev/kfd ]"
GPU_SIGNALS: tuple[str, ...] = (
    '[ -n "${SLURM_JOB_GPUS:-}" ]',
    '[ -n "${SLURM_STEP_GPUS:-}" ]',
    '{ [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES:-}" != NoDevFiles ]; }',
    "nvidia-smi -L >/dev/null 2>&1",
)

#: Env-var prefixes apptainer / singularity read to set variables inside the container.
ENV_PREFIXES: dict[str, tuple[str, ...]] = {
    "apptainer": ("APPTAINERENV_",),
    "singularity": ("APPTAINERENV_", "SINGULARITYENV_"),
}

_SHELL_NAME = re.compile(r"[A-Za-z0-9_.+-]+\Z")


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to run something in one image."""

    image: Path
    runtime: Runtime = "apptainer"
    gpu: Gpu = "auto"
    binds: tuple[Bind, ...] = ()
    workdir: Path | None = None  # bound read-write and used as --pwd
    envvars: tuple[str, ...] = ()  # host variables passed through by name
    shell: str = "bash"  # the rule's shell inside the image
    bwrap_exec: Path = BWRAP_EXEC
    #: The apptainer/singularity executable: a name looked up on the node's PATH
    #: (default: the runtime's name) or an absolute path, for sites where it lives
    #: outside the login PATH (e.g. only after ``module load``).
    runtime_bin: str | None = None

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise NixsnakeError(
                f"unknown runtime {self.runtime!r}", Exit.DATAERR, hint=f"use one of: {', '.join(RUNTIMES)}"
            )
        if self.gpu not in GPU_MODES:
            raise NixsnakeError(
                f"unknown gpu mode {self.gpu!r}", Exit.DATAERR, hint=f"use one of: {', '.join(GPU_MODES)}"
            )
        image = str(self.image)
        if not image.startswith("/") or "\n" in image or "\x00" in image or "://" in image:
            raise NixsnakeError(f"image path must be an absolute file path, got {image!r}", Exit.SOFTWARE)
        for name in ("image", "workdir", "bwrap_exec"):  # accept str, store Path
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "binds", tuple(self.binds))
        object.__setattr__(self, "envvars", tuple(self.envvars))
        if not str(self.bwrap_exec).startswith("/"):
            raise NixsnakeError(f"bwrap_exec must be an absolute path, got {self.bwrap_exec!r}", Exit.SOFTWARE)
        if self.workdir is not None:
            check_target("the working directory", str(self.workdir))
        for b in self.binds:
            if not isinstance(b, Bind):
                raise NixsnakeError(f"binds must be Bind objects, got {b!r}", Exit.SOFTWARE)
        for name in self.envvars:
            check_envvar(name)
        sh = self.shell
        if not (_SHELL_NAME.match(sh) or (sh.startswith("/") and "\n" not in sh and "\x00" not in sh)):
            raise NixsnakeError(
                f"shell must be a command name or an absolute path, got {sh!r}", Exit.DATAERR, hint="e.g. 'bash'"
            )

    @property
    def all_binds(self) -> tuple[Bind, ...]:
        """The work directory (first, unless a bind already targets it), then the binds."""
        wd = str(self.workdir) if self.workdir is not None else None
        if wd is None or any(b.dst == wd for b in self.binds):
            return tuple(self.binds)
        return (Bind(wd, wd), *self.binds)


def check_envvar(name: str) -> str:
    """Validate a pass-through variable name (raises ``NixsnakeError(DATAERR)``)."""
    envvars.check_name(name)
    if not envvars.passable(name):
        raise NixsnakeError(
            f"environment variable {name!r} cannot be passed into the container",
            Exit.DATAERR,
            hint="PATH, HOME, LD_LIBRARY_PATH, shell-internal and APPTAINER*/SINGULARITY* variables are set by "
            "the image or the runtime; set what you need in the env file's [env] table",
        )
    return name


def bwrap_header() -> str:
    """The values ``bwrap-exec.sh`` takes from Python, as the shell lines between its
    "generated" markers (``scripts/generate.py`` writes them; a test checks they match)."""
    from .binds import FORBIDDEN_CHARS
    from .gpucheck import BWRAP_NV_BINARIES, BWRAP_NV_LIBS
    from .image.sif import PARTITION_OFFSET
    from .image.skeleton import BASE_SCRIPT, ENV_SCRIPT, ENVIRONMENT_PATH, LIBS_DIR, NVIDIA_LINK_DIRS, NVIDIA_PROBE_LIBS

    chars = "".join(c for c in FORBIDDEN_CHARS if c.isprintable())
    assert "'" not in chars and not chars.startswith(("!", "^"))  # safe inside '...' and [...]
    # (name lists become case patterns: globs only, nothing a shell would expand)
    refused = [*sorted(envvars.NOT_PASSABLE), *(p + "*" for p in envvars.NOT_PASSABLE_PREFIXES)]
    assert all(re.fullmatch(r"[A-Za-z0-9_.*-]+", p) for p in (*BWRAP_NV_LIBS, *refused))
    return (
        f"_nx_sif_offset={PARTITION_OFFSET}\n"
        f"_nx_env_file=/{ENVIRONMENT_PATH}\n"
        f"_nx_env_scripts='{ENV_SCRIPT} {BASE_SCRIPT}'\n"
        f"_nx_bind_forbidden='{chars}'\n"
        f"_nx_not_passable() {{ case $1 in {' | '.join(refused)}) return 0 ;; esac; return 1; }}\n"
        f"_nx_nv_lib() {{ case $1 in {' | '.join(BWRAP_NV_LIBS)}) return 0 ;; esac; return 1; }}\n"
        f"_nx_nv_bins='{' '.join(BWRAP_NV_BINARIES)}'\n"
        f"_nx_nv_probe='{' '.join(NVIDIA_PROBE_LIBS)}'\n"
        f"_nx_nv_link_dir=/{next(d for d, target in NVIDIA_LINK_DIRS.items() if target == LIBS_DIR)}\n"
    )


def gpu_probe_snippet(runtime: str = "apptainer") -> str:
    """POSIX sh that sets ``nixsnake_gpu`` to ``--nv``, ``--rocm`` or nothing.

    Decided when the job starts, on the node that runs it: an NVIDIA device file
    (``/dev/nvidiactl``, ``/dev/nvidia0``) -> ``--nv``; AMD's ``/dev/kfd`` -> ``--rocm``
    (nothing for ``bwrap``, which has no ROCm support; the devices are visible anyway);
    else GPUs allocated by SLURM (``SLURM_JOB_GPUS``/``SLURM_STEP_GPUS``),
    ``CUDA_VISIBLE_DEVICES`` naming devices (not empty, not ``NoDevFiles``), or -- slow,
    so last -- a working ``nvidia-smi -L`` -> ``--nv``. Safe under ``set -eu``. Ends with
    ``; `` so a command can follow directly.
    """
    amd = f"{GPU_VAR}=--rocm" if runtime != "bwrap" else ":"
    return (
        f"{GPU_VAR}=; if {' || '.join(NVIDIA_DEVICES)}; then {GPU_VAR}=--nv; "
        f"elif {AMD_DEVICE}; then {amd}; "
        f"elif {' || '.join(GPU_SIGNALS)}; then {GPU_VAR}=--nv; fi; "
    )


def tmpdir_snippet(req: RunRequest) -> str:
    """POSIX sh that sets ``nixsnake_tmp`` to ``$TMPDIR`` when that directory is to be bound.

    ``TMPDIR`` is passed into the job, so it must exist inside too: when it is an existing
    directory with a canonical absolute path that apptainer's ``--bind`` can carry (no
    ``,`` ``:`` ``^``, nothing unprintable, no trailing whitespace), that covers nothing of
    the image (binds.PROTECTED_TARGETS and their ancestors) and is not already a bind
    destination or ``/tmp``/``/var/tmp`` (bound by the runtime anyway). Otherwise it is
    left out and the job sees ``TMPDIR`` only if the runtime's binds happen to cover it.
    No fork; safe under ``set -eu``. Ends with ``; ``.
    """
    from .binds import PROTECTED_TARGETS

    skip = ["*[,:^]*", "*[![:print:]]*", "*[[:space:]]", "//*", "*/./*", "*/../*", "*/.", "*/..", "*/"]
    skip += ["/", "/tmp", "/var/tmp"]
    for t in PROTECTED_TARGETS:
        skip += [t, t + "/*"]
        parent = t.rsplit("/", 1)[0]
        while parent:  # ancestors: binding /usr would cover /usr/bin
            skip.append(parent)
            parent = parent.rsplit("/", 1)[0]
    skip += [shlex.quote(b.dst) for b in req.all_binds]
    pats = " | ".join(dict.fromkeys(skip))
    return (
        f"{TMP_VAR}=; case ${{TMPDIR-}} in /?*) case $TMPDIR in {pats}) ;; "
        f'*) [ ! -d "$TMPDIR" ] || {TMP_VAR}=$TMPDIR ;; esac ;; esac; '
    )


# --- command construction ---------------------------------------------------------------
# A command is a list of words: str (quoted when rendered) or _Raw shell text.


@dataclass(frozen=True)
class _Raw:
    text: str


_GPU = _Raw("$" + GPU_VAR)  # unquoted on purpose: "no GPU" expands to no word at all
_GPU_OR_NONE = _Raw(f"${{{GPU_VAR}:-{' '.join(NO_GPU_FLAGS)}}}")  # unquoted: one or two words
_NE = _Raw("$" + NO_EVAL_VAR)  # --no-eval or no word
_TMP = _Raw(f'${{{TMP_VAR}:+--bind "${TMP_VAR}"}}')  # two words, or none
_ARGS = _Raw('"$@"')
Word = str | _Raw


def _gpu_words(req: RunRequest) -> list[Word]:
    if req.gpu == "always":
        return ["--nv"]
    if req.runtime == "apptainer":
        return [_GPU_OR_NONE] if req.gpu == "auto" else list(NO_GPU_FLAGS)
    return [_GPU] if req.gpu == "auto" else []  # singularity: NO_GPU_ENV; bwrap: nothing to cancel


def _no_gpu_env(req: RunRequest) -> str:
    """singularity: ``export SINGULARITY_NO_NV=1 ...`` when no GPU is wanted (at run time for auto)."""
    if req.runtime != "singularity" or req.gpu == "always":
        return ""
    export = "export " + " ".join(f"{n}=1" for n in NO_GPU_ENV) + "; "
    return export if req.gpu == "never" else f'[ -n "${GPU_VAR}" ] || {export}'


def _launcher(req: RunRequest, action: Literal["exec", "shell"], inner: list[Word]) -> list[Word]:
    """The runtime's argv, up to and including ``inner`` (the command in the image)."""
    if req.runtime == "bwrap":
        words: list[Word] = ["/bin/sh", str(req.bwrap_exec), *_gpu_words(req)]
        for name in req.envvars:
            words += ["--pass", name]
        for b in req.all_binds:
            words += ["--bind", b.spec]
        if _binds_tmpdir(req):
            words.append(_TMP)
        if req.workdir is not None:
            words += ["--pwd", str(req.workdir)]
        return [*words, str(req.image), "--", *inner]
    no_eval: list[Word] = ["--no-eval"] if req.runtime == "apptainer" else [_NE] if _probes_no_eval(req) else []
    words = [req.runtime_bin or req.runtime, action, "--cleanenv", *no_eval, *_gpu_words(req)]
    for b in req.all_binds:
        words += ["--bind", b.spec]
    if _binds_tmpdir(req):
        words.append(_TMP)
    if req.workdir is not None:
        words += ["--pwd", str(req.workdir)]
    return [*words, str(req.image), *inner]


def _binds_tmpdir(req: RunRequest) -> bool:
    return "TMPDIR" in req.envvars


def _env_exports(req: RunRequest) -> str:
    """``[ -z "${A+x}" ] || export APPTAINERENV_A="$A"; `` for each pass-through variable."""
    if req.runtime == "bwrap":
        return ""  # bwrap-exec.sh reads them itself (--pass NAME)
    out = []
    for name in req.envvars:
        sets = " ".join(f'{p}{name}="${name}"' for p in ENV_PREFIXES[req.runtime])
        out.append(f'[ -z "${{{name}+x}}" ] || export {sets}; ')
    return "".join(out)


def _probes_no_eval(req: RunRequest) -> bool:
    return req.runtime == "singularity" and bool(req.envvars)


def no_eval_snippet(req: RunRequest) -> str:
    """POSIX sh, for the ``singularity`` runtime, run after the exports: keep every passed
    value from being shell-evaluated inside the container.

    Without ``--no-eval`` apptainer and SingularityCE write each passed value into their
    injection script as ``export NAME="VALUE"`` with only ``"`` escaped, so ``$``, a
    backtick and ``\\`` in a value are evaluated there. ``--no-eval`` (apptainer >= 1.1,
    SingularityCE >= 3.10) turns that off; older releases reject the flag. So: when no
    value holds one of those characters, evaluation changes nothing and nothing is decided
    (no fork); otherwise ``singularity --version`` (one fork) says whether ``--no-eval``
    exists, and if not, each value is exported with ``\\``, ``$`` and backtick escaped by a
    backslash, which that evaluation removes again. Sets ``nixsnake_ne``. Ends with ``; ``.
    """
    names = req.envvars
    exe = shlex.quote(req.runtime_bin or req.runtime)
    values = "".join(f"${{{n}-}}" for n in names)
    prefixes = ENV_PREFIXES[req.runtime]
    sets = " ".join(f'{p}$nixsnake_k=\\"\\$nixsnake_r\\"' for p in prefixes)
    escape = (
        "nixsnake_r=; while :; do case $nixsnake_s in "
        f'*{_EVALUATED}*) nixsnake_p=${{nixsnake_s%%{_EVALUATED}*}}; nixsnake_s=${{nixsnake_s#"$nixsnake_p"}}; '
        'nixsnake_r=$nixsnake_r$nixsnake_p\\\\${nixsnake_s%"${nixsnake_s#?}"}; nixsnake_s=${nixsnake_s#?} ;; '
        "*) nixsnake_r=$nixsnake_r$nixsnake_s; break ;; esac; done"
    )
    reexport = (
        f"for nixsnake_k in {' '.join(names)}; do "
        'eval "nixsnake_s=\\${$nixsnake_k-}; nixsnake_set=\\${$nixsnake_k+x}"; '
        '[ -n "$nixsnake_set" ] || continue; '
        f'{escape}; eval "export {sets}"; done'
    )
    return (
        f'{NO_EVAL_VAR}=; case "{values}" in *{_EVALUATED}*) '
        f"case $({exe} --version 2>/dev/null) in {_VERSIONS_WITHOUT_NO_EVAL}) ;; "
        f"{_VERSIONS_WITH_NO_EVAL}) {NO_EVAL_VAR}=--no-eval ;; esac; "
        f'[ -n "${NO_EVAL_VAR}" ] || {{ {reexport}; }} ;; esac; '
    )


def _render(words: Iterable[Word]) -> str:
    return " ".join(w.text if isinstance(w, _Raw) else shlex.quote(w) for w in words)


def _script(req: RunRequest, words: list[Word]) -> str:
    probe = gpu_probe_snippet(req.runtime) if req.gpu == "auto" else ""
    tmp = tmpdir_snippet(req) if _binds_tmpdir(req) else ""
    no_eval = no_eval_snippet(req) if _probes_no_eval(req) else ""
    return probe + tmp + _env_exports(req) + _no_gpu_env(req) + no_eval + "exec " + _render(words)


def gpu_mode(cuda: bool | str, setting: str) -> Gpu:
    """The env file's ``[gpu] cuda`` wins (true: always --nv, false: never); ``"auto"``
    defers to the ``gpu`` setting."""
    if cuda is True:
        return "always"
    if cuda is False:
        return "never"
    return setting  # type: ignore[return-value]


def shell_command(req: RunRequest, cmd: str) -> str:
    """One POSIX sh string that runs ``cmd`` with the rule's shell inside the image.

    For Snakemake's ``decorate_shellcmd``: the whole of ``cmd`` (``&&``, pipes,
    heredocs, quotes) runs inside, and the string ends in ``exec`` so the job's exit
    status passes through unchanged.
    """
    if not isinstance(cmd, str) or "\x00" in cmd:
        raise NixsnakeError("the job's command must be a string without NUL bytes", Exit.SOFTWARE)
    return _script(req, _launcher(req, "exec", [req.shell, "-c", cmd]))


def _wrap(req: RunRequest, words: list[Word], argv: list[str]) -> list[str]:
    """An argv list: plain when nothing must be decided at run time, else ``/bin/sh -c``."""
    if req.gpu != "auto" and not _env_exports(req) and not _binds_tmpdir(req) and not _no_gpu_env(req):
        return [w for w in words if isinstance(w, str)] + list(argv)
    return ["/bin/sh", "-c", _script(req, [*words, _ARGS] if argv else words), "nixsnake", *argv]


def exec_argv(req: RunRequest, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` (a program and its arguments, no shell) in the image.

    Plain ``apptainer exec ...`` when possible; with ``gpu="auto"`` or pass-through
    variables (apptainer/singularity) a ``/bin/sh -c SCRIPT nixsnake ARGV...`` that
    decides and exports at run time, then ``exec``s the same command.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise NixsnakeError("no command given to run in the image", Exit.DATAERR, hint="nixsnake run ENV -- CMD [ARGS]")
    if any("\x00" in a for a in argv):
        raise NixsnakeError("command arguments cannot contain NUL bytes", Exit.DATAERR)
    return _wrap(req, _launcher(req, "exec", []), argv)


def shell_argv(req: RunRequest) -> list[str]:
    """The argv of an interactive shell in the image (``nixsnake shell ENV``).

    apptainer/singularity: ``apptainer shell`` (``/bin/bash --norc`` in the image, or
    ``--shell /bin/<shell>`` for another shell); bwrap: the same shell via bwrap-exec.sh.
    """
    if req.runtime == "bwrap":
        sh = req.shell if req.shell.startswith("/") else f"/bin/{req.shell}"
        inner: list[Word] = [sh, "--norc"] if Path(sh).name == "bash" else [sh]
        return _wrap(req, _launcher(req, "shell", inner), [])
    words = _launcher(req, "shell", [])
    if Path(req.shell).name != "bash":
        sh = req.shell if req.shell.startswith("/") else f"/bin/{req.shell}"
        i = words.index("--cleanenv") + 1
        words[i:i] = ["--shell", sh]
    return _wrap(req, words, [])
