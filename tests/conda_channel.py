"""A real conda channel made by the tests (no public channel is reachable from CI).

``make_channel(root)`` builds these packages and indexes them with rattler into a
``file://`` channel:

| package | version | subdir | build timestamp | what it proves |
|---|---|---|---|---|
| greet | 1.0, 2.0 | noarch (.conda, py-rattler-build) | 2023-01-10, 2024-03-01 | the date picks the older version |
| hello | 1.0 | noarch | 2023-02-01 | PATH order: nixpkgs' hello wins |
| elfdemo | 1.0 | linux-64 (.tar.bz2, by hand) | 2023-06-01 | an ELF binary with a binary prefix placeholder, linked to a library of its own (RUNPATH $ORIGIN/../lib); a script with a text placeholder; an activation script; a post-link script; depends on greet |
| toolkit | 1.0 | noarch | 2024-05-01 | exempt: newer than the date, its dependency greet keeps the date |
| newglibc | 1.0 | linux-64 | 2023-01-01 | needs __glibc >=2.30: the lock's fixed virtual packages, not the host's, decide |

and a second channel (``make_channel(root, second=True)``) with only greet 1.5
(2023-05-01), for strict channel priority.

rattler's indexer stamps ``indexed_timestamp`` with the time of indexing, which the
date filter prefers, so a fresh channel would put everything after any past date:
like the public channels (which only carry build timestamps) the records here get
``indexed_timestamp = timestamp``. Indexing runs in a child process (rattler can abort
the interpreter at exit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

UTC = dt.UTC
#: Long, like conda-build's placeholders: the binary rewrite pads with NULs, so the store
#: path must not be longer than this.
PLACEHOLDER = "/opt/nixsnake_conda_placeholder_" + "p" * 200

ELF_SOURCE = r"""
#include <stdio.h>
extern const char *greeting(void);
static const char prefix[256] = "@PREFIX@";
int main(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/share/elfdemo/message.txt", prefix);
    FILE *f = fopen(path, "r");
    if (!f) { printf("prefix=%s missing=%s\n", prefix, path); return 3; }
    char buf[128] = {0};
    if (!fgets(buf, sizeof buf, f)) return 4;
    printf("prefix=%s message=%s%s\n", prefix, buf, greeting());
    return 0;
}
"""
LIB_SOURCE = 'const char *greeting(void) { return "greeting from libelfdemo.so"; }\n'


def _ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = len(data), mode, 1_600_000_000, "", ""
    tf.addfile(ti, io.BytesIO(data))


def tar_bz2_package(
    out_dir: Path,
    name: str,
    version: str,
    build: str,
    subdir: str,
    timestamp_ms: int,
    files: dict[str, tuple[bytes, int, str | None]],
    depends: list[str] | None = None,
) -> Path:
    """A hand-made ``.tar.bz2`` conda package: ``info/index.json``, ``info/paths.json``
    (with ``prefix_placeholder`` + ``file_mode`` for files that hold the placeholder) and
    the files. ``files``: relative path -> (bytes, mode, "text" | "binary" | None)."""
    index = {
        "build": build,
        "build_number": 0,
        "depends": depends or [],
        "license": "MIT",
        "name": name,
        "subdir": subdir,
        "timestamp": timestamp_ms,
        "version": version,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"
    else:
        index.update(arch="x86_64", platform="linux")
    paths = []
    for rel, (data, _mode, file_mode) in sorted(files.items()):
        entry = {
            "_path": rel,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        if file_mode:
            entry.update(prefix_placeholder=PLACEHOLDER, file_mode=file_mode)
        paths.append(entry)
    out = out_dir / f"{name}-{version}-{build}.tar.bz2"
    with tarfile.open(out, "w:bz2", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "info/index.json", json.dumps(index, indent=2, sort_keys=True).encode())
        _add(tf, "info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, indent=2, sort_keys=True).encode())
        for rel, (data, mode, _fm) in sorted(files.items()):
            _add(tf, rel, data, mode)
    return out


def conda_package(
    out_dir: Path,
    work: Path,
    name: str,
    version: str,
    timestamp: str,
    files: dict[str, str],
    depends: list[str] | None = None,
) -> Path:
    """A noarch ``.conda`` package made by py-rattler-build's ``assemble_package``."""
    from rattler_build import assemble_package

    stage = work / f"stage-{name}-{version}"
    shutil.rmtree(stage, ignore_errors=True)
    for rel, text in files.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o755 if rel.startswith("bin/") else 0o644)
    when = dt.datetime.fromisoformat(timestamp).replace(tzinfo=UTC)
    res = assemble_package(
        name,
        version,
        "noarch",
        "0",
        out_dir,
        files_dir=stage,
        noarch="generic",
        timestamp=when,
        depends=depends or [],
        license="MIT",
    )
    return Path(res.path)


def elf_files(work: Path) -> dict[str, tuple[bytes, int, str | None]]:
    """elfdemo's files: a dynamically linked binary holding the placeholder as a C string
    (``file_mode = binary``) and linked against lib/libelfdemo.so, a script holding it
    as text, an activation script and a post-link script."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "elfdemo.c").write_text(ELF_SOURCE.replace("@PREFIX@", PLACEHOLDER))
    (work / "lib.c").write_text(LIB_SOURCE)
    lib, exe = work / "libelfdemo.so", work / "elfdemo"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(work / "lib.c")], check=True)
    subprocess.run(
        ["gcc", "-O1", "-o", str(exe), str(work / "elfdemo.c"), str(lib), "-Wl,-rpath,$ORIGIN/../lib"], check=True
    )
    return {
        "bin/elfdemo": (exe.read_bytes(), 0o755, "binary"),
        "lib/libelfdemo.so": (lib.read_bytes(), 0o755, None),
        "bin/elfdemo-where": (f'#!/bin/sh\necho "installed in {PLACEHOLDER}"\n'.encode(), 0o755, "text"),
        "share/elfdemo/message.txt": (b"hello from conda", 0o644, None),
        "etc/conda/activate.d/elfdemo.sh": (
            b'export ELFDEMO_HOME="${CONDA_PREFIX}/share/elfdemo"\nexport ELFDEMO_MODE=fast\nNOT_EXPORTED=1\n',
            0o644,
            None,
        ),
        "bin/.elfdemo-post-link.sh": (b'echo linked > "$PREFIX/linked-by-post-link"\n', 0o755, None),
    }


INDEX_SCRIPT = """
import asyncio, json, os, sys
from pathlib import Path
from rattler.index import index_fs
root = Path(sys.argv[1])
try:
    asyncio.run(index_fs(root, write_zst=False, write_shards=False, force=True))
    for sub in ("noarch", "linux-64"):
        p = root / sub / "repodata.json"
        data = json.loads(p.read_text())
        for key in ("packages", "packages.conda"):
            for rec in data.get(key, {}).values():
                rec["indexed_timestamp"] = rec["timestamp"]
        p.write_text(json.dumps(data, indent=1, sort_keys=True))
    Path(sys.argv[2]).write_text("ok")
finally:
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)
"""


def index(root: Path) -> None:
    marker = root / ".indexed"
    marker.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-c", INDEX_SCRIPT, str(root), str(marker)], capture_output=True, text=True)
    assert marker.exists(), f"indexing {root} failed: {r.stderr}"
    marker.unlink()


def make_channel(root: Path, second: bool = False) -> Path:
    """Build, index and return the channel directory (``root``)."""
    work = root.parent / (root.name + "-work")
    for sub in ("noarch", "linux-64"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    noarch, linux = root / "noarch", root / "linux-64"
    if second:
        conda_package(
            noarch,
            work,
            "greet",
            "1.5",
            "2023-05-01T00:00:00",
            {"bin/greet": "#!/bin/sh\necho greet 1.5 from the second channel\n"},
        )
        index(root)
        return root
    conda_package(noarch, work, "greet", "1.0", "2023-01-10T00:00:00", {"bin/greet": "#!/bin/sh\necho greet 1.0\n"})
    conda_package(noarch, work, "greet", "2.0", "2024-03-01T00:00:00", {"bin/greet": "#!/bin/sh\necho greet 2.0\n"})
    conda_package(
        noarch, work, "hello", "1.0", "2023-02-01T00:00:00", {"bin/hello": "#!/bin/sh\necho hello from conda\n"}
    )
    conda_package(
        noarch,
        work,
        "toolkit",
        "1.0",
        "2024-05-01T00:00:00",
        {"bin/toolkit": "#!/bin/sh\necho toolkit\n"},
        depends=["greet"],
    )
    tar_bz2_package(
        linux,
        "elfdemo",
        "1.0",
        "h0_0",
        "linux-64",
        _ms("2023-06-01T00:00:00"),
        elf_files(work / "elf"),
        depends=["greet"],
    )
    tar_bz2_package(
        linux,
        "newglibc",
        "1.0",
        "h0_0",
        "linux-64",
        _ms("2023-01-01T00:00:00"),
        {"share/newglibc/README": (b"needs a newer glibc\n", 0o644, None)},
        depends=["__glibc >=2.30"],
    )
    index(root)
    return root
