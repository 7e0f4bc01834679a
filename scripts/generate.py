#!/usr/bin/env python3
"""Write (or, with --check, verify) every generated section of the repository.

Some rules live in Python but are needed elsewhere: ``bwrap-exec.sh`` (POSIX sh, run per
job, no Python) gets its constants as a generated header. Each generated section sits
between two marker lines and is rewritten from the code here; ``--check`` (run by the
tests) fails when a committed section differs from what the code generates.

    python3 scripts/generate.py          # rewrite the sections
    python3 scripts/generate.py --check  # exit 1 and name each stale section
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- docs


def _cli_group():
    """The ``nixsnake`` command as click sees it (typer builds it from commands.py)."""
    import typer

    from snakemake_deploy_nixsnake.commands import app

    return typer.main.get_command(app)


def _cli_flags() -> dict[str, list[str]]:
    """Config setting -> the nixsnake commands' flags that set it ("`--store` (build, run, ...)")."""
    from dataclasses import fields

    from snakemake_deploy_nixsnake.config import Config

    names = {f.name for f in fields(Config)}
    by_flag: dict[tuple[str, str], list[str]] = {}
    group = _cli_group()
    for cmd_name, cmd in group.commands.items():
        for p in cmd.params:
            setting = {"bind": "binds"}.get(p.name, p.name)
            if p.param_type_name == "option" and setting in names:
                flag = ", ".join(f"`{o}`" for o in sorted(p.opts, key=len, reverse=True))
                by_flag.setdefault((setting, flag), []).append(cmd_name)
    out: dict[str, list[str]] = {}
    for (setting, flag), cmds in sorted(by_flag.items()):
        out.setdefault(setting, []).append(f"{flag} ({', '.join(cmds)})")
    return out


def settings_table() -> str:
    """docs/further.md's settings table: every ``Config`` field, where it can be set, its
    default and description (``config._doc``)."""
    from dataclasses import MISSING, fields

    from snakemake_deploy_nixsnake.config import Config
    from snakemake_deploy_nixsnake.plugin import Settings

    plugin = {f.name for f in fields(Settings)}
    flags = _cli_flags()
    rows = [
        "| `nixsnake.toml` key | `NIXSNAKE_*` variable | Snakemake flag | nixsnake flag | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in fields(Config):
        default = f.metadata["default_doc"] or (f"`{f.default}`" if f.default is not MISSING else "")
        smk = f"`--sdm-nixsnake-{f.name.replace('_', '-')}`" if f.name in plugin else ""
        rows.append(
            f"| `{f.name}` | `NIXSNAKE_{f.name.upper()}` | {smk} | {'; '.join(flags.get(f.name, []))} "
            f"| {default} | {f.metadata['help']} |"
        )
    return "\n".join(rows) + "\n"


def cli_reference() -> str:
    """docs/cli.md: every command's --help, as the CLI prints it at 100 columns."""
    group = _cli_group()
    ctx_class = type(group).context_class
    top = ctx_class(group, info_name="nixsnake", terminal_width=100, max_content_width=100)
    parts = ["```text", "$ nixsnake --help", group.get_help(top), "```", ""]
    for name in group.list_commands(top):
        cmd = group.get_command(top, name)
        sub = ctx_class(cmd, info_name=name, parent=top, terminal_width=100, max_content_width=100)
        parts += [f"## nixsnake {name}", "", "```text", f"$ nixsnake {name} --help", cmd.get_help(sub), "```", ""]
    return "\n".join(parts)


def _key_type(f) -> str:
    import datetime as dt
    import typing

    extra = f.json_schema_extra or {}
    if extra.get("type_doc"):
        return str(extra["type_doc"])
    ann = f.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        ann = args[0]
    origin = typing.get_origin(ann)
    if origin is list:
        return "list of strings"
    if origin is dict:
        value = typing.get_args(ann)[1]
        return "table: name -> TOML date" if value is dt.date else "table of strings"
    return {bool: "boolean", str: "string", dt.date: "TOML date"}[ann]


def _key_default(f) -> str:
    import json

    extra = f.json_schema_extra or {}
    if extra.get("default_doc"):
        return str(extra["default_doc"])
    if f.is_required():
        return "required"
    value = f.default_factory() if f.default_factory is not None else f.default
    if value is None:
        return "none"
    return f"`{json.dumps(value)}`"


def env_file_table(model) -> Callable[[], str]:
    """One section's table in docs/env-file.md: the keys of a spec.py model, their type and
    default from the field, the rules from its description, "At most N" from max_length."""

    def make() -> str:
        rows = ["| key | type | default | rules |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            if f.description is None:
                if model.__name__ == "EnvFile":  # the sections ([nixpkgs], ...) have their own tables
                    continue
                raise SystemExit(f"spec.{model.__name__}.{name} has no description: docs/env-file.md needs one")
            rules = f.description
            limit = next((m.max_length for m in f.metadata if getattr(m, "max_length", None)), None)
            if limit is not None:
                rules += f" At most {limit}."
            rows.append(f"| `{f.alias or name}` | {_key_type(f)} | {_key_default(f)} | {rules} |")
        return "\n".join(rows) + "\n"

    return make


def _sections() -> list[tuple[Path, str, str, Callable[[], str]]]:
    """(file, begin marker, end marker, generator) for every generated section."""
    from snakemake_deploy_nixsnake import spec
    from snakemake_deploy_nixsnake.nixbuild import schema_fields
    from snakemake_deploy_nixsnake.runtime import bwrap_header

    def nix_input_fields() -> str:
        """env.nix's header: every field of NixInput, the JSON it reads."""
        out, line = [], "#  "
        for name in schema_fields():
            if len(line) + len(name) + 1 > 88:
                out.append(line)
                line = "#  "
            line += " " + name
        return "\n".join([*out, line]) + "\n"

    env_file_sections = [
        (
            REPO / "docs" / "env-file.md",
            f"<!-- generated from spec.{model.__name__} by scripts/generate.py: do not edit -->\n",
            "<!-- end generated -->\n",
            env_file_table(model),
        )
        for model in (spec.EnvFile, spec.Nixpkgs, spec.Python, spec.R, spec.Conda, spec.Gpu, spec.Run)
    ]
    return [
        *env_file_sections,
        (
            REPO / "docs" / "cli.md",
            "<!-- generated from the CLI (commands.py) by scripts/generate.py: do not edit -->\n",
            "<!-- end generated -->\n",
            cli_reference,
        ),
        (
            REPO / "docs" / "further.md",
            "<!-- generated from config.Config, plugin.Settings and the CLI by scripts/generate.py: do not edit -->\n",
            "<!-- end generated -->\n",
            settings_table,
        ),
        (
            REPO / "docs" / "slurm-gpu.md",
            "<!-- generated from example-workflow/profiles/slurm/config.yaml by scripts/generate.py: do not edit -->\n",
            "<!-- end generated -->\n",
            lambda: (
                "```yaml\n" + (REPO / "example-workflow" / "profiles" / "slurm" / "config.yaml").read_text() + "```\n"
            ),
        ),
        (
            REPO / "snakemake_deploy_nixsnake" / "nix" / "env.nix",
            "# --- generated by scripts/generate.py: do not edit ---\n",
            "# --- end generated ---\n",
            nix_input_fields,
        ),
        (
            REPO / "snakemake_deploy_nixsnake" / "data" / "bwrap-exec.sh",
            "# --- generated from snakemake_deploy_nixsnake by scripts/generate.py: do not edit ---\n",
            "# --- end generated ---\n",
            bwrap_header,
        ),
    ]


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """The text between ``begin`` and the next ``end`` after it, replaced by ``body``."""
    i = text.index(begin) + len(begin)
    j = text.index(end, i)
    return text[:i] + body + text[j:]


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for path, begin, end, make in _sections():
        text = path.read_text()
        new = replace_between(text, begin, end, make())
        if new != text:
            stale.append(path.relative_to(REPO))
            if not check:
                path.write_text(new)
    if check and stale:
        print("generated sections out of date (run: python3 scripts/generate.py): " + ", ".join(map(str, stale)))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
