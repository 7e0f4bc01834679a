"""One image id, one sequence of bytes.

The image id hashes the env file, the lock, the compression and IMAGE_FORMAT_VERSION --
not the nixsnake version. So whenever the bytes nixsnake makes from the same inputs
change (skeleton, tar stream, mksquashfs flags, SIF writer, the nix files that build the
environment root), IMAGE_FORMAT_VERSION must be bumped, or stores would keep serving old
bytes under ids that now mean new ones. This test builds a reference image from fixed
inputs with the real packing code and compares its digest (together with the nix files
that shape every environment) with the one recorded for the current format version.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.deploy import IMAGE_FORMAT_VERSION
from snakemake_deploy_nixsnake.image.metadata import ImageMetadata
from snakemake_deploy_nixsnake.image.sif import write_sif
from snakemake_deploy_nixsnake.image.skeleton import skeleton
from snakemake_deploy_nixsnake.image.squashfs import pack_squashfs
from snakemake_deploy_nixsnake.nixbuild import nix_dir

#: format version -> digest of (reference image, nix/ files). When the test fails after
#: a change that alters image bytes: bump IMAGE_FORMAT_VERSION in deploy.py and add the
#: new digest here (keep the old lines: they document what each version was).
KNOWN = {
    2: "7acfe48f6b2a3c0c22c2aa652ba8e94ba681f7747c88508dd42d6de6b2d604b3",
    3: "bb8ebd5f956d8cd7ab526605aed35274dd7a91f21c2323eed62a512c9c456cb5",  # PERL5LIB (mkenv.sh), -no-duplicates
    # (3 was also, on another branch, "641d7755...": the glibc loader at /lib64, NVIDIA link
    # dirs on LD_LIBRARY_PATH instead of /.singularity.d/libs, 99-base.sh without it, the
    # glibc version in the metadata; 4 has both)
    4: "1564228cde8a42c90831078c57f8a1515195f3614dff7914c9d13408db4577bd",
    # (3 was also, on a third branch, "c1f0acee...": bashInteractive, lib.makeLibraryPath,
    # nixpkgs-src.nix/nixpkgs-info.nix, the pythonModule check, env-file errors, wheel
    # warnings and nix's system in the env data; 5 has all of them)
    5: "8d99313588e747114b20d4c8b7bc0a76c11f14b3314c8ab56c04ed3721d0fa98",
    6: "5257f07622dce906b5be76c7b0f889ef60cde38e0d17d75d0fbbe71b55290606",  # /etc/localtime (UTC) in the skeleton
    # the environment as NAME=VALUE lines (/.nixsnake/environment); NVIDIA link dirs on
    # LD_LIBRARY_PATH only where a runtime put the driver
    7: "7354e8cee3da91c76d5a72240ddc43bc53ca3aa26380d63a3e5fa73937b076b4",
}

#: name -> (content, mode): added to the store content-addressed, so the same store
#: paths on every machine.
FIXED_FILES = {"nixsnake-golden-tool": (b"#!/bin/sh\necho golden\n", 0o755), "nixsnake-golden-data": (b"data\n", 0o644)}


def fixed_store_paths(tmp: Path) -> list[str]:
    out = []
    for name, (content, mode) in FIXED_FILES.items():
        f = tmp / "src" / name
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(content)
        f.chmod(mode)
        out.append(
            subprocess.run(["nix-store", "--add", str(f)], check=True, capture_output=True, text=True).stdout.strip()
        )
    return out


def reference_digest(tmp: Path) -> str:
    tool, data = fixed_store_paths(tmp)
    meta = ImageMetadata(
        image_id="0" * 40,
        image_format=IMAGE_FORMAT_VERSION,
        env={"date": "2024-01-01"},
        lock={"rev": "0" * 40},
        env_root=tool,
        executables=("golden",),
        store_paths=(data, tool),
        compression="zstd",
        labels={"org.nixsnake.image-id": "0" * 40},
        glibc="2.36",
    )
    entries = skeleton(
        tool,
        path_dirs=[tool],
        ld_library_path=[data],
        env_vars={"GOLDEN": "it's $HOME"},
        ssl_cert_file=data,
        bash=tool,
        metadata_json=meta.to_json(),
        loader=f"{data}/ld-linux-x86-64.so.2",
    )
    sqfs, sif = tmp / "ref.sqfs", tmp / "ref.sif"
    pack_squashfs(sqfs, sorted([tool, data]), entries, compression="zstd")
    write_sif(sif, sqfs, meta.to_dict())
    h = hashlib.sha256(hashlib.sha256(sif.read_bytes()).digest())
    for f in sorted(nix_dir().iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


@pytest.mark.nix
@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs")
def test_image_bytes_change_only_with_a_format_bump(tmp_path):
    digest = reference_digest(tmp_path)
    (tmp_path / "again").mkdir()  # the reference itself is deterministic

    assert reference_digest(tmp_path / "again") == digest
    assert IMAGE_FORMAT_VERSION in KNOWN, f"record KNOWN[{IMAGE_FORMAT_VERSION}] = {digest!r}"
    assert KNOWN[IMAGE_FORMAT_VERSION] == digest, (
        f"the image bytes changed but IMAGE_FORMAT_VERSION is still {IMAGE_FORMAT_VERSION}: bump it in "
        f"deploy.py and record KNOWN[{IMAGE_FORMAT_VERSION + 1}] = {digest!r}"
    )


def test_image_id_does_not_depend_on_the_nixsnake_version(monkeypatch):
    import snakemake_deploy_nixsnake as pkg
    from snakemake_deploy_nixsnake import deploy
    from snakemake_deploy_nixsnake.lock import Lock
    from snakemake_deploy_nixsnake.nixpkgs import NixpkgsPin
    from snakemake_deploy_nixsnake.spec import parse_spec

    env = parse_spec(b"date = 2024-01-01\n")
    lock = Lock(env.spec_hash(), "2024-01-01", NixpkgsPin("b", "a" * 40, "2024-01-01T00:00:00Z", False))
    before = deploy.image_id(env, lock, "zstd")
    monkeypatch.setattr(pkg, "__version__", "99.0")
    assert deploy.image_id(env, lock, "zstd") == before
    monkeypatch.setattr(deploy, "IMAGE_FORMAT_VERSION", IMAGE_FORMAT_VERSION + 1)
    assert deploy.image_id(env, lock, "zstd") != before
