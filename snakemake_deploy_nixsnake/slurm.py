"""What nixsnake needs to know about the SLURM cluster it runs on.

Two questions only: *am I inside a job?* (builds are forbidden there: images are built
on the head node and only *run* on compute nodes) and *which partitions have GPUs?*
(``doctor`` reports them, and runs its GPU check job on one).

Backends
--------
``CliBackend`` (always available where the SLURM client tools are installed)
    Parses ``scontrol show node -o`` and ``scontrol show partition -o``. The
    ``Key=Value`` one-liner format has been stable for a long time; it is tested here on
    real output of Slurm 22.05 (Debian 12) and is expected to work from about Slurm 17.11
    (when ``AvailableFeatures``/``Partitions`` took their current names) through 25.x.
    ``scontrol`` talks to slurmctld with the cluster's own client library, so there is
    no version coupling with Python at all. This is the default.
``PyslurmBackend`` (optional extra ``nixsnake[slurm]``)
    Used when ``import pyslurm`` works and offers the object API (``pyslurm.Nodes`` /
    ``pyslurm.Partitions``, pyslurm >= 23.2). pyslurm is built against one Slurm release
    (pyslurm X.Y.* needs Slurm X.Y: pyslurm 23.2 -> Slurm 23.02, ..., 25.11 -> Slurm
    25.11), so it only exists on sites that built it for their Slurm. It cannot be built
    against Debian 12's Slurm 22.05, which is why the CLI backend is the default path and
    the one the test rig exercises. Any failure of pyslurm at load time falls back to
    the CLI backend.

All parsing is in pure functions (:func:`parse_scontrol_oneliner`, :func:`parse_gres`,
:func:`expand_hostlist`, :func:`nodes_from_records`, :func:`partitions_from_records`)
so they are unit-tested on captured real output; subprocess calls go through
:mod:`.proc`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from . import proc
from .errors import Exit, NixsnakeError

__all__ = [
    "CliBackend",
    "ClusterInfo",
    "Node",
    "Partition",
    "PyslurmBackend",
    "cluster_info",
    "expand_hostlist",
    "gpu_partitions",
    "in_slurm_job",
    "job_context",
    "nodes_from_records",
    "parse_gres",
    "parse_scontrol_oneliner",
    "partitions_from_records",
]

#: How long one scontrol call may take before we call the controller unreachable.
SCONTROL_TIMEOUT = 30.0

_NO_SLURM_HINT = (
    "nixsnake could not reach a SLURM controller: run it on a cluster login node with the "
    "SLURM client tools (scontrol) on PATH and a reachable slurmctld, or do not use the "
    "SLURM-specific features"
)


# --------------------------------------------------------------------------------------
# Am I inside a job?
# --------------------------------------------------------------------------------------

JobContext = Literal["none", "allocation", "job"]


def job_context(env: Mapping[str, str] | None = None) -> JobContext:
    """Classify where this process runs, from its environment.

    ``"job"``
        Started by slurmd: a batch script, a job step (``srun``), or the interactive step
        of ``salloc`` when the site sets ``LaunchParameters=use_interactive_step``. slurmd
        sets ``SLURMD_NODENAME`` for all of these (seen on Slurm 22.05 for both batch
        scripts and steps; see tests/data/slurm/env_*.txt).
    ``"allocation"``
        ``SLURM_JOB_ID`` is set but slurmd did not start us: the shell that plain
        ``salloc`` opens *on the submit host* (it exports ``SLURM_JOB_ID`` and the node
        list, but not ``SLURMD_NODENAME``/``SLURM_PROCID``/``SLURM_TASK_PID``), or a
        variable left exported by hand.
    ``"none"``
        No ``SLURM_JOB_ID`` (nor the legacy ``SLURM_JOBID``).
    """
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return "none"
    if env.get("SLURMD_NODENAME"):
        return "job"
    return "allocation"


def in_slurm_job(env: Mapping[str, str] | None = None) -> bool:
    """True when this process runs inside a SLURM job on a compute node (see :func:`job_context`).

    Decision: the shell of a plain ``salloc`` on the head/login node is **not** "in a
    job". It sets ``SLURM_JOB_ID``, but the process runs on the login node, outside the
    job's cgroup, with the login node's nix store: the same place a build would run
    without ``salloc``. Builds are forbidden inside jobs because a compute node is the
    wrong place (no shared writable store, resources billed to the job, many jobs racing
    to build the same image); none of that applies to that shell. Everything slurmd
    starts (batch script, ``srun`` steps, ``use_interactive_step`` shells) is a job.
    """
    return job_context(env) == "job"


# --------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------

#: Node state words that mean "do not expect jobs to start here now".
_UNUSABLE_STATE_WORDS = frozenset(
    {
        "DOWN",
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "FAIL",
        "FAILING",
        "FUTURE",
        "NOT_RESPONDING",
        "POWERED_DOWN",
        "POWER_DOWN",
        "INVALID_REG",
        "MAINTENANCE",
        "REBOOT_ISSUED",
        "INVAL",
    }
)


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    state: str  # as SLURM prints it, e.g. "IDLE", "MIXED+DRAIN", "DOWN*+NOT_RESPONDING"
    cpus: int
    gres: tuple[str, ...]  # configured GRES entries, e.g. ("gpu:a100:4", "shard:8")
    gpus: int  # total configured GPUs (all gpu types)

    @property
    def usable(self) -> bool:
        """False when the node is down, drained, failing, powered down or not responding."""
        # "DOWN*+NOT_RESPONDING": words joined by "+", each may carry a one-character
        # flag suffix in sinfo-style output ("*" not responding, "~" powered off, ...).
        words = {w.strip().rstrip("*~#!%$@^-") for w in self.state.upper().split("+")}
        return not (words & _UNUSABLE_STATE_WORDS)


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...]
    default: bool
    gpu_nodes: tuple[str, ...]  # the partition's nodes with at least one configured GPU


class ClusterInfo(Protocol):
    def nodes(self) -> list[Node]: ...

    def partitions(self) -> list[Partition]: ...


# --------------------------------------------------------------------------------------
# Pure parsers
# --------------------------------------------------------------------------------------

# A key starts a line or follows whitespace, starts with an upper-case letter and may hold
# letters, digits, "_", "/" and ":" (job records have "Socks/Node=" and "ReqB:S:C:T=").
# Values may contain spaces (OS=Linux 6.1.0 #1 SMP ..., Reason=Not responding [...]) and
# "=" (CfgTRES=cpu=2,mem=...), so a value runs until the next such key.
_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_/:]*)=")

_NULLS = frozenset({"", "(null)", "N/A", "NONE", "(NULL)"})


def parse_scontrol_oneliner(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show <entity> [-o]`` output into one dict per record.

    Accepts both the one-liner format (``-o``: one record per line) and the default
    multi-line format (a record's continuation lines are indented; records are separated
    by blank lines). Values are stripped of surrounding blanks and kept as strings;
    "(null)" is kept verbatim (the typed layer maps it to "nothing"). Lines that are not
    records ("No nodes in the system") are ignored.

    Known limit: a free-text value (Reason=, Comment=) that itself contains
    " Word=" would be split there; no field nixsnake reads is affected.
    """
    records: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        if not raw.strip():
            if current:
                records.append(" ".join(current))
                current = []
            continue
        if raw[:1].isspace() and current:
            current.append(raw.strip())
        else:
            if current:
                records.append(" ".join(current))
            current = [raw.strip()]
    if current:
        records.append(" ".join(current))

    out: list[dict[str, str]] = []
    for rec in records:
        matches = list(_KEY_RE.finditer(rec))
        if not matches or matches[0].start() != 0:
            continue  # not a Key=Value record
        fields: dict[str, str] = {}
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(rec)
            fields[m.group(1)] = rec[m.end() : end].strip()
        out.append(fields)
    return out


def _split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside () and [] brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(s):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


_COUNT_RE = re.compile(r"^(\d+)([KMGTP]?)$", re.IGNORECASE)
_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_gres(s: str) -> tuple[tuple[str, ...], int]:
    """Parse a node's GRES string; return its entries and the number of GPUs.

    ``"gpu:2,gpu:a100:4(S:0-1),shard:8"`` -> ``(("gpu:2", "gpu:a100:4", "shard:8"), 6)``.

    Entries are ``name[:type][:count]``; the socket/index annotation in parentheses
    (``(S:0-1)``, ``(IDX:0,2)``) is dropped, a ``gres:`` prefix (some tools print it) is
    removed, a missing count means 1, and counts may carry SLURM's 1024-based suffixes
    (``mps:1K``). GPUs are the entries named exactly ``gpu`` (``shard`` and ``mps``
    split GPUs; they are not more GPUs). ``""``, ``"(null)"`` and ``"N/A"`` mean no GRES.
    Raises ``NixsnakeError(DATAERR)`` on an entry that is not GRES syntax.
    """
    s = (s or "").strip()
    if s in _NULLS:
        return (), 0
    entries: list[str] = []
    gpus = 0
    for item in _split_top_level(s):
        # drop a trailing "(S:0-1)" / "(IDX:0,2)" annotation, but not a "(null)" type
        base = re.sub(r"\((?!null\))[^()]*\)\s*$", "", item).strip()
        if base.startswith("gres:"):
            base = base[len("gres:") :]
        elif base.startswith("gres/"):
            base = base[len("gres/") :]
        parts = base.split(":")
        name = parts[0]
        if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or len(parts) > 3:
            raise NixsnakeError(f"cannot parse GRES entry {item!r} in {s!r}", Exit.DATAERR)
        count = 1
        typ: str | None = None
        if len(parts) >= 2:
            m = _COUNT_RE.match(parts[-1])
            if m:
                count = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
                if len(parts) == 3:
                    typ = parts[1]
            elif len(parts) == 2:
                typ = parts[1]
            else:
                raise NixsnakeError(f"cannot parse GRES count in {item!r}", Exit.DATAERR)
        if typ in ("(null)", ""):
            typ = None
        entries.append(f"{name}:{typ}:{count}" if typ else f"{name}:{count}")
        if name == "gpu":
            gpus += count
    return tuple(entries), gpus


def expand_hostlist(expr: str) -> tuple[str, ...]:
    """Expand a SLURM hostlist expression: ``"gpu[01-03,07],cn-[1-2]-ib"`` -> names.

    Zero padding is kept (``[01-03]`` -> 01, 02, 03); several bracket groups in one
    name expand as a product (``r[1-2]n[1-2]``). ``"(null)"``/empty -> ().
    """
    expr = (expr or "").strip()
    if expr in _NULLS:
        return ()
    out: list[str] = []
    for part in _split_top_level(expr):
        out.extend(_expand_one(part))
    return tuple(dict.fromkeys(out))  # keep order, drop duplicates


def _expand_one(name: str) -> list[str]:
    lb = name.find("[")
    if lb < 0:
        return [name]
    rb = name.find("]", lb)
    if rb < 0:
        raise NixsnakeError(f"unbalanced '[' in hostlist {name!r}", Exit.DATAERR)
    prefix, body, rest = name[:lb], name[lb + 1 : rb], name[rb + 1 :]
    tails = _expand_one(rest)
    heads: list[str] = []
    for rng in body.split(","):
        rng = rng.strip()
        if "-" in rng:
            lo, hi = rng.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise NixsnakeError(f"bad range {rng!r} in hostlist {name!r}", Exit.DATAERR)
            width = len(lo) if lo.startswith("0") else 0
            heads.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
        elif rng:
            heads.append(prefix + rng)
    return [h + t for h in heads for t in tails]


def _csv(value: str | None) -> tuple[str, ...]:
    value = (value or "").strip()
    if value in _NULLS:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return default


def nodes_from_records(records: Iterable[Mapping[str, str]]) -> list[Node]:
    """Typed nodes from ``scontrol show node`` records (see :func:`parse_scontrol_oneliner`)."""
    nodes: list[Node] = []
    for r in records:
        name = r.get("NodeName", "").strip()
        if not name:
            continue
        gres, gpus = parse_gres(r.get("Gres", ""))
        nodes.append(
            Node(
                name=name,
                partitions=_csv(r.get("Partitions")),
                state=r.get("State", "UNKNOWN").strip() or "UNKNOWN",
                cpus=_int(r.get("CPUTot")),
                gres=gres,
                gpus=gpus,
            )
        )
    return nodes


def _yes(value: str | None) -> bool:
    return (value or "").strip().upper() in ("YES", "TRUE", "1")


def partitions_from_records(records: Iterable[Mapping[str, str]], nodes: Iterable[Node]) -> list[Partition]:
    """Typed partitions from ``scontrol show partition`` records, joined with ``nodes``.

    A partition's nodes are its ``Nodes=`` hostlist expanded (``ALL`` = every node),
    plus any node whose own ``Partitions=`` names it, in node-list order.
    """
    node_list = list(nodes)
    by_name = {n.name: n for n in node_list}
    parts: list[Partition] = []
    for r in records:
        name = r.get("PartitionName", "").strip()
        if not name:
            continue
        spec = r.get("Nodes", "").strip()
        if spec.upper() == "ALL":
            members = [n.name for n in node_list]
        else:
            members = list(expand_hostlist(spec))
        members += [n.name for n in node_list if name in n.partitions and n.name not in members]
        gpu_nodes = tuple(m for m in members if m in by_name and by_name[m].gpus > 0)
        parts.append(Partition(name=name, nodes=tuple(members), default=_yes(r.get("Default")), gpu_nodes=gpu_nodes))
    return parts


def gpu_partitions(info: ClusterInfo, *, usable_only: bool = False) -> list[Partition]:
    """Partitions with at least one node that has a configured GPU.

    With ``usable_only``, a GPU node only counts when it is not down/drained/failing
    (see :attr:`Node.usable`); a partition's ``gpu_nodes`` are then filtered the same way.
    """
    parts = info.partitions()
    if not usable_only:
        return [p for p in parts if p.gpu_nodes]
    usable = {n.name for n in info.nodes() if n.usable}
    out: list[Partition] = []
    for p in parts:
        ok = tuple(n for n in p.gpu_nodes if n in usable)
        if ok:
            out.append(Partition(p.name, p.nodes, p.default, ok))
    return out


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


class _CachedInfo:
    """nodes()/partitions() from one refresh(), so a caller sees one consistent snapshot."""

    _nodes: list[Node] | None = None
    _parts: list[Partition] | None = None

    def refresh(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def nodes(self) -> list[Node]:
        if self._nodes is None:
            self.refresh()
        assert self._nodes is not None
        return list(self._nodes)

    def partitions(self) -> list[Partition]:
        if self._parts is None:
            self.refresh()
        assert self._parts is not None
        return list(self._parts)


class CliBackend(_CachedInfo):
    """Cluster facts from ``scontrol show {node,partition} -o`` (any recent Slurm).

    Results are loaded once and cached; call :meth:`refresh` to reload.
    """

    name = "scontrol"

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = SCONTROL_TIMEOUT):
        self._env = env
        self._timeout = timeout
        self._nodes: list[Node] | None = None
        self._parts: list[Partition] | None = None

    def _run(self, *args: str) -> proc.Result:
        exe = proc.which("scontrol", self._env)
        if exe is None:
            raise NixsnakeError("SLURM's 'scontrol' is not on PATH", Exit.UNAVAILABLE, _NO_SLURM_HINT)
        return proc.run(
            [exe, *args],
            env=self._env,
            timeout=self._timeout,
            what=f"scontrol {' '.join(args)}",
            code=Exit.UNAVAILABLE,
            check=False,
        )

    def _scontrol(self, *args: str) -> str:
        res = self._run(*args)
        if res.returncode != 0:
            raise NixsnakeError(
                f"scontrol {' '.join(args)} failed (exit {res.returncode}): {proc.tail(res.stderr or res.stdout, 3)}",
                Exit.UNAVAILABLE,
                _NO_SLURM_HINT,
            )
        return res.stdout

    def ping(self) -> None:
        """Raise ``NixsnakeError(UNAVAILABLE)`` unless a slurmctld answers.

        ``scontrol ping`` prints "Slurmctld(primary) at HOST is UP" (exit 0), or "... is
        DOWN" plus a banner (exit 1) when no controller answers.
        """
        res = self._run("ping")
        text = (res.stdout + "\n" + res.stderr).strip()
        if res.returncode != 0 or not re.search(r"\bis UP\b", text):
            status = [ln.strip() for ln in text.splitlines() if ln.lstrip().startswith("Slurmctld(")]
            shown = "; ".join(status) or proc.tail(text, 3) or f"exit {res.returncode}"
            raise NixsnakeError(f"no SLURM controller is up ({shown})", Exit.UNAVAILABLE, _NO_SLURM_HINT)

    def refresh(self) -> None:
        self._nodes = nodes_from_records(parse_scontrol_oneliner(self._scontrol("show", "node", "-o")))
        self._parts = partitions_from_records(
            parse_scontrol_oneliner(self._scontrol("show", "partition", "-o")), self._nodes
        )


def _gres_dict_to_str(gres: Any) -> str:
    """pyslurm's ``configured_gres`` ({"gpu:a100": 4} or a raw string) -> GRES string."""
    if not gres:
        return ""
    if isinstance(gres, str):
        return gres
    items = []
    for key, val in dict(gres).items():
        if isinstance(val, Mapping):
            val = val.get("count", 1)
        items.append(f"{key}:{int(val)}")
    return ",".join(items)


def _values(collection: Any) -> list[Any]:
    """pyslurm collections are lists (23.2) or cluster-keyed maps (>= 23.11)."""
    if hasattr(collection, "values") and callable(collection.values):
        return list(collection.values())
    return list(collection)


class PyslurmBackend(_CachedInfo):
    """Cluster facts through pyslurm's object API (pyslurm >= 23.2, same Slurm release)."""

    name = "pyslurm"

    def __init__(self, module: Any = None):
        if module is None:
            import pyslurm  # optional: only where a site built it for its Slurm

            module = pyslurm
        if not (hasattr(module, "Nodes") and hasattr(module, "Partitions")):
            raise NixsnakeError(
                "this pyslurm has no Nodes/Partitions API (needs pyslurm >= 23.2)",
                Exit.UNAVAILABLE,
            )
        self._m = module
        self._nodes: list[Node] | None = None
        self._parts: list[Partition] | None = None

    def refresh(self) -> None:
        try:
            raw_nodes = _values(self._m.Nodes.load())
            raw_parts = _values(self._m.Partitions.load())
        except Exception as exc:  # pyslurm.RPCError and friends
            raise NixsnakeError(
                f"pyslurm could not load cluster state: {exc}", Exit.UNAVAILABLE, _NO_SLURM_HINT
            ) from exc
        nodes: list[Node] = []
        for n in raw_nodes:
            gres, gpus = parse_gres(_gres_dict_to_str(getattr(n, "configured_gres", None)))
            nodes.append(
                Node(
                    name=str(n.name),
                    partitions=tuple(getattr(n, "partitions", None) or ()),
                    state=str(getattr(n, "state", "UNKNOWN") or "UNKNOWN"),
                    cpus=int(getattr(n, "total_cpus", 0) or 0),
                    gres=gres,
                    gpus=gpus,
                )
            )
        records = [
            {
                "PartitionName": str(p.name),
                "Nodes": str(getattr(p, "nodes", "") or ""),
                "Default": "YES" if getattr(p, "is_default", False) else "NO",
            }
            for p in raw_parts
        ]
        self._nodes = nodes
        self._parts = partitions_from_records(records, nodes)


def cluster_info(env: Mapping[str, str] | None = None) -> ClusterInfo:
    """The best available backend, checked to reach a controller.

    pyslurm first (if importable, with the object API, and able to load the cluster
    state), else ``scontrol``. Raises ``NixsnakeError(Exit.UNAVAILABLE)`` with a hint when
    neither works (no SLURM tools, or no controller answering).
    """
    try:
        import pyslurm
    except Exception:  # ImportError, or a pyslurm built for another libslurm
        pyslurm = None
    if pyslurm is not None:
        try:
            backend = PyslurmBackend(pyslurm)
            backend.refresh()
            return backend
        except NixsnakeError:
            pass  # fall back to the CLI, which uses the cluster's own client
    if proc.which("scontrol", env) is None:
        raise NixsnakeError("SLURM's 'scontrol' is not on PATH", Exit.UNAVAILABLE, _NO_SLURM_HINT)
    cli = CliBackend(env)
    cli.ping()
    return cli
