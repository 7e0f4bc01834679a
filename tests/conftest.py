from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_cli():
    """Run the real ``nixsnake`` CLI in a subprocess (exit codes and stderr as users see them)."""

    def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900):
        return subprocess.run(
            [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", *args],
            capture_output=True, text=True, env={**os.environ, **(env or {})} if env is not None else None,
            cwd=cwd, timeout=timeout,
        )

    return _run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own nixsnake cache (no state from the developer's home)."""
    cache = tmp_path_factory.getbasetemp() / "nixsnake-cache"
    monkeypatch.setenv("NIXSNAKE_CACHE_DIR", str(cache))
    monkeypatch.setenv("NIXSNAKE_CONFIG", str(cache / "no-user-config.toml"))


def pytest_collection_modifyitems(config, items):
    if not shutil.which("nix-build"):
        skip = pytest.mark.skip(reason="nix is not installed on this machine (apt-get install nix-bin)")
        for item in items:
            if "nix" in item.keywords:
                item.add_marker(skip)
