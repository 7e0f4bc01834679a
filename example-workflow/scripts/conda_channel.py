"""The example's own conda channel: a `file://` channel on disk, made here, byte for byte
the same on every machine, so that envs/tally.toml (a `[conda]` env) locks and builds
without any public channel (none is reachable from nixsnake's CI).

It holds one small package in two versions, like a real channel holds a tool's releases:

| package   | version | build timestamp | what it is |
|-----------|---------|-----------------|------------|
| csq-tally | 1.0     | 2024-02-01      | `csq-tally TABLE`: variants per consequence type, from the gather rule's table |
| csq-tally | 2.0     | 2025-02-01      | the same, newer: envs/tally.toml's date (2024-06-01) must NOT pick it |

Each package is a `.tar.bz2` conda archive (info/index.json, info/paths.json, the
files) with a text prefix placeholder in `bin/csq-tally` (conda rewrites it to the
install prefix, here the image's store path) and an activation script
(`etc/conda/activate.d/csq-tally.sh`, which nixsnake turns into the image's environment).
`noarch/repodata.json` indexes them; `linux-64/repodata.json` is empty.

The channel lives at a FIXED path, CHANNEL_DIR, because the committed lock
(envs/tally.lock.toml) records each package by its URL and sha256, like a site mirror at
`file:///srv/conda/...` would be. Every byte here is fixed (tar member times, owners,
bzip2 level), so the archives' sha256 match the committed lock on any machine; if the
files at CHANNEL_DIR differ (another user's, or tampered with), nixsnake's build refuses
them by that sha256 before anything runs.

    python3 scripts/conda_channel.py        # writes CHANNEL_DIR if missing or different

The Snakefiles call `ensure_channel()` when they are parsed; scripts/example.sh calls it
before `nixsnake build`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

#: where the channel is written: the URL envs/tally.toml names is file://CHANNEL_DIR
CHANNEL_DIR = Path("/tmp/nixsnake-example-conda-channel")
#: conda-build's kind of placeholder (any long unique path does for text files)
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
#: every tar member's mtime (conda ignores it; fixed so the archives' bytes are)
MTIME = 1_700_000_000

TALLY = """#!/bin/sh
# csq-tally TABLE: variants per consequence type in the gather rule's table
# (CHROM POS REF ALT SAMPLE GT BCSQ); each variant counted once, a variant with several
# consequences once for each ("@POS" entries point at another record: skipped).
# From the example's own conda channel.
set -eu
share="@PREFIX@/share/csq-tally"
printf '# csq-tally %s (conda package; data in %s)\\n' "$(cat "$share/VERSION")" "$share"
printf 'consequence\\tvariants\\n'
cut -f1,2,3,4,7 "$1" | sort -u | cut -f5 | tr ',' '\\n' | cut -d'|' -f1 \\
    | grep -v -e '^[.]*$' -e '^@' | sort | uniq -c | while read -r n csq; do printf '%s\\t%s\\n' "$csq" "$n"; done
"""

ACTIVATE = 'export CSQ_TALLY_HOME="${CONDA_PREFIX}/share/csq-tally"\n'


def _ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


#: (version, build timestamp in ms since the epoch, as conda channels record it)
RELEASES = (("1.0", _ms("2024-02-01")), ("2.0", _ms("2025-02-01")))


def _files(version: str) -> dict[str, tuple[bytes, int, bool]]:
    """path -> (bytes, mode, holds the prefix placeholder)."""
    return {
        "bin/csq-tally": (TALLY.replace("@PREFIX@", PLACEHOLDER).encode(), 0o755, True),
        "etc/conda/activate.d/csq-tally.sh": (ACTIVATE.encode(), 0o644, False),
        "share/csq-tally/VERSION": (f"{version}\n".encode(), 0o644, False),
    }


def _member(tf: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    tf.addfile(ti, io.BytesIO(data))


def package(version: str, timestamp_ms: int) -> tuple[str, bytes, dict]:
    """One `.tar.bz2` archive: (file name, bytes, its repodata record)."""
    build = "0"
    index = {
        "build": build,
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "name": "csq-tally",
        "noarch": "generic",
        "subdir": "noarch",
        "timestamp": timestamp_ms,
        "version": version,
    }
    files = _files(version)
    paths = []
    for rel, (data, _mode, placeholder) in sorted(files.items()):
        entry: dict = {
            "_path": rel,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        if placeholder:
            entry.update(file_mode="text", prefix_placeholder=PLACEHOLDER)
        paths.append(entry)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:bz2", format=tarfile.USTAR_FORMAT, compresslevel=9) as tf:
        _member(tf, "info/index.json", json.dumps(index, indent=2, sort_keys=True).encode(), 0o644)
        paths_json = {"paths": paths, "paths_version": 1}
        _member(tf, "info/paths.json", json.dumps(paths_json, indent=2, sort_keys=True).encode(), 0o644)
        for rel, (data, mode, _p) in sorted(files.items()):
            _member(tf, rel, data, mode)
    blob = raw.getvalue()
    record = dict(
        index,
        md5=hashlib.md5(blob).hexdigest(),
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
    )
    return f"csq-tally-{version}-{build}.tar.bz2", blob, record


def channel_files() -> dict[str, bytes]:
    """Every file of the channel: relative path -> bytes."""
    out: dict[str, bytes] = {}
    records = {}
    for version, ts in RELEASES:
        name, blob, record = package(version, ts)
        out[f"noarch/{name}"] = blob
        records[name] = record
    for subdir, packages in (("noarch", records), ("linux-64", {})):
        repodata = {"info": {"subdir": subdir}, "packages": packages, "packages.conda": {}, "repodata_version": 1}
        out[f"{subdir}/repodata.json"] = (json.dumps(repodata, indent=1, sort_keys=True) + "\n").encode()
    return out


def ensure_channel(root: Path = CHANNEL_DIR) -> Path:
    """Write the channel at ``root`` where a file is missing or differs (atomically, per
    file); return ``root``. Cheap when it is already there."""
    for rel, data in channel_files().items():
        path = root / rel
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            raise SystemExit(
                f"example: cannot write the example's conda channel at {root} ({exc}); "
                f"it must be writable by you, or hold exactly what scripts/conda_channel.py makes"
            ) from None
    return root


if __name__ == "__main__":
    print(f"example conda channel: file://{ensure_channel(Path(sys.argv[1]) if len(sys.argv) > 1 else CHANNEL_DIR)}")
