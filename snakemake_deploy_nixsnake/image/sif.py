"""A deterministic SIF writer and a cheap SIF reader.

``siftool`` cannot write reproducibly (random UUID, current time), so we write SIF
ourselves: spec "01", nil UUID, the Go library's "deterministic" timestamps
(``time.Time{}.Unix()`` = -62135596800), 48 descriptors. Layout of what we write:

====================  =========================================================
offset                content
====================  =========================================================
0                     global header (128 bytes), zeros up to 4096
4096                  48 descriptors x 585 bytes (unused ones all zero)
32176                 zero padding (data section starts here)
32768                 squashfs: primary system partition (``PARTITION_OFFSET``)
after it              ``nixsnake.json`` generic JSON object (our metadata)
after that            labels JSON object (what ``apptainer inspect`` shows)
====================  =========================================================

The partition always comes first, at a fixed offset, so our own runtimes can mount it
(``squashfuse -o offset=32768``) without parsing; :func:`read_sif` still parses.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import Exit, NixsnakeError

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"
DETERMINISTIC_TIME = -62135596800  # Go's time.Time{}.Unix(): what OptCreateDeterministic stores

HEADER_SIZE = 128
DESCRIPTOR_SIZE = 585
DESCRIPTOR_COUNT = 48
DESCRIPTORS_OFFSET = 4096
DESCRIPTORS_SIZE = DESCRIPTOR_COUNT * DESCRIPTOR_SIZE  # 28080
DATA_OFFSET = DESCRIPTORS_OFFSET + DESCRIPTORS_SIZE  # 32176
PARTITION_ALIGN = 4096
PARTITION_OFFSET = (DATA_OFFSET + PARTITION_ALIGN - 1) // PARTITION_ALIGN * PARTITION_ALIGN  # 32768

DATA_DEFFILE = 0x4001
DATA_ENVVAR = 0x4002
DATA_LABELS = 0x4003
DATA_PARTITION = 0x4004
DATA_SIGNATURE = 0x4005
DATA_GENERIC_JSON = 0x4006

FS_SQUASH = 1
PART_SYSTEM = 1
PART_PRIMSYS = 2
GROUP_MASK = 0xF0000000
DEFAULT_GROUP = GROUP_MASK | 1

METADATA_NAME = "nixsnake.json"
LABELS_NAME = "labels.json"

#: SIF arch codes (3 bytes in the header and partition descriptor), by Go arch name.
ARCHES: dict[str, bytes] = {
    "386": b"01\x00",
    "amd64": b"02\x00",
    "arm": b"03\x00",
    "arm64": b"04\x00",
    "ppc64": b"05\x00",
    "ppc64le": b"06\x00",
    "mips": b"07\x00",
    "mipsle": b"08\x00",
    "mips64": b"09\x00",
    "mips64le": b"10\x00",
    "s390x": b"11\x00",
    "riscv64": b"12\x00",
    "loong64": b"13\x00",
}
ARCH_UNKNOWN = b"00\x00"
_ARCH_NAMES = {v: k for k, v in ARCHES.items()}

SQUASHFS_MAGIC = b"hsqs"
COPY_CHUNK = 8 << 20  # 8 MiB
MAX_METADATA = 64 << 20  # refuse to load absurd "metadata" objects

# launch(32) magic(10) version(3) arch(3) uuid(16) created modified dfree dtotal doff dsize dataoff datasize
_HEADER = struct.Struct("<32s10s3s3s16s8q")
# datatype used id groupid linkid offset size sizewithpad created modified uid gid name(128) extra(384)
_DESCRIPTOR = struct.Struct("<iBIIIqqqqqqq128s384s")
# partition extra: fstype parttype arch(3)
_PARTITION_EXTRA = struct.Struct("<ii3s")
assert _HEADER.size == HEADER_SIZE and _DESCRIPTOR.size == DESCRIPTOR_SIZE


@dataclass(frozen=True)
class Descriptor:
    """One used SIF descriptor, as read back."""

    datatype: int
    id: int
    groupid: int
    linkid: int
    offset: int
    size: int
    size_with_padding: int
    name: str
    extra: bytes = field(repr=False)


@dataclass(frozen=True)
class SifInfo:
    partition_offset: int
    partition_size: int
    fstype: int
    parttype: int
    arch: str
    metadata: dict[str, Any]
    labels: dict[str, str]
    descriptors: list[Descriptor]


def metadata_json(metadata: Mapping[str, Any]) -> bytes:
    """The canonical bytes of ``metadata`` (what the SIF and the image both carry)."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def labels_from_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """String labels for ``apptainer inspect``: ``metadata["labels"]`` if present."""
    raw = metadata.get("labels") or {}
    if not isinstance(raw, Mapping):
        raise NixsnakeError(f"image metadata 'labels' must be a mapping, got {type(raw).__name__}", Exit.SOFTWARE)
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in sorted(raw.items())}


def labels_json(metadata: Mapping[str, Any]) -> bytes:
    return json.dumps(labels_from_metadata(metadata), sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"


def _arch_code(arch: str) -> bytes:
    try:
        return ARCHES[arch]
    except KeyError:
        raise NixsnakeError(
            f"unknown image architecture {arch!r}; known: {', '.join(sorted(ARCHES))}", Exit.DATAERR
        ) from None


def _name(name: str) -> bytes:
    b = name.encode()
    if len(b) > 128:
        raise NixsnakeError(f"SIF object name too long: {name!r}", Exit.SOFTWARE)
    return b


def _descriptor(
    slot: int, datatype: int, offset: int, size: int, pad: int, name: str = "", extra: bytes = b""
) -> bytes:
    return _DESCRIPTOR.pack(
        datatype,
        1,
        slot + 1,
        DEFAULT_GROUP,
        0,
        offset,
        size,
        pad + size,
        DETERMINISTIC_TIME,
        DETERMINISTIC_TIME,
        0,
        0,
        _name(name),
        extra,
    )


def write_sif_to(out: IO[bytes], squashfs: Path | str, metadata: Mapping[str, Any], *, arch: str = "amd64") -> int:
    """Write a SIF to the binary file object ``out`` (positioned at 0, sequential writes).

    The squashfs is streamed in chunks, never read whole. Returns the number of bytes
    written. Same inputs give the same bytes.
    """
    code = _arch_code(arch)
    squashfs = Path(squashfs)
    meta = metadata_json(metadata)
    labels = labels_json(metadata)
    with open(squashfs, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        if src.read(4) != SQUASHFS_MAGIC:
            raise NixsnakeError(f"{squashfs}: not a squashfs image (bad magic)", Exit.DATAERR)
        src.seek(0)

        part_pad = PARTITION_OFFSET - DATA_OFFSET
        meta_off = PARTITION_OFFSET + size
        labels_off = meta_off + len(meta)
        end = labels_off + len(labels)

        descriptors = [
            _descriptor(
                0,
                DATA_PARTITION,
                PARTITION_OFFSET,
                size,
                part_pad,
                extra=_PARTITION_EXTRA.pack(FS_SQUASH, PART_PRIMSYS, code),
            ),
            _descriptor(1, DATA_GENERIC_JSON, meta_off, len(meta), 0, METADATA_NAME),
            _descriptor(2, DATA_LABELS, labels_off, len(labels), 0, LABELS_NAME),
        ]
        header = _HEADER.pack(
            LAUNCH_SCRIPT,
            MAGIC,
            VERSION,
            code,
            b"\x00" * 16,
            DETERMINISTIC_TIME,
            DETERMINISTIC_TIME,
            DESCRIPTOR_COUNT - len(descriptors),
            DESCRIPTOR_COUNT,
            DESCRIPTORS_OFFSET,
            DESCRIPTORS_SIZE,
            DATA_OFFSET,
            end - DATA_OFFSET,
        )
        head = bytearray(PARTITION_OFFSET)
        head[:HEADER_SIZE] = header
        d = b"".join(descriptors)
        head[DESCRIPTORS_OFFSET : DESCRIPTORS_OFFSET + len(d)] = d
        out.write(head)
        copied = _copy_into(src, out, size)
        if copied != size:
            raise NixsnakeError(f"{squashfs} changed size while being copied ({size} -> {copied} bytes)", Exit.SOFTWARE)
    out.write(meta)
    out.write(labels)
    return end


def _copy_into(src: io.BufferedReader, out: IO[bytes], size: int) -> int:
    """Copy ``src`` from its start to ``out`` (at its current position); return the
    number of bytes copied.

    Between two real files the kernel copies (``copy_file_range``: no round trip through
    this process, and a server-side copy or reflink where the file system offers one);
    otherwise, or where the kernel declines, a chunked copy through one reused buffer.
    """
    copied = 0
    try:
        out_fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        out_fd = -1
    if out_fd >= 0 and hasattr(os, "copy_file_range"):
        out.flush()
        try:
            while copied < size:
                # explicit source offset (a buffered reader's fd position is not its
                # logical one); the destination's fd position advances by what is copied
                n = os.copy_file_range(src.fileno(), out_fd, size - copied, copied)
                if n == 0:
                    break
                copied += n
        except OSError:
            pass  # EXDEV, ENOSYS, EINVAL...: go on from `copied` the plain way
        if copied == size:
            return copied
    src.seek(copied)
    buf = bytearray(COPY_CHUNK)
    view = memoryview(buf)
    while True:
        n = src.readinto(buf)
        if not n:
            break
        out.write(view[:n])
        copied += n
    return copied


def write_sif(out: Path | str, squashfs: Path | str, metadata: Mapping[str, Any], *, arch: str = "amd64") -> None:
    """Write a SIF at ``out`` (created or truncated) and fsync it.

    Atomic publication (temp file + rename + directory fsync) is the caller's job. On
    failure the partial ``out`` is removed.
    """
    out = Path(out)
    try:
        with open(out, "wb") as f:
            write_sif_to(f, squashfs, metadata, arch=arch)
            f.flush()
            os.fchmod(f.fileno(), 0o755)  # like apptainer's: runnable through its launch script
            os.fsync(f.fileno())
    except BaseException as exc:
        out.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NixsnakeError(f"writing image {out}: {exc}", Exit.SOFTWARE) from exc
        raise


class SifError(NixsnakeError):
    """Not a usable nixsnake SIF; ``why`` says what is wrong with it."""

    def __init__(self, path: Path, why: str):
        self.why = why
        super().__init__(
            f"{path}: not a usable SIF image ({why})", Exit.DATAERR, "rebuild the image with 'nixsnake build'"
        )


def _bad(path: Path, why: str) -> SifError:
    return SifError(path, why)


def read_sif(path: Path | str) -> SifInfo:
    """Read a SIF's header, descriptors, and our metadata object (cheap: no partition read).

    Raises ``NixsnakeError(DATAERR)`` for anything that is not a SIF with a squashfs
    primary system partition.
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (open errors get their own message; `with f` below)
    except FileNotFoundError:
        raise NixsnakeError(f"{path}: no such image", Exit.NOINPUT) from None
    except OSError as exc:
        raise NixsnakeError(f"{path}: cannot open image: {exc}", Exit.NOINPUT) from exc
    with f:
        file_size = os.fstat(f.fileno()).st_size
        raw = f.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise _bad(path, f"only {len(raw)} bytes, shorter than a SIF header")
        (_launch, magic, version, arch, _uuid, _c, _m, _free, total, doff, dsize, _dataoff, _datasize) = _HEADER.unpack(
            raw
        )
        if magic != MAGIC:
            raise _bad(path, "no SIF magic")
        if version != VERSION:
            raise _bad(path, f"unsupported SIF version {version.rstrip(bytes(1)).decode(errors='replace')!r}")
        if not (0 < total <= 4096) or dsize != total * DESCRIPTOR_SIZE or doff < HEADER_SIZE:
            raise _bad(path, "corrupt descriptor table")
        if doff + dsize > file_size:
            raise _bad(path, "truncated descriptor table")
        f.seek(doff)
        table = f.read(dsize)
        if len(table) != dsize:
            raise _bad(path, "truncated descriptor table")

        descriptors: list[Descriptor] = []
        for i in range(total):
            (dt, used, did, gid, lid, off, size, swp, _c, _m, _u, _g, name, extra) = _DESCRIPTOR.unpack_from(
                table, i * DESCRIPTOR_SIZE
            )
            if not used:
                continue
            if off < 0 or size < 0 or off + size > file_size:
                raise _bad(path, f"object {did} lies outside the file (truncated?)")
            descriptors.append(
                Descriptor(dt, did, gid, lid, off, size, swp, name.rstrip(b"\x00").decode(errors="replace"), extra)
            )

        prim = None
        for d in descriptors:
            if d.datatype == DATA_PARTITION:
                fstype, parttype, parch = _PARTITION_EXTRA.unpack_from(d.extra)
                if parttype == PART_PRIMSYS:
                    prim = (d, fstype, parttype, parch)
                    break
        if prim is None:
            raise _bad(path, "no primary system partition")
        pd, fstype, parttype, parch = prim
        if fstype != FS_SQUASH:
            raise _bad(path, f"primary partition is not squashfs (fstype {fstype})")
        f.seek(pd.offset)
        if f.read(4) != SQUASHFS_MAGIC:
            raise _bad(path, "primary partition has no squashfs magic")

        def load_json(d: Descriptor) -> Any:
            if d.size > MAX_METADATA:
                raise _bad(path, f"object {d.name!r} is implausibly large ({d.size} bytes)")
            f.seek(d.offset)
            data = f.read(d.size)
            try:
                return json.loads(data)
            except ValueError as exc:
                raise _bad(path, f"object {d.name!r} is not valid JSON: {exc}") from None

        metadata: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for d in descriptors:
            if d.datatype == DATA_GENERIC_JSON and d.name == METADATA_NAME and not metadata:
                loaded = load_json(d)
                if not isinstance(loaded, dict):
                    raise _bad(path, f"{METADATA_NAME} is not a JSON object")
                metadata = loaded
            elif d.datatype == DATA_LABELS and not labels:
                loaded = load_json(d)
                if isinstance(loaded, dict):
                    labels = {str(k): str(v) for k, v in loaded.items()}

        return SifInfo(
            partition_offset=pd.offset,
            partition_size=pd.size,
            fstype=fstype,
            parttype=parttype,
            arch=_ARCH_NAMES.get(parch, _ARCH_NAMES.get(arch, "unknown")),
            metadata=metadata,
            labels=labels,
            descriptors=descriptors,
        )


# squashfs superblock (little endian): magic, inode count, mtime, block size, fragments,
# compression, block log, flags, id count, version major, minor, root inode, bytes used
_SUPERBLOCK = struct.Struct("<4sIIIIHHHHHHQQ")


def check_layout(path: Path | str) -> SifInfo:
    """:func:`read_sif`, plus what a cheap look can tell about the partition: a squashfs
    4.0 superblock whose size fits the partition, which lies inside the file. Catches
    truncated, overwritten or foreign files before a runtime mounts them (which would
    crash or fail with a misleading FUSE error)."""
    path = Path(path)
    info = read_sif(path)
    with open(path, "rb") as f:
        f.seek(info.partition_offset)
        raw = f.read(_SUPERBLOCK.size)
    if len(raw) < _SUPERBLOCK.size:
        raise _bad(path, "the squashfs superblock is cut off")
    magic, _inodes, _mtime, block_size, _frags, comp, block_log, _flags, _ids, major, minor, _root, used = (
        _SUPERBLOCK.unpack(raw)
    )
    if magic != SQUASHFS_MAGIC or (major, minor) != (4, 0):
        raise _bad(path, f"no squashfs 4.0 superblock at byte {info.partition_offset}")
    if block_size != 1 << block_log or not 4096 <= block_size <= 1 << 20 or not 1 <= comp <= 6:
        raise _bad(path, "the squashfs superblock is corrupt")
    if used > info.partition_size:
        raise _bad(path, f"the squashfs claims {used} bytes but its partition holds {info.partition_size}")
    return info
