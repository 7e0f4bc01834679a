"""Env-file validation: every broken file gives exit 65 and one line naming file, key, fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakemake_deploy_nixsnake.errors import NixsnakeError, SpecError
from snakemake_deploy_nixsnake.spec import load_spec, lock_path_for, parse_spec

GOOD = """date = 2024-01-01
[nixpkgs]
packages = ["hello", "python312Packages.pysam"]
branch = "nixos-unstable"
allow_unfree = true
[python]
version = "3.11"
packages = ["numpy", "pandas>=2,<3", "scipy; python_version >= '3.9'"]
package_dates = { torch = 2025-06-01 }
[R]
packages = ["ggplot2", "data.table"]
[conda]
channels = ["conda-forge", "bioconda"]
packages = ["samtools=1.19"]
[gpu]
cuda = "auto"
[env]
OMP_NUM_THREADS = "1"
GREETING = "it's $HOME; `rm -rf /`"
[run]
binds = ["/data/ref:/ref:ro", "/scratch"]
"""

TOMORROW = (dt.date.today() + dt.timedelta(days=2)).isoformat()

# (name, file content (str or bytes), key expected in the message, fragment of the fix)
BAD: list[tuple[str, str | bytes, str, str]] = [
    ("unknown top-level key", "date = 2024-01-01\nfoo = 1\n", "foo", "remove it"),
    ("misspelt section", 'date = 2024-01-01\n[nixpkg]\npackages = ["hello"]\n', "nixpkg", "did you mean 'nixpkgs'"),
    ("misspelt key", 'date = 2024-01-01\n[python]\npackage = ["numpy"]\n', "python.package", "did you mean 'packages'"),
    ("R section lower case", 'date = 2024-01-01\n[r]\npackages = ["x"]\n', "r", "did you mean 'R'"),
    ("invalid date", "date = 2024-02-30\n", "", "TOML"),
    ("date as string", 'date = "2024-01-01"\n', "date", "no quotes"),
    ("date-time", "date = 2024-01-01T10:00:00\n", "date", "plain TOML date"),
    ("date in the future", f"date = {TOMORROW}\n", "date", "earlier"),
    ("missing date", '[nixpkgs]\npackages = ["hello"]\n', "date", "add it"),
    ("empty package", 'date = 2024-01-01\n[nixpkgs]\npackages = [""]\n', "nixpkgs.packages[0]", "empty"),
    (
        "duplicate package",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["hello", "hello"]\n',
        "nixpkgs.packages",
        "duplicate",
    ),
    (
        "attr with quote",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["a\\"b"]\n',
        "nixpkgs.packages[0]",
        "attribute names",
    ),
    (
        "attr with semicolon",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["hello;rm"]\n',
        "nixpkgs.packages[0]",
        "attribute names",
    ),
    (
        "attr with interpolation",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["${builtins.exec}"]\n',
        "nixpkgs.packages[0]",
        "attribute names",
    ),
    (
        "attr with space",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["hello world"]\n',
        "nixpkgs.packages[0]",
        "attribute names",
    ),
    (
        "attr with ..",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["python3..pkgs"]\n',
        "nixpkgs.packages[0]",
        "attribute names",
    ),
    (
        "requirement with URL",
        'date = 2024-01-01\n[python]\npackages = ["numpy @ https://evil.example/n.whl"]\n',
        "python.packages[0]",
        "index",
    ),
    (
        "requirement with shell",
        'date = 2024-01-01\n[python]\npackages = ["numpy`id`"]\n',
        "python.packages[0]",
        "PEP 508",
    ),
    (
        "requirement with $()",
        'date = 2024-01-01\n[python]\npackages = ["numpy$(id)"]\n',
        "python.packages[0]",
        "PEP 508",
    ),
    (
        "duplicate requirement by normalised name",
        'date = 2024-01-01\n[python]\npackages = ["NumPy", "numpy>1"]\n',
        "python.packages",
        "duplicate",
    ),
    ("bad python version", "date = 2024-01-01\n[python]\nversion = 3.11\n", "python.version", "string"),
    ("LD_PRELOAD", 'date = 2024-01-01\n[env]\nLD_PRELOAD = "/tmp/evil.so"\n', "env", "pick another name"),
    ("PATH override", 'date = 2024-01-01\n[env]\nPATH = "/tmp"\n', "env", "pick another name"),
    ("BASH_ENV", 'date = 2024-01-01\n[env]\nBASH_ENV = "/tmp/x"\n', "env", "pick another name"),
    ("bad variable name", 'date = 2024-01-01\n[env]\n"A-B" = "x"\n', "env", "letters"),
    ("bind over /nix", 'date = 2024-01-01\n[run]\nbinds = ["/data:/nix/store"]\n', "run.binds[0]", "somewhere else"),
    ("relative bind", 'date = 2024-01-01\n[run]\nbinds = ["data:/data"]\n', "run.binds[0]", "absolute"),
    ("bind with comma", 'date = 2024-01-01\n[run]\nbinds = ["/a,/b"]\n', "run.binds[0]", "one bind per entry"),
    ("bind bad mode", 'date = 2024-01-01\n[run]\nbinds = ["/a:/b:rx"]\n', "run.binds[0]", "SRC[:DST[:ro|rw]]"),
    ("bind over /usr", 'date = 2024-01-01\n[run]\nbinds = ["/data:/usr"]\n', "run.binds[0]", "somewhere else"),
    ("bind over //etc", 'date = 2024-01-01\n[run]\nbinds = ["/data://etc"]\n', "run.binds[0]", "somewhere else"),
    ("bind with caret", 'date = 2024-01-01\n[run]\nbinds = ["/a^b"]\n', "run.binds[0]", "without"),
    ("env hijack GLIBC_TUNABLES", 'date = 2024-01-01\n[env]\nGLIBC_TUNABLES = "x"\n', "env", "pick another name"),
    ("env hijack PERL5OPT", 'date = 2024-01-01\n[env]\nPERL5OPT = "-Mx"\n', "env", "pick another name"),
    ("env hijack NODE_OPTIONS", 'date = 2024-01-01\n[env]\nnode_options = "--require x"\n', "env", "pick another name"),
    ("misspelt date", "dat = 2024-01-01\n", "dat", "did you mean 'date'?"),
    (
        "rev with newline",
        'date = 2024-01-01\n[nixpkgs]\nrev = "' + "a" * 40 + '\\n"\n',
        "nixpkgs.rev",
        "40 lowercase hex",
    ),
    ("branch with newline", 'date = 2024-01-01\n[nixpkgs]\nbranch = "main\\n"\n', "nixpkgs.branch", "nixos-unstable"),
    ("env name with newline", 'date = 2024-01-01\n[env]\n"FOO\\n" = "x"\n', "env", "letters, digits"),
    (
        "python version with newline",
        'date = 2024-01-01\n[python]\nversion = "3.11\\n"\n',
        "python.version",
        "minor version",
    ),
    (
        "attr with newline",
        'date = 2024-01-01\n[nixpkgs]\npackages = ["hello\\n"]\n',
        "nixpkgs.packages[0]",
        "dotted attribute",
    ),
    ("R name with newline", 'date = 2024-01-01\n[R]\npackages = ["ggplot2\\n"]\n', "R.packages[0]", "CRAN name"),
    (
        "requirement one line",
        'date = 2024-01-01\n[python]\npackages = ["numpy>>=1"]\n',
        "python.packages[0]",
        "PEP 508",
    ),
    ("bad rev", 'date = 2024-01-01\n[nixpkgs]\nrev = "main"\n', "nixpkgs.rev", "40"),
    ("bad branch", 'date = 2024-01-01\n[nixpkgs]\nbranch = "-x;y"\n', "nixpkgs.branch", "branch"),
    ("gpu yes", 'date = 2024-01-01\n[gpu]\ncuda = "yes"\n', "gpu.cuda", "cuda = true"),
    ("conda bad spec", 'date = 2024-01-01\n[conda]\npackages = ["samtools|rm"]\n', "conda.packages[0]", "name=version"),
    ("conda glob", 'date = 2024-01-01\n[conda]\npackages = ["sam*"]\n', "conda.packages[0]", "name=version"),
    (
        "conda channel inside spec",
        'date = 2024-01-01\n[conda]\npackages = ["bioconda::samtools"]\n',
        "conda.packages[0]",
        "conda] channels",
    ),
    (
        "conda URL spec",
        'date = 2024-01-01\n[conda]\npackages = ["https://x.org/linux-64/a-1-0.tar.bz2"]\n',
        "conda.packages[0]",
        "cannot be date-locked",
    ),
    (
        "conda duplicate by name",
        'date = 2024-01-01\n[conda]\npackages = ["samtools", "SAMtools>=1"]\n',
        "conda.packages",
        "duplicate",
    ),
    ("conda no channel", "date = 2024-01-01\n[conda]\nchannels = []\n", "conda.channels", "at least one"),
    (
        "conda relative file URL",
        'date = 2024-01-01\n[conda]\nchannels = ["file://srv/x"]\n',
        "conda.channels[0]",
        "file:///",
    ),
    (
        "conda channel with ..",
        'date = 2024-01-01\n[conda]\nchannels = ["https://m.org/a/../b"]\n',
        "conda.channels[0]",
        "https://HOST/PATH",
    ),
    (
        "conda channel name with space",
        'date = 2024-01-01\n[conda]\nchannels = ["conda forge"]\n',
        "conda.channels[0]",
        "channel name",
    ),
    (
        "conda exempt with version",
        'date = 2024-01-01\n[conda]\nexempt = ["vep=115"]\n',
        "conda.exempt[0]",
        "without a version",
    ),
    (
        "allow_unfree string",
        'date = 2024-01-01\n[nixpkgs]\nallow_unfree = "yes"\n',
        "nixpkgs.allow_unfree",
        "true or false",
    ),
    ("non-UTF-8", b"date = 2024-01-01\n# caf\xe9\n", "", "UTF-8"),
    ("broken TOML", "date = 2024-01-01\n[nixpkgs\n", "", "TOML"),
    ("50 MB file", b"date = 2024-01-01\n" + b"#" * (50 * 1024 * 1024), "", "KiB"),
]


@pytest.mark.parametrize("name,content,key,fix", BAD, ids=[b[0] for b in BAD])
def test_bad_env_file(tmp_path: Path, name, content, key, fix, run_cli):
    f = tmp_path / "envs" / "broken.toml"
    f.parent.mkdir()
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = run_cli("check", str(f))
    assert r.returncode == 65, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert "Traceback" not in r.stderr
    assert str(f) in line
    if key:
        assert f"{f}: {key}:" in line
    assert "fix:" in line and fix in line, line


def test_good_env_file_round_trip(tmp_path: Path):
    spec = parse_spec(GOOD.encode(), "good.toml")
    assert spec.r is not None and spec.r.packages == ["ggplot2", "data.table"]
    assert spec.python is not None and spec.python.package_dates == {"torch": dt.date(2025, 6, 1)}
    # Strings with shell characters are allowed as *values*: they are data, quoted later.
    assert spec.env["GREETING"].startswith("it's $HOME")
    # The hash is a function of content, not formatting or comments.
    again = parse_spec(("# comment\n" + GOOD.replace(" = ", "=")).encode(), "other.toml")
    assert again.spec_hash() == spec.spec_hash()
    changed = parse_spec(GOOD.replace('"hello"', '"hello2"').encode(), "x.toml")
    assert changed.spec_hash() != spec.spec_hash()


def test_conda_section_accepts_match_specs_and_channel_urls():
    spec = parse_spec(
        b'date = 2024-01-01\n[conda]\nchannels = ["conda-forge", "bioconda/label/main", "https://mirror.example.org/bioconda/", '
        b'"http://127.0.0.1:8080", "file:///srv/conda/site"]\n'
        b'packages = ["ensembl-vep=115.2", "samtools 1.19 h50ea8bc_0", "bwa >=0.7,<0.8", "htslib[version=\'>=1.19\']"]\n'
        b'exempt = ["ensembl-vep"]\n',
        "c.toml",
    )
    assert spec.conda is not None and len(spec.conda.channels) == 5 and spec.conda.exempt == ["ensembl-vep"]
    assert parse_spec(b"date = 2024-01-01\n[conda]\n", "d.toml").conda.channels == ["conda-forge"]


def test_missing_file_is_66(tmp_path: Path, run_cli):
    r = run_cli("check", str(tmp_path / "nope.toml"))
    assert r.returncode == 66
    assert "nope.toml" in r.stderr and "fix:" in r.stderr


def test_symlink_loop_is_66_in_one_line(tmp_path: Path, run_cli):
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    r = run_cli("check", str(loop))
    assert r.returncode == 66, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"nixsnake: {loop}: cannot read it (Too many levels of symbolic links); fix: make it a readable env file"
    ]


def test_unreadable_env_file_is_66(tmp_path: Path, monkeypatch):
    """(Tests run as root, who reads every file: the refusal is injected at open().)"""
    import builtins

    from snakemake_deploy_nixsnake.errors import UnreadableFileError

    f = tmp_path / "x.toml"
    f.write_text("date = 2024-01-01\n")
    real_open = builtins.open

    def refuse(path, *a, **k):
        if str(path) == str(f):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(UnreadableFileError) as e:
        load_spec(f)
    assert (
        e.value.code == 66
        and str(e.value) == f"{f}: cannot read it (Permission denied); fix: make it a readable env file"
    )


def test_lock_path():
    assert lock_path_for(Path("envs/vep.toml")) == Path("envs/vep.lock.toml")


# --- property: random input never produces a traceback ----------------------------------

toml_scalars = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2100, 1, 1)),
)
keys = st.one_of(
    st.sampled_from(
        [
            "date",
            "nixpkgs",
            "python",
            "R",
            "conda",
            "gpu",
            "env",
            "run",
            "packages",
            "version",
            "branch",
            "rev",
            "binds",
            "cuda",
            "channels",
            "package_dates",
            "allow_unfree",
        ]
    ),
    st.text(min_size=1, max_size=10),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, toml_values, max_size=6))
def test_random_toml_never_tracebacks(data):
    try:
        text = tomlkit.dumps(data)
    except Exception:
        return  # not representable as TOML: nothing to test
    try:
        parse_spec(text.encode(), "fuzz.toml")
    except SpecError as exc:
        assert exc.code == 65 and "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_traceback(blob):
    try:
        parse_spec(blob, "fuzz.toml")
    except NixsnakeError as exc:
        assert exc.code == 65


def test_check_skips_lock_files_from_a_glob(tmp_path, run_cli):
    env = tmp_path / "a.toml"
    env.write_text("date = 2024-01-01\n")
    lock = tmp_path / "a.lock.toml"
    lock.write_text('lock_version = 1\ndate = "2024-01-01"\n')
    r = run_cli("check", str(env), str(lock))
    assert r.returncode == 0, r.stderr
    assert "skipping" in r.stderr and "a.lock.toml" in r.stderr and "a.toml: ok" in r.stdout


def test_refused_variables_are_all_documented_and_refused():
    from snakemake_deploy_nixsnake.envvars import REFUSED_IN_ENV_FILE as REFUSED_ENV_EXACT
    from snakemake_deploy_nixsnake.envvars import REFUSED_IN_ENV_FILE_PREFIXES as REFUSED_ENV_PREFIXES

    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    section = doc[doc.index("## Threat: variables that hijack") :]
    section = section[: section.index("\n## ", 1)]
    for name in REFUSED_ENV_EXACT:
        assert f"`{name}`" in section, name
        with pytest.raises(SpecError):
            parse_spec(f'date = 2024-01-01\n[env]\n{name.lower()} = "x"\n'.encode(), "x.toml")
    for prefix in REFUSED_ENV_PREFIXES:
        assert f"`{prefix}*`" in section or f"`{prefix}`" in section or f"`{prefix.rstrip('_')}*`" in section, prefix


def test_cuda_support_is_a_separate_opt_in():
    spec = parse_spec(b"date = 2024-01-01\n[gpu]\ncuda = true\ncuda_support = true\n")
    assert spec.gpu.cuda is True and spec.gpu.cuda_support is True
    assert parse_spec(b"date = 2024-01-01\n[gpu]\ncuda = true\n").gpu.cuda_support is False
    with pytest.raises(SpecError) as e:
        parse_spec(b"date = 2024-01-01\n[gpu]\ncuda = false\ncuda_support = true\n", "g.toml")
    assert str(e.value).startswith("g.toml: gpu.cuda_support:") and "cuda = false" in str(e.value)
    with pytest.raises(SpecError, match=r"gpu\.cuda_support"):
        parse_spec(b'date = 2024-01-01\n[gpu]\ncuda_support = "yes"\n', "g.toml")


def test_permitted_insecure_names_with_versions():
    spec = parse_spec(b'date = 2024-01-01\n[nixpkgs]\npermitted_insecure = ["openssl-1.1.1w", "python-2.7.18.8"]\n')
    assert spec.nixpkgs.permitted_insecure == ["openssl-1.1.1w", "python-2.7.18.8"]
    for bad in ('["openssl"]', '["openssl-1.1.1w", "openssl-1.1.1w"]', '["a b-1"]', '["x-1\\"; }"]'):
        with pytest.raises(SpecError) as e:
            parse_spec(f"date = 2024-01-01\n[nixpkgs]\npermitted_insecure = {bad}\n".encode(), "i.toml")
        assert str(e.value).startswith("i.toml: nixpkgs.permitted_insecure"), str(e.value)


def test_keys_added_later_do_not_change_existing_env_files_data():
    """permitted_insecure and cuda_support joined the env file later: an env file
    without them keeps its normalized data (and its lock stays current); setting them
    changes it."""
    body = b'date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n[gpu]\ncuda = true\n'
    data = parse_spec(body).normalized()
    assert "permitted_insecure" not in data["nixpkgs"] and "cuda_support" not in data["gpu"]
    assert (
        parse_spec(body).spec_hash() == "4858bf92af1435ae0aced35ab3e1e8010220da0d8d9d8a41394ee4cd6107ca0f"
    )  # as before
    more = parse_spec(body + b"cuda_support = true\n")
    assert more.normalized()["gpu"]["cuda_support"] is True and more.spec_hash() != parse_spec(body).spec_hash()
