"""Just enough ELF to answer "which glibc does this file need?" -- pure Python, no binutils.

Read the way the dynamic loader reads a file: the program headers (``PT_INTERP``,
``PT_DYNAMIC``, ``PT_LOAD``), then the dynamic section's string table, ``DT_NEEDED``,
``DT_SONAME``, ``DT_RUNPATH``/``DT_RPATH`` and the symbol versioning tables
(``DT_VERNEED``: the versions a file needs from each library, e.g. ``GLIBC_2.34`` from
``libc.so.6``; ``DT_VERDEF``: the versions a library defines). Section headers are not
used, so stripped files work too. Both classes (32/64 bit) and byte orders.

Used by ``nixsnake doctor`` (the GLIBC needs of the host libraries apptainer binds into
a container, on the compute node) and by the image build (the glibc version an image
provides, recorded in its metadata).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .errors import NixsnakeError

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF

#: e_machine values people meet on clusters
MACHINES = {3: "i386", 62: "x86-64", 183: "aarch64", 21: "ppc64", 243: "riscv"}

_GLIBC = re.compile(r"GLIBC_(\d+(?:\.\d+)+)\Z")
_MAX_SIZE = 1 << 31


class ElfError(ValueError):
    """Not an ELF file, or one whose tables do not hold together."""


@dataclass(frozen=True)
class ElfInfo:
    path: str
    elf_class: int  # 1: 32-bit, 2: 64-bit
    machine: int  # e_machine
    interpreter: str | None = None  # PT_INTERP
    soname: str | None = None
    needed: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()  # DT_RUNPATH, else DT_RPATH
    #: library (vn_file) -> version names this file needs from it
    version_needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    version_defs: tuple[str, ...] = ()  # version names this file defines

    @property
    def glibc_needed(self) -> tuple[int, ...] | None:
        """The newest ``GLIBC_x.y`` this file needs from any library, or None."""
        return newest_glibc(v for vs in self.version_needs.values() for v in vs)

    @property
    def glibc_defined(self) -> tuple[int, ...] | None:
        """The newest ``GLIBC_x.y`` this file defines (libc.so.6: its glibc's version)."""
        return newest_glibc(self.version_defs)


def glibc_version(name: str) -> tuple[int, ...] | None:
    """``GLIBC_2.2.5`` -> (2, 2, 5); anything else (``GLIBC_PRIVATE``, ``GCC_3.0``) -> None."""
    m = _GLIBC.match(name)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def newest_glibc(names) -> tuple[int, ...] | None:
    versions = [v for v in map(glibc_version, names) if v is not None]
    return max(versions) if versions else None


def format_version(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "?"


def read_elf(path: str | Path) -> ElfInfo:
    """Parse ``path`` (raises :class:`ElfError` or ``OSError``). Mapped, not read: driver
    libraries are tens of MB and doctor's GPU job runs in 100 MB; only the pages the
    headers, dynamic section and version needs sit on are touched."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > _MAX_SIZE:
            raise ElfError(f"{path}: too large")
        if size < 52:
            raise ElfError(f"{path}: not an ELF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return parse_elf(data, str(path))


def parse_elf(data: bytes | mmap.mmap, path: str = "<bytes>") -> ElfInfo:
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ElfError(f"{path}: not an ELF file")
    cls, order = data[4], data[5]
    if cls not in (1, 2) or order not in (1, 2):
        raise ElfError(f"{path}: unknown ELF class or byte order")
    end = "<" if order == 1 else ">"
    wide = cls == 2

    def unpack(fmt: str, off: int) -> tuple:
        try:
            return struct.unpack_from(end + fmt, data, off)
        except struct.error:
            raise ElfError(f"{path}: truncated at byte {off}") from None

    (machine,) = unpack("H", 18)
    if wide:
        phoff, phentsize, phnum = unpack("Q", 32)[0], *unpack("HH", 54)
    else:
        phoff, phentsize, phnum = unpack("I", 28)[0], *unpack("HH", 42)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic = interp = None
    for i in range(phnum):
        off = phoff + i * phentsize
        if wide:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = unpack("IIQQQQ", off)
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = unpack("IIIII", off)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode(errors="replace")
    info = ElfInfo(path, cls, machine, interpreter=interp)
    if dynamic is None:
        return info  # static: needs nothing

    def to_offset(vaddr: int) -> int:
        for base, off, size in loads:
            if base <= vaddr < base + size:
                return off + (vaddr - base)
        raise ElfError(f"{path}: address {vaddr:#x} is in no loaded segment")

    entries: list[tuple[int, int]] = []
    size = 16 if wide else 8
    off, stop = dynamic[0], dynamic[0] + dynamic[1]
    while off + size <= stop:
        tag, val = unpack("qQ" if wide else "iI", off)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
        off += size
    tags: dict[int, int] = {}
    for tag, val in entries:
        tags.setdefault(tag, val)
    if DT_STRTAB not in tags:
        raise ElfError(f"{path}: dynamic section without a string table")
    strtab = to_offset(tags[DT_STRTAB])
    strsz = tags.get(DT_STRSZ, len(data) - strtab)

    def string(index: int) -> str:
        if index >= strsz:
            raise ElfError(f"{path}: string index {index} outside the string table")
        start = strtab + index
        stop = data.find(b"\0", start)
        return data[start : stop if stop >= 0 else len(data)].decode(errors="replace")

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    soname = string(tags[DT_SONAME]) if DT_SONAME in tags else None
    rp = tags.get(DT_RUNPATH, tags.get(DT_RPATH))
    runpath = tuple(p for p in string(rp).split(":") if p) if rp is not None else ()

    needs: dict[str, tuple[str, ...]] = {}
    if DT_VERNEED in tags:
        off = to_offset(tags[DT_VERNEED])
        for _ in range(min(tags.get(DT_VERNEEDNUM, 0), 4096)):
            _ver, cnt, file, aux, nxt = unpack("HHIII", off)
            names, a = [], off + aux
            for _ in range(min(cnt, 4096)):
                _hash, _flags, _other, name, anext = unpack("IHHII", a)
                names.append(string(name))
                if not anext:
                    break
                a += anext
            lib = string(file)
            needs[lib] = needs.get(lib, ()) + tuple(names)
            if not nxt:
                break
            off += nxt
    defs: list[str] = []
    if DT_VERDEF in tags:
        off = to_offset(tags[DT_VERDEF])
        for _ in range(min(tags.get(DT_VERDEFNUM, 0), 4096)):
            _ver, flags, _ndx, cnt, _hash, aux, nxt = unpack("HHHHIII", off)
            if cnt and not flags & 1:  # (VER_FLG_BASE names the file itself)
                (name,) = unpack("I", off + aux)
                defs.append(string(name))
            if not nxt:
                break
            off += nxt
    return ElfInfo(path, cls, machine, interp, soname, needed, runpath, needs, tuple(defs))


_LD_CACHE_LINE = re.compile(r"(?m)^\s*(\S+) \(([^)]*)\) => (/.*?)\s*$")


def ld_cache() -> list[tuple[str, str, str]]:
    """The host's dynamic linker cache (``ldconfig -p``), in its order: (name, flags such
    as ``libc6,x86-64``, path); [] where there is no ldconfig. Callers pick the ABI."""
    exe = proc.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.access(p, os.X_OK)), None
    )
    if not exe:
        return []
    try:
        r = proc.run([exe, "-p"], check=False, what="ldconfig -p", timeout=60)
    except NixsnakeError:
        return []
    return [(m.group(1), m.group(2), m.group(3)) for m in _LD_CACHE_LINE.finditer(r.stdout)]
