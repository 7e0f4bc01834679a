"""The command line's own contract: sysexits codes for usage errors, help, version."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "argv, words",
    [
        (["build", "--frobnicate", "x.toml"], "No such option: --frobnicate"),
        (["nosuch"], "No such command 'nosuch'"),
        (["gc", "--older-than", "abc"], "Invalid value for '--older-than'"),
        (["lock"], "Missing argument"),
    ],
)
def test_usage_errors_are_64_with_click_s_message(run_cli, argv, words):
    r = run_cli(*argv)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert words in r.stderr and "Try 'nixsnake" in r.stderr and "Traceback" not in r.stderr


def test_version_is_0(run_cli):  # (--help: test_cli_run.test_help_text)
    v = run_cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("nixsnake ")
