"""Unpack wheels into a site-packages directory (runs inside the nix build, stdlib only).

Why not pip: the build has no network and must not depend on pip's version; a wheel is
a zip with a documented layout (PEP 427), which is all we need: purelib/platlib go to
site-packages, scripts to bin/ with their shebang pointed at the environment's python.

Then every .py file is byte-compiled (checked-hash pycs: reproducible). Wheels ship .py
files that are not Python (templates, Python 2 examples, test data); those cannot be
compiled, which is not an error: they are listed in nix-support/nixsnake-warnings.json
and the build goes on (such a file, if ever imported, is compiled in memory).
"""

import compileall
import json
import os
import py_compile
import re
import sys
import zipfile

IDENT = re.compile(r"^[A-Za-z0-9_.-]+$")
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

out, site_rel, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
site = os.path.join(out, site_rel)
bindir = os.path.join(out, "bin")

for wheel in sorted(wheels):
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            if name.endswith("/") or name.startswith("/") or ".." in name.split("/"):
                continue
            parts = name.split("/")
            if parts[0].endswith(".data") and len(parts) > 2:
                kind, rest = parts[1], "/".join(parts[2:])
                if kind in ("purelib", "platlib"):
                    dest = os.path.join(site, rest)
                elif kind == "scripts":
                    dest = os.path.join(bindir, rest)
                else:  # headers, data: keep them out of the way but present
                    dest = os.path.join(out, "share", "wheel-data", kind, rest)
            else:
                dest = os.path.join(site, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            data = zf.read(info)
            if dest.startswith(bindir + os.sep) and data.startswith(b"#!python"):
                # the image has /usr/bin/env and the environment's python first on PATH
                data = b"#!/usr/bin/env python3" + data[len(b"#!python") :]
            with open(dest, "wb") as fh:
                fh.write(data)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(dest, 0o755 if (mode & 0o111 or dest.startswith(bindir + os.sep)) else 0o644)
        # console_scripts entry points: small launchers using the env's python
        for info in zf.infolist():
            if info.filename.endswith(".dist-info/entry_points.txt"):
                section = None
                for line in zf.read(info).decode().splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]")
                    elif section == "console_scripts" and "=" in line:
                        script, target = (x.strip() for x in line.split("=", 1))
                        module, _, func = target.partition(":")
                        func = func.split()[0] if func else ""
                        if not (IDENT.match(script) and DOTTED.match(module) and DOTTED.match(func)):
                            continue  # never turn odd metadata into code
                        path = os.path.join(bindir, script)
                        with open(path, "w") as fh:
                            fh.write("#!/usr/bin/env python3\n")
                            fh.write(f"import sys\nfrom {module} import {func.split('.')[0]}\n")
                            fh.write(f"sys.exit({func}())\n")
                        os.chmod(path, 0o755)
            if info.filename.endswith(".dist-info/RECORD"):
                installer = os.path.join(site, os.path.dirname(info.filename), "INSTALLER")
                with open(installer, "w") as fh:
                    fh.write("nixsnake\n")


failed = []
for dirpath, dirnames, filenames in os.walk(site):
    dirnames.sort()
    for name in sorted(filenames):
        if not name.endswith(".py"):
            continue
        path = os.path.join(dirpath, name)
        try:
            ok = compileall.compile_file(path, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        except Exception:  # compile_file reports syntax and encoding errors; anything else too
            ok = False
        if not ok:
            failed.append(os.path.relpath(path, site))
warnings = []
if failed:
    shown = ", ".join(failed[:5]) + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else "")
    files = "1 file" if len(failed) == 1 else f"{len(failed)} files"
    warnings.append(
        f"python.packages: {files} of the locked wheels could not be byte-compiled and stay source only "
        f"(compiled in memory if ever imported): {shown}"
    )
with open(os.path.join(out, "nix-support", "nixsnake-warnings.json"), "w") as fh:
    json.dump(warnings, fh)
