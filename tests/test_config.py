"""Settings are layered: defaults < user file < project file < NIXSNAKE_* < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.config import Config, load_config, merge_nix_options, parse_nix_options
from snakemake_deploy_nixsnake.errors import SpecError


def _layers(tmp_path: Path, user: str = "", project: str = "") -> tuple[Path, Path, dict[str, str]]:
    home, proj = tmp_path / "home", tmp_path / "proj"
    home.mkdir()
    proj.mkdir()
    (home / "config.toml").write_text(user)
    (proj / "nixsnake.toml").write_text(project)
    return home, proj, {"NIXSNAKE_CONFIG": str(home / "config.toml")}


def test_defaults_without_files(tmp_path):
    cfg = load_config(tmp_path, env={"NIXSNAKE_CONFIG": str(tmp_path / "none.toml"), "NIXSNAKE_CACHE_DIR": "/c"})
    assert cfg == Config(store=Path("/c/images"))
    assert (cfg.runtime, cfg.gpu, cfg.compression, cfg.jobs) == ("apptainer", "auto", "zstd", 2)


def test_each_layer_wins_over_the_one_before(tmp_path):
    _, proj, env = _layers(
        tmp_path,
        user='runtime = "singularity"\ngpu = "never"\ncompression = "gzip"\nstore = "user-store"\n',
        project='[nixsnake]\ngpu = "always"\nstore = "proj-store"\nnixpkgs_source = "./mirror"\n',
    )
    cfg = load_config(proj, env={**env, "NIXSNAKE_COMPRESSION": "lz4"})
    assert cfg.runtime == "singularity"  # user file
    assert cfg.gpu == "always"  # project file over user file
    assert cfg.compression == "lz4"  # environment over both
    assert cfg.store == proj / "proj-store"  # relative paths: relative to the file that names them
    assert cfg.nixpkgs_source == str((proj / "mirror").resolve())
    assert cfg.with_overrides(gpu="never", store=None).gpu == "never"  # flags win; None means "not given"


def test_nix_options_add_up_across_layers_later_wins_per_option(tmp_path):
    _, proj, env = _layers(
        tmp_path,
        user='nix_options = { substituters = "https://cache.site", cores = "4" }\n',
        project='nix_options = { build-users-group = "", substituters = "" }\n',
    )
    cfg = load_config(proj, env={**env, "NIXSNAKE_NIX_OPTIONS": "sandbox=false"})
    assert dict(cfg.nix_options) == {"cores": "4", "substituters": "", "build-users-group": "", "sandbox": "false"}
    flag = cfg.with_overrides(nix_options=parse_nix_options("cores=8"))
    assert dict(flag.nix_options)["cores"] == "8" and dict(flag.nix_options)["build-users-group"] == ""


def test_parse_and_merge_nix_options():
    assert parse_nix_options("a=1; b= ;c") == (("a", "1"), ("b", ""), ("c", ""))
    assert merge_nix_options((("a", "1"), ("b", "2")), (("b", "3"),)) == (("a", "1"), ("b", "3"))


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('runtim = "bwrap"\n', "runtim", "did you mean 'runtime'?"),
        ('runtime = "docker"\n', "runtime", "use one of apptainer, singularity, bwrap"),
        ('gpu = "sometimes"\n', "gpu", "use one of auto, always, never"),
        ('compression = "bz2"\n', "compression", "use one of zstd, gzip, xz, lz4"),
        ("jobs = 0\n", "jobs", "set jobs = 1 or more"),
        ('jobs = "many"\n', "jobs", "give a whole number"),
        ("nixsnake = 3\n", "nixsnake", "write [nixsnake] settings"),
        ("store = [\n", "", "fix the syntax"),
    ],
)
def test_bad_settings_name_the_file_key_and_fix(tmp_path, text, key, fix):
    _, proj, env = _layers(tmp_path, project=text)
    with pytest.raises(SpecError) as e:
        load_config(proj, env=env)
    assert e.value.code == 65
    assert str(e.value).startswith(f"{proj / 'nixsnake.toml'}: {key}" if key else str(proj / "nixsnake.toml"))
    assert fix in str(e.value)


def test_binds_as_list_or_comma_string(tmp_path):
    _, proj, env = _layers(tmp_path, project='binds = ["/a:/b:ro", "/c"]\n')
    assert load_config(proj, env=env).binds == ("/a:/b:ro", "/c")
    assert load_config(proj, env={**env, "NIXSNAKE_BINDS": "/x,/y:/z"}).binds == ("/x", "/y:/z")


def test_a_bad_flag_value_is_a_clear_error():
    with pytest.raises(SpecError) as e:
        Config().with_overrides(runtime="docker")
    assert str(e.value).startswith("command line: runtime: 'docker' is not supported")
