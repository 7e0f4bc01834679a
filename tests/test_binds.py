"""The one bind grammar (binds.py): what apptainer's --bind can express, normalised,
and never covering the image's own directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.binds import Bind, BindError, check_target, parse_bind, parse_user_bind
from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.runtime import RunRequest
from snakemake_deploy_nixsnake.spec import parse_spec


@pytest.mark.parametrize(
    ("spec", "bind"),
    [
        ("/data", Bind("/data", "/data", "rw")),
        ("/data:/in", Bind("/data", "/in", "rw")),
        ("/data:/in:ro", Bind("/data", "/in", "ro")),
        ("/data::ro", Bind("/data", "/data", "ro")),
        ("/my data/x y:/in put", Bind("/my data/x y", "/in put", "rw")),
        # normalised: what they look like, not how they are spelt
        ("//data//ref/:/./in/", Bind("/data/ref", "/in", "rw")),
    ],
)
def test_parse_bind(spec, bind):
    assert parse_bind(spec) == bind
    assert parse_bind(spec).spec == bind.spec


@pytest.mark.parametrize(
    "spec",
    ["", "data", "/a:b", "/a:/b:rx", "/a:/b:ro:x", "/a,/b", "/a\n:/b", "/a:/b\n", "/a\x00", "/a:/b:", "~/x",
     "/a^b", "/a:/b^c", " /a", "/a :/b", "/a:/b ", "/a/../etc", "/a:/x/.."],
)  # fmt: skip
def test_parse_bind_rejects(spec):
    with pytest.raises(BindError) as e:
        parse_bind(spec)
    assert e.value.code == Exit.DATAERR and e.value.hint
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "target",
    ["/etc", "/./etc", "//etc", "/etc/", "/etc/ssl", "//nix", "/nix/store", "/usr//bin", "/usr/bin/x", "/usr", "/",
     "/.", "//", "//.singularity.d", "/.singularity.d/env", "/.nixsnake", "/bin"],
)  # fmt: skip
def test_protected_targets_are_refused_whatever_the_spelling(target):
    with pytest.raises(BindError) as e:
        parse_user_bind(f"/data:{target}")
    assert "would cover" in e.value.problem
    # the same rule in the env file, with the file and key named
    with pytest.raises(NixsnakeError) as e2:
        parse_spec(f'date = 2024-01-01\n[run]\nbinds = ["/data:{target}"]\n'.encode(), "envs/x.toml")
    assert e2.value.code == Exit.DATAERR and "envs/x.toml: run.binds[0]: " in str(e2.value)


@pytest.mark.parametrize("target", ["/data", "/usr/local/data", "/mnt/ref", "/tmp/x", "/home/u", "/etcetera"])
def test_other_targets_are_fine(target):
    assert parse_user_bind(f"/src:{target}").dst == target


@pytest.mark.parametrize("workdir", ["/etc", "/nix/store", "/", "/usr", "//etc/x"])
def test_working_directory_may_not_cover_the_image(workdir):
    with pytest.raises(BindError) as e:
        RunRequest(Path("/img/env.sif"), workdir=Path(workdir))
    assert e.value.problem.startswith("the working directory ") and "would cover" in e.value.problem


@pytest.mark.parametrize("path", ["/a:b", "/a,b", "/a\nb", "rel/dir", "/a^b"])
def test_bad_paths_are_refused_with_the_reason(path):
    for make in (
        lambda: Bind(path, "/x"),
        lambda: Bind("/x", path),
        lambda: RunRequest(Path("/i.sif"), workdir=Path(path)),
    ):
        with pytest.raises(BindError) as e:
            make()
        assert e.value.code == Exit.DATAERR and e.value.hint


def test_colon_in_the_working_directory_says_what_is_wrong():
    with pytest.raises(BindError) as e:
        check_target("the working directory", "/tmp/a:b")
    assert str(e.value).startswith("the working directory '/tmp/a:b' contains ':'")
    assert "destination must be an absolute path" not in str(e.value)
