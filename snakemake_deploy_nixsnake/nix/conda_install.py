"""Install locked conda packages into $out (the builder of nix/conda.nix).

Runs inside the nix build, offline, with the standard library only; rattler (from the
locked py-rattler wheel) is imported in a child process:

1. Unpack the py-rattler wheel into $TMPDIR.
2. Child process (``--child``): a rattler record per archive
   (``RepoDataRecord.from_package_archive``; name/version/build must be the locked ones),
   then ``rattler.install(records, target_prefix=$out, execute_link_scripts=False)``, so
   text and binary prefix placeholders become $out. It writes a result marker and ends
   with ``os._exit``: rattler can abort the interpreter at exit after finishing, so the
   marker decides success, not the exit status.
3. Normalize what rattler writes that depends on the build host or time, so two builds
   give the same NAR hash: CACHEDIR.TAG and conda-meta/history go; in conda-meta/*.json
   ``url``/``channel``/``fn`` become the locked ones, ``extracted_package_dir`` and
   ``link`` (a build-machine path, and hard link vs. copy) go, keys are sorted. The
   store itself fixes modes and times, and a NAR lists directories sorted.
4. Link scripts (bin/.NAME-post-link.sh, ...) are never run; their packages are listed.
5. Activation scripts (etc/conda/activate.d/*.sh) are sourced once, here, by bash with
   CONDA_PREFIX=$out; every variable they export becomes data for the image's env script.
6. $out/nix-support/nixsnake-conda.json tells nixsnake the prefix, the activation
   variables and the warnings.
"""

import glob
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

LINK_SCRIPTS = ("pre-link", "post-link", "pre-unlink")
#: Set by bash itself, not by an activation script.
SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_"}


def fail(msg):
    sys.stderr.write("nixsnake conda install: error: " + msg + "\n")
    sys.exit(1)


def child(wheel_dir, marker, records, out, tmp, subdir):
    sys.path.insert(0, wheel_dir)
    try:
        import asyncio

        import rattler

        async def run():
            recs = []
            for r in records:
                rec = await rattler.RepoDataRecord.from_package_archive(r["path"])
                got = (rec.name.normalized, str(rec.version), str(rec.build))
                want = (r["name"], r["version"], r["build"])
                if got != want:
                    raise RuntimeError(f"{r['file_name']} contains {got}, the lock says {want}")
                recs.append(rec)
            # nothing is downloaded (every record is a local file), but rattler builds an
            # HTTP client anyway, which needs CA certificates: SSL_CERT_FILE (conda.nix)
            await rattler.install(
                recs,
                target_prefix=out,
                cache_dir=Path(tmp, "pkgs"),
                execute_link_scripts=False,
                show_progress=False,
                platform=rattler.Platform(subdir),
            )

        asyncio.run(run())
        result: dict[str, object] = {"ok": True}
    except BaseException as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    with open(marker, "w") as fh:
        json.dump(result, fh)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if result["ok"] else 1)


def normalize(out, by_key):
    for junk in (os.path.join(out, "CACHEDIR.TAG"), os.path.join(out, "conda-meta", "history")):
        if os.path.lexists(junk):
            os.unlink(junk)
    link_scripts = []
    for path in sorted(glob.glob(os.path.join(out, "conda-meta", "*.json"))):
        with open(path) as fh:
            d = json.load(fh)
        r = by_key.get((d.get("name"), d.get("version"), d.get("build")))
        if r is None:
            fail(f"{os.path.basename(path)} is not a locked package")
        d["url"] = r["url"]
        d["channel"] = r["channel"]
        d["fn"] = r["file_name"]
        d.pop("extracted_package_dir", None)
        d.pop("package_tarball_full_path", None)
        # link.source is a build-machine path; link.type says hard link or copy, which
        # depends on whether the build directory and the store share a file system
        d.pop("link", None)
        files = set(d.get("files") or [])
        kinds = [k for k in LINK_SCRIPTS if f"bin/.{d['name']}-{k}.sh" in files]
        if kinds:
            link_scripts.append(f"{d['name']} ({', '.join(kinds)})")
        with open(path, "w") as fh:
            json.dump(d, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return link_scripts


def activation(out, tmp):
    """Source etc/conda/activate.d/*.sh (sorted, like conda) once; return the exported
    variables they set or changed, and notes about the ones left out."""
    scripts = sorted(glob.glob(os.path.join(out, "etc", "conda", "activate.d", "*.sh")))
    if not scripts:
        return [], {}, []
    before = {
        "CONDA_PREFIX": out,
        "PATH": os.path.join(out, "bin") + ":" + os.environ["PATH"],
        "HOME": "/homeless-shelter",
        "LANG": "C",
    }
    dump = "import json, os, sys; json.dump(dict(os.environ), sys.stdout)"
    # the scripts' own output goes to the build log, the environment dump alone to stdout
    script = 'for f in "$@"; do . "$f" >&2; done; exec "$NIXSNAKE_PY" -I -c "$NIXSNAKE_DUMP"'
    env = dict(before, NIXSNAKE_PY=sys.executable, NIXSNAKE_DUMP=dump)
    r = subprocess.run(
        [os.environ["bash"], "--norc", "--noprofile", "-c", script, "activate", *scripts],
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        fail("sourcing the activation scripts failed (exit %d): %s" % (r.returncode, r.stderr[-2000:]))
    try:
        after = json.loads(r.stdout)
    except ValueError:
        fail("an activation script broke the environment dump: " + r.stdout[-500:])
    build_dirs = [d for d in {tmp, os.environ.get("NIX_BUILD_TOP", ""), "/homeless-shelter"} if d]
    values, skipped = {}, []
    for name in sorted(after):
        value = after[name]
        if name in SHELL_VARS or name.startswith("NIXSNAKE_") or before.get(name) == value:
            continue
        if any(d in value for d in build_dirs):
            skipped.append(f"{name} (its value names a build-time directory)")
            continue
        values[name] = value
    rel = [os.path.relpath(s, out) for s in scripts]
    return rel, values, skipped


def main():
    out = os.environ["out"]
    tmp = os.environ.get("TMPDIR") or os.environ.get("NIX_BUILD_TOP") or "/tmp"
    subdir = os.environ["subdir"]
    with open(os.environ["recordsPath"]) as fh:
        records = json.load(fh)
    wheel_dir = os.path.join(tmp, "py-rattler")
    with zipfile.ZipFile(os.environ["rattlerWheel"]) as zf:
        zf.extractall(wheel_dir)
    # each archive under its own file name (rattler reads the format from the name)
    archives = os.path.join(tmp, "archives")
    os.makedirs(archives)
    for r in records:
        name = r["file_name"]
        if "/" in name or name in (".", "..") or not name.endswith((".conda", ".tar.bz2")):
            fail(f"unexpected archive file name {name!r}")
        r["path"] = os.path.join(archives, name)
        os.symlink(r["archive"], r["path"])
    marker = os.path.join(tmp, "nixsnake-install-result.json")
    job = os.path.join(tmp, "nixsnake-install-job.json")
    with open(job, "w") as fh:
        json.dump(
            {"wheel_dir": wheel_dir, "marker": marker, "records": records, "out": out, "tmp": tmp, "subdir": subdir}, fh
        )
    env = dict(os.environ, LD_LIBRARY_PATH=os.environ["installerLibraryPath"], HOME=tmp)
    proc = subprocess.run([sys.executable, "-I", os.path.abspath(__file__), "--child", job], env=env)
    try:
        with open(marker) as fh:
            result = json.load(fh)
    except (OSError, ValueError):
        fail(f"rattler's installer ended (exit {proc.returncode}) without its result marker")
    if not result.get("ok"):
        fail("rattler's installer failed: " + str(result.get("error")))
    if proc.returncode != 0:
        sys.stderr.write(
            f"nixsnake conda install: note: rattler exited with {proc.returncode} after finishing; its marker says ok\n"
        )
    by_key = {(r["name"], r["version"], r["build"]): r for r in records}
    link_scripts = normalize(out, by_key)
    if link_scripts:
        sys.stderr.write("nixsnake: warning: conda link scripts not run: " + ", ".join(link_scripts) + "\n")
    scripts, values, skipped = activation(out, tmp)
    os.makedirs(os.path.join(out, "nix-support"), exist_ok=True)
    info = {
        "prefix": out,
        "packages": len(records),
        "activation_scripts": scripts,
        "env": values,
        "skipped_env": skipped,
        "link_scripts": link_scripts,
    }
    with open(os.path.join(out, "nix-support", "nixsnake-conda.json"), "w") as fh:
        json.dump(info, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        with open(sys.argv[2]) as fh:
            child(**json.load(fh))
    else:
        main()
