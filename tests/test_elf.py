"""elf.py on real ELF files of this machine, cross-checked with binutils where present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from snakemake_deploy_nixsnake.elf import ElfError, format_version, glibc_version, parse_elf, read_elf

LIBC = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6")
             if Path(p).exists()), None)  # fmt: skip
HOST_GLIBC = tuple(int(x) for x in __import__("os").confstr("CS_GNU_LIBC_VERSION").split()[-1].split("."))


def _real_elfs() -> list[str]:
    cands = [LIBC, shutil.which("ls"), shutil.which("python3"), shutil.which("bash"), "/bin/busybox",
             "/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libstdc++.so.6"]  # fmt: skip
    return [str(Path(p).resolve()) for p in cands if p and Path(p).exists()]


def _objdump_versions(path: str) -> dict[str, set[str]]:
    """binutils' view: version names needed (per library) and defined."""
    out = subprocess.run(["readelf", "-V", "-W", path], capture_output=True, text=True, check=True).stdout
    needs: dict[str, set[str]] = {}
    defs: set[str] = set()
    section = None
    lib = None
    for line in out.splitlines():
        if "Version needs section" in line:
            section = "need"
        elif "Version definition section" in line:
            section = "def"
        elif "Version symbols section" in line:
            section = None
        elif section == "need" and (m := re.search(r"File: (\S+)", line)):
            lib = m.group(1)
            needs.setdefault(lib, set())
        elif section == "need" and lib and (m := re.search(r"Name: (\S+)", line)):
            needs[lib].add(m.group(1))
        elif section == "def" and (m := re.search(r"Flags: (\S+)\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)", line)):
            defs.update([m.group(2)] if m.group(1) != "BASE" else [])
    return {"defs": defs, **{f"need:{k}": v for k, v in needs.items()}}


@pytest.mark.parametrize("path", _real_elfs())
def test_real_files_agree_with_binutils(path):
    info = read_elf(path)
    assert info.elf_class == 2 and info.machine in (62, 183)
    if not shutil.which("readelf"):
        pytest.skip("binutils' readelf is not installed")
    want = _objdump_versions(path)
    assert set(info.version_defs) == want["defs"]
    assert {f"need:{k}": set(v) for k, v in info.version_needs.items()} == {
        k: v for k, v in want.items() if k != "defs"
    }
    dyn = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True).stdout
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.+?)\]", dyn)
    assert info.soname == (soname[0] if soname else None)


@pytest.mark.skipif(LIBC is None, reason="no libc.so.6 found")
def test_libc_defines_its_own_version_and_programs_need_older_ones():
    libc = read_elf(LIBC)
    assert libc.soname == "libc.so.6"
    # (a release that adds no symbol version defines its predecessor's newest: <= not ==)
    assert libc.glibc_defined is not None and (2, 17) <= libc.glibc_defined <= HOST_GLIBC
    ls = read_elf(str(Path(shutil.which("ls")).resolve()))
    assert ls.interpreter in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1")
    assert ls.glibc_needed is not None and ls.glibc_needed <= libc.glibc_defined


def test_compiled_library_needs_glibc_2_36(fake_driver):
    """libnvidia-ml.so.1 of the fake driver calls arc4random (GLIBC_2.36)."""
    ml = read_elf(fake_driver.libs["libnvidia-ml.so.1"])
    assert ml.soname == "libnvidia-ml.so.1" and ml.interpreter is None
    assert ml.glibc_needed == (2, 36) and "GLIBC_2.36" in ml.version_needs["libc.so.6"]
    smi = read_elf(fake_driver.bin / "nvidia-smi")
    assert smi.interpreter == "/lib64/ld-linux-x86-64.so.2" and smi.glibc_needed == (2, 34)


def test_static_and_broken_files():
    bb = Path("/bin/busybox")
    if bb.exists():
        info = read_elf(bb)
        assert info.needed == () and info.glibc_needed is None
    for junk in (b"", b"#!/bin/sh\n", b"\x7fELF" + b"\x09" * 60, b"\x7fELF\x02\x01" + b"\0" * 10):
        with pytest.raises(ElfError):
            parse_elf(junk)


def test_version_names():
    assert glibc_version("GLIBC_2.2.5") == (2, 2, 5)
    assert glibc_version("GLIBC_2.34") == (2, 34)
    assert glibc_version("GLIBC_PRIVATE") is None and glibc_version("GCC_3.0") is None
    assert format_version((2, 17)) == "2.17" and format_version(None) == "?"
