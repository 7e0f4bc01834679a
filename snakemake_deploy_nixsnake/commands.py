"""The ``nixsnake`` commands (typer). ``cli.py`` is the entry point: it answers
``--version`` and plain ``check`` without importing this module, and turns every
failure into one line and a sysexits code.

Each command imports the parts of nixsnake it needs when it runs (``from .deploy ...``
inside the function): loading all of them costs ~100 ms that ``nixsnake ls`` or
``check`` should not pay.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect as pyinspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from . import __version__, proc
from .config import Config, load_config, setting_help
from .errors import Exit, InternalError, Interrupted, NixsnakeError

# --- help and argument order -------------------------------------------------------------
#
# The help is plain text, written here from each parameter's metavar (what a user types:
# PATH, SRC[:DST[:ro]], ENV.toml...) and help string; flags show no metavar. (Typer's
# own rich help prints Python type names, <bool>, <list[str]>, {specs}, and changes its
# layout between releases.) Parameters are read by duck typing: typer >= 0.29 vendors
# its own copy of click.


def _param_label(p: Any) -> str:
    if p.param_type_name == "argument":
        return _arg_usage(p, bracket=False)
    names = ", ".join([*p.opts, *p.secondary_opts])
    if p.is_flag or p.count:
        return names
    return f"{names} {p.metavar or p.name.upper()}"


def _arg_usage(p: Any, bracket: bool = True) -> str:
    name = p.metavar or p.name.upper()
    if p.nargs != 1 and not name.endswith("..."):
        name += "..."
    return f"[{name}]" if bracket and not p.required else name


def _format_help(cmd: Any, ctx: Any, formatter: Any, commands: list[tuple[str, str]] | None = None) -> None:
    formatter.write_usage(ctx.command_path, " ".join(cmd.collect_usage_pieces(ctx)))
    if cmd.help:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(pyinspect.cleandoc(cmd.help))
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    for title, kind in (("Arguments", "argument"), ("Options", "option")):
        rows = [(_param_label(p), getattr(p, "help", None) or "") for p in params if p.param_type_name == kind]
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)
    if commands:
        with formatter.section("Commands"):
            formatter.write_dl(commands)


class _Command(TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [
            self.options_metavar or "",
            *(_arg_usage(p) for p in self.get_params(ctx) if p.param_type_name == "argument"),
        ]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter)


class _Group(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        cmds = [
            (n, c.get_short_help_str(limit=200)) for n in self.list_commands(ctx) if (c := self.get_command(ctx, n))
        ]
        _format_help(self, ctx, formatter, cmds)


def split_run_args(params: list[Any], args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``nixsnake run``'s words -> (nixsnake's options, its positionals, the command).

    nixsnake's options may come before or after the env file; the command starts after
    ``--``, or else at the first word after the env file, and is passed on verbatim
    (``nixsnake run ENV -- cmd --store x`` gives ``--store x`` to ``cmd``)."""
    takes_value: dict[str, bool] = {}
    for p in params:
        if p.param_type_name == "option":
            for name in (*p.opts, *p.secondary_opts):
                takes_value[name] = not (p.is_flag or p.count)
    opts: list[str] = []
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return opts, pos, args[i + 1 :]
        if a.startswith("-") and a != "-":
            name = a.split("=", 1)[0] if a.startswith("--") else a[:2]
            attached = "=" in a if a.startswith("--") else len(a) > 2
            n = 2 if takes_value.get(name) and not attached else 1
            opts += args[i : i + n]
            i += n
            continue
        if pos:  # the env file is known: the command begins
            return opts, pos, args[i:]
        pos.append(a)
        i += 1
    return opts, pos, []


class _RunCommand(_Command):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        opts, pos, command = split_run_args(self.get_params(ctx), list(args))
        # the env file first: an option missing its value then fails as such
        return super().parse_args(ctx, [*pos, *opts, "--", *command] if command else [*pos, *opts])

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [self.options_metavar or "", "ENV.toml", "[--]", "CMD [ARGS]..."]


app = typer.Typer(
    name="nixsnake",
    cls=_Group,
    help="Date-locked, nix-built SIF images for Snakemake rules.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"max_content_width": 120},
)
command = functools.partial(app.command, cls=_Command)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

SpecArgs = Annotated[
    list[Path], typer.Argument(metavar="ENV.toml...", help="env files, e.g. envs/vep.toml", show_default=False)
]
StoreOpt = Annotated[Path | None, typer.Option("--store", metavar="PATH", help=setting_help("store"))]
SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--nixpkgs-source",
        metavar="SOURCE",
        help=setting_help("nixpkgs_source"),
    ),
]


def _env_files(paths: list[Path]) -> list[Path]:
    from .spec import env_files

    return env_files(paths, lambda note: err.print(note, markup=False))


def _config(**overrides: object) -> Config:
    return load_config().with_overrides(**overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"nixsnake {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version and exit")
    ] = False,
) -> None:
    pass


@command()
def check(specs: SpecArgs) -> None:
    """Validate env files without resolving anything (no network, no nix)."""
    from .spec import load_spec

    for path in _env_files(specs):
        out.print(f"{path}: ok ({load_spec(path).summary()})", markup=False)


@command()
def lock(
    specs: SpecArgs,
    check_only: Annotated[
        bool, typer.Option("--check", help="exit 65 if a lock is missing or stale; write nothing")
    ] = False,
    nixpkgs_source: SourceOpt = None,
) -> None:
    """Resolve each env file's date and write ENV.lock.toml beside it."""
    specs = _env_files(specs)
    from .lock import lock_file, parse_source, read_lock, source_problem, stale_error, stale_reason
    from .spec import load_spec, lock_path_for

    cfg = _config(nixpkgs_source=nixpkgs_source)
    source = parse_source(cfg.nixpkgs_source, update=not check_only) if specs else None
    if check_only:
        stale = []
        for path in specs:
            reason = stale_reason(load_spec(path), path)
            if reason is None and source is not None:
                problem = source_problem(read_lock(path), source)
                reason = f"{lock_path_for(path)}: {problem[0]}: {problem[1]}" if problem else None
            if reason:
                stale.append(reason)
                err.print(f"nixsnake: {stale_error(path, reason)}")
            else:
                out.print(f"{path}: lock is current")
        if stale:
            raise typer.Exit(int(Exit.DATAERR))
        return
    for path in specs:
        with err.status(f"locking {path} ..."):
            lock_path, changed = lock_file(path, cfg, source)
        out.print(f"{lock_path}: {'written' if changed else 'unchanged'}")


class _LiveReporter:
    """Per-env stage + nix log tail, shown in a rich Live table (or plain lines without a TTY)."""

    def __init__(self, name: str, board: dict[str, list[str]], plain: bool):
        self.name, self.board, self.plain = name, board, plain
        board[name] = ["queued", ""]

    def stage(self, message: str) -> None:
        self.board[self.name][0] = message
        if self.plain:
            err.print(f"[{self.name}] {message}", markup=False)

    def log(self, line: str) -> None:
        self.board[self.name][1] = line[-120:]


def _board_table(board: dict[str, list[str]]):
    from rich.table import Table

    t = Table(show_header=True, header_style="bold", box=None)
    t.add_column("env")
    t.add_column("stage")
    t.add_column("nix log", style="dim", overflow="ellipsis", no_wrap=True)
    for name, (stage, line) in board.items():
        t.add_row(name, stage, line)
    return t


@command()
def build(
    specs: SpecArgs,
    store: StoreOpt = None,
    nixpkgs_source: SourceOpt = None,
    compression: Annotated[str | None, typer.Option(metavar="NAME", help=setting_help("compression"))] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", metavar="N", help=setting_help("jobs"))] = None,
) -> None:
    """Build the image of each env file into the store (locks first when there is no lock)."""
    specs = _env_files(specs)
    from concurrent.futures import ThreadPoolExecutor

    from rich.live import Live

    from .deploy import ensure_image, resolve

    cfg = _config(store=store, nixpkgs_source=nixpkgs_source, compression=compression, jobs=jobs)
    board: dict[str, list[str]] = {}
    plain = not err.is_terminal
    reporters = {p: _LiveReporter(str(p), board, plain) for p in specs}
    results: dict[Path, Path] = {}
    failures: list[NixsnakeError] = []

    def one(p: Path) -> None:
        try:
            r = resolve(p, cfg, reporter=reporters[p])
            results[p] = ensure_image(r, cfg, reporter=reporters[p])
            reporters[p].stage("done")
        except Exception as exc:  # every failure reaches the exit code, bugs as 70
            reporters[p].stage("failed")
            failures.append(exc if isinstance(exc, NixsnakeError) else InternalError(exc))

    pool = ThreadPoolExecutor(max_workers=cfg.jobs)
    try:
        futs = [pool.submit(one, p) for p in specs]
        if not plain:
            with Live(_board_table(board), console=err, refresh_per_second=4, transient=True) as live:
                while not all(f.done() for f in futs):
                    live.update(_board_table(board))
                    time.sleep(0.25)
        for fut in futs:
            fut.result()  # (one() catches everything; this re-raises only KeyboardInterrupt & co.)
    except KeyboardInterrupt:  # the workers stop at their next step and clean up
        proc.interrupt()
        raise Interrupted() from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for p in specs:
        if p in results:
            out.print(f"{p}: {results[p]}")
    if failures:
        worst = max(failures, key=lambda e: int(e.code))
        for f in failures:
            if f is not worst:
                err.print(f"nixsnake: {f}", markup=False)
        raise worst


def _warn(lines: list[str]) -> None:
    for line in lines:
        err.print(f"nixsnake: warning: {line}", markup=False)


@command("ls")
def list_images(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the images in the store: id, size, env files, last use (each image checked)."""
    from rich.table import Table

    from .store import Store

    cfg = _config(store=store)
    st = Store(cfg.store)
    st.check()
    listing = st.listing()
    _warn(listing.problems)
    entries = listing.entries
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "id": e.id,
                        "path": str(e.path),
                        "size": e.size,
                        "last_used": dt.datetime.fromtimestamp(e.last_used, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "env_files": list(e.meta.env_files) if e.meta else [],
                        "date": e.meta.date if e.meta else None,
                        "built_at": e.meta.built_at if e.meta else None,
                    }
                    for e in entries
                ]
            )
        )
        return
    t = Table(title=f"images in {cfg.store}", box=None)
    for col in ("id", "size", "last used", "date", "env files"):
        t.add_column(col)
    for e in entries:
        t.add_row(
            e.id[:16],
            f"{e.size / 2**20:.1f} MiB",
            dt.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M"),
            (e.meta.date if e.meta else "") or "?",
            ", ".join(e.meta.env_files if e.meta else ()),
        )
    out.print(t)


def _workflow_image_ids(wf: Path) -> set[str]:
    """The images a workflow directory uses: one per locked env file under it.

    Anything doubtful stops gc before it removes anything (exit 65/66): a directory that
    does not exist or holds no locked env file (a typo would otherwise mark every image
    unused), and a stale lock (which image that workflow will want is not known)."""
    from .config import load_config
    from .deploy import resolve
    from .spec import lock_path_for

    if not wf.is_dir():
        raise NixsnakeError(
            f"--keep-workflow {wf}: no such directory; nothing was removed",
            Exit.NOINPUT,
            "give the directory of a workflow",
        )
    wf_cfg = load_config(wf)  # ids depend on that workflow's settings (compression)
    specs = [p for p in sorted(wf.rglob("*.toml")) if not p.name.endswith(".lock.toml") and lock_path_for(p).exists()]
    if not specs:
        raise NixsnakeError(
            f"--keep-workflow {wf}: no locked env file (ENV.toml beside ENV.lock.toml) in it; nothing was removed",
            Exit.NOINPUT,
            "give the directory of a workflow whose env files are locked",
        )
    return {resolve(p, wf_cfg, auto_lock=False).image_id for p in specs}


@command()
def gc(
    store: StoreOpt = None,
    older_than: Annotated[
        float | None, typer.Option("--older-than", metavar="DAYS", help="remove images not used for this many days")
    ] = None,
    keep_workflow: Annotated[
        list[Path] | None,
        typer.Option(
            "--keep-workflow",
            metavar="DIR",
            help="workflow dir whose env files' images are kept; others are removed (repeatable)",
        ),
    ] = None,
    damaged: Annotated[
        bool,
        typer.Option("--damaged", help="remove images whose bytes differ from what was published (reads every image)"),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="only show what would be removed")] = False,
) -> None:
    """Remove unused images. Never removes one being built or used in the last hour."""
    from .store import Store

    if older_than is None and not keep_workflow and not damaged:
        raise NixsnakeError(
            "nothing to select", Exit.DATAERR, "give --older-than DAYS, --keep-workflow DIR and/or --damaged"
        )
    cfg = _config(store=store)
    keep = {i for wf in keep_workflow or () for i in _workflow_image_ids(wf)} if keep_workflow else None
    st = Store(cfg.store)
    st.check()
    removed, problems = st.gc(older_than_days=older_than, keep_ids=keep, dry_run=dry_run, damaged=damaged)
    _warn(problems)
    for e in removed:
        out.print(f"{'would remove' if dry_run else 'removed'} {e.path} ({e.size / 2**20:.1f} MiB)")
    out.print(f"{len(removed)} image(s) {'selected' if dry_run else 'removed'}")


@command()
def verify(
    images: Annotated[
        list[str] | None,
        typer.Argument(metavar="IMAGE_ID...", help="image ids (default: every image in the store)", show_default=False),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Compare every byte of images with the sha256 recorded when they were published."""
    from .store import Store

    cfg = _config(store=store)
    st = Store(cfg.store)
    st.check()
    listing = st.listing()
    ids = images or [e.id for e in listing.entries]
    bad = list(listing.problems) if not images else []
    for image_id in ids:
        why = st.verify(image_id)
        if why is None:
            out.print(f"{image_id}: ok")
        else:
            bad.append(f"{image_id}: {why}")
    _warn(bad)
    if bad:
        raise NixsnakeError(
            f"{len(bad)} image(s) failed verification", Exit.NOPERM, "remove them (`nixsnake gc --damaged`) and rebuild"
        )
    out.print(f"{len(ids)} image(s) verified")


@command()
def inspect(
    image: Annotated[
        Path, typer.Argument(metavar="IMAGE.sif|ENV.toml", help="a .sif image, or an env file (its image in the store)")
    ],
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the image's metadata as JSON")] = False,
) -> None:
    """Show what is in an image (image id, lock, store paths), without starting it."""
    from .image.sif import check_layout

    cfg = _config(store=store)
    path = image
    if image.suffix == ".toml":
        from .deploy import resolve
        from .store import Store

        r = resolve(image, cfg, auto_lock=False)
        st = Store(cfg.store)
        st.check()
        path = st.image_path(r.image_id)
        if os.path.lexists(path):
            st.check_image(path, r.image_id)  # owner, mode, layout, embedded id
    if not path.exists():
        raise NixsnakeError(f"{path}: no such image", Exit.NOINPUT, "build it with `nixsnake build ENV.toml`")
    info = check_layout(path)
    if as_json:
        out.print_json(json.dumps(info.metadata))
        return
    from .image.metadata import ImageMetadata

    try:
        meta = ImageMetadata.from_dict(info.metadata)
    except ValueError as exc:
        raise NixsnakeError(
            f"{path}: not a nixsnake image ({exc})", Exit.DATAERR, "rebuild it with `nixsnake build ENV.toml`"
        ) from None
    nixpkgs = meta.lock.get("nixpkgs", {})
    out.print(f"[bold]{path}[/bold]", markup=True)
    out.print(f"  image id     {meta.image_id}   date {meta.env.get('date')}")
    out.print(f"  nixpkgs      {nixpkgs.get('branch')} @ {nixpkgs.get('rev')}")
    for w in meta.lock.get("wheels", []):
        out.print(f"  python       {w['name']}=={w['version']}")
    for p in meta.env.get("nixpkgs", {}).get("packages", []):
        out.print(f"  nixpkgs pkg  {p}")
    out.print(
        f"  store paths  {len(meta.store_paths)}; squashfs {info.partition_size / 2**20:.1f} MiB at offset {info.partition_offset}"
    )
    out.print(f"  format       image format {meta.image_format}, {meta.compression}")


RuntimeOpt = Annotated[str | None, typer.Option("--runtime", metavar="NAME", help=setting_help("runtime"))]
GpuOpt = Annotated[str | None, typer.Option("--gpu", metavar="MODE", help=setting_help("gpu"))]
BindOpt = Annotated[
    list[str] | None, typer.Option("--bind", "-B", metavar="SRC[:DST[:ro]]", help="an extra bind (repeatable)")
]


def _run_request(spec_path: Path, cfg: Config, binds: list[str] | None):
    """The image (built if needed) and how to run it, for `nixsnake run` / `shell`."""
    from .deploy import ensure_image, resolve, run_request

    reporter = _LiveReporter(str(spec_path), {}, True)
    r = resolve(spec_path, cfg, reporter=reporter)
    image = ensure_image(r, cfg, reporter=reporter)
    return run_request(r, image, cfg, workdir=Path.cwd().absolute(), extra_binds=binds or ())


def _require_runtime(cfg: Config) -> None:
    """The runtime is checked before the image is even looked up: a missing apptainer is
    a clear 69, not a shell's "exec: apptainer: not found" (127) from the job line."""
    from .errors import ToolMissingError
    from .proc import require, which

    if cfg.runtime == "bwrap":
        require("bwrap")
        require("squashfuse")
    elif cfg.runtime_bin and not which(cfg.runtime_bin):
        raise ToolMissingError(
            cfg.runtime_bin,
            f"the runtime_bin setting names it: fix the path, or unset it to use {cfg.runtime} from PATH",
        )
    else:
        require(cfg.runtime_bin or cfg.runtime)


def _exec(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        from .proc import INSTALL_HINTS

        raise NixsnakeError(
            f"required tool '{argv[0]}' not found",
            Exit.UNAVAILABLE,
            INSTALL_HINTS.get(Path(argv[0]).name, "install it, or use --runtime bwrap"),
        ) from None


@app.command(cls=_RunCommand)
def run(
    spec: Annotated[Path, typer.Argument(metavar="ENV.toml", help="env file")],
    command: Annotated[
        list[str], typer.Argument(metavar="CMD [ARGS]...", help="the command, after -- or after ENV.toml")
    ],
    store: StoreOpt = None,
    runtime: RuntimeOpt = None,
    gpu: GpuOpt = None,
    bind: BindOpt = None,
) -> None:
    """Run a command inside the env's image (built first if needed).

    Options go anywhere before the command. The command starts after -- (or at the
    first word after ENV.toml) and gets every word after it as it is, options included:

    \b
      nixsnake run envs/x.toml --store /shared/nixsnake -- python -c 'print(1)'
    """
    from .runtime import exec_argv

    cfg = _config(store=store, runtime=runtime, gpu=gpu)
    _require_runtime(cfg)
    _exec(exec_argv(_run_request(spec, cfg, bind), command))


@command()
def shell(
    spec: Annotated[Path, typer.Argument(metavar="ENV.toml", help="env file")],
    store: StoreOpt = None,
    runtime: RuntimeOpt = None,
    gpu: GpuOpt = None,
    bind: BindOpt = None,
) -> None:
    """Start an interactive shell inside the env's image (built first if needed)."""
    from .runtime import shell_argv

    cfg = _config(store=store, runtime=runtime, gpu=gpu)
    _require_runtime(cfg)
    _exec(shell_argv(_run_request(spec, cfg, bind)))


@command()
def doctor(
    specs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="ENV.toml...",
            help="env files: also check that the nix here can evaluate their nixpkgs",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    runtime: RuntimeOpt = None,
    nixpkgs_source: SourceOpt = None,
    slurm_partition: Annotated[
        str | None,
        typer.Option("--slurm-partition", metavar="NAME", help="also run a short job there to check the compute nodes"),
    ] = None,
) -> None:
    """Check this site: nix (and, per env file, its nixpkgs' minimum Nix), store, runtime,
    squashfuse, SLURM/GPU partitions, glibc."""
    from rich.markup import escape
    from rich.table import Table

    from .doctor import run_checks

    cfg = _config(store=store, runtime=runtime, nixpkgs_source=nixpkgs_source)
    checks = run_checks(cfg, slurm_partition, _env_files(specs or []))
    t = Table(box=None, show_header=True, header_style="bold")
    t.add_column("check")
    t.add_column("status")
    t.add_column("detail", overflow="fold")
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for c in checks:  # (names and details are text, not markup: "[nixpkgs] rev" stays)
        t.add_row(escape(c.name), f"[{colour[c.status]}]{c.status}[/]", escape(c.detail))
    out.print(t)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        out.print(f"{len(failed)} check(s) failed")
        raise typer.Exit(int(Exit.UNAVAILABLE))
    out.print("all needed checks passed")
