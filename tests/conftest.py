from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import nix_options_toml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_cli():
    """Run the real ``nixsnake`` CLI in a subprocess (exit codes and stderr as users see them)."""

    def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900):
        return subprocess.run(
            [sys.executable, "-m", "snakemake_deploy_nixsnake.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})} if env is not None else None,
            cwd=cwd,
            timeout=timeout,
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


PY_ENV = """date = 2024-06-01
[nixpkgs]
packages = ["hello"]
[python]
version = "3.11"
packages = ["numpy"]
[env]
GREETING = "it's $HOME"
"""


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A project directory using the embedded demo package set and a private store."""
    ws = tmp_path / "ws"
    (ws / "envs").mkdir(parents=True)
    (ws / "nixsnake.toml").write_text(
        f'[nixsnake]\nstore = "store"\nnixpkgs_source = "demo"\nnix_options = {nix_options_toml()}\n'
    )
    monkeypatch.chdir(ws)
    return ws


def write_env(ws: Path, name: str, body: str) -> Path:
    p = ws / "envs" / f"{name}.toml"
    p.write_text(body)
    return p


@pytest.fixture
def mount_image():
    """Mount a SIF's squashfs partition (squashfuse -o offset) for inspection; unmounts after."""
    mounted: list[Path] = []

    def _mount(image: Path, where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["squashfuse", "-o", "offset=32768", str(image), str(where)], check=True)
        mounted.append(where)
        return where

    yield _mount
    for m in mounted:
        subprocess.run(["fusermount3", "-u", str(m)], check=False)
        subprocess.run(["fusermount", "-u", str(m)], check=False, stderr=subprocess.DEVNULL)


def run_in_mounted_image(root: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` with only the image visible: no host /nix, /usr or /lib."""
    return subprocess.run(
        [
            "bwrap",
            "--ro-bind",
            str(root),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--clearenv",
            "--setenv",
            "HOME",
            "/root",
            "/bin/sh",
            "-c",
            'for f in /.singularity.d/env/*.sh; do . "$f"; done; ' + script,
        ],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="session")
def fake_driver(tmp_path_factory):
    """A fake NVIDIA (and AMD) driver of real ELF files (tests/_fake_driver.py): put
    ``fake_driver.bin`` first on PATH to present it to --nv."""
    import _fake_driver

    if not _fake_driver.gcc():
        pytest.skip("needs gcc (apt-get install gcc libc6-dev) to compile the fake driver")
    return _fake_driver.build(tmp_path_factory.mktemp("fake-driver"), amd=True)
