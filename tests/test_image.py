"""Skeleton + nix closure -> squashfs -> SIF, with real nix, mksquashfs, squashfuse, bwrap."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.image import squashfs as squashfs_mod
from snakemake_deploy_nixsnake.image.sif import PARTITION_OFFSET, metadata_json, read_sif, write_sif
from snakemake_deploy_nixsnake.image.skeleton import Entry, skeleton
from snakemake_deploy_nixsnake.image.squashfs import mksquashfs_argv, pack_squashfs

TOOLS = ("nix-build", "nix-store", "mksquashfs", "squashfuse", "fusermount3")
_have_tools = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason=f"needs {', '.join(TOOLS)}")


def needs_tools(fn):  # type: ignore[no-untyped-def]
    """Real nix + squashfs tools: marked ``nix`` (conftest skips those without nix)."""
    return pytest.mark.nix(_have_tools(fn))


#: A long (> 100 bytes) absolute symlink target: mksquashfs 4.5.1 drops the leading '/'
#: of such targets in PAX tar headers, so this checks we write a format it reads right.
LONG = "x" * 90

NIX_EXPR = r"""
let
  # the host's static busybox enters the store at evaluation time: builders only read
  # /nix/store, so this builds inside nix's sandbox too
  bbDir = builtins.path { path = /. + dirOf "@BUSYBOX@"; name = "busybox-host"; filter = p: _: p == "@BUSYBOX@"; };
  hostBusybox = "${bbDir}/busybox";
  busybox = derivation {
    name = "nixsnake-image-test-busybox";
    system = builtins.currentSystem;
    builder = hostBusybox;
    args = [ "sh" "-c" ''
      set -e
      B=${hostBusybox}
      $B mkdir -p $out/bin
      $B cp $B $out/bin/busybox
      for a in sh env cat ls echo test readlink id stat printf mkdir ln chmod; do $B ln -s busybox $out/bin/$a; done
    '' ];
  };
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "${busybox}/bin/sh";
    args = [ "-c" script ];
    PATH = "${busybox}/bin";
  };
  t = mk "nixsnake-image-test-t" "set -e; mkdir -p $out/bin; echo hi > $out/f";
  env = mk "nixsnake-image-test-env" ''
    set -e
    mkdir -p $out/bin $out/lib $out/share/deep
    for a in sh env cat ls echo test readlink id stat printf; do ln -s ${busybox}/bin/$a $out/bin/$a; done
    ln -s ${t}/f $out/share/t-f
    ln -s ${t}/@LONG@/f $out/share/long-link
    echo data > $out/share/deep/file
    printf '#!${busybox}/bin/sh\necho script-ran\n' > $out/bin/hello
    chmod +x $out/bin/hello
  '';
in { inherit t busybox env; }
""".replace("@LONG@", LONG)


from _image_fixtures import find_static_busybox, mounted  # noqa: E402
from helpers import nix_option_args  # noqa: E402


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def nix_build(expr_file: Path, attr: str) -> str:
    out = subprocess.run(
        ["nix-build", "--no-out-link", *nix_option_args(),
         str(expr_file), "-A", attr],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return out


class Closure:
    def __init__(self, t: str, busybox: str, env: str, paths: list[str]):
        self.t, self.busybox, self.env, self.paths = t, busybox, env, paths


@pytest.fixture(scope="module")
def closure(tmp_path_factory: pytest.TempPathFactory) -> Closure:
    if not all(shutil.which(t) for t in TOOLS):
        pytest.skip(f"needs {', '.join(TOOLS)}")
    busybox = find_static_busybox()
    if busybox is None:
        pytest.skip("needs a static busybox (apt-get install busybox-static)")
    d = tmp_path_factory.mktemp("nix")
    expr = d / "test.nix"
    expr.write_text(NIX_EXPR.replace("@BUSYBOX@", str(Path(busybox).resolve())))
    env = nix_build(expr, "env")
    paths = subprocess.run(["nix-store", "-qR", env], check=True, capture_output=True, text=True).stdout.split()
    return Closure(nix_build(expr, "t"), nix_build(expr, "busybox"), env, paths)


META = {"labels": {"org.nixsnake.env": "test-env", "org.nixsnake.version": "0.1.0"}, "env": "test-env"}
ENV_VARS = {"FOO": 'a\'b $(touch /tmp/pwned) `id` "q"\nline2', "EMPTY": ""}


def make_skeleton(c: Closure) -> list[Entry]:
    return skeleton(
        c.env,
        path_dirs=[c.env + "/bin"],
        ld_library_path=[c.env + "/lib"],
        env_vars=ENV_VARS,
        ssl_cert_file=c.t + "/f",
        bash=c.busybox + "/bin/sh",
        metadata_json=metadata_json(META),
    )


# ---------------------------------------------------------------- skeleton (pure)

SK_ARGS = dict(
    path_dirs=["/nix/store/aaa-env/bin"],
    ld_library_path=["/nix/store/aaa-env/lib"],
    env_vars={"B": "2", "A": "x y"},
    ssl_cert_file="/nix/store/ccc-cacert/etc/ssl/certs/ca-bundle.crt",
    bash="/nix/store/bbb-bash/bin/bash",
    metadata_json=b'{"labels":{"org.nixsnake.env":"e"}}',
    loader="/nix/store/ddd-glibc/lib/ld-linux-x86-64.so.2",
)


def by_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_skeleton_layout() -> None:
    entries = skeleton("/nix/store/aaa-env", **SK_ARGS)  # type: ignore[arg-type]
    assert entries == skeleton("/nix/store/aaa-env", **SK_ARGS)  # type: ignore[arg-type]
    paths = [e.path for e in entries]
    assert paths == sorted(paths, key=lambda p: p.split("/"))
    assert len(set(paths)) == len(paths)
    m = by_path(entries)
    for d in [
        "etc",
        "tmp",
        "var/tmp",
        "home",
        "root",
        "run",
        "proc",
        "sys",
        "dev",
        "usr/bin",
        "mnt",
        "opt",
        "srv",
        ".singularity.d/libs",
    ]:
        assert m[d].kind == "dir", d
    assert m["tmp"].mode == m["var/tmp"].mode == 0o1777
    assert m["bin"] == Entry("bin", "symlink", 0o777, target="/nix/store/aaa-env/bin")
    assert m["usr/bin/env"].target == "/nix/store/aaa-env/bin/env"
    assert m["run/opengl-driver"].kind == "dir"
    assert m["run/opengl-driver/lib"].target == "/.singularity.d/libs"
    assert m["etc/ssl/certs/ca-certificates.crt"].target == SK_ARGS["ssl_cert_file"]
    for f in ("etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf", "etc/nsswitch.conf"):
        assert m[f].kind == "file"
    assert m["etc/resolv.conf"].data == b""
    assert m["etc/passwd"].data.startswith(b"root:x:0:0:")
    assert b"hosts: files dns" in m["etc/nsswitch.conf"].data
    assert m[".nixsnake/metadata.json"].data == SK_ARGS["metadata_json"]
    assert json.loads(m[".singularity.d/labels.json"].data) == {"org.nixsnake.env": "e"}
    assert m[".singularity.d/runscript"].mode == 0o755
    assert m[".singularity.d/runscript"].data.startswith(b"#!/nix/store/bbb-bash/bin/bash\n")
    base = m[".singularity.d/env/99-base.sh"].data.decode()
    assert "PS1=" in base and "export PS1\n" in base and "LD_LIBRARY_PATH=" not in base
    env = m[".singularity.d/env/90-nixsnake.sh"].data.decode()
    assert "PATH=/nix/store/aaa-env/bin:/usr/bin\n" in env
    # the host's GL/OpenCL libraries in /.singularity.d/libs stay off LD_LIBRARY_PATH: only
    # links named after NVIDIA's own libraries, into where --nv and nvidia-container-cli put
    # them, and only where the runtime put the driver (test_nvidia_link_dirs_only_with_a_driver)
    assert "LD_LIBRARY_PATH=/nix/store/aaa-env/lib\n" in env
    environment = m[".nixsnake/environment"].data.decode()
    assert "LD_LIBRARY_PATH=/nix/store/aaa-env/lib\nSSL_CERT_FILE=" in environment
    assert environment.endswith("\nA=x y\nB=2\nPS1=Apptainer> \n")
    assert "SSL_CERT_FILE=/nix/store/ccc-cacert/etc/ssl/certs/ca-bundle.crt\n" in env
    assert "NIX_SSL_CERT_FILE=" in env
    assert env.index("\nA='x y'\n") < env.index("\nB=2\n")
    for name in ("libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1", "libnvidia-nvvm.so.4",
                 "libcudadebugger.so.1"):  # fmt: skip
        assert m[f".nixsnake/nvidia/libs/{name}"].target == f"/.singularity.d/libs/{name}"
        assert m[f".nixsnake/nvidia/lib64/{name}"].target == f"/usr/lib64/{name}"
        assert m[f".nixsnake/nvidia/multiarch/{name}"].target == f"/usr/lib/x86_64-linux-gnu/{name}"
    assert not [
        p for p in m if p.startswith(".nixsnake/nvidia/") and ("libGL" in p or "libEGL" in p or "OpenCL.so" in p)
    ]
    # the interpreter host programs name (nvidia-smi bound by --nv): the image's glibc loader
    assert m["lib64"].kind == "dir"
    assert m["lib64/ld-linux-x86-64.so.2"].target == "/nix/store/ddd-glibc/lib/ld-linux-x86-64.so.2"


def test_skeleton_loader_per_architecture() -> None:
    m = by_path(
        skeleton("/nix/store/aaa-env", **{**SK_ARGS, "loader": "/nix/store/ddd-glibc/lib/ld-linux-aarch64.so.1"})
    )  # type: ignore[arg-type]
    assert m["lib/ld-linux-aarch64.so.1"].target == "/nix/store/ddd-glibc/lib/ld-linux-aarch64.so.1"
    assert "lib64" not in m
    assert m[".nixsnake/nvidia/multiarch/libcuda.so.1"].target == "/usr/lib/aarch64-linux-gnu/libcuda.so.1"
    m = by_path(skeleton("/nix/store/aaa-env", **{**SK_ARGS, "loader": None}))  # type: ignore[arg-type]
    assert "lib64" not in m and "lib" not in m
    with pytest.raises(NixsnakeError):
        skeleton("/nix/store/aaa-env", **{**SK_ARGS, "loader": "/nix/store/ddd-glibc/lib/ld.so.1"})  # type: ignore[arg-type]


def test_skeleton_sets_perl5lib_only_with_perl_modules() -> None:
    env = by_path(skeleton("/nix/store/aaa-env", **SK_ARGS))[".singularity.d/env/90-nixsnake.sh"].data  # type: ignore[arg-type]
    assert b"PERL5LIB" not in env
    dirs = ["/nix/store/ddd-perl-BioPerl/lib/perl5/site_perl", "/nix/store/eee-perl-IOString/lib/perl5/site_perl"]
    m = by_path(skeleton("/nix/store/aaa-env", **SK_ARGS, perl5lib=dirs))  # type: ignore[arg-type]
    text = m[".singularity.d/env/90-nixsnake.sh"].data.decode()
    assert f"PERL5LIB={dirs[0]}:{dirs[1]}\nexport PERL5LIB\n" in text
    with pytest.raises(NixsnakeError, match="PERL5LIB entry"):
        skeleton("/nix/store/aaa-env", **SK_ARGS, perl5lib=["relative/site_perl"])  # type: ignore[arg-type]


def test_skeleton_without_certs() -> None:
    m = by_path(skeleton("/nix/store/aaa-env", **{**SK_ARGS, "ssl_cert_file": None}))  # type: ignore[arg-type]
    assert "etc/ssl/certs/ca-certificates.crt" not in m
    assert b"SSL_CERT_FILE" not in m[".singularity.d/env/90-nixsnake.sh"].data


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "", "PATH", "LD_LIBRARY_PATH", "APPTAINER_BIND", "X;rm"])
def test_skeleton_rejects_bad_env_names(name: str) -> None:
    with pytest.raises(NixsnakeError) as ei:
        skeleton("/nix/store/aaa-env", **{**SK_ARGS, "env_vars": {name: "v"}})  # type: ignore[arg-type]
    assert ei.value.code == Exit.DATAERR


def test_env_values_never_become_code(tmp_path: Path) -> None:
    """Source the generated script with a real POSIX shell: values come back verbatim."""
    sh = shutil.which("sh")
    assert sh
    m = by_path(skeleton("/nix/store/aaa-env", **{**SK_ARGS, "env_vars": ENV_VARS}))  # type: ignore[arg-type]
    script = tmp_path / "90.sh"
    script.write_bytes(m[".singularity.d/env/90-nixsnake.sh"].data)
    base = tmp_path / "99.sh"
    base.write_bytes(m[".singularity.d/env/99-base.sh"].data)
    out = subprocess.run(
        [sh, "-c", '. "$1"; . "$2"; printf "%s\\0" "$FOO" "$EMPTY" "$LD_LIBRARY_PATH" "$PATH"', "sh", script, base],
        cwd=tmp_path, capture_output=True, check=True, env={"LD_LIBRARY_PATH": "/host"},
    ).stdout.decode()  # fmt: skip
    foo, empty, ld, path, _ = out.split("\0")
    assert foo == ENV_VARS["FOO"] and empty == ""
    assert ld == "/nix/store/aaa-env/lib"
    assert path == "/nix/store/aaa-env/bin:/usr/bin"
    assert not (tmp_path / "pwned").exists() and not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    ("libs", "driver_in", "want"),
    [
        ([], {}, ""),
        (["/nix/store/aaa-env/lib"], {}, "/nix/store/aaa-env/lib"),
        ([], {"libs": "libcuda.so.1"}, "/.nixsnake/nvidia/libs"),
        (["/l"], {"libs": "libnvidia-ml.so.1"}, "/l:/.nixsnake/nvidia/libs"),
        (["/l"], {"lib64": "libcuda.so.1", "multiarch": "libnvidia-ml.so.1"},
         "/l:/.nixsnake/nvidia/lib64:/.nixsnake/nvidia/multiarch"),
        (["/l"], {"libs": "libGL.so.1"}, "/l"),  # not NVIDIA's: no link directory
    ],
)  # fmt: skip
def test_nvidia_link_dirs_only_with_a_driver(tmp_path: Path, libs, driver_in, want) -> None:
    """90-nixsnake.sh puts a directory of links to NVIDIA's libraries on LD_LIBRARY_PATH
    only where the runtime put the host driver: without a GPU no program start looks up
    its libraries in three directories of dangling links. Run by a real shell, with the
    places the links point to moved under tmp_path (the same script otherwise)."""
    from snakemake_deploy_nixsnake.image.skeleton import NVIDIA_LINK_DIRS

    targets = {d.rsplit("/", 1)[-1]: t.format(triplet="x86_64-linux-gnu") for d, t in NVIDIA_LINK_DIRS.items()}
    script = by_path(skeleton("/nix/store/aaa-env", **{**SK_ARGS, "ld_library_path": libs}))[  # type: ignore[arg-type]
        ".singularity.d/env/90-nixsnake.sh"
    ].data.decode()
    for target in targets.values():
        script = script.replace(f"[ -e {target}/", f"[ -e {tmp_path}{target}/")
    for where, lib in driver_in.items():
        (tmp_path / targets[where].lstrip("/")).mkdir(parents=True, exist_ok=True)
        (tmp_path / targets[where].lstrip("/") / lib).write_bytes(b"")
    (tmp_path / "90.sh").write_text(script)
    got = subprocess.run(["sh", "-c", '. "$1"; printf %s "$LD_LIBRARY_PATH"', "sh", tmp_path / "90.sh"],
                         env={"LD_LIBRARY_PATH": "/host"}, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert got == want


def test_base_sh_leaves_ld_library_path_alone(tmp_path: Path) -> None:
    """Unlike apptainer's own 99-base.sh, ours does not append /.singularity.d/libs (where
    --nv binds the host's GL/OpenCL libraries too)."""
    base = tmp_path / "99.sh"
    base.write_bytes(by_path(skeleton("/nix/store/aaa-env", **SK_ARGS))[".singularity.d/env/99-base.sh"].data)  # type: ignore[arg-type]
    for start in (None, "/a", ""):
        env = {} if start is None else {"LD_LIBRARY_PATH": start}
        got = subprocess.run(["sh", "-c", '. "$1"; printf %s "${LD_LIBRARY_PATH-unset}|$PS1"', "sh", base], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert got == f"{'unset' if start is None else start}|Apptainer> "


# ---------------------------------------------------------------- compression options


def test_mksquashfs_argv() -> None:
    argv = mksquashfs_argv("/o.sqfs")
    assert argv[:6] == ["mksquashfs", "-", "/o.sqfs", "-tar", "-comp", "zstd"]
    assert argv[argv.index("-Xcompression-level") + 1] == "3"
    for flag in ("-noappend", "-all-root", "-no-progress", "-quiet", "-no-duplicates"):
        assert flag in argv
    assert argv[argv.index("-mkfs-time") + 1] == "0"
    assert argv[argv.index("-all-time") + 1] == "1"
    assert argv[argv.index("-root-mode") + 1] == "0755"
    assert "-processors" not in argv
    gz = mksquashfs_argv("/o", compression="gzip")
    assert gz[gz.index("-Xcompression-level") + 1] == "9"
    assert "-Xcompression-level" not in mksquashfs_argv("/o", compression="xz")
    assert "-Xcompression-level" not in mksquashfs_argv("/o", compression="lz4")
    z = mksquashfs_argv("/o", compression="zstd", level=19)
    assert z[z.index("-Xcompression-level") + 1] == "19"


@pytest.mark.parametrize(
    "comp,level",
    [("bzip2", None), ("ZSTD", None), ("", None), ("zstd", 0), ("zstd", 23), ("gzip", 10), ("xz", 6), ("lz4", 1),
     ("zstd", True)],
)  # fmt: skip
def test_bad_compression_is_dataerr(tmp_path: Path, comp: str, level: int | None) -> None:
    with pytest.raises(NixsnakeError) as ei:
        pack_squashfs(tmp_path / "o.sqfs", [], [], compression=comp, level=level)
    assert ei.value.code == Exit.DATAERR
    assert not (tmp_path / "o.sqfs").exists()


# ---------------------------------------------------------------- tar stream


@needs_tools
def test_tar_stream_is_sorted_and_normalised(closure: Closure, tmp_path: Path) -> None:
    tar_path = tmp_path / "s.tar"
    with open(tar_path, "wb") as fh:
        squashfs_mod.write_tar(fh, list(reversed(closure.paths)), make_skeleton(closure))
    with tarfile.open(tar_path) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: [os.fsencode(p) for p in n.split("/")])
    assert names.index("nix") < names.index("nix/store") < names.index("nix/store/" + Path(closure.t).name)
    assert all(m.mtime == 1 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert not any(m.islnk() for m in members)  # no hard links
    by = {m.name: m for m in members}
    t = "nix/store/" + Path(closure.t).name
    assert by[t + "/f"].mode == 0o444 and by[t].mode == 0o555
    assert by["nix/store/" + Path(closure.busybox).name + "/bin/busybox"].mode == 0o555
    long = by["nix/store/" + Path(closure.env).name + "/share/long-link"]
    assert long.issym() and long.linkname == f"{closure.t}/{LONG}/f"


def test_bad_closure_paths(tmp_path: Path) -> None:
    for bad in ["/etc", "/nix/store", "/nix/store/../etc/x", "relative", "/nix/store/aaaaaaaa-missing"]:
        with pytest.raises(NixsnakeError):
            pack_squashfs(tmp_path / "o.sqfs", [bad], [])
        assert not (tmp_path / "o.sqfs").exists()


def test_bad_skeleton(tmp_path: Path) -> None:
    for bad in (
        [Entry("nix/x", "file", 0o644)],
        [Entry("/etc", "dir", 0o755)],
        [Entry("a/../b", "dir", 0o755)],
        [Entry("a", "dir", 0o755), Entry("a", "dir", 0o755)],
        [Entry("a", "file", 0o644), Entry("a/b", "file", 0o644)],
    ):
        with pytest.raises(NixsnakeError):
            pack_squashfs(tmp_path / "o.sqfs", [], bad)
        assert not (tmp_path / "o.sqfs").exists()


# ---------------------------------------------------------------- real packing


@needs_tools
def test_pack_is_reproducible(closure: Closure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sk = make_skeleton(closure)
    pack_squashfs(tmp_path / "a.sqfs", closure.paths, sk)
    # a user's SOURCE_DATE_EPOCH would make mksquashfs 4.5.1 abort: it must be ignored
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567")
    progress: list[tuple[int, int]] = []
    pack_squashfs(tmp_path / "b.sqfs", list(reversed(closure.paths)), list(reversed(sk)),
                  on_progress=lambda d, t: progress.append((d, t)))  # fmt: skip
    assert sha256(tmp_path / "a.sqfs") == sha256(tmp_path / "b.sqfs")
    assert progress and progress[-1][0] == progress[-1][1] > 1_900_000  # busybox is in it
    write_sif(tmp_path / "a.sif", tmp_path / "a.sqfs", META)
    write_sif(tmp_path / "b.sif", tmp_path / "b.sqfs", META)
    assert sha256(tmp_path / "a.sif") == sha256(tmp_path / "b.sif")


@needs_tools
def test_image_contents(closure: Closure, tmp_path: Path) -> None:
    sqfs, img = tmp_path / "a.sqfs", tmp_path / "a.sif"
    pack_squashfs(sqfs, closure.paths, make_skeleton(closure))
    write_sif(img, sqfs, META)
    info = read_sif(img)
    assert info.metadata == META and info.partition_offset == PARTITION_OFFSET
    with mounted(img, tmp_path / "mnt", offset=PARTITION_OFFSET) as mnt:
        t = mnt / closure.t.lstrip("/")
        assert (t / "f").read_text() == "hi\n"
        assert (t / "f").stat().st_mtime == 1 and (t / "f").stat().st_mode & 0o7777 == 0o444
        assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o755 and os.stat(mnt).st_mtime == 1
        assert (mnt / "etc/passwd").is_file() and not (mnt / "etc/passwd").is_symlink()
        assert (mnt / "etc/group").is_file()
        assert os.readlink(mnt / "bin") == closure.env + "/bin"
        assert (mnt / ".singularity.d/env/99-base.sh").is_file()
        assert stat.S_IMODE(os.lstat(mnt / "tmp").st_mode) == 0o1777
        assert stat.S_IMODE(os.lstat(mnt / "var/tmp").st_mode) == 0o1777
        assert json.loads((mnt / ".nixsnake/metadata.json").read_bytes()) == META
        assert os.readlink(mnt / "run/opengl-driver/lib") == "/.singularity.d/libs"
        env = mnt / closure.env.lstrip("/")
        assert os.readlink(env / "share/long-link") == f"{closure.t}/{LONG}/f"
        assert os.readlink(env / "bin/sh") == closure.busybox + "/bin/sh"
        assert sorted(os.listdir(mnt / "nix/store")) == sorted(Path(p).name for p in closure.paths)
        bb = mnt / closure.busybox.lstrip("/") / "bin/busybox"
        assert bb.read_bytes() == Path("/bin/busybox").read_bytes()
        assert stat.S_IMODE(bb.stat().st_mode) == 0o555

        if shutil.which("bwrap"):
            run_inside(mnt, closure)


def run_inside(mnt: Path, c: Closure) -> None:
    """Run the image like apptainer would: image as /, env scripts sourced, no host /usr."""
    script = (
        'for f in /.singularity.d/env/*.sh; do . "$f"; done; '
        'printf "%s\\0" "$FOO" "$LD_LIBRARY_PATH" "$PATH" "$SSL_CERT_FILE"; '
        f"cat {c.t}/f; hello; /.singularity.d/runscript echo via-runscript; "
        "test -d /tmp && test -w /tmp && id -u && ls /usr"
    )
    r = subprocess.run(
        ["bwrap", "--ro-bind", str(mnt), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
         "--clearenv", "--unshare-pid", "/bin/sh", "-c", script],
        capture_output=True, timeout=30,
    )  # fmt: skip
    if r.returncode != 0 and b"No permissions to create new namespace" in r.stderr:
        pytest.skip("bwrap cannot create namespaces here")
    assert r.returncode == 0, r.stderr.decode()
    foo, ld, path, cert, rest = r.stdout.decode().split("\0")
    assert foo == ENV_VARS["FOO"]
    assert ld == f"{c.env}/lib"
    assert path == f"{c.env}/bin:/usr/bin"
    assert cert == f"{c.t}/f"
    assert rest.splitlines()[:4] == ["hi", "script-ran", "via-runscript", "0"]


@needs_tools
@pytest.mark.parametrize("comp", ["gzip", "xz", "lz4"])
def test_other_compressions(closure: Closure, tmp_path: Path, comp: str) -> None:
    sqfs = tmp_path / "a.sqfs"
    pack_squashfs(sqfs, [closure.t], make_skeleton(closure), compression=comp)
    out = subprocess.run(["unsquashfs", "-s", str(sqfs)], capture_output=True, text=True, check=True).stdout
    assert f"Compression {comp}" in out
    with mounted(sqfs, tmp_path / "mnt") as mnt:
        assert (mnt / closure.t.lstrip("/") / "f").read_text() == "hi\n"


# ---------------------------------------------------------------- failures


@needs_tools
def test_mksquashfs_failure_removes_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "mksquashfs"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho partial > "$2"\necho "FATAL ERROR: simulated failure" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    out = tmp_path / "o.sqfs"
    with pytest.raises(NixsnakeError) as ei:
        pack_squashfs(out, [], [Entry("etc", "dir", 0o755)])
    assert "simulated failure" in str(ei.value)
    assert not out.exists()


@needs_tools
def test_writer_failure_kills_mksquashfs(closure: Closure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = squashfs_mod.write_tar

    def broken(fileobj, closure_paths, skel, *, on_progress=None):  # type: ignore[no-untyped-def]
        def boom(done: int, total: int) -> None:
            raise OSError("disk on fire")

        real(fileobj, closure_paths, skel, on_progress=boom)

    monkeypatch.setattr(squashfs_mod, "write_tar", broken)
    monkeypatch.setattr(squashfs_mod, "_PROGRESS_STEP", 1)
    out = tmp_path / "o.sqfs"
    with pytest.raises(NixsnakeError, match="disk on fire"):
        pack_squashfs(out, closure.paths, [])
    assert not out.exists()


@needs_tools
def test_missing_mksquashfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NixsnakeError) as ei:
        pack_squashfs(tmp_path / "o.sqfs", [], [])
    assert ei.value.code == Exit.UNAVAILABLE
