"""The docs say what the code does: names they cite exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PKG = "snakemake_deploy_nixsnake"


def _resolve(dotted: str) -> bool:
    """``deploy.resolve``, ``image.sif.write_sif``, ``store.Store.build_lock``: the longest
    importable module prefix, then attributes."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join([PKG, *parts[:n]]))
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_architecture_names_modules_and_objects_that_exist():
    text = (DOCS / "architecture.md").read_text()
    files = set(re.findall(r"`((?:[\w/]+/)?[\w-]+\.(?:py|nix|sh))`", text))
    assert len(files) > 20
    for f in files:
        where = [REPO, REPO / PKG, REPO / PKG / "data", REPO / PKG / "nix", REPO / PKG / "demo", REPO / PKG / "image",
                 REPO / "tests", REPO / "scripts"]  # fmt: skip
        assert any((d / f).exists() for d in where), f
    modules = {p.stem for p in (REPO / PKG).glob("*.py")} | {"image", "demo"}
    refs = {m for m in re.findall(r"\b[a-z_]+(?:\.[A-Za-z_]\w*)+", text) if m.split(".")[0] in modules}
    refs = {r for r in refs if r.rsplit(".", 1)[1] not in ("py", "nix", "sh", "md", "toml", "json")}
    assert len(refs) > 25
    assert [r for r in refs if not _resolve(r)] == []


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_page_is_listed_in_the_readme_and_further(page):
    assert f"docs/{page}" in (REPO / "README.md").read_text() or page in ("intro.md", "further.md"), page
