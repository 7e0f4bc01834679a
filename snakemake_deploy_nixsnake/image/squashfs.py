"""Pack a nix closure plus the image skeleton into a squashfs, bit-reproducibly.

No staging copy: we write a sorted tar stream (GNU format, owner 0, mtime 1 like the
nix store, modes kept) straight into ``mksquashfs - OUT -tar``. Files are streamed
from the store, never read whole.

Traps (squashfs-tools 4.5.1):

* PAX ``linkpath`` records lose their leading ``/``: an absolute symlink target longer
  than 100 bytes would silently become relative. GNU long-link records are read
  correctly, so we write GNU format.
* ``SOURCE_DATE_EPOCH`` in the environment and ``-mkfs-time``/``-all-time`` together
  are a fatal error, so we drop it from mksquashfs' environment and pass the flags.
* In ``-tar`` mode the root directory defaults to mode 0777 and the current time:
  ``-root-mode 0755`` and ``-all-time`` fix both.
* We stamp every file with mtime 1, the store's own mtime (not 0): tools that compare
  mtimes recorded at build time (e.g. mtime-based ``.pyc`` checks) keep matching.
* ``-offset`` (writing the squashfs straight into a SIF) is not used: under concurrent
  load it intermittently produced images with corrupt duplicate-file blocks here (the
  duplicate check reads earlier blocks back from the output file); the same input
  without ``-offset`` was bit-identical every time.

The stream is written by ``_TarWriter`` rather than ``tarfile.TarFile``: the same bytes,
at a fraction of tarfile's per-entry cost (which made this process, not mksquashfs, the
bottleneck for envs of many small files).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import proc
from ..config import COMPRESSIONS
from ..errors import Exit, NixsnakeError
from .skeleton import Entry

STORE_DIR = "/nix/store"
STORE_MTIME = 1


ProgressFn = Callable[[int, int], None]
_PROGRESS_STEP = 4 << 20
#: The tar writer's header buffer and file copy chunk. The bytes written do not depend on it.
_TAR_BUFSIZE = 256 << 10
#: Files up to this size are read into the header buffer; bigger ones are streamed.
_SMALL_FILE = 64 << 10


def mksquashfs_argv(out: Path | str, *, compression: str = "zstd", level: int | None = None) -> list[str]:
    """The mksquashfs command line (reading a tar stream on stdin)."""
    if compression not in COMPRESSIONS:
        raise NixsnakeError(
            f"unsupported image compression {compression!r}",
            Exit.DATAERR,
            hint=f"use one of: {', '.join(COMPRESSIONS)}",
        )
    default, bounds = COMPRESSIONS[compression]
    argv = ["mksquashfs", "-", os.fspath(out), "-tar", "-comp", compression]
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise NixsnakeError(f"compression level must be an integer, got {level!r}", Exit.DATAERR)
        if bounds is None:
            raise NixsnakeError(
                f"compression {compression!r} takes no level (got {level})",
                Exit.DATAERR,
                hint="drop the level, or use zstd (1-22) or gzip (1-9)",
            )
        if not bounds[0] <= level <= bounds[1]:
            raise NixsnakeError(
                f"{compression} compression level must be {bounds[0]}..{bounds[1]}, got {level}",
                Exit.DATAERR,
            )
    lvl = level if level is not None else default
    if lvl is not None:
        argv += ["-Xcompression-level", str(lvl)]
    argv += [
        "-noappend",
        "-reproducible",
        "-all-root",
        "-mkfs-time", "0",
        "-all-time", str(STORE_MTIME),
        "-root-mode", "0755",
        "-no-xattrs",
        # No duplicate detection: squashfs-tools 4.5.1 (Debian 12) under load now and
        # then takes a file for a duplicate of another and points it at the wrong blocks
        # (docs/performance.md). It is faster without, and the images barely grow.
        "-no-duplicates",
        "-quiet",
        "-no-progress",
    ]  # fmt: skip
    return argv


@dataclass(frozen=True)
class _Top:
    """A closure path, emitted as a subtree at its sorted position."""

    name: str  # basename under /nix/store
    src: bytes  # the real path, as bytes


def _check_closure(closure: Iterable[str]) -> list[_Top]:
    tops: dict[str, _Top] = {}
    for p in closure:
        norm = os.path.normpath(p)
        parent, name = os.path.split(norm)
        if parent != STORE_DIR or not name or name.startswith("."):
            raise NixsnakeError(f"not a nix store path: {p!r}", Exit.SOFTWARE)
        try:
            os.lstat(norm)
        except FileNotFoundError:
            raise NixsnakeError(
                f"store path {norm} is missing",
                Exit.SOFTWARE,
                hint="it may have been garbage-collected; rebuild the environment",
            ) from None
        tops[name] = _Top(name, os.fsencode(norm))
    return [tops[k] for k in sorted(tops, key=os.fsencode)]


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode & 0o7777
    ti.mtime = STORE_MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


# --- the tar stream ---------------------------------------------------------------------
# ``tarfile`` builds each header through dicts, generic field encoders and a copy of the
# TarInfo: ~50 µs per entry, a second CPU core's worth of work next to mksquashfs for a
# Python env of 10,000+ files. Our headers vary in four fields only (name, type, mode,
# size, plus link targets), so ``_TarWriter`` encodes them directly, byte for byte what
# ``TarInfo.tobuf(GNU_FORMAT, "utf-8", "surrogateescape")`` gives (GNU long-name and
# long-link records included), and asks tarfile itself for anything out of the ordinary
# (a file of 8 GiB or more, whose size needs GNU's base-256 field).

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_GNU_MAGIC = tarfile.GNU_MAGIC
_MAX_OCTAL_SIZE = 8**11  # 12-byte octal field
_ZERO_ID = b"%07o\0" % 0
_MTIME_FIELD = b"%011o\0" % STORE_MTIME
_TAIL = bytes(32 + 32 + 8 + 8 + 155 + 12)  # uname, gname, devmajor, devminor, prefix, padding
_CHKSUM_BLANK = b" " * 8
_ENCODING, _ERRORS = "utf-8", "surrogateescape"


def _header_block(name: bytes, kind: bytes, mode: int, size: int, mtime: bytes, linkname: bytes) -> bytes:
    """One 512-byte header, as tarfile's ``_create_header`` writes it."""
    buf = b"".join((
        name[:100].ljust(100, b"\0"), b"%07o\0" % (mode & 0o7777), _ZERO_ID, _ZERO_ID, b"%011o\0" % size, mtime,
        _CHKSUM_BLANK, kind, linkname[:100].ljust(100, b"\0"), _GNU_MAGIC, _TAIL,
    ))  # fmt: skip
    return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]


def _long_record(value: bytes, kind: bytes) -> bytes:
    """GNU ``././@LongLink`` record (header + NUL-terminated value, block-padded)."""
    value += b"\0"
    pad = -len(value) % _BLOCK
    return _header_block(b"././@LongLink", kind, 0, len(value), b"%011o\0" % 0, b"") + value + bytes(pad)


class _TarWriter:
    """A GNU tar stream on ``fileobj``: buffered headers, file data streamed in chunks."""

    def __init__(self, fileobj: IO[bytes]):
        self.out = fileobj
        self.buf = bytearray()
        self.offset = 0
        self.chunk = bytearray(_TAR_BUFSIZE)
        try:
            self.out_fd: int | None = fileobj.fileno()
        except (AttributeError, OSError, ValueError):
            self.out_fd = None

    def _put(self, data: bytes) -> None:
        self.buf += data
        self.offset += len(data)
        if len(self.buf) >= _TAR_BUFSIZE:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out.write(self.buf)
            self.buf = bytearray()

    def header(self, name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> None:
        if kind == tarfile.DIRTYPE and not name.endswith("/"):
            name += "/"
        bname = name.encode(_ENCODING, _ERRORS)
        blink = linkname.encode(_ENCODING, _ERRORS)
        if size >= _MAX_OCTAL_SIZE:  # rare: let tarfile encode it (base-256 size)
            ti = _info(name, kind, mode)
            ti.size = size
            ti.linkname = linkname
            self._put(ti.tobuf(tarfile.GNU_FORMAT, _ENCODING, _ERRORS))
            return
        parts = b""
        if len(blink) > 100:
            parts += _long_record(blink, tarfile.GNUTYPE_LONGLINK)
        if len(bname) > 100:
            parts += _long_record(bname, tarfile.GNUTYPE_LONGNAME)
        self._put(parts + _header_block(bname, kind, mode, size, _MTIME_FIELD, blink))

    def data_from(self, fh: io.FileIO, size: int, what: str) -> None:
        """Copy exactly ``size`` bytes of ``fh`` (fails if the file is shorter), then pad.

        Small files join the buffered headers (one write for many entries); big ones go
        from file to pipe inside the kernel (``sendfile``) when the output is a real file
        descriptor, else through one reused buffer.
        """
        if size <= _SMALL_FILE:
            data = b""
            while len(data) < size:  # a raw read may return less than asked
                more = fh.read(size - len(data))
                if not more:
                    raise NixsnakeError(f"{what}: file shrank while being packed", Exit.SOFTWARE)
                data += more
            self._put(data + bytes(-size % _BLOCK))
            return
        self.flush()
        left = size
        if self.out_fd is not None:
            self.out.flush()
            try:
                while left:
                    n = os.sendfile(self.out_fd, fh.fileno(), size - left, left)
                    if not n:
                        raise NixsnakeError(f"{what}: file shrank while being packed", Exit.SOFTWARE)
                    left -= n
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self.out_fd = None  # this kernel cannot sendfile into it: copy from here on
        if left:
            fh.seek(size - left)
            view = memoryview(self.chunk)
            while left:
                n = fh.readinto(view[: min(left, len(view))])
                if not n:
                    raise NixsnakeError(f"{what}: file shrank while being packed", Exit.SOFTWARE)
                self.out.write(view[:n])
                left -= n
        self.offset += size
        pad = -size % _BLOCK
        if pad:
            self._put(bytes(pad))

    def data(self, payload: bytes) -> None:
        self._put(payload + bytes(-len(payload) % _BLOCK))

    def close(self) -> None:
        """End-of-archive (two zero blocks), padded to a whole record, like tarfile."""
        end = 2 * _BLOCK
        end += -(self.offset + end) % _RECORD
        self._put(bytes(end))
        self.flush()


def _walk(src: bytes, arc: str) -> Iterator[tuple[str, bytes, os.stat_result]]:
    """Yield (arcname, path, lstat) for ``src`` and everything below it, sorted by bytes."""
    st = os.lstat(src)
    yield arc, src, st
    if stat.S_ISDIR(st.st_mode):
        with os.scandir(src) as it:
            names = sorted(e.name for e in it)
        for n in names:
            yield from _walk(os.path.join(src, n), arc + "/" + os.fsdecode(n))


def _total_bytes(tops: list[_Top]) -> int:
    total = 0
    for top in tops:
        for _arc, _src, st in _walk(top.src, ""):
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _skeleton_index(skeleton: Iterable[Entry]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for e in skeleton:
        parts = e.path.split("/")
        if not e.path or e.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise NixsnakeError(f"image skeleton: bad path {e.path!r}", Exit.SOFTWARE)
        if parts[0] == "nix":
            raise NixsnakeError(f"image skeleton: {e.path!r} would shadow the nix store", Exit.SOFTWARE)
        if e.kind not in ("dir", "file", "symlink"):
            raise NixsnakeError(f"image skeleton: {e.path!r} has unknown kind {e.kind!r}", Exit.SOFTWARE)
        if e.path in entries:
            raise NixsnakeError(f"image skeleton: {e.path!r} listed twice", Exit.SOFTWARE)
        entries[e.path] = e
    # Implied parents become plain 0755 directories; a parent that is not a dir is a bug.
    for path in list(entries):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            got = entries.get(parent)
            if got is None:
                entries[parent] = Entry(parent, "dir", 0o755)
            elif got.kind != "dir":
                raise NixsnakeError(f"image skeleton: {path!r} lies under non-directory {parent!r}", Exit.SOFTWARE)
    return entries


def write_tar(
    fileobj: IO[bytes],
    closure: Iterable[str],
    skeleton: Iterable[Entry],
    *,
    on_progress: ProgressFn | None = None,
) -> None:
    """Write the image's tar stream to ``fileobj`` (not closed). Deterministic."""
    tops = _check_closure(closure)
    index = _skeleton_index(skeleton)
    total = _total_bytes(tops) if on_progress else 0
    done = 0
    reported = 0

    # One sorted sequence: skeleton entries, /nix, /nix/store, and each closure subtree
    # at the position of its root, ordered by path components.
    items: list[tuple[list[bytes], Entry | _Top]] = [
        ([os.fsencode(p) for p in k.split("/")], e) for k, e in index.items()
    ]
    items.append(([b"nix"], Entry("nix", "dir", 0o755)))
    items.append(([b"nix", b"store"], Entry("nix/store", "dir", 0o755)))
    items += [([b"nix", b"store", os.fsencode(t.name)], t) for t in tops]
    items.sort(key=lambda kv: kv[0])

    tar = _TarWriter(fileobj)
    for _key, item in items:
        if isinstance(item, Entry):
            if item.kind == "dir":
                tar.header(item.path, tarfile.DIRTYPE, item.mode)
            elif item.kind == "symlink":
                tar.header(item.path, tarfile.SYMTYPE, 0o777, linkname=item.target)
            else:
                tar.header(item.path, tarfile.REGTYPE, item.mode, size=len(item.data))
                tar.data(item.data)
            continue
        for arc, src, st in _walk(item.src, "nix/store/" + item.name):
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                tar.header(arc, tarfile.DIRTYPE, mode)
            elif stat.S_ISLNK(mode):
                tar.header(arc, tarfile.SYMTYPE, 0o777, linkname=os.fsdecode(os.readlink(src)))
            elif stat.S_ISREG(mode):
                with open(src, "rb", buffering=0) as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if size != st.st_size:
                        raise NixsnakeError(f"{os.fsdecode(src)}: file changed while being packed", Exit.SOFTWARE)
                    tar.header(arc, tarfile.REGTYPE, mode, size=size)
                    tar.data_from(fh, size, os.fsdecode(src))
                done += size
                if on_progress and done - reported >= _PROGRESS_STEP:
                    reported = done
                    on_progress(done, total)
            else:
                raise NixsnakeError(f"{os.fsdecode(src)}: unsupported file type in the nix store", Exit.SOFTWARE)
    tar.close()
    if on_progress:
        on_progress(done, total)


def pack_squashfs(
    out: Path,
    closure: list[str],
    skeleton: list[Entry],
    *,
    compression: str = "zstd",
    level: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Pack ``closure`` (store paths) and ``skeleton`` into the squashfs image ``out``.

    Same inputs give the same bytes. ``on_progress(bytes_done, bytes_total)`` is called
    now and then while store files are streamed. On any failure ``out`` is removed and
    a ``NixsnakeError`` raised.
    """
    out = Path(out)
    argv = mksquashfs_argv(out, compression=compression, level=level)  # validates first
    _check_closure(closure)  # fail before starting mksquashfs (write_tar checks again)
    _skeleton_index(skeleton)
    proc.require("mksquashfs")
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["LC_ALL"] = "C"
    out.unlink(missing_ok=True)
    try:
        proc.pipe_into(
            argv,
            lambda stdin: write_tar(stdin, closure, skeleton, on_progress=on_progress),
            env=env,
            what="packing the image (mksquashfs)",
        )
        if not out.is_file() or out.stat().st_size == 0:
            raise NixsnakeError(f"mksquashfs wrote no image at {out}", Exit.SOFTWARE)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
