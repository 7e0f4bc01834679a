"""Every ```console example in docs/ runs, and prints what the page says
(tests/doc_examples.py explains the conventions). A page that drifts from the code fails
here. What cannot run on this machine is shown in ```text blocks instead (and its quoted
messages are checked against the code by test_docs.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from doc_examples import doc_env, matches, parse, run_page
from helpers import nix_options

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
STANDIN = REPO / "tests" / "standin"

#: page -> commands run first, unseen, in the quick start's project (its files written)
PAGES: dict[str, list[str]] = {
    "quickstart.md": [],  # starts from an empty directory
    "env-file.md": [],
    "date-locking.md": [],
    "troubleshooting.md": [],
    "images-and-store.md": ["nixsnake build envs/summary.toml"],  # "after its step 5"
    "security.md": ["nixsnake build envs/summary.toml"],
}


def test_the_matcher():
    assert matches(["a ... c", "..."], ["a b c", "x", "y"])
    assert matches(["...", "end"], ["end"]) and matches(["...", "end"], ["x", "end"])
    assert not matches(["a ... c"], ["a b d"]) and not matches(["one"], ["one", "two"]) and not matches([], ["x"])
    assert matches(["x [y] (z) ... $?"], ["x [y] (z) anything $?"])


def test_every_page_with_console_examples_is_run():
    with_console = {p.name for p in DOCS.glob("*.md") if re.search(r"^```console$", p.read_text(), flags=re.M)}
    assert with_console == set(PAGES)
    steps = parse((DOCS / "quickstart.md").read_text())
    assert sum(len(s.commands) for s in steps) >= 8
    assert {"nixsnake.toml", "envs/summary.toml", "Snakefile"} <= {s.path for s in steps}


@pytest.mark.nix
@pytest.mark.network
@pytest.mark.parametrize("page", PAGES)
def test_console_examples(page, tmp_path):
    if not shutil.which("nix-build"):
        pytest.skip("nix is not installed")
    ws = tmp_path / "ws"
    ws.mkdir()
    env = doc_env(dict(os.environ), tmp_path / "cache", nix_options(), path_prefix=str(STANDIN))
    if page != "quickstart.md":
        for step in parse((DOCS / "quickstart.md").read_text()):
            if step.path:
                (ws / step.path).parent.mkdir(parents=True, exist_ok=True)
                (ws / step.path).write_text(step.content)
        for command in PAGES[page]:
            cp = subprocess.run(["bash", "-c", command], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
            assert cp.returncode == 0, (command, cp.stdout, cp.stderr)
    problems = run_page(DOCS / page, ws, env)
    assert not problems, "\n\n".join(problems)
