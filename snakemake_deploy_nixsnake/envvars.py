"""Environment variables: the one home of every rule about their names.

Three places take variable names from users: an env file's ``[env]`` table (values set
inside the image), Snakemake's ``envvars:`` (host values passed into a job by name),
and the image's own environment script. Each has a list of names it may not touch;
``bwrap-exec.sh`` gets the pass-through list from here (a generated header).
"""

from __future__ import annotations

import re

from .errors import Exit, NixsnakeError

#: A variable name (what POSIX shells and apptainer accept).
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 128

#: Set by the image's own environment script (image/skeleton.py); PERL5LIB only in
#: environments with Perl modules.
SET_BY_IMAGE = ("PATH", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "NIX_SSL_CERT_FILE", "PS1", "PERL5LIB")

#: Refused in an env file's ``[env]`` (case-insensitively): the image or the runtime own
#: them, or they let one value hijack every process in the container -- the loader and
#: libc, shell start-up hooks, interpreters' "run this first" options and search paths.
#: docs/security.md lists them; a test keeps that list in step with this one.
REFUSED_IN_ENV_FILE = frozenset({
    # the image / the runtime own these
    *SET_BY_IMAGE, "HOME", "SHELL", "USER", "PWD", "TMPDIR",
    # loader and libc
    "GCONV_PATH", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "LOCPATH", "NLSPATH",
    # shells
    "IFS", "ENV", "BASH_ENV", "PS4", "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND",
    # interpreters: code to run at start-up, or a search path ahead of the image's own
    "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONBREAKPOINT", "PYTHONINSPECT",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB", "NODE_OPTIONS", "NODE_PATH", "RUBYOPT", "RUBYLIB",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "R_PROFILE", "R_PROFILE_USER", "R_ENVIRON", "R_ENVIRON_USER", "R_LIBS", "R_LIBS_USER", "R_LIBS_SITE",
})  # fmt: skip
REFUSED_IN_ENV_FILE_PREFIXES = ("LD_", "APPTAINER", "SINGULARITY", "NIXSNAKE_", "BASH_FUNC_", "DYLD_", "MALLOC_")

#: Cannot be passed from the host into a job by name (``envvars:``, ``--pass``):
#: apptainer refuses ``PATH``/``HOME`` overrides, ``LD_LIBRARY_PATH`` would break the
#: image, the rest are shell-internal; ``APPTAINER*``/``SINGULARITY*`` configure the
#: runtime; ``_nx_*`` are bwrap-exec.sh's own.
NOT_PASSABLE = frozenset({
    "PATH", "HOME", "LD_LIBRARY_PATH", "IFS", "PWD", "OLDPWD", "OPTIND", "OPTARG", "PPID",
    "PS1", "PS2", "PS4", "ENV", "UID", "EUID", "GID", "LINENO", "SHELLOPTS", "BASHOPTS",
    "BASH_ENV", "CDPATH",
})  # fmt: skip
NOT_PASSABLE_PREFIXES = ("APPTAINER", "SINGULARITY", "_nx_")

#: Host variables every job gets inside the image when they are set, despite
#: ``--cleanenv`` (which keeps only ``TERM`` and the proxy variables):
JOB_ENVVARS = (
    # the GPUs of the allocation (SLURM's gres_common.c sets the first four on every GPU
    # job; without them a program sees every GPU of the node), MPS and shards, and the
    # site/user variables that choose among them
    "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "GPU_DEVICE_ORDINAL",
    "HIP_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY",
    # the rest of the allocation
    "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_SHARDS_ON_NODE",
    "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_ARRAY_TASK_ID",
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU",
    # Snakemake's per-job thread limits (shell.py sets them to the rule's threads; without
    # them every BLAS/OpenMP program starts one thread per core of the node)
    "OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
    # Snakemake's temp dir (the tmpdir resource); the job line also binds $TMPDIR
    "TMPDIR", "TMP", "TEMP", "TEMPDIR",
)  # fmt: skip


def valid_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME and NAME.fullmatch(name) is not None


def check_name(name: object) -> str:
    """``name`` if it is a variable name, else a NixsnakeError (65) saying so."""
    if not valid_name(name):
        raise NixsnakeError(
            f"environment variable name {name!r} is not valid",
            Exit.DATAERR,
            hint="use letters, digits and '_', not starting with a digit",
        )
    return name  # type: ignore[return-value]


def refused_in_env_file(name: str) -> bool:
    upper = name.upper()
    return upper in REFUSED_IN_ENV_FILE or upper.startswith(REFUSED_IN_ENV_FILE_PREFIXES)


def passable(name: str) -> bool:
    return valid_name(name) and name not in NOT_PASSABLE and not name.startswith(NOT_PASSABLE_PREFIXES)
