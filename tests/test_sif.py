"""Our deterministic SIF writer, checked against the real SIF tools (siftool, squashfuse)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.image import sif
from snakemake_deploy_nixsnake.image.sif import PARTITION_OFFSET, metadata_json, read_sif, write_sif, write_sif_to

needs = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mksquashfs", "siftool", "squashfuse")),
    reason="needs squashfs-tools, siftool and squashfuse",
)

META = {
    "labels": {"org.nixsnake.env": "rule-a", "org.nixsnake.version": "0.1.0"},
    "env": {"name": "rule-a", "date": "2024-01-01"},
    "unicode": "grüße",
}


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


from _image_fixtures import mounted  # noqa: E402


@pytest.fixture(scope="module")
def squashfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("mksquashfs"):
        pytest.skip("needs mksquashfs")
    d = tmp_path_factory.mktemp("sq")
    src = d / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hello").write_text("hello from squashfs\n")
    (src / "big").write_bytes(os.urandom(3 << 20))  # a multi-MiB partition to copy
    out = d / "img.sqfs"
    subprocess.run(
        ["mksquashfs", str(src), str(out), "-noappend", "-all-root", "-mkfs-time", "0", "-all-time", "1", "-quiet",
         "-no-progress"],
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"},
    )  # fmt: skip
    return out


def test_layout_bytes(squashfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.sif"
    write_sif(out, squashfs, META)
    data = out.read_bytes()
    size = squashfs.stat().st_size
    assert data[:32] == b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0")
    assert data[32:42] == b"SIF_MAGIC\0"
    assert data[42:45] == b"01\0"
    assert data[45:48] == b"02\0"
    assert data[48:64] == bytes(16)  # nil UUID
    created, modified, free, total, doff, dsize, dataoff, datasize = struct.unpack_from("<8q", data, 64)
    assert created == modified == -62135596800
    assert (free, total, doff, dsize, dataoff) == (45, 48, 4096, 48 * 585, 32176)
    assert dataoff + datasize == len(data)
    assert data[128:4096] == bytes(4096 - 128)
    assert PARTITION_OFFSET == 32768
    assert data[PARTITION_OFFSET : PARTITION_OFFSET + size] == squashfs.read_bytes()
    # first descriptor: the primary system squashfs partition
    dt, used, did, gid, lid, off, sz, swp = struct.unpack_from("<iBIIIqqq", data, 4096)
    assert (dt, used, did, gid, lid, off, sz, swp) == (0x4004, 1, 1, 0xF0000001, 0, 32768, size, 32768 - 32176 + size)
    fstype, parttype, arch = struct.unpack_from("<ii3s", data, 4096 + 585 - 384)
    assert (fstype, parttype, arch) == (1, 2, b"02\0")
    # unused descriptors are all zero
    assert data[4096 + 3 * 585 : 4096 + 48 * 585] == bytes(45 * 585)
    # the metadata object is the canonical JSON
    meta = metadata_json(META)
    assert data[PARTITION_OFFSET + size : PARTITION_OFFSET + size + len(meta)] == meta
    assert meta == json.dumps(META, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert os.stat(out).st_mode & 0o777 == 0o755


def test_deterministic(squashfs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.sif", tmp_path / "b.sif"
    write_sif(a, squashfs, META)
    write_sif(b, squashfs, dict(reversed(list(META.items()))))  # key order does not matter
    assert sha256(a) == sha256(b)
    with open(tmp_path / "c.sif", "wb") as fh:
        n = write_sif_to(fh, squashfs, META)
    assert n == a.stat().st_size and sha256(tmp_path / "c.sif") == sha256(a)


def test_streams_in_chunks(squashfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sif, "COPY_CHUNK", 4096)
    write_sif(tmp_path / "small-chunks.sif", squashfs, META)
    monkeypatch.undo()
    write_sif(tmp_path / "default.sif", squashfs, META)
    assert sha256(tmp_path / "small-chunks.sif") == sha256(tmp_path / "default.sif")


def test_read_sif_round_trip(squashfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.sif"
    write_sif(out, squashfs, META)
    info = read_sif(out)
    assert info.partition_offset == PARTITION_OFFSET
    assert info.partition_size == squashfs.stat().st_size
    assert (info.fstype, info.parttype, info.arch) == (1, 2, "amd64")
    assert info.metadata == META
    assert info.labels == META["labels"]
    assert [(d.datatype, d.name) for d in info.descriptors] == [
        (0x4004, ""),
        (0x4006, "nixsnake.json"),
        (0x4003, "labels.json"),
    ]


def test_arch(squashfs: Path, tmp_path: Path) -> None:
    write_sif(tmp_path / "a.sif", squashfs, {}, arch="arm64")
    info = read_sif(tmp_path / "a.sif")
    assert info.arch == "arm64" and info.metadata == {} and info.labels == {}
    with pytest.raises(NixsnakeError) as ei:
        write_sif(tmp_path / "b.sif", squashfs, {}, arch="vax")
    assert ei.value.code == Exit.DATAERR
    assert not (tmp_path / "b.sif").exists()


@needs
def test_siftool_reads_it(squashfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.sif"
    write_sif(out, squashfs, META)
    listing = subprocess.run(["siftool", "list", str(out)], check=True, capture_output=True, text=True).stdout
    rows = [r for r in listing.splitlines() if "|" in r and not r.startswith("ID")]
    assert len(rows) == 3, listing
    size = squashfs.stat().st_size
    assert rows[0].split("|")[3].strip() == f"{PARTITION_OFFSET}-{PARTITION_OFFSET + size}"
    assert rows[0].split("|")[4].strip() == "FS (Squashfs/*System/amd64)"
    assert rows[1].split("|")[4].strip() == "JSON.Generic"
    assert rows[2].split("|")[4].strip() == "JSON.Labels"
    info = subprocess.run(["siftool", "info", "2", str(out)], check=True, capture_output=True, text=True).stdout
    assert "nixsnake.json" in info
    dumped = subprocess.run(["siftool", "dump", "2", str(out)], check=True, capture_output=True).stdout
    assert json.loads(dumped) == META
    header = subprocess.run(["siftool", "header", str(out)], check=True, capture_output=True, text=True).stdout
    assert "Descriptors Total:    48" in header and "Primary Architecture: amd64" in header


@needs
def test_squashfuse_mounts_partition(squashfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.sif"
    write_sif(out, squashfs, META)
    with mounted(out, tmp_path / "mnt", offset=PARTITION_OFFSET) as mnt:
        assert (mnt / "etc" / "hello").read_text() == "hello from squashfs\n"
        assert (mnt / "big").stat().st_size == 3 << 20


@pytest.mark.parametrize(
    "content",
    [b"", b"#!/bin/sh\necho not a sif\n", b"\x7fELF" + bytes(200), b"x" * 40000],
    ids=["empty", "script", "elf", "text"],
)
def test_garbage_is_dataerr(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.sif"
    p.write_bytes(content)
    with pytest.raises(NixsnakeError) as ei:
        read_sif(p)
    assert ei.value.code == Exit.DATAERR
    assert str(p) in str(ei.value) and "not a usable SIF image" in str(ei.value)


@pytest.mark.parametrize("keep", [100, 128, 5000, 32768 + 100])
def test_truncated_is_dataerr(squashfs: Path, tmp_path: Path, keep: int) -> None:
    good = tmp_path / "a.sif"
    write_sif(good, squashfs, META)
    bad = tmp_path / "t.sif"
    bad.write_bytes(good.read_bytes()[:keep])
    with pytest.raises(NixsnakeError) as ei:
        read_sif(bad)
    assert ei.value.code == Exit.DATAERR


def test_wrong_version_and_no_partition(squashfs: Path, tmp_path: Path) -> None:
    good = tmp_path / "a.sif"
    write_sif(good, squashfs, META)
    data = bytearray(good.read_bytes())
    data[42:45] = b"02\0"
    (tmp_path / "v.sif").write_bytes(data)
    with pytest.raises(NixsnakeError, match="unsupported SIF version"):
        read_sif(tmp_path / "v.sif")
    data = bytearray(good.read_bytes())
    data[4096 + 4] = 0  # partition descriptor unused
    (tmp_path / "p.sif").write_bytes(data)
    with pytest.raises(NixsnakeError, match="no primary system partition"):
        read_sif(tmp_path / "p.sif")


def test_missing_file_is_noinput(tmp_path: Path) -> None:
    with pytest.raises(NixsnakeError) as ei:
        read_sif(tmp_path / "nope.sif")
    assert ei.value.code == Exit.NOINPUT


def test_input_must_be_squashfs(tmp_path: Path) -> None:
    fake = tmp_path / "fake.sqfs"
    fake.write_bytes(b"not squashfs" * 100)
    with pytest.raises(NixsnakeError) as ei:
        write_sif(tmp_path / "x.sif", fake, {})
    assert ei.value.code == Exit.DATAERR
    assert not (tmp_path / "x.sif").exists()
