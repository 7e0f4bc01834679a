"""The image store: content-addressed SIF files on shared storage.

Layout (``STORE`` is the ``store`` setting)::

    STORE/images/<id>.sif     published images, 0644, never modified after rename
    STORE/meta/<id>.json      what built it, from which env files; mtime = last use
    STORE/locks/<id>.lock     build lock (flufl.lock: NFS-safe link-count protocol)
    STORE/tmp/                partial images, named <id>.<host>.<pid>.part

Readers never see a partial image: an image is written under tmp/, fsync'ed and renamed
into images/ (atomic within one file system). Builders of the same id serialise on the
build lock and re-check for the image after taking it, so N concurrent builds do one.
A store anyone could write to would let one user plant an image that runs in everyone's
jobs, so such a store is refused.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
class ImageEntry:
    id: str
    path: Path
    size: int
    last_used: float
    meta: dict[str, Any]


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.images = self.root / "images"
        self.meta = self.root / "meta"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"

    # --- security ---------------------------------------------------------------------

    def ensure(self) -> "Store":
        """Create the layout (0755 dirs, 1777 none) and refuse a tamperable store."""
        for d in (self.root, self.images, self.meta, self.locks, self.tmp):
            if not d.exists():
                try:
                    d.mkdir(mode=0o755, parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create image store directory {d}: {exc.strerror}", Exit.UNAVAILABLE,
                                     "set --store (or NIXSNAKE_STORE) to a writable directory") from None
        self.check()
        return self

    def check(self) -> None:
        for d in (self.root, self.images, self.meta, self.locks, self.tmp):
            if d.exists():
                _refuse_if_tamperable_dir(d)

    def check_image(self, path: Path) -> None:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise StoreError(f"refusing image {path}: not a regular file", Exit.NOPERM,
                             "remove it; images are only ever written by nixsnake")
        if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            raise StoreError(
                f"refusing image {path}: writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                "a modified image would run in everyone's jobs", Exit.NOPERM,
                f"remove it (rm {path}) and rebuild; images must be mode 0644",
            )
        if not self._trusted_owner(st):
            raise StoreError(
                f"refusing image {path}: owned by uid {st.st_uid}, who cannot write this store", Exit.NOPERM,
                "remove it and rebuild; to share a store between users, make images/ group-writable and setgid "
                "(chmod g+ws) for one group",
            )

    def _trusted_owner(self, st: os.stat_result) -> bool:
        """An image is as trustworthy as whoever could have written it: root, us, the
        store's owner, or (in a group-writable images/ dir) a member of its group, whose
        files carry that group thanks to the setgid bit."""
        if st.st_uid in (0, os.getuid(), self.root.stat().st_uid):
            return True
        d = self.images.stat()
        return bool(d.st_mode & stat.S_IWGRP) and st.st_gid == d.st_gid

    # --- paths --------------------------------------------------------------------------

    def image_path(self, image_id: str) -> Path:
        return self.images / f"{image_id}.sif"

    def meta_path(self, image_id: str) -> Path:
        return self.meta / f"{image_id}.json"

    def has(self, image_id: str) -> bool:
        path = self.image_path(image_id)
        if not path.exists():
            return False
        self.check_image(path)
        return True

    # --- locking ------------------------------------------------------------------------

    @contextmanager
    def build_lock(self, image_id: str, timeout: float = 6 * 3600, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
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
                    raise StoreError(f"timed out waiting for the build lock {lockfile}", Exit.TEMPFAIL,
                                     "another build of the same image is still running") from None
                if on_wait and not told:
                    try:
                        host, pid, _ = lock.details
                        on_wait(f"waiting for the build of {image_id} by {host} pid {pid}")
                    except Exception:
                        on_wait(f"waiting for another build of {image_id}")
                    told = True
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
            try:
                lock.unlock(unconditionally=True)
            except Exception:
                pass

    @staticmethod
    def _break_if_dead(lock: FluflLock, lockfile: str) -> None:
        """A lock held by a dead process on *this* host is taken over at once; on other
        hosts the lifetime (holders refresh it) expires it."""
        try:
            host, pid, claim = lock.details
        except Exception:
            return
        if host == lock.hostname and not _pid_alive(pid):
            for f in (lockfile, claim):
                try:
                    os.unlink(f)
                except OSError:
                    pass

    # --- publishing ---------------------------------------------------------------------

    def temp_path(self, image_id: str) -> Path:
        return self.tmp / f"{image_id}.{HOST}.{os.getpid()}.part"

    def clean_debris(self) -> list[Path]:
        """Remove partial images left by builders on this host that died."""
        removed = []
        for p in self.tmp.glob("*.part"):
            parts = p.name.split(".")
            if len(parts) >= 4 and parts[-3] == HOST:
                try:
                    pid = int(parts[-2])
                except ValueError:
                    continue
                if pid != os.getpid() and not _pid_alive(pid):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

    def publish(self, image_id: str, tmp: Path, meta: dict[str, Any]) -> Path:
        """fsync + chmod 0644 + rename into images/; then write meta."""
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        final = self.image_path(image_id)
        os.rename(tmp, final)
        _fsync_dir(self.images)
        self.write_meta(image_id, meta)
        return final

    def write_meta(self, image_id: str, meta: dict[str, Any]) -> None:
        path = self.meta_path(image_id)
        tmp = self.tmp / f"{image_id}.{HOST}.{os.getpid()}.meta"
        tmp.write_text(json.dumps(meta, sort_keys=True, indent=1))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def read_meta(self, image_id: str) -> dict[str, Any]:
        try:
            return json.loads(self.meta_path(image_id).read_text())
        except (OSError, ValueError):
            return {}

    def record_use(self, image_id: str, env_file: str | None = None) -> None:
        """Mark an image as used now (its meta file's mtime), and remember the env file."""
        path = self.meta_path(image_id)
        try:
            if env_file:
                meta = self.read_meta(image_id)
                envs = set(meta.get("env_files", []))
                if env_file not in envs:
                    meta["env_files"] = sorted(envs | {env_file})
                    self.write_meta(image_id, meta)
                    return
            os.utime(path)
        except OSError:
            pass  # a read-only view of the store (compute node): nothing to record

    # --- listing and gc -----------------------------------------------------------------

    def entries(self) -> list[ImageEntry]:
        out = []
        if not self.images.exists():
            return out
        for p in sorted(self.images.glob("*.sif")):
            image_id = p.stem
            st = p.stat()
            m = self.meta_path(image_id)
            last = m.stat().st_mtime if m.exists() else st.st_mtime
            out.append(ImageEntry(image_id, p, st.st_size, last, self.read_meta(image_id)))
        return out

    def is_locked(self, image_id: str) -> bool:
        """Someone holds the build lock: flufl.lock keeps the lock file's mtime at its
        expiry time, and the holder keeps pushing it forward."""
        try:
            return (self.locks / f"{image_id}.lock").stat().st_mtime > time.time()
        except FileNotFoundError:
            return False

    def gc(self, *, older_than_days: float | None, keep_ids: set[str] | None, dry_run: bool = False,
           min_age_hours: float = 1.0) -> list[ImageEntry]:
        """Remove images unused for ``older_than_days`` and/or not in ``keep_ids``.

        Never removes an image that is being built (lock held) or was used in the last
        ``min_age_hours`` (a job may be starting from it).
        """
        now = time.time()
        removed = []
        for e in self.entries():
            age = now - e.last_used
            if age < min_age_hours * 3600 or self.is_locked(e.id):
                continue
            stale = older_than_days is not None and age > older_than_days * 86400
            unreferenced = keep_ids is not None and e.id not in keep_ids
            if not (stale or unreferenced):
                continue
            if not dry_run:
                e.path.unlink(missing_ok=True)
                self.meta_path(e.id).unlink(missing_ok=True)
            removed.append(e)
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


def _refuse_if_tamperable_dir(d: Path) -> None:
    st = d.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise StoreError(
            f"refusing image store {d}: world-writable without sticky bit (mode {mode:o}); "
            "anyone could replace an image that runs in everyone's jobs", Exit.NOPERM,
            f"chmod o-w {d} (share it through a group instead)",
        )
