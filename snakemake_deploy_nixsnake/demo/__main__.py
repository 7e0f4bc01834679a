"""``python -m snakemake_deploy_nixsnake.demo DEST``: materialize the demo package set at
DEST and print its revisions and the host manifest nix reads (``NIXSNAKE_DEMO_HOST``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import HOST_ENV_VAR, demo_revs, host_manifest, materialize


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m snakemake_deploy_nixsnake.demo DEST", file=sys.stderr)
        return 2
    dest = materialize(Path(argv[0]))
    print(
        json.dumps(
            {"path": os.fspath(dest), "revs": demo_revs(dest), HOST_ENV_VAR: os.fspath(host_manifest())}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
