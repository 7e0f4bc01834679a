"""Run the examples of a docs page the way a reader would, and compare what they print.

A page is read top to bottom:

- a fenced block whose first line is ``# PATH`` (```toml, ```python, ```text) is a file
  the reader writes: it is written to PATH in the page's workspace (without that line);
- a ```console block is a terminal session: each ``$ COMMAND`` line runs (bash, in the
  workspace), and the lines up to the next ``$`` are what it must print (stdout and
  stderr into one pipe, Python unbuffered: the order a terminal shows).

In expected output, ``...`` inside a line matches any text, and a line that is only
``...`` matches any number of lines: the placeholders for hashes, paths, timings. Every
other character must match. Anything that cannot run here (a cluster, an interactive
shell) belongs in a ```text or ```sh block, which is shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Command:
    line: int  # in the page, for messages
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Step:
    """A file to write, or a console session."""

    line: int
    path: str | None = None  # a file
    content: str = ""
    commands: list[Command] = field(default_factory=list)  # a console block


_FENCE = re.compile(r"^```(\w*)\s*$")
_HEADER = re.compile(r"# ([\w./-]+)")


def _file_header(line: str) -> str | None:
    """``# envs/a.toml`` or ``# Snakefile`` names a file; ``# a comment`` does not."""
    m = _HEADER.fullmatch(line.strip())
    if not m:
        return None
    path = m.group(1)
    return path if ("." in path or "/" in path or path == "Snakefile") else None


def parse(page: str) -> list[Step]:
    steps: list[Step] = []
    lines = page.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        body = lines[i + 1 : j]
        i = j + 1
        if lang == "console":
            step = Step(start + 1)
            for k, line in enumerate(body):
                if line.startswith("$ "):
                    step.commands.append(Command(start + 2 + k, line[2:]))
                elif step.commands:
                    step.commands[-1].expected.append(line)
            steps.append(step)
        elif body and (path := _file_header(body[0])):
            steps.append(Step(start + 1, path=path, content="\n".join(body[1:]) + "\n"))
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    """``...`` within a line: any text; a line of only ``...``: any number of lines."""
    if not expected:
        return not actual
    head = expected[0]
    if head.strip() == "...":
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return re.fullmatch(pattern, actual[0].rstrip()) is not None and matches(expected[1:], actual[1:])


def run_page(page: Path, workspace: Path, env: dict[str, str], timeout: float = 900) -> list[str]:
    """Run every step of ``page`` in ``workspace``; return one message per mismatch."""
    problems: list[str] = []
    status = 0
    for step in parse(page.read_text()):
        if step.path is not None:
            target = workspace / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.content)
            continue
        for cmd in step.commands:
            cp = subprocess.run(
                ["bash", "-c", f"(exit {status}); {cmd.text}"],  # $? is the previous command's
                cwd=workspace,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
            actual, status = cp.stdout.splitlines(), cp.returncode
            if not matches(cmd.expected, actual):
                problems.append(
                    f"{page.name}:{cmd.line}: $ {cmd.text}\n  expected:\n    "
                    + "\n    ".join(cmd.expected or ["(nothing)"])
                    + "\n  printed (exit "
                    + str(cp.returncode)
                    + "):\n    "
                    + "\n    ".join(actual or ["(nothing)"])
                )
    return problems


def doc_env(base: dict[str, str], cache: Path, nix_options: dict[str, str], path_prefix: str = "") -> dict[str, str]:
    """A reader's environment: no nixsnake settings but the page's own, a fresh cache.

    Two settings stand for facts about this machine, not the reader's: ``nix_options``
    (the sandbox forced on, no fallback, wherever the kernel allows it) and ``gpu =
    never``: the SLURM test rig leaves placeholder ``/dev/nvidia0..1`` files, which make
    ``gpu = "auto"`` warn that no driver libraries were found, on a machine with no GPU.
    """
    env = {k: v for k, v in base.items() if not k.startswith(("NIXSNAKE_", "SNAKEMAKE_"))}
    env.update(
        NIXSNAKE_CACHE_DIR=str(cache),
        NIXSNAKE_CONFIG=str(cache / "no-user-config.toml"),
        NIXSNAKE_NIX_OPTIONS=";".join(f"{k}={v}" for k, v in nix_options.items()),
        NIXSNAKE_GPU="never",
        COLUMNS="100",
        PYTHONUNBUFFERED="1",
    )
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env.get('PATH', os.defpath)}"
    return env
