"""Date locking: nixpkgs rev by date from a real git repo; Python pins from the real index."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.config import Config
from snakemake_deploy_nixsnake.errors import SpecError
from snakemake_deploy_nixsnake.lock import lock_file, read_lock
from snakemake_deploy_nixsnake.nixpkgs import resolve_git
from snakemake_deploy_nixsnake.spec import lock_path_for

COMMITS = ["2023-06-01T12:00:00Z", "2023-12-15T08:30:00Z", "2024-03-01T00:00:00Z"]


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture
def dated_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A git repo whose branch nixos-unstable has commits at known dates, plus a merged
    side branch whose commit is dated in between (must be ignored: --first-parent)."""
    repo = tmp_path / "nixpkgs"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "nixos-unstable")
    revs = []
    for i, date in enumerate(COMMITS):
        (repo / "f").write_text(str(i))
        _git(repo, "add", "f")
        _git(repo, "commit", "-qm", f"c{i}", date=date)
        revs.append(_git(repo, "rev-parse", "HEAD"))
    # side branch commit dated 2024-01-10, merged on 2024-03-05
    _git(repo, "checkout", "-q", "-b", "side", revs[1])
    (repo / "g").write_text("side")
    _git(repo, "add", "g")
    _git(repo, "commit", "-qm", "side", date="2024-01-10T00:00:00Z")
    _git(repo, "checkout", "-q", "nixos-unstable")
    _git(repo, "merge", "-q", "--no-ff", "-m", "merge", "side", date="2024-03-05T00:00:00Z")
    revs.append(_git(repo, "rev-parse", "HEAD"))
    return repo, revs


@pytest.mark.parametrize(
    "day,index",
    [
        ("2023-06-02", 0),  # just after the first commit
        ("2023-12-15", 0),  # the day of the second commit, before it was made
        ("2023-12-16", 1),  # between
        ("2024-01-11", 1),  # after the side-branch commit: not on the first-parent line
        ("2024-03-02", 2),
        ("2025-01-01", 3),  # after the last commit: the merge
    ],
)
def test_date_resolves_to_last_commit_before(dated_repo, day, index):
    repo, revs = dated_repo
    pin = resolve_git(str(repo), "nixos-unstable", dt.date.fromisoformat(day), "envs/x.toml")
    assert pin.rev == revs[index]
    assert pin.commit_time < f"{day}T00:00:00Z"
    assert not pin.pinned


def test_date_before_first_commit_is_clear_error(dated_repo):
    repo, _ = dated_repo
    with pytest.raises(SpecError) as e:
        resolve_git(str(repo), "nixos-unstable", dt.date(2023, 1, 1), "envs/x.toml")
    assert e.value.code == 65 and "envs/x.toml: date:" in str(e.value) and "2023-06-01" in str(e.value)


def test_unknown_branch_is_clear_error(dated_repo):
    repo, _ = dated_repo
    with pytest.raises(SpecError) as e:
        resolve_git(str(repo), "nixos-99.99", dt.date(2024, 1, 1), "envs/x.toml")
    assert "nixpkgs.branch" in str(e.value) and "nixos-99.99" in str(e.value)


def test_explicit_rev_wins_over_date(dated_repo):
    repo, revs = dated_repo
    pin = resolve_git(str(repo), "nixos-unstable", dt.date(2025, 1, 1), "x.toml", rev=revs[0])
    assert pin.rev == revs[0] and pin.pinned and pin.commit_time == "2023-06-01T12:00:00Z"
    with pytest.raises(SpecError, match=r"nixpkgs\.rev"):
        resolve_git(str(repo), "nixos-unstable", dt.date(2025, 1, 1), "x.toml", rev="0" * 40)


def _env(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "envs" / "e.toml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(body)
    return p


@pytest.mark.network
def test_numpy_2024_01_01_resolves_to_1_26_2_with_hashes(tmp_path, dated_repo, run_cli):
    repo, revs = dated_repo
    spec = _env(
        tmp_path,
        'date = 2024-01-01\n[nixpkgs]\npackages = ["hello"]\n[python]\nversion = "3.11"\npackages = ["numpy"]\n',
    )
    r = run_cli("lock", "--nixpkgs-source", str(repo), str(spec))
    assert r.returncode == 0, r.stderr
    lock = read_lock(spec)
    assert lock.nixpkgs.rev == revs[1]
    [numpy] = lock.wheels
    assert (numpy.name, numpy.version) == ("numpy", "1.26.2")
    assert numpy.url.endswith("numpy-1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert numpy.sha256 == "96ca5482c3dbdd051bcd1fce8034603d6ebfc125a7bd59f55b40d8f5d246832b"

    first = lock_path_for(spec).read_bytes()
    r2 = run_cli("lock", "--nixpkgs-source", str(repo), str(spec))
    assert r2.returncode == 0 and "unchanged" in r2.stdout
    assert lock_path_for(spec).read_bytes() == first  # byte-identical
    assert first.startswith(b"# Generated by `nixsnake lock")

    assert run_cli("lock", "--check", "--nixpkgs-source", str(repo), str(spec)).returncode == 0
    spec.write_text(spec.read_text().replace('["numpy"]', '["numpy", "six"]'))
    stale = run_cli("lock", "--check", "--nixpkgs-source", str(repo), str(spec))
    assert stale.returncode == 65 and "stale" in stale.stderr and "nixsnake lock" in stale.stderr
    assert lock_path_for(spec).read_bytes() == first  # --check writes nothing


@pytest.mark.network
def test_package_date_exemption(tmp_path, dated_repo):
    repo, _ = dated_repo
    spec = _env(
        tmp_path,
        'date = 2023-01-01\n[python]\nversion = "3.11"\npackages = ["numpy", "six"]\n'
        "package_dates = { numpy = 2024-01-01 }\n",
    )
    # 2023-01-01 is before the repo's first commit: use a pinned rev so only python is tested
    spec.write_text(
        spec.read_text().replace("[python]", f'[nixpkgs]\nrev = "{_git(repo, "rev-parse", "HEAD")}"\n[python]')
    )
    lock_file(spec, Config(nixpkgs_source=str(repo)))
    versions = dict(read_lock(spec).software())
    assert versions["numpy"] == "1.26.2"  # exempted: as of 2024-01-01
    assert versions["six"] == "1.16.0"  # as of 2023-01-01


def test_unresolvable_requirement_is_65(tmp_path, dated_repo, run_cli):
    repo, _ = dated_repo
    spec = _env(tmp_path, 'date = 2024-01-01\n[python]\nversion = "3.11"\npackages = ["numpy>=99"]\n')
    r = run_cli("lock", "--nixpkgs-source", str(repo), str(spec))
    if "cannot reach" in r.stderr:
        pytest.skip("package index not reachable")
    assert r.returncode == 65 and "python.packages" in r.stderr and "fix:" in r.stderr
    assert not lock_path_for(spec).exists()


def test_uv_explanations_are_cut_after_a_whole_sentence():
    from snakemake_deploy_nixsnake.pypi import _sentences

    assert _sentences("short.", 500) == "short."
    text = "First sentence. Second one is long" + "g" * 100
    assert _sentences(text, 40) == "First sentence. [...]"
    assert _sentences("x" * 50, 20) == "x" * 20 + " [...]"


def test_no_network_is_69(tmp_path, dated_repo, run_cli):
    repo, _ = dated_repo
    spec = _env(tmp_path, 'date = 2024-01-01\n[python]\nversion = "3.11"\npackages = ["numpy"]\n')
    r = run_cli(
        "lock",
        "--nixpkgs-source",
        str(repo),
        str(spec),
        env={
            "UV_INDEX_URL": "http://127.0.0.1:9/simple",
            "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple",
            "UV_CACHE_DIR": str(tmp_path / "uvcache"),
        },
    )
    assert r.returncode == 69, r.stderr
    assert "package index" in r.stderr and "hint:" in r.stderr


def test_git_missing_is_69(tmp_path, dated_repo, run_cli):
    repo, _ = dated_repo
    spec = _env(tmp_path, "date = 2024-01-01\n")
    r = run_cli("lock", "--nixpkgs-source", str(repo), str(spec), env={"PATH": str(tmp_path / "empty-bin")})
    assert r.returncode == 69, r.stderr
    assert "git" in r.stderr and "hint:" in r.stderr


def test_github_unreachable_is_69(tmp_path, run_cli):
    spec = _env(tmp_path, "date = 2024-01-01\n")
    r = run_cli(
        "lock",
        "--nixpkgs-source",
        "github:NixOS/nixpkgs",
        str(spec),
        env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert r.returncode == 69, r.stderr
    assert "GitHub" in r.stderr and "hint:" in r.stderr


def test_lock_without_python_has_no_python_table(tmp_path, dated_repo):
    repo, revs = dated_repo
    spec = _env(tmp_path, 'date = 2024-01-01\n[nixpkgs]\npackages = ["hello"]\n')
    lock_file(spec, Config(nixpkgs_source=str(repo)))
    text = lock_path_for(spec).read_text()
    assert "[python]" not in text and revs[1] in text


def test_corrupt_lock_is_65(tmp_path, run_cli):
    spec = _env(tmp_path, "date = 2024-01-01\n")
    lock_path_for(spec).write_text("lock_version = 1\n[nixpkgs]\nrev = 'x'\n")
    r = run_cli("lock", "--check", str(spec))
    assert r.returncode == 65 and "e.lock.toml" in r.stderr and "Traceback" not in r.stderr


GOOD_LOCK = """lock_version = 1
spec_sha256 = "{h}"
date = "2024-01-01"

[nixpkgs]
branch = "nixos-unstable"
rev = "{rev}"
commit_time = "2023-12-31T10:00:00Z"
pinned = false

[python]
version = "3.11"
platform = "x86_64-manylinux_2_28"

[[python.wheels]]
name = "six"
version = "1.16.0"
url = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl"
sha256 = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"
""".format(h="a" * 64, rev="b" * 40)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (('version = "1.16.0"', 'version = "99.0"'), "python.wheels[0]"),  # label over another wheel
        (('name = "six"', 'name = "numpy"'), "python.wheels[0]"),
        (('rev = "' + "b" * 40, 'rev = "\\n' + "b" * 39), "nixpkgs.rev"),
        (('sha256 = "8abb', 'sha256 = "\\n8ab'), "python.wheels[0].sha256"),
        (("pinned = false", 'pinned = "false"'), "nixpkgs.pinned"),
        (("pinned = false", "pinned = false\nextra = 1"), "nixpkgs.extra"),
        (('branch = "nixos-unstable"', "branch = 7"), "nixpkgs.branch"),
        (('commit_time = "2023-12-31T10:00:00Z"', "commit_time = 2023-12-31T10:00:00Z"), "nixpkgs.commit_time"),
        (('date = "2024-01-01"', 'date = "2024-01-01\\n"'), "date"),
        (('version = "3.11"', "version = 3.11"), "python.version"),
        (("lock_version = 1", "lock_version = 2"), "lock_version"),
    ],
)
def test_tampered_lock_is_65_naming_the_key(edit, key):
    from snakemake_deploy_nixsnake.lock import parse_lock

    assert parse_lock(GOOD_LOCK, "e.lock.toml").wheels[0].version == "1.16.0"
    text = GOOD_LOCK.replace(*edit)
    assert text != GOOD_LOCK
    with pytest.raises(SpecError) as e:
        parse_lock(text, "e.lock.toml")
    assert e.value.code == 65 and str(e.value).startswith(f"e.lock.toml: {key}"), str(e.value)
    assert "\n" not in str(e.value)


def test_tampered_lock_through_the_cli_is_one_line_65(tmp_path, run_cli):
    spec = _env(tmp_path, "date = 2024-01-01\n")
    lock_path_for(spec).write_text(GOOD_LOCK.replace('version = "1.16.0"', 'version = "99.0"'))
    r = run_cli("inspect", str(spec))
    assert r.returncode == 65, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "says six 99.0 but the wheel is six 1.16.0" in r.stderr


def test_lock_check_and_build_refuse_a_rev_the_source_does_not_have(workspace, run_cli):
    """A committed lock naming a commit the configured source lacks (made against another
    source): `lock --check` says so (65) and a build stops with nixsnake's message, not
    nix's."""
    spec = workspace / "envs" / "x.toml"
    spec.write_text('date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')
    assert run_cli("lock", str(spec)).returncode == 0
    assert run_cli("lock", "--check", str(spec)).returncode == 0
    lock = lock_path_for(spec)
    real = read_lock(spec).nixpkgs.rev
    lock.write_text(lock.read_text().replace(real, "0123456789abcdef0123456789abcdef01234567"))
    r = run_cli("lock", "--check", str(spec))
    assert r.returncode == 65, r.stderr
    assert (
        f"{lock}: nixpkgs.rev: commit 0123456789abcdef0123456789abcdef01234567 is not in the demo package set"
        in r.stderr
    )
    r = run_cli("build", str(spec))
    assert r.returncode == 65, r.stderr
    assert "is not in the demo package set" in r.stderr and "re-run `nixsnake lock" in r.stderr
    assert "error:" not in r.stderr.lower().replace("nixsnake:", "")  # no nix error text


# ------------------------------------------------------------------ the Nix version nixpkgs needs


def test_compare_versions_is_nix_s():
    """nixsnake compares versions exactly as nix's builtins.compareVersions (what
    nixpkgs' default.nix uses against builtins.nixVersion)."""
    from snakemake_deploy_nixsnake.nixpkgs import compare_versions

    pairs = [
        ("2.3", "2.8.0"), ("2.3.17", "2.18"), ("2.18", "2.8.0"), ("2.18", "2.18.3-lix"), ("2.18", "2.18"),
        ("2.18pre20230101", "2.18"), ("2.8.0", "2.8"), ("2.18", "2.31.0pre20250101_abcdef"), ("2.3a", "2.3.1"),
        ("1.10", "1.9"), ("2.24.10", "2.24.9"), ("", "0"),
    ]  # fmt: skip
    mine = [compare_versions(a, b) for a, b in pairs]
    if shutil.which("nix-instantiate"):
        expr = "[ " + " ".join(f'(builtins.compareVersions "{a}" "{b}")' for a, b in pairs) + " ]"
        r = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert mine == json.loads(r.stdout)
    assert mine[:3] == [-1, -1, 1]


def test_min_nix_files_in_nixpkgs_shapes():
    from snakemake_deploy_nixsnake.nixpkgs import parse_min_nix

    assert (
        parse_min_nix("lib/minver.nix", '# Expose the minimum required version for evaluating Nixpkgs\n"2.3.17"\n')
        == "2.3.17"
    )
    minfeatures = (
        'let\n  features = [\n    {\n      description = "the `nixVersion` builtin";\n'
        "      condition = builtins ? nixVersion;\n    }\n    {\n"
        '      description = "`builtins.nixVersion` reports at least 2.18";\n'
        '      condition = builtins ? nixVersion && builtins.compareVersions "2.18" builtins.nixVersion != 1;\n'
        "    }\n  ];\n  evaluated = builtins.partition ({ condition, ... }: condition) features;\nin\n"
        "{\n  all = features;\n  supported = evaluated.right;\n  missing = evaluated.wrong;\n}\n"
    )  # nixpkgs' lib/minfeatures.nix as of 2025-08-22
    assert parse_min_nix("lib/minfeatures.nix", minfeatures) == "2.18"
    assert parse_min_nix("lib/minver.nix", "builtins.readFile ./x") is None  # another shape: nix tells


def _local_nix_below(version: str) -> bool:
    from snakemake_deploy_nixsnake.nixpkgs import compare_versions, local_nix_version

    local = local_nix_version()
    return local is not None and compare_versions(version, local) > 0


@pytest.mark.nix
@pytest.mark.parametrize(("day", "file"), [("2025-09-01", "lib/minver.nix"), ("2025-12-01", "lib/minfeatures.nix")])
def test_lock_refuses_a_nixpkgs_this_nix_cannot_evaluate(workspace, run_cli, day, file):
    """The demo branch nixos-25.11 needs Nix >= 2.18 from 2025-08-15 (lib/minver.nix) and
    2025-11-30 (lib/minfeatures.nix), as nixpkgs does: locking there with Nix 2.8 is exit
    69 naming both versions and how to get a newer nix."""
    if not _local_nix_below("2.18"):
        pytest.skip("the nix here is 2.18 or newer")
    from snakemake_deploy_nixsnake.nixpkgs import local_nix_version

    spec = workspace / "envs" / "new.toml"
    spec.write_text(f'date = {day}\n[nixpkgs]\nbranch = "nixos-25.11"\npackages = ["hello"]\n')
    r = run_cli("lock", str(spec))
    assert r.returncode == 69, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"needs Nix >= 2.18 (its {file}); the nix here is {local_nix_version()}" in line
    assert "official installer" in line and "module" in line
    assert not lock_path_for(spec).exists()
    # the same branch before its 2.18 commits locks (24.11/25.05: 2.3.17)
    spec.write_text('date = 2025-06-01\n[nixpkgs]\nbranch = "nixos-25.11"\npackages = ["hello"]\n')
    assert run_cli("lock", str(spec)).returncode == 0


@pytest.mark.nix
def test_build_and_doctor_name_the_nix_a_nixpkgs_needs(workspace, run_cli):
    """A lock made elsewhere (with a newer nix) for a nixpkgs the nix here cannot evaluate:
    the build stops with nixsnake's 69 line instead of nixpkgs' abort text, and `nixsnake
    doctor ENV...` reports each env."""
    if not _local_nix_below("2.18"):
        pytest.skip("the nix here is 2.18 or newer")
    from snakemake_deploy_nixsnake import demo
    from snakemake_deploy_nixsnake.lock import Lock, render_lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin
    from snakemake_deploy_nixsnake.spec import load_spec

    new = workspace / "envs" / "new.toml"
    new.write_text('date = 2025-12-01\n[nixpkgs]\nbranch = "nixos-25.11"\npackages = ["hello"]\n')
    rev = demo.demo_revs(demo.default_repo())["nixos-25.11"]
    lock = Lock(load_spec(new).spec_hash(), "2025-12-01", NixpkgsPin("nixos-25.11", rev, "2025-11-30T12:00:00Z", False))
    lock_path_for(new).write_text(render_lock(lock, new.name))
    r = run_cli("build", str(new))
    assert r.returncode == 69, r.stderr
    assert f"{new}: nixpkgs {rev[:12]} needs Nix >= 2.18; the nix here is" in r.stderr
    assert "official installer" in r.stderr and "evaluation aborted" not in r.stderr

    old = workspace / "envs" / "old.toml"
    old.write_text('date = 2024-06-01\n[nixpkgs]\npackages = ["hello"]\n')  # no lock: resolved by doctor, not written
    r = run_cli("doctor", "--runtime", "bwrap", str(new), str(old), env={"COLUMNS": "1000"})
    assert f"nix for {new}" in r.stdout and "needs Nix >= 2.18 (its lib/minfeatures.nix)" in r.stdout
    assert f"nix for {old}" in r.stdout and "needs Nix >= 2.3; the nix here is" in r.stdout
    assert r.returncode == 69 and not lock_path_for(old).exists()


# ------------------------------------------------------------------ GitHub: the same answer as git


@pytest.mark.parametrize(
    "day",
    ["2023-06-02", "2023-12-15", "2023-12-16", "2024-01-11", "2024-03-02", "2025-01-01", "2023-01-01"],
)
def test_github_resolves_dates_like_git_first_parent(dated_repo, day):
    """The GitHub path walks first parents through the API (GitHub answers in the
    stand-in's recorded shape): every date gives the commit `git rev-list --first-parent`
    gives on a mirror, never a commit from inside a merged branch."""
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake.nixpkgs import parse_source, resolve_github

    repo, _ = dated_repo
    with GitHubStandIn(repo) as gh:
        source = parse_source(gh.source)
        try:
            want = resolve_git(str(repo), "nixos-unstable", dt.date.fromisoformat(day), "x.toml").rev
        except SpecError as exc:
            with pytest.raises(SpecError) as got:
                resolve_github(source, "nixos-unstable", dt.date.fromisoformat(day), "x.toml")
            assert got.value.key == exc.key == "date"
            return
        assert resolve_github(source, "nixos-unstable", dt.date.fromisoformat(day), "x.toml").rev == want


def test_github_until_alone_would_pick_a_merged_branch_commit(dated_repo):
    """Why the walk: for 2024-01-11 GitHub's `until` answers the side branch's commit
    (dated 2024-01-10, merged 2024-03-05), which was never on nixos-unstable then."""
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake.nixpkgs import parse_source, resolve_github

    repo, revs = dated_repo
    side = _git(repo, "rev-parse", "side")
    with GitHubStandIn(repo) as gh:
        url = f"{gh.base}/api/v3/repos/NixOS/nixpkgs/commits?sha=nixos-unstable&until=2024-01-11T00:00:00Z&per_page=1"
        import urllib.request

        with urllib.request.urlopen(url) as resp:
            assert json.load(resp)[0]["sha"] == side
        pin = resolve_github(parse_source(gh.source), "nixos-unstable", dt.date(2024, 1, 11), "x.toml")
    assert pin.rev == revs[1] != side and pin.commit_time == "2023-12-15T08:30:00Z"


def _long_history(repo: Path, days: int) -> list[str]:
    """A branch with one merge of a two-commit side branch per day (first-parent commits
    at 12:00, side commits at 06:00 and 09:00), made with git's plumbing (fast)."""
    _git(repo, "init", "-q", "-b", "nixos-unstable")
    tree = _git(repo, "write-tree")
    first = []
    parent = None
    day0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def commit(msg: str, when: dt.datetime, *parents: str) -> str:
        args = ["commit-tree", tree, "-m", msg]
        for p in parents:
            args += ["-p", p]
        return _git(repo, *args, date=when.strftime("%Y-%m-%dT%H:%M:%SZ"))

    for i in range(days):
        day = day0 + dt.timedelta(days=i)
        if parent is None:
            parent = commit("root", day + dt.timedelta(hours=12))
        else:
            a = commit(f"side {i} a", day + dt.timedelta(hours=6), parent)
            b = commit(f"side {i} b", day + dt.timedelta(hours=9), a)
            parent = commit(f"merge {i}", day + dt.timedelta(hours=12), parent, b)
        first.append(parent)
    _git(repo, "update-ref", "refs/heads/nixos-unstable", parent)
    return first


def test_github_walk_costs_one_request_per_page_and_reuses_the_cache(tmp_path):
    """A walk reads 100 commits per request and caches every page by its first commit;
    a later lock (the branch has moved on) walks to the old head and continues on cached
    pages: only the new part costs requests."""
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake.nixpkgs import parse_source, resolve_github

    repo = tmp_path / "long"
    repo.mkdir()
    first = _long_history(repo, 120)  # 120 first-parent commits, 358 in all
    with GitHubStandIn(repo) as gh:
        source = parse_source(gh.source)
        pin = resolve_github(source, "nixos-unstable", dt.date(2024, 1, 3), "x.toml")
        assert pin.rev == first[1]
        cold = len(gh.api_requests())
        assert 4 <= cold <= 6, gh.api_requests()  # 358 commits / 100 per page, +1 for the head
        for day in (dt.date(2024, 2, 1), dt.date(2024, 1, 2)):  # everything cached but the head
            before = len(gh.api_requests())
            want = resolve_git(str(repo), "nixos-unstable", day, "x.toml").rev
            assert resolve_github(source, "nixos-unstable", day, "x.toml").rev == want
            assert len(gh.api_requests()) - before == 1
        # the branch moves on by 30 days: the walk reaches the old head, then cached pages
        tree = _git(repo, "write-tree")
        head = first[-1]
        for i in range(30):
            when = (dt.datetime(2024, 4, 30, 12, tzinfo=dt.UTC) + dt.timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            head = _git(repo, "commit-tree", tree, "-p", head, "-m", f"new {i}", date=when)
        _git(repo, "update-ref", "refs/heads/nixos-unstable", head)
        before = len(gh.api_requests())
        assert resolve_github(source, "nixos-unstable", dt.date(2024, 1, 3), "x.toml").rev == first[1]
        assert len(gh.api_requests()) - before == 1  # the head page covers the 30 new commits


# ------------------------------------------------------------------ wheels by platform tag

UV_DATA = Path(__file__).parent / "data" / "uv"


def _pylock(platform: str) -> dict:
    import tomllib

    return tomllib.loads((UV_DATA / f"pylock.{platform}.toml").read_text())


def _files(wheels) -> dict[str, str]:
    return {w.name: w.url.rsplit("/", 1)[-1] for w in wheels}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_wheels_are_chosen_by_tag_not_by_uv_s_order(arch):
    """uv's output (recorded: cryptography, orjson, charset-normalizer as of 2024-06-01
    for CPython 3.11) lists several fitting wheels per package; nixsnake takes the one
    the interpreter ranks first: cp311 over abi3 over pure Python, abi3 of the newer
    CPython, the newest manylinux."""
    from snakemake_deploy_nixsnake.pypi import select_wheels

    platform = f"{arch}-manylinux_2_28"
    data = _pylock(platform)
    got = _files(select_wheels(data, "3.11", platform, "x.toml"))
    assert got == {
        "cffi": f"cffi-1.16.0-cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}.whl",
        "charset-normalizer": f"charset_normalizer-3.3.2-cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}.whl",
        "cryptography": f"cryptography-42.0.7-cp39-abi3-manylinux_2_28_{arch}.whl",
        "orjson": f"orjson-3.10.3-cp311-cp311-manylinux_2_17_{arch}.manylinux2014_{arch}.whl",
        "pycparser": "pycparser-2.22-py3-none-any.whl",
    }
    # uv's first wheel would have been another file for two of them
    firsts = {p["name"]: p["wheels"][0]["url"].rsplit("/", 1)[-1] for p in data["packages"]}
    assert firsts["cryptography"] != got["cryptography"]
    # an index listing every file (both architectures, macOS, musllinux; reversed): the same choice
    other = "aarch64" if arch == "x86_64" else "x86_64"
    mixed = _pylock(f"{other}-manylinux_2_28")
    for pkg, more in zip(data["packages"], mixed["packages"]):
        extra = [
            dict(w, url=w["url"].replace("manylinux_2_28", "macosx_11_0").replace(other, "arm64"))
            for w in more["wheels"]
        ]
        extra += [dict(w, url=w["url"].replace("manylinux_2_17", "musllinux_1_1")) for w in pkg["wheels"]]
        pkg["wheels"] = list(reversed(pkg["wheels"] + more["wheels"] + extra))
    assert _files(select_wheels(data, "3.11", platform, "x.toml")) == got


def test_no_wheel_for_the_platform_is_65():
    from snakemake_deploy_nixsnake.pypi import select_wheels

    data = _pylock("aarch64-manylinux_2_28")
    with pytest.raises(SpecError) as e:
        select_wheels(data, "3.11", "x86_64-manylinux_2_28", "x.toml")
    assert e.value.key == "python.packages" and "has no wheel for CPython 3.11 on x86_64-manylinux_2_28" in str(e.value)
    assert "uv listed cffi-1.16.0-cp311-cp311-manylinux_2_17_aarch64" in str(e.value)
    # a wheel for another CPython does not fit either
    with pytest.raises(SpecError, match=r"no wheel for CPython 3\.12"):
        select_wheels(_pylock("x86_64-manylinux_2_28"), "3.12", "x86_64-manylinux_2_28", "x.toml")


# ------------------------------------------------------------------ x86_64 and aarch64


def test_the_architecture_is_the_build_machine_s(monkeypatch):
    import platform

    from snakemake_deploy_nixsnake import arch
    from snakemake_deploy_nixsnake.deploy import image_id
    from snakemake_deploy_nixsnake.errors import NixsnakeError
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin
    from snakemake_deploy_nixsnake.spec import parse_spec

    for machine, system, py, sif in (
        ("x86_64", "x86_64-linux", "x86_64-manylinux_2_28", "amd64"),
        ("aarch64", "aarch64-linux", "aarch64-manylinux_2_28", "arm64"),
        ("arm64", "aarch64-linux", "aarch64-manylinux_2_28", "arm64"),
    ):
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        assert arch.host_system() == system and arch.py_platform(system) == py and arch.sif_arch(system) == sif
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    with pytest.raises(NixsnakeError) as e:
        arch.host_system()
    assert e.value.code == 69 and "x86_64-linux and aarch64-linux" in str(e.value)
    # one env, two architectures: two images
    env = parse_spec(b"date = 2024-01-01\n")
    lock = Lock(env.spec_hash(), "2024-01-01", NixpkgsPin("b", "a" * 40, "2024-01-01T00:00:00Z", False))
    assert image_id(env, lock, "zstd", "x86_64-linux") != image_id(env, lock, "zstd", "aarch64-linux")


@pytest.mark.network
def test_an_aarch64_machine_locks_aarch64_wheels(tmp_path, dated_repo, monkeypatch):
    import platform

    repo, _ = dated_repo
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    spec = _env(tmp_path, 'date = 2024-06-01\n[python]\nversion = "3.11"\npackages = ["orjson"]\n')
    lock_file(spec, Config(nixpkgs_source=str(repo)))
    lock = read_lock(spec)
    assert lock.python_platform == "aarch64-manylinux_2_28"
    [w] = lock.wheels
    assert w.url.endswith("orjson-3.10.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    conda = _env(tmp_path, 'date = 2024-06-01\n[conda]\npackages = ["samtools"]\n')
    with pytest.raises(SpecError) as e:
        lock_file(conda, Config(nixpkgs_source=str(repo)))
    assert e.value.key == "conda" and "linux-64 packages only" in str(e.value)


@pytest.mark.nix
def test_lock_from_github_reads_the_nix_version_from_the_raw_file(workspace, run_cli):
    """The GitHub path reads lib/minver.nix / lib/minfeatures.nix at the rev as a raw file
    (no tarball download before the check)."""
    if not _local_nix_below("2.18"):
        pytest.skip("the nix here is 2.18 or newer")
    from github_standin import GitHubStandIn

    from snakemake_deploy_nixsnake import demo

    spec = workspace / "envs" / "new.toml"
    spec.write_text('date = 2025-12-01\n[nixpkgs]\nbranch = "nixos-25.11"\npackages = ["hello"]\n')
    with GitHubStandIn(demo.default_repo()) as gh:
        r = run_cli("lock", "--nixpkgs-source", gh.source, str(spec))
        asked = list(gh.requests)
    assert r.returncode == 69, r.stderr
    assert "needs Nix >= 2.18 (its lib/minfeatures.nix)" in r.stderr
    rev = demo.demo_revs(demo.default_repo())["nixos-25.11"]
    assert f"/NixOS/nixpkgs/raw/{rev}/lib/minfeatures.nix" in asked
    assert not any(p.endswith(".tar.gz") for p in asked)
