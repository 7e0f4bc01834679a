"""Real tools from the host's Debian packages, for the demo package set.

samtools, bcftools, htslib, R (with the R packages the host has) and perl (with the Perl
modules VEP needs) are not built: they are the machine's Debian packages, copied into
the store at evaluation time like everything else the demo set is made of. This module
finds what each package copies and writes it into the manifest as a *host package*:

* ``files``: single files (``dest`` relative to the package's ``$out``, host ``path``);
* ``trees``: directories imported with ``builtins.path`` and a filter (``exclude``:
  relative paths left out, ``only``: when set, exactly these files and their parent
  directories); a symlink that leaves its tree (R's ``etc/Renviron -> /etc/R/Renviron``)
  is left out of the tree and its target copied as a file instead;
* ``elf``: the ELF files among them (re-linked onto the demo glibc by the builder);
* ``libs``: the shared libraries they need (``ldd``), glibc, zlib and gcc's runtime
  excepted (those are the demo ``glibc``, ``zlib`` and ``stdenv.cc.cc.lib``);
* ``patches``: compiled-in *search paths* of host directories (htslib's plugin path,
  bcftools' plugin directory, perl's ``@INC``), overwritten in the store copy with
  same-length names of directories that do not exist, as the demo loader's are: a copied
  program never looks into the host's directories, inside an image or outside.

Every group is optional: on a machine without a Debian package the group is ``null`` and
``debian.unavailable`` says why; the nix attribute then throws a message naming the
``apt-get install`` line, while the rest of the demo set keeps working.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import proc
from ..errors import Exit, NixsnakeError
from .hostfiles import checked_path, fail, ldd

#: Debian packages behind each optional attribute (``scripts/setup.sh`` installs them all).
DEBIAN_PACKAGES: dict[str, tuple[str, ...]] = {
    "htslib": ("tabix", "libhts3"),
    "samtools": ("samtools",),
    "bcftools": ("bcftools",),
    "R": ("r-base-core",),
    "rPackages.ggplot2": ("r-cran-ggplot2",),
    "perl": ("perl",),
    "perlPackages.BioPerl": ("libbio-perl-perl",),
    "perlPackages.DBI": ("libdbi-perl",),
    "perlPackages.JSON": ("libjson-perl",),
    "perlPackages.SetIntervalTree": ("libset-intervaltree-perl",),
    "perlPackages.BioDBHTS": ("libbio-db-hts-perl",),
    "perlPackages.PerlIOgzip": ("libperlio-gzip-perl",),
    "perlPackages.ListMoreUtils": ("liblist-moreutils-perl",),
    "perlPackages.LWP": ("libwww-perl",),
}
#: nixpkgs attribute (``perlPackages.<attr>``) -> the Debian package that has it.
PERL_PACKAGES = {a.split(".", 1)[1]: d[0] for a, d in DEBIAN_PACKAGES.items() if a.startswith("perlPackages.")}
#: R packages that must be real (never a stand-in): missing ones make the attribute throw.
R_REQUIRED = {a.split(".", 1)[1] for a in DEBIAN_PACKAGES if a.startswith("rPackages.")}

# R's parts that would read the host at run time or drag in X11/Tk/fontconfig: the X11
# and Tk devices, the data editor, cairo (png()/svg(); fontconfig reads /etc/fonts) and the
# internet module (libcurl, gnutls, p11-kit read /etc). pdf() and postscript() need none.
R_HOME_EXCLUDE = (
    "site-library", "library/tcltk", "modules/R_X11.so", "modules/R_de.so", "modules/internet.so",
    "library/grDevices/libs/cairo.so",
)  # fmt: skip

# Compiled-in search paths of host directories (NUL-terminated strings in the binaries).
#: htslib's plugin path (hfile_libcurl & co: remote files), a ':'-list ending in .../htslib
HTSLIB_PLUGIN_PATH = re.compile(rb"(?<=\0)((?:/[A-Za-z0-9_./+-]*:)*/[A-Za-z0-9_./+-]*/htslib)(?=\0)")
#: bcftools' plugin directory (the store copy gets BCFTOOLS_PLUGINS from its wrapper)
BCFTOOLS_PLUGIN_DIR = re.compile(rb"(?<=\0)(/[A-Za-z0-9_./+-]*/bcftools)(?=\0)")

_SAFE_REL = re.compile(r"[A-Za-z0-9_.+@%=,:~-][A-Za-z0-9_.+@%=,:~/-]*")


class Unavailable(Exception):
    """An optional group cannot be offered on this host (the reason is for the user)."""


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def upstream_version(debian_version: str) -> str:
    """``1:1.16+ds-3`` -> ``1.16``: what nixpkgs would call the version."""
    v = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
    return re.sub(r"[+~](ds|dfsg|repack)\d*$", "", v)


def same_length_void(old: str) -> str:
    """A same-length absolute path naming no directory ("/~~~~")."""
    return "/" + "~" * (len(old) - 1)


# --------------------------------------------------------------------------- dpkg


class Dpkg:
    """The host's installed Debian packages (one ``dpkg-query`` call, file lists on demand)."""

    def __init__(self) -> None:
        self.installed: dict[str, dict[str, Any]] = {}
        self._files: dict[str, list[str]] = {}
        if not proc.which("dpkg-query"):
            return
        fmt = r"${Package}\t${db:Status-Abbrev}\t${Version}\t${Depends}\t${Pre-Depends}\n"
        res = proc.run(["dpkg-query", "-W", "-f", fmt], check=False, what="dpkg-query -W")
        for line in res.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) != 5 or not parts[1].startswith("ii"):
                continue
            name, _status, version, depends, predepends = parts
            self.installed[name] = {"version": version, "depends": ", ".join(d for d in (predepends, depends) if d)}

    def version(self, pkg: str) -> str | None:
        info = self.installed.get(pkg)
        return info["version"] if info else None

    def require(self, attr: str) -> dict[str, str]:
        """Debian package -> version for ``attr``; Unavailable names the missing ones."""
        missing = [p for p in DEBIAN_PACKAGES[attr] if p not in self.installed]
        if missing:
            raise Unavailable(f"Debian package{'s' if len(missing) > 1 else ''} {' '.join(missing)} not installed")
        return {p: self.installed[p]["version"] for p in DEBIAN_PACKAGES[attr]}

    def files(self, pkg: str) -> list[str]:
        if pkg not in self._files:
            res = proc.run(["dpkg-query", "-L", pkg], check=False, what=f"dpkg-query -L {pkg}")
            self._files[pkg] = [line for line in res.stdout.splitlines() if line.startswith("/")]
        return self._files[pkg]

    def depends(self, pkg: str) -> list[str]:
        """The installed packages ``pkg`` depends on (first installed alternative of each)."""
        out = []
        for group in self.installed.get(pkg, {}).get("depends", "").split(","):
            for alt in group.split("|"):
                name = re.sub(r"\(.*?\)|\[.*?\]", "", alt).strip().split(":", 1)[0].strip()
                if name in self.installed:
                    out.append(name)
                    break
        return out

    def owners(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> owning package (``dpkg-query -S``, one call)."""
        paths = list(paths)
        if not paths or not proc.which("dpkg-query"):
            return {}
        res = proc.run(["dpkg-query", "-S", *paths], check=False, what="dpkg-query -S")
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            pkgs, _, path = line.partition(": ")
            if path in paths and ", " not in pkgs:
                out[path] = pkgs.split(":", 1)[0]
        return out

    def program(self, pkg: str, name: str) -> Path:
        """The executable ``name`` that ``pkg`` installs in a bin directory."""
        for f in self.files(pkg):
            p = Path(f)
            if p.name == name and p.parent.name == "bin" and p.is_file() and os.access(p, os.X_OK):
                return p
        raise Unavailable(f"Debian package {pkg} has no program {name}")


# --------------------------------------------------------------------------- host packages


class HostPackage:
    """The host files of one demo package and how they are laid out in its ``$out``."""

    def __init__(self, name: str, version: str, debian: dict[str, str]):
        self.name, self.version, self.debian = name, version, debian
        self.files: list[dict[str, str]] = []
        self.trees: list[dict[str, Any]] = []
        self.elf: list[tuple[str, Path]] = []  # (dest, host path)
        self.libs: dict[str, Path] = {}
        self.patches: list[dict[str, Any]] = []

    @staticmethod
    def _dest(dest: str) -> str:
        if not _SAFE_REL.fullmatch(dest) or ".." in dest.split("/"):
            raise fail(f"package path {dest!r} is not usable")
        return dest

    def file(self, dest: str, path: Path) -> None:
        real = Path(path).resolve()
        if not real.is_file():
            raise fail(f"{path} (for {self.name}) is not a file")
        self.files.append({"dest": self._dest(dest), "path": checked_path(real)})
        if _is_elf(real):
            self.elf.append((dest, real))

    def tree(self, dest: str, root: Path, exclude: Iterable[str] = (), only: Iterable[str] | None = None,
             skip: Callable[[str, bool], bool] | None = None) -> None:  # fmt: skip
        """Import the directory ``root`` at ``dest``: all of it but ``exclude`` (relative
        paths; a directory with its contents) and what ``skip(rel, is_dir)`` rejects, or
        with ``only`` exactly those files."""
        root = Path(root).resolve()
        if not root.is_dir():
            raise fail(f"{root} (for {self.name}) is not a directory")
        excluded = set(exclude)
        wanted = None if only is None else set(only)
        parents = (
            None
            if wanted is None
            else {str(Path(w).parent) for w in wanted} | {str(p) for w in wanted for p in Path(w).parents}
        )
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath)
            rel_dir = base.relative_to(root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for d in dirnames:
                rel = prefix + d
                p = base / d
                if p.is_symlink():
                    filenames.append(d)  # judged as a link below
                elif rel in excluded or (skip and skip(rel, True)):
                    excluded.add(rel)
                elif parents is not None and rel not in parents:
                    pass  # nothing wanted below
                else:
                    kept.append(d)
            dirnames[:] = kept
            for f in filenames:
                rel = prefix + f
                p = base / f
                if wanted is not None and rel not in wanted:
                    continue
                if rel in excluded or (skip and skip(rel, False)):
                    excluded.add(rel)
                    continue
                if p.is_symlink():
                    target = p.resolve()
                    if not target.is_relative_to(root) or not target.exists():
                        # leaves the tree (or dangles): copy what it names, never the link
                        if wanted is None:
                            excluded.add(rel)
                        else:
                            wanted.discard(rel)
                        if target.is_file():
                            self.file(f"{dest}/{rel}", target)
                    continue
                if _is_elf(p):
                    self.elf.append((self._dest(f"{dest}/{rel}"), p))
        entry: dict[str, Any] = {"dest": self._dest(dest), "root": checked_path(root)}
        if wanted is None:
            entry["exclude"] = sorted(excluded)
        else:
            entry["only"] = sorted(wanted | {p for p in (parents or set()) if p != "."})
        self.trees.append(entry)

    def resolve_libs(self, special: set[str], provided: Iterable[str] = ()) -> None:
        """The shared libraries the ELF files need, but those provided elsewhere."""
        if not self.elf:
            return
        libs, _ = ldd([p for _, p in self.elf])
        own = {Path(d).name for d, _ in self.elf}
        skip = special | set(provided) | own
        self.libs.update({n: p for n, p in libs.items() if n not in skip})

    def patch_search_paths(self, patterns: Iterable[re.Pattern[bytes]]) -> None:
        """Overwrite compiled-in search paths of host directories (see the module doc)."""
        targets = [*self.elf, *((f"lib/{n}", p) for n, p in self.libs.items())]
        for dest, path in targets:
            data = path.read_bytes()
            for pat in patterns:
                for m in pat.finditer(data):
                    old = m.group(1).decode()
                    self.patches.append({"file": dest, "offset": m.start(1), "old": old, "new": same_length_void(old)})

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "debian": dict(sorted(self.debian.items())),
            "files": self.files,
            "trees": self.trees,
            "elf": sorted(d for d, _ in self.elf),
            "libs": [{"name": n, "path": checked_path(p.resolve())} for n, p in sorted(self.libs.items())],
            "patches": self.patches,
        }


# --------------------------------------------------------------------------- htslib, samtools, bcftools


def _htslib(dpkg: Dpkg, special: set[str]) -> dict[str, Any]:
    debian = dpkg.require("htslib")
    pkg = HostPackage("htslib", upstream_version(debian["libhts3"]), debian)
    for exe in ("bgzip", "tabix", "htsfile"):
        pkg.file(f"bin/{exe}", dpkg.program("tabix", exe))
    lib = next((Path(f) for f in dpkg.files("libhts3") if Path(f).name == "libhts.so.3"), None)
    if lib is None:
        raise Unavailable("Debian package libhts3 has no libhts.so.3")
    pkg.file("lib/libhts.so.3", lib)
    pkg.resolve_libs(special)
    pkg.patch_search_paths([HTSLIB_PLUGIN_PATH])
    return pkg.to_json()


def _samtools(dpkg: Dpkg, special: set[str]) -> dict[str, Any]:
    debian = dpkg.require("samtools")
    pkg = HostPackage("samtools", upstream_version(debian["samtools"]), debian)
    pkg.file("bin/samtools", dpkg.program("samtools", "samtools"))
    pkg.resolve_libs(special)
    pkg.patch_search_paths([HTSLIB_PLUGIN_PATH])
    return pkg.to_json()


def _bcftools(dpkg: Dpkg, special: set[str]) -> dict[str, Any]:
    debian = dpkg.require("bcftools")
    pkg = HostPackage("bcftools", upstream_version(debian["bcftools"]), debian)
    pkg.file("bin/.bcftools-wrapped", dpkg.program("bcftools", "bcftools"))
    plugins = sorted(
        {Path(f).parent for f in dpkg.files("bcftools") if f.endswith(".so") and Path(f).parent.name == "bcftools"}
    )
    if plugins:
        pkg.tree("libexec/bcftools", plugins[0])
    pkg.resolve_libs(special)
    pkg.patch_search_paths([HTSLIB_PLUGIN_PATH, BCFTOOLS_PLUGIN_DIR])
    return pkg.to_json()


# --------------------------------------------------------------------------- R

_R_INFO = (
    'cat(R.home(), R.home("share"), R.home("include"), R.home("doc"), paste(R.version$major, R.version$minor, sep="."),'
    ' .Library, .Library.site, sep = "\\n")'
)


def read_dcf(path: Path) -> dict[str, str]:
    """An R DESCRIPTION file (Debian control syntax: continuation lines start with blanks)."""
    fields: dict[str, str] = {}
    key = None
    for line in path.read_text(errors="replace").splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def r_dependencies(desc: dict[str, str], fields: Iterable[str] = ("Depends", "Imports")) -> list[str]:
    """Package names in the DESCRIPTION fields (version constraints and ``R`` dropped)."""
    out = []
    for field in fields:
        for item in desc.get(field, "").split(","):
            name = re.sub(r"\(.*?\)", "", item).strip()
            if name and name != "R" and name not in out:
                out.append(name)
    return out


def _r(dpkg: Dpkg, special: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    debian = dpkg.require("R")
    rscript = dpkg.program("r-base-core", "Rscript")
    res = proc.run([rscript, "--vanilla", "-e", _R_INFO], check=False, what="Rscript (finding R's directories)",
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})  # fmt: skip
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) < 6:
        raise Unavailable(f"Rscript failed: {proc.tail(res.stderr or res.stdout, 3)}")
    r_home, share, include, doc = map(Path, lines[:4])
    version, library, site = lines[4], Path(lines[5]), [Path(x) for x in lines[6:]]
    # R's own packages (Priority: base; "translations") stay in R; every other package is
    # rPackages.<name>
    libdirs = [library, *(d for d in site if not str(d).startswith("/usr/local/"))]
    base: set[str] = set()
    found: dict[str, tuple[Path, dict[str, str]]] = {}
    for libdir in libdirs:
        if not libdir.is_dir():
            continue
        for d in sorted(libdir.iterdir()):
            if not (d / "DESCRIPTION").is_file():
                continue
            desc = read_dcf(d / "DESCRIPTION")
            name = desc.get("Package", d.name)
            if libdir == library and (
                desc.get("Priority") == "base" or desc.get("License", "").startswith("Part of R")
            ):
                base.add(name)
            elif name not in found and name not in base:
                found[name] = (d, desc)

    pkg = HostPackage("R", version, debian)
    in_library = [f"library/{d.name}" for d, _ in found.values() if d.parent == library]
    r_home_dir = r_home.resolve()
    pkg.tree("lib/R", r_home_dir, exclude=[*R_HOME_EXCLUDE, *in_library])
    for dest, d in (("lib/R/share", share), ("lib/R/include", include), ("lib/R/doc", doc)):
        if d.is_dir() and not d.resolve().is_relative_to(r_home_dir):
            pkg.tree(dest, d)
    pkg.resolve_libs(special)
    r_provided = {Path(d).name for d, _ in pkg.elf} | set(pkg.libs)

    # rPackages: each package's files and libraries (one that ldd cannot resolve is left
    # out), then only those whose Depends/Imports are all there (base packages count)
    owners = dpkg.owners(str(d) for d, _ in found.values())
    usable: dict[str, tuple[HostPackage, dict[str, str]]] = {}
    for name, (d, desc) in sorted(found.items()):
        owner = owners.get(str(d))
        rp = HostPackage(f"r-{name}", desc.get("Version", "0"), {owner: dpkg.version(owner) or "?"} if owner else {})
        try:
            rp.tree(f"library/{name}", d)
            rp.resolve_libs(special, r_provided)
        except NixsnakeError:
            continue
        usable[name] = (rp, desc)
    while True:
        broken = [n for n, (_, desc) in usable.items()
                  if any(dep not in usable and dep not in base for dep in r_dependencies(desc))]  # fmt: skip
        if not broken:
            break
        for n in broken:
            del usable[n]
    packages = {
        name: {
            "rName": name,
            "deps": [n for n in r_dependencies(desc) if n in usable],
            "linkingTo": [n for n in r_dependencies(desc, ("LinkingTo",)) if n in usable],
            "package": rp.to_json(),
        }
        for name, (rp, desc) in usable.items()
    }
    return {"version": version, "basePackages": sorted(base), "package": pkg.to_json()}, packages


# --------------------------------------------------------------------------- perl

_PERL_INFO = (
    'use Config; print join("\\n", $Config{version}, $Config{archlibexp}, $Config{privlibexp},'
    ' $Config{vendorarchexp}, $Config{vendorlibexp}, "--", @INC), "\\n"'
)


def _perl(
    dpkg: Dpkg, special: set[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str | None], dict[str, str]]:
    """perl, its Debian module packages (the closure of the requested ones), the
    requested attributes (attr -> Debian package or None) and why some are missing."""
    debian = dpkg.require("perl")
    for p in ("perl-base", "libperl5.36", "perl-modules-5.36"):
        if p in dpkg.installed:
            debian[p] = dpkg.installed[p]["version"]
    exe = Path("/usr/bin/perl")
    if not exe.is_file():
        exe = dpkg.program("perl-base", "perl")
    res = proc.run([exe, "-e", _PERL_INFO], check=False, what="perl (finding @INC)",
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})  # fmt: skip
    head, _, inc_text = res.stdout.partition("\n--\n")
    fields = head.splitlines()
    if res.returncode != 0 or len(fields) != 5:
        raise Unavailable(f"perl failed: {proc.tail(res.stderr or res.stdout, 3)}")
    version, archlib, privlib, vendorarch, vendorlib = fields
    inc = [d for d in inc_text.splitlines() if d]

    pkg = HostPackage("perl", version, debian)
    pkg.file("bin/.perl-wrapped", exe)
    # perl's own library (@INC without the vendor, site and /etc dirs), in @INC's order;
    # no pod, no CORE (C headers for building XS modules: nothing compiles here)
    core: list[str] = []
    for d in inc:
        if d in (vendorarch, vendorlib) or d.startswith(("/usr/local/", "/etc/")) or not Path(d).is_dir():
            continue
        name = "arch" if d == archlib else "lib" if d == privlib else Path(d).name
        dest = f"lib/perl5/core/{name}"
        pkg.tree(dest, Path(d), exclude=["CORE"] if d == archlib else [],
                 skip=lambda rel, is_dir: rel.endswith(".pod") or (is_dir and rel.split("/")[-1] == "pod"))  # fmt: skip
        core.append(dest)
    if not core:
        raise Unavailable("perl's @INC has no core library directory")
    pkg.resolve_libs(special)
    inc_re = re.compile(
        b"(?<=\\0)(" + b"|".join(re.escape(d.encode()) for d in sorted(inc, key=len, reverse=True)) + b")(?=\\0)"
    )
    pkg.patch_search_paths([inc_re])
    if not any(p["file"] == "bin/.perl-wrapped" for p in pkg.patches):
        raise Unavailable(f"did not find perl's @INC in {exe}")
    perl_libs = set(pkg.libs)

    # the requested modules' Debian packages and the perl module packages they depend on
    roots = [Path(vendorlib), Path(vendorarch)]
    requested: dict[str, str | None] = {}
    unavailable: dict[str, str] = {}
    libs: dict[str, dict[str, Any]] = {}

    def module_files(deb: str) -> dict[Path, list[str]]:
        out: dict[Path, list[str]] = {}
        for f in dpkg.files(deb):
            p = Path(f)
            for root in roots:
                if p.is_relative_to(root) and (p.is_file() or p.is_symlink()):
                    out.setdefault(root, []).append(p.relative_to(root).as_posix())
                    break
        return out

    visiting: set[str] = set()

    def visit(deb: str) -> bool:
        if deb in libs:
            return True
        files = module_files(deb)
        if not files:
            return False  # not a perl module package (perl itself, ca-certificates, ...)
        visiting.add(deb)
        try:
            # a dependency cycle (libwww-perl <-> liblwp-protocol-https-perl) loses its
            # back edge: nix derivations cannot depend on each other
            deps = [d for d in dpkg.depends(deb) if d not in visiting and visit(d)]
        finally:
            visiting.discard(deb)
        hp = HostPackage(deb, upstream_version(dpkg.installed[deb]["version"]), {deb: dpkg.installed[deb]["version"]})
        for root, rels in files.items():
            hp.tree("lib/perl5/site_perl", root, only=rels)
        hp.resolve_libs(special, perl_libs)
        libs[deb] = {"deps": deps, "package": hp.to_json()}
        return True

    for attr, deb in PERL_PACKAGES.items():
        try:
            dpkg.require(f"perlPackages.{attr}")
            if not visit(deb):
                raise Unavailable(f"Debian package {deb} installs no Perl modules")
            requested[attr] = deb
        except (Unavailable, NixsnakeError) as exc:
            requested[attr] = None
            unavailable[f"perlPackages.{attr}"] = exc.message if isinstance(exc, NixsnakeError) else str(exc)
    return {"version": version, "inc": core, "package": pkg.to_json()}, libs, requested, unavailable


# --------------------------------------------------------------------------- errors

# What pkgs.nix throws for an attribute whose Debian packages the host lacks.
_UNAVAILABLE = re.compile(
    r"nixsnake demo package set: (\S+) is not available on this host \((.*?)\); install it with: (apt-get install [\w.+ -]+)"
)


def unavailable_error(log: str) -> NixsnakeError | None:
    """The user's error for a nix failure that is a missing Debian package (exit 69 with
    the ``apt-get install`` line as the hint), or None when ``log`` shows another failure."""
    m = _UNAVAILABLE.search(log)
    if m is None:
        return None
    return NixsnakeError(
        f"demo package set: {m.group(1)} is not available on this host ({m.group(2)})", Exit.UNAVAILABLE,
        m.group(3).strip(),
    )  # fmt: skip


# --------------------------------------------------------------------------- all of it


def discover_debian(special: set[str]) -> dict[str, Any]:
    """The manifest's Debian groups (``special``: sonames never copied into a package)."""
    dpkg = Dpkg()
    unavailable: dict[str, str] = {}
    out: dict[str, Any] = {}

    def attempt(attr: str, fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            if not dpkg.installed:
                raise Unavailable("dpkg-query found no Debian packages (not a Debian/Ubuntu host?)")
            return fn()
        except (Unavailable, NixsnakeError) as exc:
            unavailable[attr] = str(exc.message if isinstance(exc, NixsnakeError) else exc)
            return default

    for attr, group in (("htslib", _htslib), ("samtools", _samtools), ("bcftools", _bcftools)):
        out[attr] = attempt(attr, functools.partial(group, dpkg, special))
    r = attempt("R", lambda: _r(dpkg, special))
    out["R"], out["rPackages"] = r if r else (None, {})
    for name in sorted(R_REQUIRED):
        attr = f"rPackages.{name}"
        if name in out["rPackages"]:
            continue
        if r is None:
            unavailable[attr] = unavailable.get("R", "R is not available")
        else:
            try:
                dpkg.require(attr)
                unavailable[attr] = f"R package {name} is not in R's libraries, or misses a dependency"
            except Unavailable as exc:
                unavailable[attr] = str(exc)
    p = attempt("perl", lambda: _perl(dpkg, special))
    if p:
        out["perl"], out["perlLibs"], out["perlPackages"], more = p
        unavailable.update(more)
    else:
        out["perl"], out["perlLibs"], out["perlPackages"] = None, {}, {a: None for a in PERL_PACKAGES}
        unavailable.update({f"perlPackages.{a}": unavailable["perl"] for a in PERL_PACKAGES})
    out["debian"] = {
        "packages": {a: list(d) for a, d in DEBIAN_PACKAGES.items()},
        "unavailable": dict(sorted((k, v) for k, v in unavailable.items() if v)),
    }
    return out
