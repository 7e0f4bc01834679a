"""The path for released Snakemake (9.x), which cannot load software-deployment plugins.

In a Snakefile::

    from snakemake_deploy_nixsnake.container import nixsnake_image

    rule summarize:
        container: nixsnake_image("envs/pandas.toml")

and run ``snakemake --sdm apptainer``. Snakemake evaluates the Snakefile on the head
node (the image is built there, once, into the store) and again inside every cluster
job (where the image must already exist: nothing is built inside a job).

``nixsnake_container("envs/x.toml", workflow)`` is the same, called later: Snakemake
calls it while it builds the DAG, when it knows whether this is a dry run. ``snakemake
-n`` then builds nothing, and only the images of rules that have jobs are built.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import load_config
from .errors import NixsnakeError


class _StderrReporter:
    """Build stages on stderr: Snakemake is still parsing the Snakefile and prints nothing."""

    def __init__(self, name: str):
        self.name = name

    def stage(self, message: str) -> None:
        print(f"nixsnake [{self.name}]: {message}", file=sys.stderr, flush=True)

    def log(self, line: str) -> None:
        pass


def nixsnake_image(
    spec: str | os.PathLike[str], *, workflow_dir: str | os.PathLike[str] | None = None, build: bool = True
) -> str:
    """Absolute path of the env file's image, building it on the head node if needed.

    Relative ``spec`` paths are taken relative to ``workflow_dir`` (default: the current
    directory, which is where snakemake runs). ``build=False`` (a dry run) never builds
    nor locks: it returns the path the image has, or will have once built, and needs the
    env file's lock. Errors are raised as snakemake's ``WorkflowError`` when snakemake is
    importable, so they print as one clear message.
    """
    from .deploy import ensure_image, find_image, resolve
    from .slurm import in_slurm_job
    from .store import Store

    base = Path(workflow_dir) if workflow_dir is not None else Path.cwd()
    path = Path(spec)
    if not path.is_absolute():
        path = base / path
    try:
        cfg = load_config(base)
        if not build or in_slurm_job() or os.environ.get("NIXSNAKE_NO_BUILD"):  # only look the image up
            r = resolve(path, cfg, auto_lock=False)
            image = find_image(r, cfg)  # (refuses a tampered image: 77)
            if image is not None:
                return str(image)
            if not build:
                image = Store(cfg.store).image_path(r.image_id)
                _StderrReporter(str(spec)).stage(f"dry run: not building the image (it will be {image})")
                return str(image)
            raise NixsnakeError(
                f"image for {spec} is missing in {cfg.store}; images are built on the head node, not in jobs",
                hint=f"run `nixsnake build {spec}` (or snakemake itself) on the head node first",
            )
        reporter = _StderrReporter(str(spec))
        return str(ensure_image(resolve(path, cfg, reporter=reporter), cfg, reporter=reporter))
    except NixsnakeError as exc:
        try:
            from snakemake_interface_common.exceptions import WorkflowError
        except ImportError:  # pragma: no cover - snakemake always brings it
            raise
        raise WorkflowError(f"nixsnake: {exc}") from None


def nixsnake_container(spec: str | os.PathLike[str], workflow: Any) -> Callable[..., str]:
    """For ``container:``: a function of the job's wildcards that Snakemake calls while it
    builds the DAG (``workflow`` is the Snakefile's ``workflow`` object).

    At that point Snakemake knows whether this is a dry run, which it does not while it
    parses the Snakefile (where :func:`nixsnake_image` runs). So: ``snakemake -n`` builds
    nothing and names the path each image has or will have; a real run builds the missing
    images of the rules that have jobs, on the head node, before the first job starts;
    inside a cluster job the image is only looked up. The answer is computed once per
    process and env file, however many jobs and rules use it.
    """
    basedir = str(workflow.basedir)

    def container(wildcards: Any) -> str:
        key = (basedir, os.fspath(spec), not workflow.dryrun)
        if key not in _answers:
            _answers[key] = nixsnake_image(spec, workflow_dir=basedir, build=key[2])
        return _answers[key]

    return container


#: (workflow dir, env file, build?) -> image path, for nixsnake_container
_answers: dict[tuple[str, str, bool], str] = {}
