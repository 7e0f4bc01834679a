"""The image store: content-addressed SIF files on shared storage.

Layout (``STORE`` is the ``store`` setting)::

    STORE/images/<id>.sif     published images, 0644, never modified after rename
    STORE/meta/<id>.json      what built it, from which env files, its sha256; mtime = last use
    STORE/locks/<id>.lock     build lock (flufl.lock: NFS-safe link-count protocol)
    STORE/tmp/                partial images, named <id>.<host>.<pid>.part

Readers never see a partial image: an image is written under tmp/, fsync'ed and renamed
into images/ (atomic within one file system). Builders of the same id serialise on the
build lock and re-check for the image after taking it, so N concurrent builds do one.

An image runs in everyone's jobs, so the store trusts nothing it has not checked
(docs/security.md): no part of it may be world-writable; an image must be a regular,
non-writable file owned by someone who may write the store (root, the store's owner, the
user running nixsnake, or -- where ``images/`` is group-writable -- a *member* of its
group; the group a file carries proves nothing, ``setgid`` gives it to every file); and
before an image is used its SIF layout, its squashfs superblock and the image id written
inside it are checked against its name. ``verify`` compares every byte with the sha256
recorded when it was published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flufl.lock import Lock as FluflLock
from flufl.lock import TimeOutError

from .errors import Exit, NixsnakeError

# flufl.lock logs every 2 s wait as an ERROR; waiting is normal here, we report it ourselves.
logging.getLogger("flufl.lock").setLevel(logging.CRITICAL)

#: How long a lock stays valid without refresh. The holder refreshes it every
#: LOCK_LIFETIME/4; a holder that died on another host is detected after this.
LOCK_LIFETIME = dt.timedelta(minutes=10)
HOST = socket.gethostname()
#: flufl.lock names its claim files ``<lockfile>|<fqdn>|<pid>|<random>``.
_CLAIM_SEP = "|"
#: Image file names: the 40-hex image id.
_IMAGE_NAME = re.compile(r"[0-9a-f]{40}\.sif")
#: Per-build work directories (nix GC root, squashfs): ``nixsnake-build-<pid>-<host>-XXXX``.
WORKDIR_PREFIX = "nixsnake-build-"


class StoreError(NixsnakeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Meta:
    """``meta/<id>.json``: bookkeeping beside an image (not part of the image)."""

    image_id: str
    env_files: tuple[str, ...] = ()
    built_at: str = ""
    built_by: str = ""
    build_seconds: float = 0.0
    date: str = ""
    nixpkgs_rev: str = ""
    software: tuple[str, ...] = ()
    #: sha256 of the whole SIF file, recorded at publish (``nixsnake verify``).
    sha256: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Meta:
        """Raises ValueError naming what is wrong (the caller says where and what to do)."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue  # written by a newer nixsnake: ignore
            default = cls.__dataclass_fields__[key].default
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key!r} is not a list of strings")
                value = tuple(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{key!r} is not a number")
                value = float(value)
            elif not isinstance(value, str):
                raise ValueError(f"{key!r} is not a string")
            kw[key] = value
        if "image_id" not in kw:
            raise ValueError("'image_id' is missing")
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)


@dataclass(frozen=True)
class ImageEntry:
    id: str
    path: Path
    size: int
    last_used: float
    meta: Meta | None


@dataclass
class Listing:
    """What ``ls``/``gc`` see: the usable images, and one line per thing that is not."""

    entries: list[ImageEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@functools.cache
def _is_member(uid: int, gid: int) -> bool:
    """Is the user ``uid`` a member of group ``gid`` (primary or supplementary)?"""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.images = self.root / "images"
        self.meta = self.root / "meta"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"

    @property
    def dirs(self) -> tuple[Path, ...]:
        return (self.root, self.images, self.meta, self.locks, self.tmp)

    # --- security ---------------------------------------------------------------------

    def ensure(self) -> Store:
        """Create the layout (0755 dirs) and refuse a tamperable store."""
        for d in self.dirs:
            if not d.exists():
                try:
                    d.mkdir(mode=0o755, parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create image store directory {d}: {exc.strerror}",
                        Exit.UNAVAILABLE,
                        "set --store (or NIXSNAKE_STORE) to a directory you can write, or build where the store is writable",
                    ) from None
        self.check()
        return self

    def check(self) -> None:
        """No directory of the store may be writable by everyone: anyone could add an image
        under an id nobody has built yet (the sticky bit does not prevent that)."""
        for d in self.dirs:
            try:
                st = d.stat()
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(
                    f"refusing image store {self.root}: {d} is not a directory",
                    Exit.NOPERM,
                    f"remove {d}; nixsnake recreates it",
                )
            mode = stat.S_IMODE(st.st_mode)
            if mode & stat.S_IWOTH:
                raise StoreError(
                    f"refusing image store {d}: writable by everyone (mode {mode:o}); anyone could plant an image "
                    "that runs in everyone's jobs",
                    Exit.NOPERM,
                    f"chmod o-w {d} (share a store through a group: chmod g+ws)",
                )

    def trusted_owner(self, uid: int) -> bool:
        """An image is as trustworthy as whoever wrote it: root, the user running
        nixsnake, the store's owner, or a member of the group of a group-writable
        ``images/``."""
        if uid in (0, os.getuid()):
            return True
        root = self.root.stat()
        if uid == root.st_uid:
            return True
        images = self.images.stat()
        return bool(images.st_mode & stat.S_IWGRP) and _is_member(uid, images.st_gid)

    def check_image(self, path: Path, image_id: str | None = None) -> None:
        """Refuse (77) an image that is not a regular, unwritable file by a trusted owner,
        or whose layout or embedded id does not match its name. Cheap: reads the SIF
        header, descriptors, metadata object and squashfs superblock (~30 KiB+)."""
        from .image.sif import SifError, check_layout

        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"refusing image {path}: not a regular file",
                Exit.NOPERM,
                f"remove it (rm -r {path}); images are only ever written by nixsnake",
            )
        if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            raise StoreError(
                f"refusing image {path}: writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                "a modified image would run in everyone's jobs",
                Exit.NOPERM,
                f"remove it (rm {path}) and rebuild; images must be mode 0644",
            )
        if not self.trusted_owner(st.st_uid):
            raise StoreError(
                f"refusing image {path}: owned by uid {st.st_uid}, who may not write this store",
                Exit.NOPERM,
                f"remove it (rm {path}) and rebuild; to share a store, make images/ group-writable and setgid "
                "(chmod g+ws) for a group whose members build",
            )
        expected = image_id or path.name[: -len(".sif")]
        try:
            info = check_layout(path)
        except SifError as exc:
            raise StoreError(
                f"refusing image {path}: damaged ({exc.why})", Exit.NOPERM, f"remove it (rm {path}) and rebuild"
            ) from None
        embedded = info.metadata.get("image_id")
        if embedded != expected:
            raise StoreError(
                f"refusing image {path}: it holds image {embedded!r}, not {expected!r} (renamed or planted)",
                Exit.NOPERM,
                f"remove it (rm {path}) and rebuild",
            )

    # --- paths --------------------------------------------------------------------------

    def image_path(self, image_id: str) -> Path:
        return self.images / f"{image_id}.sif"

    def meta_path(self, image_id: str) -> Path:
        return self.meta / f"{image_id}.json"

    def has(self, image_id: str) -> bool:
        """Is a usable image for ``image_id`` published? (checked: see check_image)"""
        path = self.image_path(image_id)
        if not os.path.lexists(path):
            return False
        self.check_image(path, image_id)
        return True

    # --- locking ------------------------------------------------------------------------

    @contextmanager
    def build_lock(
        self, image_id: str, timeout: float = 6 * 3600, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the cross-host build lock for ``image_id`` (refreshed in the background)."""
        lockfile = str(self.locks / f"{image_id}.lock")
        lock = FluflLock(lockfile, lifetime=LOCK_LIFETIME)
        deadline = time.monotonic() + timeout
        told = False
        while True:
            self._break_if_dead(lock, lockfile)
            try:
                lock.lock(timeout=dt.timedelta(seconds=2))
                break
            except TimeOutError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"timed out waiting for the build lock {lockfile}",
                        Exit.TEMPFAIL,
                        "another build of the same image is still running",
                    ) from None
                if on_wait and not told:
                    try:
                        host, pid, _ = lock.details
                        on_wait(f"waiting for the build of {image_id} by {host} pid {pid}")
                    except Exception:
                        on_wait(f"waiting for another build of {image_id}")
                    told = True
            except OSError as exc:
                raise _unwritable(self, "take the build lock", exc) from None
        stop = threading.Event()

        def refresher() -> None:
            while not stop.wait(LOCK_LIFETIME.total_seconds() / 4):
                try:
                    lock.refresh()
                except Exception:
                    return

        t = threading.Thread(target=refresher, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # (an expired or broken lock: nothing to release)
                lock.unlock(unconditionally=True)

    @staticmethod
    def _break_if_dead(lock: FluflLock, lockfile: str) -> None:
        """A lock held by a dead process on *this* host is taken over at once (its claim
        file and the lock link removed); on other hosts the lifetime (holders refresh
        it) expires it."""
        try:
            with open(lockfile) as fh:
                claim = fh.read().strip()
        except OSError:
            return
        parts = claim.split(_CLAIM_SEP)
        if len(parts) != 4 or parts[0] != lockfile or parts[1] != lock.hostname or not parts[2].isdigit():
            return
        if not _pid_alive(int(parts[2])):
            for f in (claim, lockfile):
                with contextlib.suppress(OSError):
                    os.unlink(f)

    # --- publishing ---------------------------------------------------------------------

    def temp_path(self, image_id: str) -> Path:
        return self.tmp / f"{image_id}.{HOST}.{os.getpid()}.part"

    def clean_debris(self) -> list[Path]:
        """Remove what builders on this host left when they died: partial images and
        metadata in tmp/, claim files in locks/, work directories (with their nix GC
        roots) in the temp dir."""
        removed: list[Path] = []
        for p in _iterdir(self.tmp):
            parts = p.name.split(".")
            if len(parts) >= 4 and parts[-1] in ("part", "meta") and parts[-3] == HOST and parts[-2].isdigit():
                pid = int(parts[-2])
                if pid != os.getpid() and not _pid_alive(pid):
                    _unlink(p, removed)
        fqdn = socket.getfqdn()
        for p in _iterdir(self.locks):
            parts = p.name.split(_CLAIM_SEP)
            if len(parts) == 4 and parts[1] == fqdn and parts[2].isdigit() and not _pid_alive(int(parts[2])):
                _unlink(p, removed)
        removed += clean_dead_workdirs()
        return removed

    def publish(self, image_id: str, tmp: Path) -> tuple[Path, str]:
        """fsync + chmod 0644 + rename into images/; returns (path, sha256 of the file)."""
        h = hashlib.sha256()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
            for chunk in iter(lambda: fh.read(8 << 20), b""):
                h.update(chunk)
        os.chmod(tmp, 0o644)
        final = self.image_path(image_id)
        os.rename(tmp, final)
        _fsync_dir(self.images)
        return final, h.hexdigest()

    def write_meta(self, meta: Meta) -> None:
        """Atomically replace ``meta/<id>.json``; on failure nothing is left in tmp/."""
        path = self.meta_path(meta.image_id)
        tmp = self.tmp / f"{meta.image_id}.{HOST}.{os.getpid()}.meta"
        try:
            tmp.write_text(meta.to_json())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write {path}: {exc.strerror}",
                Exit.TEMPFAIL,
                "free space (or fix permissions) in the store; the next build or use rewrites it",
            ) from None

    def read_meta(self, image_id: str) -> Meta | None:
        """The image's metadata, or None when absent; raises ValueError when unusable."""
        path = self.meta_path(image_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"cannot read it ({exc.strerror})") from None
        try:
            return Meta.from_json(json.loads(text))
        except ValueError as exc:  # (json.JSONDecodeError is a ValueError)
            raise ValueError(str(exc).splitlines()[0]) from None

    def record_use(self, image_id: str, env_file: str | None = None) -> None:
        """Mark an image as used now (its meta file's mtime), and remember the env file.
        Best effort: a read-only view of the store (compute node) records nothing."""
        path = self.meta_path(image_id)
        try:
            meta = self.read_meta(image_id)
        except ValueError:
            meta = None
        if meta is None:
            meta = Meta(image_id)
        try:
            if env_file and env_file not in meta.env_files:
                self.write_meta(Meta(**{**asdict(meta), "env_files": tuple(sorted({*meta.env_files, env_file}))}))
            elif path.exists():
                os.utime(path)
            else:
                self.write_meta(meta)
        except (OSError, StoreError):
            pass

    # --- listing, verification and gc -------------------------------------------------

    def listing(self) -> Listing:
        """Every image, checked; what cannot be listed becomes a one-line problem."""
        out = Listing()
        for p in sorted(_iterdir(self.images)):
            if not _IMAGE_NAME.fullmatch(p.name):
                if not p.name.startswith("."):
                    out.problems.append(f"{p}: not an image name; remove it (images/ holds only <id>.sif files)")
                continue
            image_id = p.name[: -len(".sif")]
            try:
                self.check_image(p, image_id)
            except StoreError as exc:
                out.problems.append(str(exc))
                continue
            except OSError as exc:
                out.problems.append(f"{p}: cannot read it ({exc.strerror})")
                continue
            try:
                meta = self.read_meta(image_id)
            except ValueError as exc:
                out.problems.append(
                    f"{self.meta_path(image_id)}: unusable ({exc}); remove it, the next use rewrites it"
                )
                meta = None
            m = self.meta_path(image_id)
            size = p.stat().st_size
            last = m.stat().st_mtime if meta is not None else p.stat().st_mtime
            out.entries.append(ImageEntry(image_id, p, size, last, meta))
        return out

    def entries(self) -> list[ImageEntry]:
        return self.listing().entries

    def verify(self, image_id: str) -> str | None:
        """Full check of one image: None if its bytes are those recorded at publish,
        else why not."""
        path = self.image_path(image_id)
        try:
            self.check_image(path, image_id)
        except StoreError as exc:
            return exc.message
        except OSError as exc:
            return f"cannot read {path} ({exc.strerror})"
        try:
            meta = self.read_meta(image_id)
        except ValueError as exc:
            return f"{self.meta_path(image_id)} unusable ({exc}): no recorded sha256 to compare with"
        if meta is None or not meta.sha256:
            return (
                f"no sha256 recorded in {self.meta_path(image_id)} (built by an older nixsnake?): rebuild to record one"
            )
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(8 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != meta.sha256:
            return f"{path}: content differs from what was published (sha256 {h.hexdigest()[:16]}..., recorded {meta.sha256[:16]}...)"
        return None

    def is_locked(self, image_id: str) -> bool:
        """Someone holds the build lock: flufl.lock keeps the lock file's mtime at its
        expiry time, and the holder keeps pushing it forward."""
        try:
            return (self.locks / f"{image_id}.lock").stat().st_mtime > time.time()
        except FileNotFoundError:
            return False

    def gc(
        self,
        *,
        older_than_days: float | None,
        keep_ids: set[str] | None,
        dry_run: bool = False,
        min_age_hours: float = 1.0,
        damaged: bool = False,
    ) -> tuple[list[ImageEntry], list[str]]:
        """Remove images unused for ``older_than_days`` and/or not in ``keep_ids``, and
        with ``damaged`` those that fail :meth:`verify`. Returns (removed, problems).

        Never removes an image that is being built (lock held) or was used in the last
        ``min_age_hours`` (a job may be starting from it).
        """
        self.clean_debris()
        now = time.time()
        listing = self.listing()
        removed = []
        for e in listing.entries:
            age = now - e.last_used
            if age < min_age_hours * 3600 or self.is_locked(e.id):
                continue
            stale = older_than_days is not None and age > older_than_days * 86400
            unreferenced = keep_ids is not None and e.id not in keep_ids
            broken = damaged and self.verify(e.id) is not None
            if not (stale or unreferenced or broken):
                continue
            if not dry_run:
                try:
                    e.path.unlink()
                    self.meta_path(e.id).unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise _unwritable(self, f"remove {e.path}", exc) from None
            removed.append(e)
        return removed, listing.problems


def _unwritable(store: Store, what: str, exc: OSError) -> StoreError:
    return StoreError(
        f"cannot {what}: {exc.strerror} (image store {store.root})",
        Exit.UNAVAILABLE,
        "run this where the store is writable (the head node), or set --store to a writable directory",
    )


def _iterdir(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unlink(p: Path, removed: list[Path]) -> None:
    try:
        p.unlink()
        removed.append(p)
    except OSError:
        pass


def temp_workdir() -> tempfile.TemporaryDirectory[str]:
    """A build's work directory, named so a later build can tell it was this host's and
    whether its builder still lives (:func:`clean_dead_workdirs`)."""
    return tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-{HOST}-")


def clean_dead_workdirs() -> list[Path]:
    """Remove work directories of builders on this host that were killed (kill -9 leaves
    them, with the nix GC root that keeps their closure alive)."""
    removed: list[Path] = []
    for p in _iterdir(Path(tempfile.gettempdir())):
        name = p.name
        if not name.startswith(WORKDIR_PREFIX):
            continue
        pid, _, rest = name[len(WORKDIR_PREFIX) :].partition("-")
        if pid.isdigit() and rest.startswith(HOST + "-") and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
    return removed


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some network file systems refuse fsync on dirs
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
