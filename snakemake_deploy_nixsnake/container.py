"""The path for released Snakemake (9.x), which cannot load software-deployment plugins.

In a Snakefile::

    from snakemake_deploy_nixsnake.container import nixsnake_image

    rule summarize:
        container: nixsnake_image("envs/pandas.toml")

and run ``snakemake --sdm apptainer``. Snakemake evaluates the Snakefile on the head
node (the image is built there, once, into the store) and again inside every cluster
job (where the image must already exist: nothing is built inside a job).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


def nixsnake_image(spec: str | os.PathLike[str], *, workflow_dir: str | os.PathLike[str] | None = None) -> str:
    """Absolute path of the env file's image, building it on the head node if needed.

    Relative ``spec`` paths are taken relative to ``workflow_dir`` (default: the current
    directory, which is where snakemake runs). Errors are raised as snakemake's
    ``WorkflowError`` when snakemake is importable, so they print as one clear message.
    """
    from .deploy import ensure_image, find_image, resolve
    from .slurm import in_slurm_job

    base = Path(workflow_dir) if workflow_dir is not None else Path.cwd()
    path = Path(spec)
    if not path.is_absolute():
        path = base / path
    try:
        cfg = load_config(base)
        if in_slurm_job() or os.environ.get("NIXSNAKE_NO_BUILD"):
            image = find_image(resolve(path, cfg, auto_lock=False), cfg)  # (refuses a tampered image: 77)
            if image is None:
                raise NixsnakeError(
                    f"image for {spec} is missing in {cfg.store}; images are built on the head node, not in jobs",
                    hint=f"run `nixsnake build {spec}` (or snakemake itself) on the head node first",
                )
            return str(image)
        reporter = _StderrReporter(str(spec))
        return str(ensure_image(resolve(path, cfg, reporter=reporter), cfg, reporter=reporter))
    except NixsnakeError as exc:
        try:
            from snakemake_interface_common.exceptions import WorkflowError
        except ImportError:  # pragma: no cover - snakemake always brings it
            raise
        raise WorkflowError(f"nixsnake: {exc}") from None
