"""The runtime layer: exact command strings, and real runs through squashfuse + bwrap.

Unit tests pin the full strings ``shell_command`` & co. produce. "Fidelity" tests run
those strings with bash and dash against a recorder that stands where apptainer would,
to check the exact argv and environment that arrive. End-to-end tests build a small real
SIF (tests/_image_fixtures.py) and run jobs through the apptainer TEST STAND-IN
(tests/standin/apptainer, first on PATH) and through the bwrap runtime; they skip only
when squashfuse, bwrap, mksquashfs, /dev/fuse or a static busybox are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import _fake_driver
import _image_fixtures as fx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakemake_deploy_nixsnake import runtime as rt
from snakemake_deploy_nixsnake.binds import Bind, parse_bind
from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.runtime import (
    RunRequest,
    exec_argv,
    gpu_probe_snippet,
    shell_argv,
    shell_command,
)

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "standin"
BWRAP_EXEC = REPO / "snakemake_deploy_nixsnake" / "data" / "bwrap-exec.sh"

IMG = Path("/img/env.sif")
WD = Path("/work/wd")
BX = Path("/pkg/bwrap-exec.sh")

PROBE = (
    "nixsnake_gpu=; if [ -e /dev/nvidiactl ] || [ -e /dev/nvidia0 ]; then nixsnake_gpu=--nv; "
    "elif [ -e /dev/kfd ]; then nixsnake_gpu=--rocm; "
    'elif [ -n "${SLURM_JOB_GPUS:-}" ] || [ -n "${SLURM_STEP_GPUS:-}" ] '
    '|| { [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES:-}" != NoDevFiles ]; } '
    "|| nvidia-smi -L >/dev/null 2>&1; then nixsnake_gpu=--nv; fi; "
)
PROBE_BWRAP = PROBE.replace("nixsnake_gpu=--rocm", ":")
NO_GPU_ENV = "export APPTAINER_NO_NV=1 SINGULARITY_NO_NV=1 APPTAINER_NO_ROCM=1 SINGULARITY_NO_ROCM=1; "


def req(**kw) -> RunRequest:
    kw.setdefault("image", IMG)
    kw.setdefault("gpu", "never")
    kw.setdefault("bwrap_exec", BX)
    return RunRequest(**kw)


# --- pinned strings ----------------------------------------------------------------------


def test_package_data_path_and_offset():
    assert rt.BWRAP_EXEC == BWRAP_EXEC
    assert rt.BWRAP_EXEC.is_file()
    assert RunRequest(IMG).bwrap_exec == rt.BWRAP_EXEC
    from snakemake_deploy_nixsnake.image import sif

    # bwrap-exec.sh's constants are generated from the Python side (scripts/generate.py)
    assert f"_nx_sif_offset={sif.PARTITION_OFFSET}\n" in BWRAP_EXEC.read_text()
    assert rt.bwrap_header() in BWRAP_EXEC.read_text()
    # every character apptainer's --bind splits on is refused by the script too
    assert "_nx_bind_forbidden=',:^'\n" in rt.bwrap_header()


def test_plain():
    assert shell_command(req(workdir=WD), "echo hi") == (
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm --bind /work/wd:/work/wd --pwd /work/wd /img/env.sif bash -c 'echo hi'"
    )


def test_no_workdir_no_binds():
    assert (
        shell_command(req(), "true")
        == "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm /img/env.sif bash -c true"
    )


def test_gpu_always():
    assert shell_command(req(gpu="always", workdir=WD), "nvidia-smi") == (
        "exec apptainer exec --cleanenv --no-eval --nv --bind /work/wd:/work/wd --pwd /work/wd /img/env.sif bash -c nvidia-smi"
    )


def test_gpu_never_has_no_probe_and_cancels_the_sites_always_use_nv():
    s = shell_command(req(gpu="never", workdir=WD), "echo hi")
    assert "--nv" not in s and "nvidia" not in s
    assert s.startswith("exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm --bind ")
    assert shell_command(req(runtime="singularity"), "x") == (
        NO_GPU_ENV + "exec singularity exec --cleanenv /img/env.sif bash -c x"
    )
    assert shell_command(req(runtime="bwrap"), "x") == "exec /bin/sh /pkg/bwrap-exec.sh /img/env.sif -- bash -c x"


def test_gpu_auto():
    assert gpu_probe_snippet() == PROBE
    assert gpu_probe_snippet("bwrap") == PROBE_BWRAP  # bwrap-exec.sh has no --rocm
    assert shell_command(req(gpu="auto", workdir=WD), "echo hi") == (
        PROBE
        + "exec apptainer exec --cleanenv --no-eval ${nixsnake_gpu:---no-nv --no-rocm} --bind /work/wd:/work/wd --pwd /work/wd "
        "/img/env.sif bash -c 'echo hi'"
    )


def test_default_gpu_is_auto():
    assert RunRequest(IMG).gpu == "auto"
    assert shell_command(RunRequest(IMG), "x").startswith(PROBE)


def test_extra_binds():
    r = req(workdir=WD, binds=(Bind("/data/ref", "/ref", "ro"), parse_bind("/scratch/tmp:/tmp/snk")))
    assert shell_command(r, "ls /ref") == (
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm --bind /work/wd:/work/wd --bind /data/ref:/ref:ro "
        "--bind /scratch/tmp:/tmp/snk --pwd /work/wd /img/env.sif bash -c 'ls /ref'"
    )


def test_paths_with_spaces_and_quotes():
    r = req(image=Path("/images/my env's.sif"), workdir=Path("/work/my dir/it's"), binds=(Bind("/a b", "/c d", "ro"),))
    assert shell_command(r, "pwd") == (
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm "
        "--bind '/work/my dir/it'\"'\"'s:/work/my dir/it'\"'\"'s' "
        "--bind '/a b:/c d:ro' "
        "--pwd '/work/my dir/it'\"'\"'s' "
        "'/images/my env'\"'\"'s.sif' bash -c pwd"
    )


def test_and_list_pipe_and_heredoc_stay_one_word():
    assert shell_command(req(), "a && b || c; d | e > 'f g'") == (
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm /img/env.sif bash -c 'a && b || c; d | e > '\"'\"'f g'\"'\"''"
    )
    assert shell_command(req(), "cat <<EOF\nhi $USER\nEOF") == (
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm /img/env.sif bash -c 'cat <<EOF\nhi $USER\nEOF'"
    )


def test_envvars_pass_through_by_name():
    assert shell_command(req(workdir=WD, envvars=("API_TOKEN", "B_2")), "x") == (
        '[ -z "${API_TOKEN+x}" ] || export APPTAINERENV_API_TOKEN="$API_TOKEN"; '
        '[ -z "${B_2+x}" ] || export APPTAINERENV_B_2="$B_2"; '
        "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm --bind /work/wd:/work/wd --pwd /work/wd /img/env.sif bash -c x"
    )


TMP_PATTERNS = (
    "*[,:^]* | *[![:print:]]* | *[[:space:]] | //* | */./* | */../* | */. | */.. | */ | / | /tmp | /var/tmp | "
    "/nix | /nix/* | /.singularity.d | /.singularity.d/* | /.nixsnake | /.nixsnake/* | /bin | /bin/* | /etc | /etc/* | "
    "/usr/bin | /usr/bin/* | /usr"
)


def test_tmpdir_is_bound_when_passed():
    """TMPDIR is passed into the job, so the directory it names is bound when the job starts."""
    r = req(workdir=WD, envvars=("TMPDIR",))
    assert rt.tmpdir_snippet(r) == (
        f"nixsnake_tmp=; case ${{TMPDIR-}} in /?*) case $TMPDIR in {TMP_PATTERNS} | /work/wd) ;; "
        '*) [ ! -d "$TMPDIR" ] || nixsnake_tmp=$TMPDIR ;; esac ;; esac; '
    )
    assert shell_command(r, "x") == (
        rt.tmpdir_snippet(r) + '[ -z "${TMPDIR+x}" ] || export APPTAINERENV_TMPDIR="$TMPDIR"; '
        'exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm --bind /work/wd:/work/wd ${nixsnake_tmp:+--bind "$nixsnake_tmp"} '
        "--pwd /work/wd /img/env.sif bash -c x"
    )
    assert exec_argv(req(runtime="bwrap", envvars=("TMPDIR",)), ["ls"]) == [
        "/bin/sh", "-c",
        rt.tmpdir_snippet(req(envvars=("TMPDIR",))) + "exec /bin/sh /pkg/bwrap-exec.sh --pass TMPDIR "
        '${nixsnake_tmp:+--bind "$nixsnake_tmp"} /img/env.sif -- "$@"',
        "nixsnake", "ls",
    ]  # fmt: skip
    assert "nixsnake_tmp" not in shell_command(req(envvars=("TMP",)), "x")  # only TMPDIR names "the" temp dir


NO_EVAL_TOKEN = (  # the singularity runtime's run-time --no-eval decision for one variable, TOKEN
    r'nixsnake_ne=; case "${TOKEN-}" in *[\\\$\`]*) case $(singularity --version 2>/dev/null) in '
    r'"apptainer version "0* | "apptainer version "1.0* | "singularity-ce version "3.[0-9] | '
    r'"singularity-ce version "3.[0-9][!0-9]*) ;; "apptainer version "[1-9]* | "singularity-ce version "[3-9]*) '
    r'nixsnake_ne=--no-eval ;; esac; [ -n "$nixsnake_ne" ] || { for nixsnake_k in TOKEN; do '
    r'eval "nixsnake_s=\${$nixsnake_k-}; nixsnake_set=\${$nixsnake_k+x}"; [ -n "$nixsnake_set" ] || continue; '
    r"nixsnake_r=; while :; do case $nixsnake_s in *[\\\$\`]*) nixsnake_p=${nixsnake_s%%[\\\$\`]*}; "
    r'nixsnake_s=${nixsnake_s#"$nixsnake_p"}; nixsnake_r=$nixsnake_r$nixsnake_p\\${nixsnake_s%"${nixsnake_s#?}"}; '
    r"nixsnake_s=${nixsnake_s#?} ;; *) nixsnake_r=$nixsnake_r$nixsnake_s; break ;; esac; done; "
    r'eval "export APPTAINERENV_$nixsnake_k=\"\$nixsnake_r\" SINGULARITYENV_$nixsnake_k=\"\$nixsnake_r\""; '
    r"done; } ;; esac; "
)


def test_singularity_both_prefixes_and_no_eval_where_supported():
    assert rt.no_eval_snippet(req(runtime="singularity", envvars=("TOKEN",))) == NO_EVAL_TOKEN
    assert shell_command(req(runtime="singularity", gpu="auto", envvars=("TOKEN",)), "x") == (
        PROBE
        + '[ -z "${TOKEN+x}" ] || export APPTAINERENV_TOKEN="$TOKEN" SINGULARITYENV_TOKEN="$TOKEN"; '
        + '[ -n "$nixsnake_gpu" ] || '
        + NO_GPU_ENV
        + NO_EVAL_TOKEN
        + "exec singularity exec --cleanenv $nixsnake_ne $nixsnake_gpu /img/env.sif bash -c x"
    )
    # nothing passed, nothing to protect: no decision
    assert shell_command(req(runtime="singularity", gpu="always"), "x") == (
        "exec singularity exec --cleanenv --nv /img/env.sif bash -c x"
    )


def test_bwrap_runtime():
    r = req(runtime="bwrap", gpu="auto", workdir=WD, envvars=("TOKEN",), binds=(Bind("/d", "/d", "ro"),))
    assert shell_command(r, "a && b") == (
        PROBE_BWRAP + "exec /bin/sh /pkg/bwrap-exec.sh $nixsnake_gpu --pass TOKEN --bind /work/wd:/work/wd "
        "--bind /d:/d:ro --pwd /work/wd /img/env.sif -- bash -c 'a && b'"
    )
    assert shell_command(req(runtime="bwrap", gpu="always"), "x") == (
        "exec /bin/sh /pkg/bwrap-exec.sh --nv /img/env.sif -- bash -c x"
    )


def test_other_shell():
    assert (
        shell_command(req(shell="zsh"), "x")
        == "exec apptainer exec --cleanenv --no-eval --no-nv --no-rocm /img/env.sif zsh -c x"
    )


def test_exec_argv():
    assert exec_argv(req(workdir=WD), ["ls", "-l", "a b"]) == [
        "apptainer", "exec", "--cleanenv", "--no-eval", "--no-nv", "--no-rocm", "--bind", "/work/wd:/work/wd", "--pwd", "/work/wd", "/img/env.sif",
        "ls", "-l", "a b",
    ]  # fmt: skip
    assert exec_argv(req(gpu="auto", envvars=("A",)), ["ls"]) == [
        "/bin/sh",
        "-c",
        PROBE
        + '[ -z "${A+x}" ] || export APPTAINERENV_A="$A"; exec apptainer exec --cleanenv --no-eval ${nixsnake_gpu:---no-nv --no-rocm} '
        '/img/env.sif "$@"',
        "nixsnake",
        "ls",
    ]
    assert exec_argv(req(runtime="bwrap", envvars=("A",)), ["ls"]) == [
        "/bin/sh", "/pkg/bwrap-exec.sh", "--pass", "A", "/img/env.sif", "--", "ls",
    ]  # fmt: skip
    with pytest.raises(NixsnakeError) as e:
        exec_argv(req(), [])
    assert e.value.code == Exit.DATAERR


def test_shell_argv():
    assert shell_argv(req(workdir=WD)) == [
        "apptainer", "shell", "--cleanenv", "--no-eval", "--no-nv", "--no-rocm", "--bind", "/work/wd:/work/wd", "--pwd", "/work/wd", "/img/env.sif",
    ]  # fmt: skip
    assert shell_argv(req(shell="zsh", gpu="always")) == [
        "apptainer", "shell", "--cleanenv", "--shell", "/bin/zsh", "--no-eval", "--nv", "/img/env.sif",
    ]  # fmt: skip
    assert shell_argv(req(runtime="bwrap")) == [
        "/bin/sh",
        "/pkg/bwrap-exec.sh",
        "/img/env.sif",
        "--",
        "/bin/bash",
        "--norc",
    ]
    assert shell_argv(req(runtime="singularity", gpu="auto", runtime_bin="/opt/s p/singularity", envvars=("A",)))[
        2
    ] == (
        PROBE
        + '[ -z "${A+x}" ] || export APPTAINERENV_A="$A" SINGULARITYENV_A="$A"; '
        + '[ -n "$nixsnake_gpu" ] || '
        + NO_GPU_ENV
        + NO_EVAL_TOKEN.replace("TOKEN", "A").replace("$(singularity ", "$('/opt/s p/singularity' ")
        + "exec '/opt/s p/singularity' shell --cleanenv $nixsnake_ne $nixsnake_gpu /img/env.sif"
    )
    assert shell_argv(req(runtime="singularity", gpu="auto")) == [
        "/bin/sh", "-c", PROBE + '[ -n "$nixsnake_gpu" ] || ' + NO_GPU_ENV
        + "exec singularity shell --cleanenv $nixsnake_gpu /img/env.sif", "nixsnake",
    ]  # fmt: skip


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/a:b", "/a,b", "/a\nb", "rel/dir"])
def test_bad_paths_are_refused(path):
    for make in (lambda: Bind(path, "/x"), lambda: Bind("/x", path), lambda: RunRequest(IMG, workdir=Path(path))):
        with pytest.raises(NixsnakeError) as e:
            make()
        assert e.value.code == Exit.DATAERR
        assert "hint" in str(e.value)


@pytest.mark.parametrize(
    "name",
    ["", "1A", "A-B", "A B", "PATH", "HOME", "LD_LIBRARY_PATH", "IFS", "APPTAINER_BIND", "SINGULARITYENV_X", "_nx_x"],
)
def test_bad_envvar_names(name):
    with pytest.raises(NixsnakeError) as e:
        RunRequest(IMG, envvars=(name,))
    assert e.value.code == Exit.DATAERR


@pytest.mark.parametrize(
    "kw",
    [
        {"runtime": "docker"},
        {"gpu": "yes"},
        {"image": Path("relative.sif")},
        {"image": "/a://b.sif"},
        {"shell": "bash -x"},
        {"shell": "a;b"},
    ],
)
def test_bad_requests(kw):
    with pytest.raises(NixsnakeError):
        RunRequest(**{"image": IMG, **kw})


def test_nul_in_command_refused():
    with pytest.raises(NixsnakeError):
        shell_command(req(), "a\x00b")


# --- fidelity: what bash and dash really pass to the runtime --------------------------------

RECORDER = f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:] == ["--version"]:  # the singularity runtime's --no-eval decision asks this
    with open(os.environ["NIXSNAKE_TEST_RECORD"] + ".version-asked", "a") as f:
        f.write("asked\\n")
    print(os.environ.get("NIXSNAKE_TEST_VERSION", "singularity-ce version 4.1.5"))
    sys.exit(0)
with open(os.environ["NIXSNAKE_TEST_RECORD"], "a") as f:
    f.write(json.dumps({{
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:],
        "env": {{k: v for k, v in os.environ.items() if k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}},
        "flags_env": {{k: v for k, v in os.environ.items() if k.startswith(("APPTAINER_", "SINGULARITY_"))}},
    }}) + "\\n")
"""

SHELLS = [s for s in ("bash", "dash") if shutil.which(s)]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory):
    d = tmp_path_factory.mktemp("recorder")
    for name in ("apptainer", "singularity", "bwrap-exec.sh"):
        p = d / name
        p.write_text(RECORDER if name != "bwrap-exec.sh" else f'exec {d / "apptainer"} "$@"\n')
        p.chmod(0o755)
    return d


def record(recorder: Path, tmp_path: Path, shell: str, script: str | list[str], env: dict[str, str] | None = None):
    out = tmp_path / f"rec-{os.urandom(4).hex()}.jsonl"
    full_env = {"PATH": f"{recorder}:/usr/bin:/bin", "NIXSNAKE_TEST_RECORD": str(out), **(env or {})}
    argv = [shell, "-c", script] if isinstance(script, str) else script
    cp = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=30, check=False)
    assert cp.returncode == 0, cp.stderr
    (line,) = out.read_text().splitlines()
    return json.loads(line)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("runtime", ["apptainer", "singularity", "bwrap"])
def test_fidelity_argv_and_env(recorder, tmp_path, shell, runtime):
    tricky = 'it\'s "quoted" $(not run) `nor this` \\ and\na newline'
    r = req(
        runtime=runtime, gpu="always", workdir=Path("/w d/it's"), envvars=("TOKEN", "UNSET_ONE"),
        binds=(Bind("/a b", "/c", "ro"),), bwrap_exec=recorder / "bwrap-exec.sh",
    )  # fmt: skip
    cmd = "set -e; a && b | c <<'EOF'\nx $y\nEOF\necho \"done\""
    got = record(recorder, tmp_path, shell, shell_command(r, cmd), {"TOKEN": tricky})
    if runtime == "bwrap":
        assert got["argv"] == [
            "apptainer",  # the recorder stands in for bwrap-exec.sh here
            "--nv", "--pass", "TOKEN", "--pass", "UNSET_ONE", "--bind", "/w d/it's:/w d/it's", "--bind", "/a b:/c:ro",
            "--pwd", "/w d/it's", "/img/env.sif", "--", "bash", "-c", cmd,
        ]  # fmt: skip
        assert got["env"] == {}
    else:
        assert got["argv"] == [
            runtime, "exec", "--cleanenv", "--no-eval", "--nv", "--bind", "/w d/it's:/w d/it's", "--bind", "/a b:/c:ro",
            "--pwd", "/w d/it's", "/img/env.sif", "bash", "-c", cmd,
        ]  # fmt: skip
        want = {"APPTAINERENV_TOKEN": tricky}
        if runtime == "singularity":
            want["SINGULARITYENV_TOKEN"] = tricky
        assert got["env"] == want  # UNSET_ONE stays unset


@pytest.mark.parametrize("shell", SHELLS)
def test_fidelity_tmpdir_bind(recorder, tmp_path, shell):
    ok = tmp_path / "job tmp"
    for d in (ok, tmp_path / "a:b", tmp_path / "a^b", tmp_path / "sp ", tmp_path / "wd"):
        d.mkdir()
    r = req(workdir=tmp_path / "wd", envvars=("TMPDIR",), bwrap_exec=recorder / "bwrap-exec.sh")
    cases = {
        str(ok): ["--bind", str(ok)],
        str(ok) + "/": [],  # not canonical
        str(tmp_path / "missing"): [],
        str(tmp_path / "a:b"): [],  # apptainer's --bind cannot carry it
        str(tmp_path / "a^b"): [],
        str(tmp_path / "sp "): [],
        str(tmp_path / "wd"): [],  # already bound
        "/tmp": [],
        "/etc": [],
        "/usr": [],
        "/": [],
        "relative": [],
        "": [],
    }
    for runtime in ("apptainer", "bwrap"):
        for value, want in cases.items():
            got = record(recorder, tmp_path, shell, shell_command(replace(r, runtime=runtime), "x"), {"TMPDIR": value})
            wd = ["--bind", f"{tmp_path}/wd:{tmp_path}/wd"]
            i = got["argv"].index("--pwd")
            assert got["argv"][i - len(wd) - len(want) : i] == wd + want, (runtime, value, got["argv"])
    got = record(recorder, tmp_path, shell, shell_command(r, "x"))  # TMPDIR unset: no bind, no error
    assert got["argv"][1:9] == [
        "exec",
        "--cleanenv",
        "--no-eval",
        "--no-nv",
        "--no-rocm",
        "--bind",
        f"{tmp_path}/wd:{tmp_path}/wd",
        "--pwd",
    ]


def _apptainer_eval(shell: str, value: str) -> str:
    """What apptainer's injection script makes of a value without --no-eval:
    ``export X="VALUE"`` with only ``"`` escaped, sourced by a shell."""
    script = 'export X="' + value.replace('"', '\\"') + '"; printf %s "$X"'
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("version", "no_eval"),
    [
        ("singularity-ce version 4.1.5", True),
        ("singularity-ce version 3.10.0", True),
        ("apptainer version 1.1.0", True),  # apptainer's own `singularity`
        ("apptainer version 1.3.6-1.el8", True),
        ("singularity-ce version 3.9.2", False),
        ("singularity-ce version 3.9", False),
        ("apptainer version 1.0.3", False),
        ("singularity version 3.8.7-1.el7", False),  # legacy Singularity
        ("", False),  # unknown: escaping is right for every release that evaluates
    ],
)
def test_fidelity_singularity_no_eval_or_escape(recorder, tmp_path, shell, version, no_eval):
    """--no-eval where the release has it; elsewhere values escaped so that the release's
    own evaluation gives them back unchanged; no version question when nothing needs it."""
    tricky = 'it\'s "q" $(id) `x` \\ $HOME \\$ end\\'
    r = req(runtime="singularity", envvars=("TOKEN", "PLAIN", "UNSET_ONE"))
    env = {"TOKEN": tricky, "PLAIN": "a b", "NIXSNAKE_TEST_VERSION": version}
    got = record(recorder, tmp_path, shell, shell_command(r, "x"), env)
    assert ("--no-eval" in got["argv"]) is no_eval
    assert set(got["env"]) == {
        "APPTAINERENV_TOKEN",
        "SINGULARITYENV_TOKEN",
        "APPTAINERENV_PLAIN",
        "SINGULARITYENV_PLAIN",
    }
    for name, value in (("TOKEN", tricky), ("PLAIN", "a b")):
        arrived = got["env"][f"SINGULARITYENV_{name}"]
        assert got["env"][f"APPTAINERENV_{name}"] == arrived
        assert (arrived if no_eval else _apptainer_eval(shell, arrived)) == value, (name, arrived)
    asked = list(tmp_path.glob("*.version-asked"))
    assert len(asked) == 1
    asked[0].unlink()
    got = record(recorder, tmp_path, shell, shell_command(r, "x"), {"PLAIN": "a b", "TOKEN": "/x,y:z"})
    assert "--no-eval" not in got["argv"] and got["env"]["SINGULARITYENV_TOKEN"] == "/x,y:z"
    assert not list(tmp_path.glob("*.version-asked")), "asked for the version although no value needed it"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_fidelity_any_command(recorder, tmp_path, cmd):
    got = record(recorder, tmp_path, "bash", shell_command(req(workdir=WD), cmd))
    assert got["argv"][-3:] == ["bash", "-c", cmd]


@pytest.mark.parametrize("shell", SHELLS)
def test_fidelity_exec_argv(recorder, tmp_path, shell):
    r = req(gpu="auto", envvars=("TOKEN",))
    argv = exec_argv(r, ["printf", "%s|", "a b", "it's", ""])
    argv[0] = shutil.which(shell)  # run the wrapper with each shell
    got = record(recorder, tmp_path, shell, argv, {"TOKEN": "v"})
    assert got["argv"][-6:] == ["/img/env.sif", "printf", "%s|", "a b", "it's", ""]
    assert got["env"] == {"APPTAINERENV_TOKEN": "v"}


def _probe(env: dict[str, str], devices: list[str] = (), runtime: str = "apptainer") -> str:
    """Run the probe in a sandbox whose /dev holds only ``devices`` (no host state touched)."""
    binds = []
    for d in devices:
        binds += ["--ro-bind", "/dev/null", d]
    script = "set -eu; " + gpu_probe_snippet(runtime) + 'printf %s "$nixsnake_gpu"'
    cp = subprocess.run(
        ["bwrap", "--dev-bind", "/", "/", "--dev", "/dev", *binds, "/usr/bin/env", "-i", "PATH=/nonexistent", *[f"{k}={v}" for k, v in env.items()], "/bin/bash", "-c", script],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed (apt-get install bubblewrap)")
@pytest.mark.parametrize(
    ("env", "devices", "want"),
    [
        ({}, [], ""),
        ({}, ["/dev/nvidia0"], "--nv"),
        ({}, ["/dev/nvidiactl"], "--nv"),
        ({}, ["/dev/nvidia1"], ""),  # only nvidia0/nvidiactl count (SLURM's rig has both)
        ({"SLURM_JOB_GPUS": "0"}, [], "--nv"),
        ({"SLURM_STEP_GPUS": "1,2"}, [], "--nv"),
        ({"SLURM_JOB_GPUS": ""}, [], ""),
        ({"CUDA_VISIBLE_DEVICES": "0"}, [], "--nv"),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, [], ""),
        ({"CUDA_VISIBLE_DEVICES": ""}, [], ""),
        # AMD: /dev/kfd -> --rocm, although SLURM sets CUDA_VISIBLE_DEVICES & co. there too
        ({}, ["/dev/kfd"], "--rocm"),
        ({"SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}, ["/dev/kfd"], "--rocm"),
        ({}, ["/dev/kfd", "/dev/nvidia0"], "--nv"),
    ],
)
def test_gpu_probe(env, devices, want):
    assert _probe(env, devices) == want
    assert _probe(env, devices, "bwrap") == ("" if want == "--rocm" else want)  # bwrap-exec.sh has no --rocm


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bwrap is not installed (apt-get install bubblewrap)")
@pytest.mark.parametrize(
    ("runtime", "devices", "flags", "flags_env"),
    [
        ("apptainer", [], ["--no-nv", "--no-rocm"], {}),
        ("apptainer", ["/dev/nvidia0"], ["--nv"], {}),
        ("apptainer", ["/dev/kfd"], ["--rocm"], {}),
        ("singularity", [], [], {k: "1" for k in rt.NO_GPU_ENV}),
        ("singularity", ["/dev/kfd"], ["--rocm"], {}),
        ("bwrap", [], [], {}),
        ("bwrap", ["/dev/kfd"], [], {}),
    ],
)
def test_fidelity_gpu_auto_on_the_node(recorder, tmp_path, runtime, devices, flags, flags_env):
    """What reaches the runtime on a CPU node (the site's 'always use nv' cancelled), an
    NVIDIA node and an AMD node, run by bash in a sandbox whose /dev holds only ``devices``."""
    r = req(runtime=runtime, gpu="auto", bwrap_exec=recorder / "bwrap-exec.sh")
    out = tmp_path / "rec.jsonl"
    binds = [a for d in devices for a in ("--ro-bind", "/dev/null", d)]
    cp = subprocess.run(
        ["bwrap", "--dev-bind", "/", "/", "--dev", "/dev", *binds, "/usr/bin/env", "-i",
         f"PATH={recorder}:/nonexistent", f"NIXSNAKE_TEST_RECORD={out}", "/bin/bash", "-c", shell_command(r, "x")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    got = json.loads(out.read_text())
    i = got["argv"].index("/img/env.sif")
    start = 1 if runtime == "bwrap" else 3 + (runtime == "apptainer")  # after exec --cleanenv [--no-eval]
    assert got["argv"][start:i] == flags, got["argv"]
    assert got["flags_env"] == flags_env


# --- end to end: real image, squashfuse + bwrap ------------------------------------------

_missing = fx.missing_requirements()
e2e = pytest.mark.skipif(_missing is not None, reason=f"end-to-end runtime tests need: {_missing}")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    if _missing:
        pytest.skip(_missing)
    return fx.build_image(tmp_path_factory.mktemp("runtime-image"))


@pytest.fixture
def job_env(tmp_path) -> dict[str, str]:
    """The environment a Snakemake job would have on the node, plus host values that must not leak."""
    return fx.job_environment(tmp_path)


def run_job(r: RunRequest, cmd: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None):
    return subprocess.run(
        ["bash", "-c", shell_command(r, cmd)],
        env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def left_behind(tmpdir: Path) -> list[Path]:
    """What a job left in TMPDIR, but for the one empty directory bwrap-exec.sh reuses as
    the mount point in its namespace (the mount on it is never seen on the host)."""
    ns_dir = tmpdir / f"nixsnake-bwrap-ns.{os.getuid()}"
    return [p for p in tmpdir.iterdir() if p != ns_dir or list(p.iterdir())]


def standin_log(env: dict[str, str]) -> list[list[str]]:
    p = Path(env["NIXSNAKE_STANDIN_LOG"])
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


RUNTIMES = ["apptainer", "singularity", "bwrap"]


@e2e
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_e2e_job_semantics(image, job_env, tmp_path, runtime):
    r = RunRequest(image, runtime=runtime, gpu="never", workdir=tmp_path)
    # both sides of && run inside (the host has no /.nixsnake)
    cp = run_job(r, "true && test -e /.nixsnake/metadata.json && echo in", job_env)
    assert (cp.returncode, cp.stdout) == (0, "in\n"), cp.stderr
    # the job's exit status passes through unchanged
    cp = run_job(r, "echo before; exit 3", job_env)
    assert (cp.returncode, cp.stdout) == (3, "before\n"), cp.stderr
    # a pipe: both ends inside
    cp = run_job(r, "cat /.nixsnake/metadata.json | tr a-z A-Z", job_env)
    assert (cp.returncode, cp.stdout) == (0, '{"NAME": "RUNTIME-TEST"}\n'), cp.stderr
    # a heredoc, expanded inside with the image's variable
    cp = run_job(r, "cat <<EOF\nhi $TEST_IMAGE_VAR\nEOF", job_env)
    assert (cp.returncode, cp.stdout) == (0, f"hi {fx.IMAGE_VAR_VALUE}\n"), cp.stderr
    # host PATH / LD_LIBRARY_PATH / PYTHONPATH do not leak; apptainer's --cleanenv LANG=C
    cp = run_job(r, 'echo "$PATH|$LD_LIBRARY_PATH|${PYTHONPATH-unset}|$LANG"', job_env)
    assert cp.stdout == f"{fx.IMAGE_PATH_VAR}|{fx.IMAGE_LD_LIBRARY_PATH}|unset|C\n", cp.stderr
    # the image is read-only, like apptainer's
    cp = run_job(r, "touch /nixsnake-newfile 2>/dev/null || echo read-only", job_env)
    assert cp.stdout == "read-only\n", cp.stderr
    if runtime != "bwrap":
        log = standin_log(job_env)
        assert log and all(entry[:3] == [runtime, "exec", "--cleanenv"] for entry in log)
    assert not left_behind(Path(job_env["TMPDIR"])), "bwrap-exec.sh left its mount directory behind"


@e2e
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_e2e_workdir_with_spaces_and_quotes(image, job_env, tmp_path, runtime):
    wd = tmp_path / "work dir" / "it's here"
    wd.mkdir(parents=True)
    (wd / "input.txt").write_text("data\n")
    r = RunRequest(image, runtime=runtime, gpu="never", workdir=wd)
    cp = run_job(r, 'cat input.txt && pwd && echo done > "out put.txt"', job_env, cwd=tmp_path)
    assert (cp.returncode, cp.stdout) == (0, f"data\n{wd}\n"), cp.stderr
    assert (wd / "out put.txt").read_text() == "done\n"


@e2e
@pytest.mark.parametrize(
    ("runtime", "version"),
    [("apptainer", ""), ("singularity", ""), ("singularity", "3.9.2"), ("singularity", "3.7.4"), ("bwrap", "")],
)
def test_e2e_envvars(image, job_env, tmp_path, runtime, version):
    """Values arrive unchanged, although the stand-in evaluates passed values the way
    apptainer does without --no-eval: apptainer gets --no-eval, the singularity runtime
    --no-eval where the release has it (4.1.5) and escaped values where not (3.9.2, 3.7.4)."""
    tricky = 'it\'s "q" $(id) `x` \\ $HOME \\$ end\nsecond line\\'
    env = {**job_env, "NIXSNAKE_SECRET": tricky, "NIXSNAKE_EMPTY": "", "NIXSNAKE_STANDIN_VERSION": version}
    env.pop("NIXSNAKE_UNSET", None)
    r = RunRequest(
        image, runtime=runtime, gpu="never", workdir=tmp_path,
        envvars=("NIXSNAKE_SECRET", "NIXSNAKE_EMPTY", "NIXSNAKE_UNSET"),
    )  # fmt: skip
    cp = run_job(r, 'printf "%s|" "$NIXSNAKE_SECRET" "${NIXSNAKE_EMPTY-unset}" "${NIXSNAKE_UNSET-unset}"', env)
    assert (cp.returncode, cp.stdout) == (0, f"{tricky}||unset|"), cp.stderr
    if runtime != "bwrap":
        *_, entry = standin_log(env)
        assert ("--no-eval" in entry) is (version == "")
        for entry in standin_log(env):
            assert not any(tricky in a for a in entry), "a secret value reached a command line"


#: [env] values a shell would mangle if they ever became code
TRICKY_ENV = {
    "TEST_IMAGE_VAR": fx.IMAGE_VAR_VALUE,
    "QUOTES": 'it\'s "q" $HOME `id` \\ $(id) end ',
    "EQUALS": "a=b=c",
    "EMPTY": "",
    "UNICODE": "grüß ☃",
    "OMP_NUM_THREADS": "1",  # passed too: the job's value wins, as apptainer's --env does
}


def _environ(raw: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in raw.split("\0") if e)


#: prints bwrap's command line (stderr), then the environment and the directory CMD got
_SHOW_START = 'tr "\\0" " " </proc/$PPID/cmdline >&2; pwd; exec cat /proc/self/environ'


def _bwrap_exec_start(img: Path, env: dict[str, str], *opts: str, cmd: tuple[str, ...] = ()):
    passes = ["--pass", "NX_SECRET", "--pass", "OMP_NUM_THREADS"]
    return bwrap_exec([*passes, *opts, str(img), "--", *(cmd or ("sh", "-c", _SHOW_START))], env)


@e2e
@pytest.mark.parametrize(
    ("newline", "opts"),
    [(False, ("--pwd", "/tmp")), (True, ("--pwd", "/tmp")), (False, ("--keep-env",)), (False, ("--contain",))],
)
def test_bwrap_sets_the_image_environment_without_a_shell(tmp_path, job_env, newline, opts):
    """Images carry their environment as NAME=VALUE lines; bwrap-exec.sh hands it to bwrap
    (no /bin/sh inside) and must end with what sourcing the env scripts gives -- the path
    the apptainer stand-in takes (--inject), forced here with an empty --inject -- in the
    same directory, with --keep-env and --contain too. A value with a newline cannot be a
    line: that image has no such file and takes the shell path. Passed values and proxies
    never reach bwrap's command line on either path."""
    env_vars = {**TRICKY_ENV, **({"NEWLINE": "two\nlines"} if newline else {})}
    img = fx.build_image(tmp_path / "img", env_vars=env_vars)
    env = {**job_env, "NX_SECRET": "s3cr3t value", "http_proxy": "http://user:pw@proxy:3128", "NX_NOTHING": "",
           "OMP_NUM_THREADS": "7"}  # fmt: skip
    runs = {}
    for path, more in (("direct", ()), ("shell", ("--inject", "NX_NOTHING"))):
        cp = _bwrap_exec_start(img, env, *opts, *more)
        assert cp.returncode == 0, cp.stderr
        cwd, _, environ = cp.stdout.partition("\n")
        runs[path] = (cwd, _environ(environ), cp.stderr)
    (d_cwd, direct, direct_cmdline), (s_cwd, shell, shell_cmdline) = runs["direct"], runs["shell"]
    assert ("nixsnake-exec" in direct_cmdline) is newline, direct_cmdline  # the shell path, or not
    assert ("--args 7" in direct_cmdline) is not newline, direct_cmdline
    assert "nixsnake-exec" in shell_cmdline, shell_cmdline
    for cmdline in (direct_cmdline, shell_cmdline):
        assert "s3cr3t" not in cmdline and "user:pw" not in cmdline, cmdline
    # (SHLVL: the shell inside on the shell path is one level more; NX_NOTHING: --inject's
    # source, which --keep-env does not forward)
    skip = {"SHLVL", "NX_NOTHING"}
    assert {k: v for k, v in direct.items() if k not in skip} == {k: v for k, v in shell.items() if k not in skip}
    assert d_cwd == s_cwd == ("/tmp" if "--pwd" in opts else direct["HOME"] if "--contain" in opts else d_cwd)
    assert {k: direct.get(k) for k in env_vars} == {**env_vars, "OMP_NUM_THREADS": "7"}
    assert direct["NX_SECRET"] == "s3cr3t value" and direct["http_proxy"] == env["http_proxy"]
    assert direct["PS1"] == "Apptainer> " and direct["PWD"] == d_cwd
    assert direct["LD_LIBRARY_PATH"] == fx.IMAGE_LD_LIBRARY_PATH
    assert ("LANG" in direct) is ("--keep-env" not in opts or "LANG" in env)


@e2e
def test_bwrap_env_scripts_of_a_derived_image_are_sourced(tmp_path, job_env):
    """An image built on top of ours (apptainer's %environment, a localimage bootstrap)
    keeps /.nixsnake/environment but adds env scripts of its own: that file no longer says
    it all, so the scripts are sourced."""
    img = fx.build_image(tmp_path / "img", extra={".singularity.d/env/95-extra.sh": "EXTRA=from-95\nexport EXTRA\n"})
    cp = _bwrap_exec_start(img, job_env)
    assert cp.returncode == 0, cp.stderr
    assert "nixsnake-exec" in cp.stderr and _environ(cp.stdout.partition("\n")[2])["EXTRA"] == "from-95"


@e2e
def test_bwrap_command_not_in_the_image_exits_127(image, job_env):
    """bwrap would exit 1 for a command it cannot start; like a shell (and the shell path),
    a command the image does not have exits 127, a bare name and a path alike. A command
    the image has is started by bwrap itself."""
    for cmd in (("no-such-tool",), ("/no/such/tool",), ("./no-such-tool",)):
        cp = _bwrap_exec_start(image, job_env, cmd=(*cmd, "arg"))
        assert cp.returncode == 127 and "not found" in cp.stderr, (cmd, cp.returncode, cp.stderr)
    cp = _bwrap_exec_start(image, job_env, cmd=("sh", "-c", 'tr "\\0" " " </proc/$PPID/cmdline; exit 5'))
    assert cp.returncode == 5 and "--args 7" in cp.stdout and "nixsnake-exec" not in cp.stdout, cp.stdout
    cp = _bwrap_exec_start(image, job_env, cmd=(f"{fx.STORE_PATH}/bin/sh", "-c", "exit 6"))
    assert cp.returncode == 6, cp.stderr


@e2e
def test_e2e_apptainer_before_1_1_rejects_no_eval(image, job_env, tmp_path):
    """The apptainer runtime needs apptainer >= 1.1 (--no-eval); 1.0 fails at once, loudly."""
    env = {**job_env, "NIXSNAKE_STANDIN_VERSION": "1.0.3"}
    cp = run_job(RunRequest(image, gpu="never", workdir=tmp_path), "echo never", env)
    assert (cp.returncode, cp.stdout) == (1, ""), cp.stderr
    assert 'Error for command "exec": unknown flag: --no-eval' in cp.stderr


@pytest.fixture
def outside_tmp():
    """A directory no runtime binds by default (not under /tmp, /var/tmp, $HOME or the cwd)."""
    import tempfile

    if not os.access("/run", os.W_OK):
        pytest.skip("needs a writable /run")
    d = Path(tempfile.mkdtemp(prefix="nixsnake-job-tmp-", dir="/run"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@e2e
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_e2e_job_tmpdir_is_passed_and_bound(image, job_env, tmp_path, outside_tmp, runtime):
    """Snakemake sets TMPDIR (and TMP, TEMP, thread limits) per job: the job sees them and can
    write to $TMPDIR although it is outside every default bind."""
    from snakemake_deploy_nixsnake.envvars import JOB_ENVVARS

    env = {**job_env, "TMPDIR": str(outside_tmp), "TMP": str(outside_tmp), "OMP_NUM_THREADS": "2"}
    r = RunRequest(image, runtime=runtime, gpu="never", workdir=tmp_path, envvars=JOB_ENVVARS)
    cp = run_job(r, 'echo "$TMPDIR|$TMP|$OMP_NUM_THREADS" && echo x > "$TMPDIR/f" && cat "$TMPDIR/f"', env)
    assert (cp.returncode, cp.stdout) == (0, f"{outside_tmp}|{outside_tmp}|2\nx\n"), cp.stderr
    assert (outside_tmp / "f").read_text() == "x\n"


@e2e
def test_e2e_singularity_standin_reads_only_singularityenv(image, job_env, tmp_path):
    """As `singularity` the stand-in acts like SingularityCE: APPTAINERENV_ alone is not enough."""
    script = f"APPTAINERENV_ONLY_A=a SINGULARITYENV_ONLY_S=s singularity exec --cleanenv {image} sh -c 'echo ${{ONLY_A-unset}} ${{ONLY_S-unset}}'"
    cp = subprocess.run(["bash", "-c", script], env=job_env, capture_output=True, text=True, timeout=60, check=False)
    assert cp.stdout == "unset s\n", cp.stderr
    script = script.replace("singularity exec", "apptainer exec")
    cp = subprocess.run(["bash", "-c", script], env=job_env, capture_output=True, text=True, timeout=60, check=False)
    assert cp.stdout == "a s\n", cp.stderr


@e2e
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_e2e_binds_and_underlay(image, job_env, tmp_path, runtime):
    src = tmp_path / "src data"
    src.mkdir()
    (src / "f").write_text("payload\n")
    r = RunRequest(
        image, runtime=runtime, gpu="never", workdir=tmp_path,
        binds=(
            Bind(str(src), "/data/in", "ro"),  # top-level /data is not in the image
            Bind(str(src), "/home/nixsnake-user/data"),  # /home exists in the image, empty
            Bind(str(src), "/etc/nixsnake-extra", "ro"),  # /etc exists and is full: an underlay
        ),
    )  # fmt: skip
    cmd = (
        "cat /data/in/f /home/nixsnake-user/data/f /etc/nixsnake-extra/f && grep -c root /etc/passwd && "
        "(touch /data/in/x 2>/dev/null && echo writable || echo ro) && "
        "touch /home/nixsnake-user/data/rw && echo rw-ok"
    )
    cp = run_job(r, cmd, job_env)
    assert (cp.returncode, cp.stdout) == (0, "payload\n" * 3 + "1\nro\nrw-ok\n"), cp.stderr
    assert (src / "rw").exists()


@e2e
@pytest.mark.parametrize("top_missing", [False, True])
def test_bwrap_underlays_read_only(image, job_env, tmp_path, top_missing):
    """Mount points missing in the image, each inside one of its top-level directories:
    the image's root is bound whole (its /bin symlink as it is) and /home, /etc become
    underlays (tmpfs) -- read-only like the rest. With one more at the top level (/data)
    the root itself is the underlay. Both look the same from inside."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("payload\n")
    binds = ["--bind", f"{src}:/home/nixsnake-user/data", "--bind", f"{src}:/etc/nixsnake-extra:ro"]
    if top_missing:
        binds += ["--bind", f"{src}:/data/in:ro"]
    cmd = (
        "cat /home/nixsnake-user/data/f /etc/nixsnake-extra/f && grep -c root /etc/passwd && "
        "readlink /bin && ls /home && "
        "for d in / /etc /home; do touch $d/nixsnake-x 2>/dev/null && echo $d writable; done; "
        "touch /home/nixsnake-user/data/rw && echo rw-ok"
    )
    cp = bwrap_exec([*binds, "--pwd", str(tmp_path), str(image), "--", "sh", "-c", cmd], job_env)
    want = f"payload\npayload\n1\n{fx.STORE_PATH}/bin\nnixsnake-user\nrw-ok\n"
    assert (cp.returncode, cp.stdout) == (0, want), cp.stderr
    assert (src / "rw").exists()


@e2e
@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_e2e_nv_flag_in_standin_log(image, job_env, tmp_path, runtime):
    for gpu, want in (("always", True), ("never", False)):
        Path(job_env["NIXSNAKE_STANDIN_LOG"]).unlink(missing_ok=True)
        cp = run_job(RunRequest(image, runtime=runtime, gpu=gpu), "echo ok", job_env, cwd=tmp_path)
        assert (cp.returncode, cp.stdout) == (0, "ok\n"), cp.stderr
        (entry,) = standin_log(job_env)
        assert ("--nv" in entry) is want, (gpu, entry)


@pytest.fixture
def nvidia0():
    """/dev/nvidia0 present (the SLURM GPU rig touches it); created for the test if absent."""
    dev = Path("/dev/nvidia0")
    if dev.exists():
        yield dev
        return
    if os.geteuid() != 0:
        pytest.skip("needs /dev/nvidia0 or root to create a placeholder")
    dev.touch()
    try:
        yield dev
    finally:
        dev.unlink(missing_ok=True)


@e2e
@pytest.mark.parametrize("runtime", ["apptainer", "bwrap"])
def test_e2e_gpu_auto_with_device(image, job_env, tmp_path, nvidia0, runtime):
    r = RunRequest(image, runtime=runtime, gpu="auto", workdir=tmp_path)
    cp = run_job(r, "test -e /dev/nvidia0 && echo gpu-visible", job_env)
    assert (cp.returncode, cp.stdout) == (0, "gpu-visible\n"), cp.stderr
    if runtime == "apptainer":
        (entry,) = standin_log(job_env)
        assert "--nv" in entry


def site_conf(tmp_path: Path, *directives: str) -> str:
    """An apptainer.conf for the stand-in (NIXSNAKE_STANDIN_CONF) setting ``directives`` to yes."""
    f = tmp_path / f"apptainer-{len(list(tmp_path.glob('apptainer-*.conf')))}.conf"
    f.write_text("".join(f"{d} = yes\n" for d in directives))
    return str(f)


SHOW_GPU = "ls /.singularity.d/libs /usr/bin; ls /usr/lib64 2>/dev/null || true"


@e2e
@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_e2e_gpu_never_wins_over_a_sites_always_use_nv(image, job_env, tmp_path, fake_driver, runtime):
    """`gpu = never` (and auto on a CPU node) cancel 'always use nv/rocm = yes': with
    nvidia-container-cli that is the difference between a job and a FATAL on CPU nodes."""
    conf = site_conf(tmp_path, "always use nv", "always use rocm")
    env = {**job_env, "PATH": fake_driver.path(job_env["PATH"]), "NIXSNAKE_STANDIN_CONF": conf}
    # the stand-in honours the site's setting, as apptainer does ...
    cp = standin(["exec", "--cleanenv", str(image), "sh", "-c", SHOW_GPU], env, runtime)
    assert "nvidia-smi" in cp.stdout and "libcuda.so.1" in cp.stdout and "rocm-smi" in cp.stdout, cp.stderr
    # ... and nixsnake's line cancels it
    cp = run_job(RunRequest(image, runtime=runtime, gpu="never", workdir=tmp_path), SHOW_GPU, env)
    assert (cp.returncode, cp.stdout) == (0, "/.singularity.d/libs:\n\n/usr/bin:\nenv\n"), cp.stderr
    # an nvidia-container-cli site without a driver: --nv is FATAL, never is fine
    nodrv = {**env, "PATH": f"{_fake_driver.no_driver(tmp_path / 'cpu')}:{job_env['PATH']}"}
    nodrv["NIXSNAKE_STANDIN_CONF"] = site_conf(tmp_path, "always use nv", "use nvidia-container-cli")
    cp = run_job(RunRequest(image, runtime=runtime, gpu="always", workdir=tmp_path), "echo ran", nodrv)
    assert cp.returncode == 255 and "nvidia-container-cli failed" in cp.stderr and cp.stdout == ""
    cp = run_job(RunRequest(image, runtime=runtime, gpu="never", workdir=tmp_path), "echo ran", nodrv)
    assert (cp.returncode, cp.stdout) == (0, "ran\n"), cp.stderr


def _host_elf_runs_here() -> bool:
    return bool(fx._host_glibc())


@e2e
@pytest.mark.skipif(not _host_elf_runs_here(), reason="needs the host's x86-64 glibc loader to copy into the image")
@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
@pytest.mark.parametrize("nvccli", [False, True])
def test_e2e_host_nvidia_smi_runs_in_the_image(image, job_env, tmp_path, fake_driver, runtime, nvccli):
    """--nv binds the host's nvidia-smi -- a dynamically linked host program whose loader is
    /lib64/ld-linux-x86-64.so.2 -- into /usr/bin. It runs in the image, with no host /lib
    visible, on the image's glibc loader, and finds libnvidia-ml.so.1 through the image's
    NVIDIA links: in /.singularity.d/libs (legacy --nv) or /usr/lib64 (nvidia-container-cli)."""
    env = {**job_env, "PATH": fake_driver.path(job_env["PATH"])}
    if nvccli:
        env["NIXSNAKE_STANDIN_CONF"] = site_conf(tmp_path, "use nvidia-container-cli")
    r = RunRequest(image, runtime=runtime, gpu="always", workdir=tmp_path)
    cmd = "test ! -e /lib/x86_64-linux-gnu && test ! -e /usr/lib/x86_64-linux-gnu && nvidia-smi -L"
    cp = run_job(r, cmd, env)
    assert (cp.returncode, cp.stdout) == (
        0,
        f"GPU 0: {_fake_driver.GPU_NAME} (UUID: GPU-{'0' * 8}-0000-0000-0000-{'0' * 12})\n",
    ), cp.stderr
    assert "--nvccli" not in standin_log(env)[-1]  # (the site's setting, not a flag)


@e2e
@pytest.mark.skipif(not _host_elf_runs_here(), reason="needs the host's x86-64 glibc loader to copy into the image")
@pytest.mark.parametrize("runtime", ["apptainer", "bwrap"])
def test_e2e_host_gl_libraries_do_not_shadow_the_images(image, job_env, tmp_path, fake_driver, runtime):
    """--nv also binds the host's libGL/libEGL/libOpenCL (built for the host's glibc) into
    /.singularity.d/libs; they must not reach programs in the image through
    LD_LIBRARY_PATH. NVIDIA's own libraries must: their link directory is added because
    the driver is there (by the env script on apptainer's path, by bwrap-exec.sh itself
    on the path without a shell)."""
    env = {**job_env, "PATH": fake_driver.path(job_env["PATH"])}
    r = RunRequest(
        image, runtime=runtime, gpu="always", workdir=tmp_path,
        binds=(Bind(str(fake_driver.probe), "/opt/probe", "ro"),),
    )  # fmt: skip
    cp = run_job(
        r,
        'ls /.singularity.d/libs; echo "ld=$LD_LIBRARY_PATH"; /opt/probe/dlprobe libGL.so.1 libcuda.so.1 libnvidia-ml.so.1',
        env,
    )
    assert cp.returncode == 0, cp.stderr
    assert "libGL.so.1" in cp.stdout.split()  # bound, as apptainer does ...
    assert f"ld={fx.IMAGE_LD_LIBRARY_PATH}:/.nixsnake/nvidia/libs\n" in cp.stdout  # ... but not on the search path
    assert "libGL.so.1 => not found\n" in cp.stdout
    assert "libcuda.so.1 => /.nixsnake/nvidia/libs/libcuda.so.1\n" in cp.stdout
    assert "libnvidia-ml.so.1 => /.nixsnake/nvidia/libs/libnvidia-ml.so.1\n" in cp.stdout


@e2e
def test_standin_gpu_modes(image, job_env, tmp_path, fake_driver):
    """--nv binds all of nvliblist.conf that the host's ldconfig knows (GL libraries too)
    into /.singularity.d/libs; --nvccli the compute libraries into /usr/lib64; --rocm
    rocmliblist.conf; binaries into /usr/bin. --no-nv/--no-rocm only cancel the config."""
    env = {**job_env, "PATH": fake_driver.path(job_env["PATH"])}
    cp = standin(["exec", "--nv", str(image), "sh", "-c", "ls /.singularity.d/libs; ls /usr/bin"], env)
    assert {"libcuda.so.1", "libnvidia-ml.so.1", "libGL.so.1", "nvidia-smi"} <= set(cp.stdout.split()), cp.stderr
    assert "libdrm_amdgpu.so.1" not in cp.stdout
    cp = standin(["exec", "--nvccli", str(image), "sh", "-c", SHOW_GPU], env)
    assert cp.stdout == "/.singularity.d/libs:\n\n/usr/bin:\nenv\nnvidia-smi\nlibcuda.so.1\nlibnvidia-ml.so.1\n", (
        cp.stderr
    )
    cp = standin(["exec", "--rocm", "--no-nv", str(image), "sh", "-c", "ls /.singularity.d/libs /usr/bin"], env)
    assert {"libdrm_amdgpu.so.1", "rocm-smi"} <= set(cp.stdout.split()) and "libcuda.so.1" not in cp.stdout
    cp = standin(["exec", "--nv", "--no-nv", str(image), "sh", "-c", "ls /usr/bin"], env)  # explicit --nv stays
    assert "nvidia-smi" in cp.stdout
    cp = standin(["exec", "--nv", "--contain", str(image), "true"], env)
    assert cp.returncode == 255 and "TEST STAND-IN" in cp.stderr
    cp = standin(["exec", "--cleanenv", str(image), "sh", "-c", "ls /usr/bin"], {**env, "APPTAINER_NV": "1"})
    assert "nvidia-smi" in cp.stdout, cp.stderr  # flags' environment variables
    cp = standin(["buildcfg", "APPTAINER_CONFDIR"], env)
    assert cp.stdout == f"{STANDIN / 'etc'}\n"


@e2e
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_e2e_exec_argv_and_shell_argv(image, job_env, tmp_path, runtime):
    r = RunRequest(image, runtime=runtime, gpu="auto", workdir=tmp_path, envvars=("NIXSNAKE_V",))
    env = {**job_env, "NIXSNAKE_V": "v 1"}
    cp = subprocess.run(
        exec_argv(r, ["sh", "-c", 'printf "%s|" "$@" "$NIXSNAKE_V"; exit 5', "sh", "a b", "it's"]),
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (cp.returncode, cp.stdout) == (5, "a b|it's|v 1|"), cp.stderr
    cp = subprocess.run(
        shell_argv(r), env=env, input='echo "prompt=$PS1 v=$NIXSNAKE_V"; exit 4\n',
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (cp.returncode, cp.stdout) == (4, "prompt=Apptainer>  v=v 1\n"), cp.stderr


# --- the stand-in's grammar ----------------------------------------------------------------


def standin(args: list[str], env: dict[str, str], name: str = "apptainer"):
    return subprocess.run(
        [str(STANDIN / name), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_standin_version_and_log(job_env):
    cp = standin(["--version"], job_env)
    assert (cp.returncode, cp.stdout) == (0, "apptainer version 1.3.6\n")
    cp = standin(["--version"], job_env, "singularity")
    assert (cp.returncode, cp.stdout) == (0, "singularity-ce version 4.1.5\n")
    assert standin_log(job_env) == [["apptainer", "--version"], ["singularity", "--version"]]


@pytest.mark.parametrize(
    ("args", "rc", "err"),
    [
        (["exec", "--xyz", "/i.sif", "true"], 1, 'Error for command "exec": unknown flag: --xyz'),
        (["exec", "-eX", "/i.sif", "true"], 1, "unknown shorthand flag: 'X' in -eX"),
        (["exec", "--cleanenv", "--bind"], 1, "flag needs an argument: --bind"),
        (["exec", "--cleanenv", "/i.sif"], 1, "requires at least 2 arg(s), only received 1"),
        (["exec", "--nv=maybe", "/i.sif", "true"], 1, 'invalid argument "maybe" for "--nv" flag'),
        (["shell", "--cleanenv", "--shel", "/bin/sh", "/i.sif"], 1, "unknown flag: --shel"),
        (["--bogus", "exec"], 1, 'Error for command "apptainer": unknown flag: --bogus'),
        (["exec", "--cleanenv", "--fakeroot", "/i.sif", "true"], 255, "TEST STAND-IN: flag --fakeroot"),
        (["exec", "--home", "/h", "--no-home", "/i.sif", "true"], 255, "TEST STAND-IN: --home together with --no-home"),
        (["run", "/i.sif"], 255, "TEST STAND-IN: subcommand 'run'"),
        (["exec", "--cleanenv", "/nonexistent.sif", "true"], 255, "FATAL:   could not open image /nonexistent.sif"),
        (["frobnicate"], 1, 'unknown command "frobnicate"'),
    ],
)
def test_standin_rejects(job_env, args, rc, err):
    cp = standin(args, job_env)
    assert cp.returncode == rc, cp.stderr
    assert err in cp.stderr


def _standin_module():
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader("nixsnake_standin_apptainer", str(STANDIN / "apptainer"))
    mod = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("spec", "want"),
    [  # what apptainer's ParseBindPath makes of a --bind value (cases of its bind_test.go, and ours)
        ("/opt", [("/opt", "/opt", {})]),
        ("/opt,/tmp", [("/opt", "/opt", {}), ("/tmp", "/tmp", {})]),
        ("/opt:/other,/tmp:/other2,", [("/opt", "/other", {}), ("/tmp", "/other2", {})]),
        ("/opt:/other:ro", [("/opt", "/other", {"ro": ""})]),
        ("/opt:/other:ro,rw", [("/opt", "/other", {"ro": "", "rw": ""})]),
        ("/opt:/o:ro,rw,/tmp:/o2:ro", [("/opt", "/o", {"ro": "", "rw": ""}), ("/tmp", "/o2", {"ro": ""})]),
        ("t.sif:/o:image-src=/opt,id=2", [("t.sif", "/o", {"image-src": "/opt", "id": "2"})]),
        # '^' separates specs like ',', and every field is trimmed
        ("/data^x:/in", [("/data", "/data", {}), ("x", "/in", {})]),
        ("/data ^/ref", [("/data", "/data", {}), ("/ref", "/ref", {})]),
        (" /my data :/in ", [("/my data ", "/in", {})]),  # (the ':' is part of the first token)
        ("/data::ro", [("/data", "ro", {})]),  # an empty destination is not "same as source"
    ],
)
def test_standin_parses_binds_like_apptainer(spec, want):
    assert _standin_module().parse_bind_path(spec) == want


@pytest.mark.parametrize("spec", ["/opt:/other:invalid", "/opt:/other:rw:invalid", "t.sif:/o:image-src"])
def test_standin_bind_parser_errors_like_apptainer(spec):
    with pytest.raises(ValueError):
        _standin_module().parse_bind_path(spec)


@e2e
@pytest.mark.parametrize("name", ["apptainer", "singularity"])
def test_standin_refuses_binds_apptainer_reads_differently(image, job_env, tmp_path, name):
    """Where apptainer would silently cut ('^') or trim a path, the stand-in fails loudly."""
    (tmp_path / "a^b").mkdir()
    for spec, shown in (
        (f"{tmp_path}/a^b:/in", f"[{tmp_path}/a:{tmp_path}/a, b:/in]"),
        (f"{tmp_path}:/in ", f"[{tmp_path}:/in]"),
        (f"{tmp_path}/a\\,b", f"[{tmp_path}/a,b:{tmp_path}/a,b]"),
    ):
        cp = standin(["exec", "--cleanenv", "--bind", spec, str(image), "true"], job_env, name)
        assert cp.returncode == 255, cp.stderr
        assert "TEST STAND-IN: --bind" in cp.stderr and f"is read by {name} as {shown}" in cp.stderr, cp.stderr
    cp = standin(["exec", "--cleanenv", "--bind", f"{tmp_path}:/in:ro", str(image), "true"], job_env, name)
    assert cp.returncode == 0, cp.stderr


@e2e
def test_standin_flag_spellings(image, job_env, tmp_path):
    (tmp_path / "f").write_text("x\n")
    for flags in (
        ["-e", "-B", f"{tmp_path}:/d:ro", "--pwd=/d"],
        ["--cleanenv=true", f"-B{tmp_path}:/d", "--cwd", "/d"],
        ["-eC", f"--bind={tmp_path}:/d,{tmp_path}:/e", "--pwd", "/d", "--env", "A=1,B=2"],
        ["--quiet", "--cleanenv", f"-B={tmp_path}:/d", "--no-home", "--pwd", "/d"],
    ):
        args = ["exec", *flags, str(image), "sh", "-c", "cat f && echo ${A-}${B-}"]
        if flags[0] == "--quiet":
            args = ["--quiet", "exec", *flags[1:], str(image), "sh", "-c", "cat f && echo ${A-}${B-}"]
        cp = standin(args, job_env)
        assert cp.returncode == 0 and cp.stdout.startswith("x\n"), (flags, cp.stderr)
    # flags stop at the image: what follows belongs to the command, even '--nv'
    cp = standin(["exec", "--cleanenv", str(image), "echo", "--nv", "--xyz"], job_env)
    assert (cp.returncode, cp.stdout) == (0, "--nv --xyz\n"), cp.stderr


@e2e
@pytest.mark.parametrize("name", ["apptainer", "singularity"])
def test_standin_evaluates_passed_values_like_apptainer(image, job_env, name):
    """Without --no-eval a passed value is sourced as `export X="VALUE"` (only `"` escaped)
    inside the container: apptainer's e2e "env eval" test expects $(id -u) to run there."""
    prefix = "APPTAINERENV_" if name == "apptainer" else "SINGULARITYENV_"
    env = {**job_env, prefix + "WHO": "$(id -u)", prefix + "X": 'a\\$b "q" `echo t` $NOPE-', prefix + "UID": "7"}
    show = 'printf "%s|" "$WHO" "$X" "${APPTAINER_NO_EVAL-}"'
    cp = standin(["exec", "--cleanenv", str(image), "sh", "-c", show], env, name)
    assert (cp.returncode, cp.stdout) == (0, f'{os.getuid()}|a$b "q" t -||'), cp.stderr
    for args, extra in ((["--no-eval"], {}), ([], {"APPTAINER_NO_EVAL": "1", "SINGULARITY_NO_EVAL": "1"})):
        cp = standin(["exec", "--cleanenv", *args, str(image), "sh", "-c", show], {**env, **extra}, name)
        assert (cp.returncode, cp.stdout) == (0, '$(id -u)|a\\$b "q" `echo t` $NOPE-|1|'), (args, cp.stderr)
    # a value ending in a backslash breaks apptainer's quoting
    cp = standin(["exec", "--cleanenv", str(image), "true"], {**env, prefix + "E": "end\\"}, name)
    assert cp.returncode != 0
    # LD_LIBRARY_PATH: passed, with /.singularity.d/libs appended (process_linux.go)
    cp = standin(["exec", "--cleanenv", "--no-eval", str(image), "sh", "-c", 'echo "$LD_LIBRARY_PATH"'],
                 {**env, prefix + "LD_LIBRARY_PATH": "/x"}, name)  # fmt: skip
    assert cp.stdout == "/x:/.singularity.d/libs\n", cp.stderr


@pytest.mark.parametrize(
    ("name", "version", "line", "has_no_eval"),
    [
        ("apptainer", "1.0.3", "apptainer version 1.0.3", False),
        ("apptainer", "1.1.0", "apptainer version 1.1.0", True),
        ("singularity", "3.9.2", "singularity-ce version 3.9.2", False),
        ("singularity", "3.10.0", "singularity-ce version 3.10.0", True),
        ("singularity", "3.7.4", "singularity version 3.7.4", False),
    ],
)
def test_standin_imitates_older_releases(job_env, name, version, line, has_no_eval):
    """(--no-nv/--no-rocm: apptainer 1.0, SingularityCE 3.8; the singularity runtime
    therefore passes SINGULARITY_NO_NV=1, which older releases ignore.)"""
    cp = standin(
        ["exec", "--no-nv", "/nonexistent.sif", "true"], {**job_env, "NIXSNAKE_STANDIN_VERSION": version}, name
    )
    assert ("unknown flag: --no-nv" in cp.stderr) is (version == "3.7.4")
    env = {**job_env, "NIXSNAKE_STANDIN_VERSION": version}
    cp = standin(["--version"], env, name)
    assert cp.stdout == line + "\n"
    cp = standin(["exec", "--no-eval", "/nonexistent.sif", "true"], env, name)
    if has_no_eval:
        assert cp.returncode == 255 and "could not open image" in cp.stderr
    else:
        assert cp.returncode == 1 and 'Error for command "exec": unknown flag: --no-eval' in cp.stderr


@e2e
def test_standin_env_precedence(image, job_env):
    env = {
        **job_env,
        "APPTAINERENV_X": "a",
        "SINGULARITYENV_X": "s",
        "APPTAINERENV_HOME": "/nope",
        "APPTAINERENV_LANG": "en_US.UTF-8",
    }
    cp = standin(["exec", "--cleanenv", "--env", "Y=e", str(image), "sh", "-c", 'echo "$X $Y $HOME $LANG"'], env)
    assert cp.stdout == f"a e {os.environ.get('HOME', '/')} en_US.UTF-8\n", cp.stderr
    assert "Overriding HOME environment variable with APPTAINERENV_HOME is not permitted" in cp.stderr
    cp = standin(["exec", "--cleanenv", "--env", "X=e", str(image), "sh", "-c", 'echo "$X"'], env)
    assert cp.stdout == "e\n", cp.stderr


# --- bwrap-exec.sh itself ------------------------------------------------------------------


def bwrap_exec(args: list[str], env: dict[str, str], cwd: Path | None = None):
    return subprocess.run(
        ["/bin/sh", str(BWRAP_EXEC), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _sigint_ignored_or_blocked() -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN or signal.SIGINT in signal.pthread_sigmask(
        signal.SIG_BLOCK, []
    )


def _namespace_unavailable() -> str | None:
    """Why bwrap-exec.sh cannot mount in a user namespace of its own here (None: it can)."""
    if not shutil.which("unshare") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "needs util-linux unshare and a /dev/fuse this user may open"
    if _sigint_ignored_or_blocked():
        return "SIGINT is ignored or blocked in this test run (a background job?): the script mounts on the host"
    ok = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, check=False)
    return None if ok.returncode == 0 else "unprivileged user namespaces are off on this machine"


def _squashfuse_mounts() -> list[str]:
    """The host's squashfuse mounts (this test process's mount namespace)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " - fuse.squashfuse" in line]


def _squashfuse_daemons(image: Path) -> list[int]:
    """squashfuse processes serving IMAGE, in any namespace."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and argv[0].endswith(b"squashfuse_ll") and str(image).encode() in argv:
            pids.append(int(d.name))
    return pids


def _wait_for(what, timeout: float = 20.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.05)
    return bool(what())


def _start_job(image: Path, env: dict[str, str], cwd: Path, script: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["/bin/sh", str(BWRAP_EXEC), str(image), "--", "sh", "-c", script],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _run_watched(image: Path, env: dict[str, str], tmp_path: Path, script: str):
    """Run SCRIPT as a job and look at the host's squashfuse mounts before it and while it
    runs: (before, during, (status, stdout, stderr))."""
    started = tmp_path / "started"
    before = _squashfuse_mounts()
    job = _start_job(image, env, tmp_path, f": > {started}; sleep 1; {script}")
    assert _wait_for(started.exists), job.communicate(timeout=60)
    during = _squashfuse_mounts()
    out, err = job.communicate(timeout=60)
    return before, during, (job.returncode, out, err)


def _mount_case(image: Path, job_env: dict[str, str], tmp_path: Path, mount: str) -> tuple[Path, dict[str, str]]:
    """The image at a path of its own (its squashfuse is told apart by it) and the job's
    environment for MOUNT: "namespace" (skipped where it cannot work) or "host"."""
    why = _namespace_unavailable()
    if why and mount == "namespace":
        pytest.skip(why)
    img = tmp_path / f"{mount}.sif"
    shutil.copy(image, img)
    return img, {**job_env, **({"NIXSNAKE_BWRAP_MOUNT": "host"} if mount == "host" else {})}


@e2e
@pytest.mark.parametrize("mount", ["namespace", "host"])
def test_bwrap_exec_mounts_the_image_where_only_the_job_sees_it(image, job_env, tmp_path, mount):
    """Where user namespaces with FUSE work, the image is mounted in a namespace of the job's
    own: while the job runs the host has no new mount, the job keeps the caller's ids, and
    squashfuse unmounts itself and exits after the job. NIXSNAKE_BWRAP_MOUNT=host (and every
    node where the namespace cannot work) mounts it on the host, as the check here sees."""
    img, env = _mount_case(image, job_env, tmp_path, mount)
    before, during, (rc, out, err) = _run_watched(img, env, tmp_path, "id -u; id -g; cat /proc/self/uid_map")
    assert rc == 0, err
    uid, gid, uid_map = out.splitlines()
    assert (int(uid), int(gid)) == (os.getuid(), os.getgid())
    if mount == "namespace":
        assert during == before, "the job's mount is seen on the host"
        assert uid_map.split()[1:] == ["0", "1"], uid_map  # the job's own user namespace
        assert _wait_for(lambda: not _squashfuse_daemons(img)), "squashfuse did not unmount itself"
    else:
        assert len(during) == len(before) + 1, "the image was not mounted on the host"
        assert not _squashfuse_daemons(img), "the mount on the host is undone when the job ends"
    assert _squashfuse_mounts() == before
    assert not left_behind(Path(job_env["TMPDIR"]))


@e2e
@pytest.mark.parametrize("mount", ["namespace", "host"])
def test_bwrap_exec_killed_with_sigkill(image, job_env, tmp_path, mount):
    """SIGKILL to the job's process group (SLURM's end of a job, the OOM killer): in the
    namespace nothing stays mounted and squashfuse exits by itself; with the mount on the
    host the mount stays behind -- the known limit bwrap-exec.sh documents."""
    import signal

    img, env = _mount_case(image, job_env, tmp_path, mount)
    started = tmp_path / "started"
    before = _squashfuse_mounts()
    job = _start_job(img, env, tmp_path, f": > {started}; exec sleep 60")
    assert _wait_for(started.exists), job.communicate(timeout=60)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=60)
    left = [line for line in _squashfuse_mounts() if line not in before]
    try:
        if mount == "namespace":
            assert not left
            assert _wait_for(lambda: not _squashfuse_daemons(img)), "squashfuse did not exit after the job"
        else:
            assert len(left) == 1 and "/nixsnake-bwrap." in left[0], left
    finally:
        for line in left:
            subprocess.run(["fusermount3", "-u", line.split()[4]], check=False)


@e2e
def test_bwrap_exec_with_sigint_ignored_mounts_on_the_host(image, job_env, tmp_path):
    """A caller that ignores SIGINT (a background job of a script, nohup): squashfuse would
    inherit that, and squashfuse 0.1.105 then never ends on its idle timeout (seen: every
    such daemon stayed). So the script mounts on the host there, and nothing stays."""
    img = tmp_path / "noint.sif"
    shutil.copy(image, img)
    started = tmp_path / "started"
    before = _squashfuse_mounts()
    job = subprocess.Popen(
        ["/bin/sh", "-c", "trap '' INT; exec /bin/sh \"$0\" \"$@\"", str(BWRAP_EXEC), str(img), "--", "sh", "-c",
         f": > {started}; sleep 1; echo ok"],
        env=job_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert _wait_for(started.exists), job.communicate(timeout=60)
    during = _squashfuse_mounts()
    out, err = job.communicate(timeout=60)
    assert (job.returncode, out) == (0, "ok\n"), err
    assert len(during) == len(before) + 1, "not mounted on the host"
    assert _wait_for(lambda: not _squashfuse_daemons(img), timeout=5), "squashfuse stayed"


@e2e
def test_bwrap_exec_without_user_namespaces(image, job_env, tmp_path):
    """A node where unshare(2) is refused (user namespaces off): the script mounts the image on
    the host. unshare's own complaint is not shown; CMD's output and status are CMD's."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "unshare").write_text(
        "#!/bin/sh\n# TEST STAND-IN: util-linux unshare where user namespaces are off\n"
        'echo "unshare: unshare failed: Operation not permitted" >&2\nexit 1\n'
    )
    (fake / "unshare").chmod(0o755)
    env = {**job_env, "PATH": f"{fake}:{job_env['PATH']}"}
    before, during, result = _run_watched(image, env, tmp_path, "echo out; echo err >&2; exit 7")
    assert result == (7, "out\n", "err\n")
    assert len(during) == len(before) + 1, "the image was not mounted on the host"
    assert _squashfuse_mounts() == before
    assert not left_behind(Path(job_env["TMPDIR"]))


@e2e
@pytest.mark.skipif(not os.access("/dev/fuse", os.R_OK | os.W_OK), reason="the namespace is tried only with /dev/fuse")
def test_bwrap_exec_signal_while_trying_the_namespace(image, job_env, tmp_path):
    """A SIGTERM to the job's process group while the run in the namespace starts (here: the
    stand-in unshare sends it and dies of it, before that run could take the job over):
    the script stops with 143 and does not go on to start the job on the host."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "unshare").write_text(
        "#!/bin/sh\n# TEST STAND-IN: unshare killed by the job's SIGTERM\nkill -TERM 0\nexit 1\n"
    )
    (fake / "unshare").chmod(0o755)
    marker = tmp_path / "ran"
    cp = subprocess.run(
        ["/bin/sh", str(BWRAP_EXEC), str(image), "--", "sh", "-c", f": > {marker}"],
        env={**job_env, "PATH": f"{fake}:{job_env['PATH']}"}, capture_output=True, text=True, timeout=60,
        check=False, start_new_session=True,
    )  # fmt: skip
    assert cp.returncode == 143 and not marker.exists(), cp.stderr
    assert not left_behind(Path(job_env["TMPDIR"]))


@e2e
def test_bwrap_exec_errors(image, job_env, tmp_path):
    cp = bwrap_exec([str(tmp_path / "missing.sif"), "--", "true"], job_env)
    assert cp.returncode == 66 and "image not found" in cp.stderr and cp.stderr.count("error:") == 1, cp.stderr
    junk = tmp_path / "junk.sif"
    junk.write_bytes(b"\0" * 40000)
    cp = bwrap_exec([str(junk), "--", "true"], job_env)
    assert cp.returncode == 70 and "not a nixsnake image" in cp.stderr
    # the image is mounted before its magic is read: a squashfs where a SIF's starts that
    # does not mount (cut short) is a mount failure, not "not an image", and nothing is run
    cut = tmp_path / "cut.sif"
    cut.write_bytes(image.read_bytes()[:40000])
    cp = bwrap_exec([str(cut), "--", "true"], job_env)
    assert cp.returncode == 69 and f"mounting {cut} with squashfuse" in cp.stderr, cp.stderr
    assert cp.stderr.count("error:") == 1, cp.stderr
    assert not left_behind(Path(job_env["TMPDIR"])), "the mount point is removed"
    cp = bwrap_exec([str(image), "--", "true"], {**job_env, "PATH": "/nonexistent"})
    assert cp.returncode == 69 and "'bwrap' not found" in cp.stderr and "hint:" in cp.stderr
    for bad in (["--frob", str(image), "--", "true"], ["--bind", "/a,/b", str(image), "--", "true"],
                ["--bind", "rel", str(image), "--", "true"], ["--pass", "PATH", str(image), "--", "true"],
                ["--bind", "/tmp^x", str(image), "--", "true"], ["--bind", "/tmp :/x", str(image), "--", "true"],
                ["--bind", "/tmp:/x\t", str(image), "--", "true"], ["--home", "/tmp ", str(image), "--", "true"],
                ["--pass", "APPTAINER_BIND", str(image), "--", "true"], ["--pass", "_nx_x", str(image), "--", "true"],
                ["--pass", "A=_nx_image", str(image), "--", "true"], ["--pass", "1A", str(image), "--", "true"],
                ["--pass", "A=B-C", str(image), "--", "true"], ["--pass", "A\nB", str(image), "--", "true"],
                ["--pass", "=A", str(image), "--", "true"],
                [str(image), "true"], [str(image), "--"]):  # fmt: skip
        cp = bwrap_exec(bad, job_env)
        assert cp.returncode == 64 and cp.stderr.count("error:") == 1, (bad, cp.stderr)
    cp = bwrap_exec(["--help"], job_env)
    assert cp.returncode == 0 and cp.stdout.count("bwrap-exec.sh [OPTIONS] IMAGE -- CMD") == 1, cp.stdout


@e2e
def test_bwrap_exec_plain_squashfs_and_relative_image(image, job_env):
    sqfs = image.parent / "env.sqfs"
    cp = bwrap_exec([sqfs.name, "--", "cat", "/.nixsnake/metadata.json"], job_env, cwd=image.parent)
    assert (cp.returncode, cp.stdout) == (0, '{"name": "runtime-test"}\n'), cp.stderr


@e2e
def test_bwrap_exec_default_cwd_home_and_env(image, job_env, tmp_path):
    """Without --pwd the current directory is bound and used, like apptainer; $HOME is bound."""
    home = tmp_path / "home dir"
    home.mkdir()
    (home / ".marker").write_text("home\n")
    env = {**job_env, "HOME": str(home), "TERM": "xterm-test", "http_proxy": "http://proxy:3128"}
    cp = bwrap_exec(
        [str(image), "--", "sh", "-c", 'pwd; cat "$HOME/.marker"; echo "$TERM $http_proxy $APPTAINER_NAME"'],
        env, cwd=tmp_path,
    )  # fmt: skip
    assert cp.stdout == f"{tmp_path}\nhome\nxterm-test http://proxy:3128 {image.name}\n", cp.stderr
    # $HOME is a mount point of its own, unless --no-home (tmp_path is visible anyway via /tmp)
    home2 = tmp_path / "home2"
    home2.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = ["sh", "-c", 'grep -q " $HOME " /proc/self/mountinfo && echo bound || echo not-bound']
    for opts, want in (([], "bound\n"), (["--no-home"], "not-bound\n"), (["--contain"], "not-bound\n")):
        cp = bwrap_exec([*opts, str(image), "--", *check], {**env, "HOME": str(home2)}, cwd=elsewhere)
        assert cp.stdout == want, (opts, cp.stderr)
    cp = bwrap_exec(["--contain", str(image), "--", "sh", "-c", "pwd; ls /tmp | wc -l"], env, cwd=tmp_path)
    assert cp.returncode == 0 and cp.stdout.split()[-1] == "0", cp.stderr


@e2e
def test_bwrap_exec_env_injected_after_99_base(image, job_env):
    """--pass values are set after 99-base.sh: they override what the image's scripts set."""
    env = {**job_env, "TEST_IMAGE_VAR": "from host", "SRC": "via source"}
    cp = bwrap_exec(
        ["--pass", "TEST_IMAGE_VAR", "--pass", "OTHER=SRC", str(image), "--", "sh", "-c", 'echo "$TEST_IMAGE_VAR|$OTHER"'],
        env,
    )  # fmt: skip
    assert cp.stdout == "from host|via source\n", cp.stderr


@e2e
def test_bwrap_exec_nv_binds_driver_libs_and_tools(image, job_env, tmp_path):
    """--nv: host driver libraries from `ldconfig -p` land in /.singularity.d/libs (hence in
    /run/opengl-driver/lib), nvidia-smi in /usr/bin; the image's own /usr/bin/env survives."""
    fake = tmp_path / "fakebin"
    (fake / "lib").mkdir(parents=True)
    (fake / "lib32").mkdir()
    for name in ("libcuda.so.1", "libnvidia-ml.so.1"):
        (fake / "lib" / name).write_text(f"64-bit {name}\n")
    (fake / "lib32" / "libcuda.so.1").write_text("32-bit\n")
    (fake / "ldconfig").write_text(
        "#!/bin/sh\n[ \"$1\" = -p ] || exit 1\ncat <<'EOF'\n4 libs found in cache `/etc/ld.so.cache'\n"
        f"\tlibcuda.so.1 (libc6,x86-64) => {fake}/lib/libcuda.so.1\n"
        f"\tlibcuda.so.1 (libc6) => {fake}/lib32/libcuda.so.1\n"
        f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {fake}/lib/libnvidia-ml.so.1\n"
        "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n"
        "EOF\n"
    )
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho fake-nvidia-smi\n")
    for p in (fake / "ldconfig", fake / "nvidia-smi"):
        p.chmod(0o755)
    env = {**job_env, "PATH": f"{fake}:{job_env['PATH']}"}
    cmd = "ls /.singularity.d/libs; cat /run/opengl-driver/lib/libcuda.so.1; readlink /usr/bin/env; nvidia-smi"
    cp = bwrap_exec(["--nv", str(image), "--", "sh", "-c", cmd], env, cwd=tmp_path)
    assert cp.stdout == (
        f"libcuda.so.1\nlibnvidia-ml.so.1\n64-bit libcuda.so.1\n{fx.STORE_PATH}/bin/env\nfake-nvidia-smi\n"
    ), cp.stderr
    cp = bwrap_exec([str(image), "--", "sh", "-c", "ls /.singularity.d/libs | wc -l"], env, cwd=tmp_path)
    assert cp.stdout.strip() == "0", cp.stderr


FAKE_SQUASHFUSE = """#!/bin/sh
# TEST FAKE of squashfuse_ll for a non-root caller on a machine where /dev/fuse is
# root-only: "mounting" extracts the partition (same offset, same tree) instead.
off=${2#offset=}
rmdir "$4" && exec unsquashfs -q -n -no-xattrs -o "$off" -d "$4" "$3" >/dev/null
"""
FAKE_FUSERMOUNT = """#!/bin/sh
# TEST FAKE of fusermount3 -u: removes the extracted tree, leaves the empty mount point.
[ "$1" = -u ] || exit 1
chmod -R u+w "$2" && rm -rf "$2" && mkdir "$2"
"""


@e2e
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unsquashfs"),
                    reason="needs root (to switch to 'nobody'), setpriv and unsquashfs")  # fmt: skip
def test_bwrap_exec_as_non_root(image, tmp_path):
    """A non-root caller: unprivileged bwrap; its passwd/group entries appended like apptainer's.

    Only the FUSE mount is faked (extracted with unsquashfs) because /dev/fuse may be root-only
    on test machines; everything else is the real script and the real bwrap."""
    import tempfile

    # run as 'daemon' (uid 1 on Debian): a user the host knows and the image's passwd does not
    pw = subprocess.run(["getent", "passwd", "1"], capture_output=True, text=True, check=False).stdout.strip()
    gr = subprocess.run(["getent", "group", "1"], capture_output=True, text=True, check=False).stdout.strip()
    if not pw or not gr:
        pytest.skip("the host has no user/group with id 1")
    as_user = ["setpriv", "--reuid", "1", "--regid", "1", "--clear-groups"]
    if (
        subprocess.run([*as_user, "bwrap", "--ro-bind", "/", "/", "true"], capture_output=True, check=False).returncode
        != 0
    ):
        pytest.skip("unprivileged user namespaces are not available for bwrap")
    base = Path(tempfile.mkdtemp(prefix="nixsnake-nonroot-", dir="/tmp"))
    try:
        base.chmod(0o755)
        (base / "bin").mkdir(mode=0o755)
        (base / "bin" / "squashfuse_ll").write_text(FAKE_SQUASHFUSE)
        (base / "bin" / "fusermount3").write_text(FAKE_FUSERMOUNT)
        for p in (base / "bin").iterdir():
            p.chmod(0o755)
        work = base / "work"
        work.mkdir()
        work.chmod(0o1777)
        img = base / "env.sif"
        shutil.copy(image, img)
        img.chmod(0o644)
        env = {"PATH": f"{base / 'bin'}:/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": str(work)}
        cp = subprocess.run(
            [*as_user, "/bin/sh", str(BWRAP_EXEC), str(img), "--", "sh", "-c",
             "id -u; pwd; head -n 1 /etc/passwd; tail -n 1 /etc/passwd; tail -n 1 /etc/group"],
            env=env, cwd=work, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cp.stdout == f"1\n{work}\nroot:x:0:0:root:/root:{fx.STORE_PATH}/bin/bash\n{pw}\n{gr}\n", cp.stderr
        assert list(work.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
