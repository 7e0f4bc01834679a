"""The shared image store trusts nothing it has not checked (store.py).

Images here are small real SIFs (mksquashfs + nixsnake's SIF writer, no nix), placed in
a real store directory and looked up through the same code ``build``/``run``/``deploy``
use; the CLI is run as a subprocess where its messages and exit codes matter.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import make_image

from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError
from snakemake_deploy_nixsnake.image.sif import PARTITION_OFFSET
from snakemake_deploy_nixsnake.store import Meta, Store, StoreError

ID_A = "a" * 40
ID_B = "b" * 40
DAEMON = 1  # a system account whose primary group is gid 1 ("daemon"): a group member
NOBODY = 65534  # not a member of gid 1

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs (squashfs-tools)")


def publish(store: Store, tmp: Path, image_id: str, payload: str = "x") -> Path:
    """Put an image into the store the way a build does (publish + meta with sha256)."""
    store.ensure()
    src = make_image(tmp, image_id, payload)
    part = store.temp_path(image_id)
    shutil.copyfile(src, part)
    final, sha = store.publish(image_id, part)
    store.write_meta(Meta(image_id=image_id, env_files=("/w/envs/x.toml",), sha256=sha))
    return final


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


# --- who may write the store -------------------------------------------------------------


@pytest.mark.parametrize("where", ["root", "images", "meta", "locks", "tmp"])
@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o3777])
def test_a_store_anyone_can_write_is_refused_sticky_or_not(store, where, mode):
    store.ensure()
    d = store.root if where == "root" else getattr(store, where)
    d.chmod(mode)
    with pytest.raises(StoreError) as e:
        store.ensure()
    assert e.value.code == Exit.NOPERM
    assert f"refusing image store {d}: writable by everyone (mode {mode:o})" in e.value.message
    assert f"chmod o-w {d}" in e.value.hint


def test_image_planted_by_another_user_in_a_setgid_store_is_refused(store, tmp_path):
    """The review's attack: images/ setgid + group-writable; a user who is not a member
    (nobody) copies env A's image to the id of env B, not built yet. The copy carries the
    directory's group (setgid) -- that proves nothing."""
    a = publish(store, tmp_path, ID_A)
    os.chown(store.images, 0, DAEMON)
    store.images.chmod(0o2775)
    planted = store.image_path(ID_B)
    shutil.copyfile(a, planted)
    os.chown(planted, NOBODY, DAEMON)
    planted.chmod(0o644)
    with pytest.raises(StoreError) as e:
        store.has(ID_B)
    assert e.value.code == Exit.NOPERM and "owned by uid 65534, who may not write this store" in e.value.message
    # even owned by a trusted user, A's image under B's id is not B's image
    os.chown(planted, DAEMON, DAEMON)
    with pytest.raises(StoreError) as e:
        store.has(ID_B)
    assert f"it holds image '{ID_A}', not '{ID_B}' (renamed or planted)" in e.value.message


def test_group_members_images_are_trusted_others_are_not(store, tmp_path):
    a = publish(store, tmp_path, ID_A)
    os.chown(store.images, 0, DAEMON)
    store.images.chmod(0o2775)
    os.chown(a, DAEMON, DAEMON)  # built by a member of the store's group
    assert store.has(ID_A)
    os.chown(a, NOBODY, DAEMON)
    with pytest.raises(StoreError):
        store.has(ID_A)
    store.images.chmod(0o755)  # not group-writable: group members are not writers at all
    os.chown(a, DAEMON, DAEMON)
    with pytest.raises(StoreError) as e:
        store.has(ID_A)
    assert "owned by uid 1" in e.value.message
    os.chown(a, 0, 0)
    assert store.has(ID_A)


@pytest.mark.parametrize(("mode", "ok"), [(0o644, True), (0o664, False), (0o646, False)])
def test_writable_images_are_refused(store, tmp_path, mode, ok):
    a = publish(store, tmp_path, ID_A)
    a.chmod(mode)
    if ok:
        assert store.has(ID_A)
    else:
        with pytest.raises(StoreError, match="writable by others"):
            store.has(ID_A)


# --- what an image is, before it is used -------------------------------------------------


def _truncate(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(PARTITION_OFFSET + 100)


def _smash_superblock(p: Path) -> None:
    with open(p, "r+b") as f:
        f.seek(PARTITION_OFFSET)
        f.write(os.urandom(96))


def _smash_header(p: Path) -> None:
    with open(p, "r+b") as f:
        f.seek(32)
        f.write(b"NOT_A_SIF_")


@pytest.mark.parametrize(
    ("damage", "why"),
    [(_truncate, "lies outside the file"), (_smash_superblock, "squashfs"), (_smash_header, "no SIF magic")],
)
def test_damaged_images_are_refused_before_use(store, tmp_path, damage, why):
    a = publish(store, tmp_path, ID_A)
    damage(a)
    with pytest.raises(StoreError) as e:
        store.has(ID_A)
    assert e.value.code == Exit.NOPERM and "damaged" in e.value.message and why in e.value.message
    assert f"rm {a}" in e.value.hint


def test_changed_bytes_inside_the_squashfs_are_found_by_verify(store, tmp_path, run_cli):
    a = publish(store, tmp_path, ID_A)
    publish(store, tmp_path, ID_B, payload="y")
    r = run_cli("verify", "--store", str(store.root))
    assert r.returncode == 0 and f"{ID_A}: ok" in r.stdout and "2 image(s) verified" in r.stdout, r.stderr
    with open(a, "r+b") as f:  # a flipped block in the middle: the cheap check cannot see it
        f.seek(PARTITION_OFFSET + 4096)
        f.write(b"\xff" * 64)
    assert store.has(ID_A)
    r = run_cli("verify", "--store", str(store.root))
    assert r.returncode == 77, r.stderr
    assert f"{ID_A}: {a}: content differs from what was published" in r.stderr and f"{ID_B}: ok" in r.stdout
    r = run_cli("gc", "--damaged", "--store", str(store.root))
    assert r.returncode == 0 and "0 image(s) removed" in r.stdout  # used within the hour: kept
    for m in store.meta.iterdir():
        os.utime(m, (0, 0))
    r = run_cli("gc", "--damaged", "--store", str(store.root))
    assert r.returncode == 0 and f"removed {a}" in r.stdout and "1 image(s) removed" in r.stdout, r.stdout
    assert not a.exists() and store.has(ID_B)


# --- store states: one line with path and fix, the rest of the store keeps working --------


def test_ls_and_gc_keep_working_around_broken_entries(store, tmp_path, run_cli):
    publish(store, tmp_path, ID_A)
    publish(store, tmp_path, ID_B, payload="y")
    (store.meta / f"{ID_B}.json").write_text('["valid JSON", "wrong shape"]')
    dangling = store.images / f"{'c' * 40}.sif"
    dangling.symlink_to(tmp_path / "gone")
    (store.images / f"{'d' * 40}.sif").mkdir()
    r = run_cli("ls", "--json", "--store", str(store.root))
    assert r.returncode == 0, r.stderr
    listed = {e["id"]: e for e in json.loads(r.stdout)}
    assert set(listed) == {ID_A, ID_B} and listed[ID_A]["env_files"] == ["/w/envs/x.toml"]
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("nixsnake: warning: ") for w in warnings), warnings
    assert any(f"{store.meta}/{ID_B}.json: unusable (a JSON list, not an object); remove it" in w for w in warnings)
    assert any(f"refusing image {dangling}: not a regular file" in w and "remove it" in w for w in warnings)
    assert any(f"{'d' * 40}.sif: not a regular file" in w for w in warnings)
    r = run_cli("gc", "--older-than", "0", "--store", str(store.root))
    assert r.returncode == 0 and "0 image(s) removed" in r.stdout and len(r.stderr.strip().splitlines()) == 3


def test_metadata_that_cannot_be_written_leaves_no_litter(store, tmp_path, monkeypatch):
    """ENOSPC while writing meta after the image was published (injected: a full disk)."""
    publish(store, tmp_path, ID_A)
    real = Path.write_text

    def full(self, *a, **k):
        if self.suffix == ".meta":
            real(self, "")  # the 0-byte file a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StoreError) as e:
        store.write_meta(Meta(image_id=ID_A))
    assert e.value.code == Exit.TEMPFAIL and "No space left on device" in e.value.message
    assert f"{store.meta}/{ID_A}.json" in e.value.message
    assert list(store.tmp.iterdir()) == []
    store.record_use(ID_A, "/other/env.toml")  # best effort, never raises
    assert list(store.tmp.iterdir()) == []


@pytest.fixture
def read_only(tmp_path):
    """Bind-mount a directory read-only over itself (needs root and mount)."""
    mounted: list[Path] = []

    def _ro(d: Path) -> None:
        for argv in (["mount", "--bind", str(d), str(d)], ["mount", "-o", "remount,bind,ro", str(d)]):
            if subprocess.run(argv, capture_output=True).returncode != 0:
                pytest.skip("cannot make a read-only bind mount here (needs root)")
            mounted.append(d)

    yield _ro
    for d in reversed(mounted):
        subprocess.run(["umount", str(d)], capture_output=True)


def test_read_only_store_gives_one_line_with_the_fix(store, tmp_path, run_cli, read_only):
    a = publish(store, tmp_path, ID_A)
    for m in store.meta.iterdir():
        os.utime(m, (0, 0))
    read_only(store.root)
    r = run_cli("ls", "--store", str(store.root))
    assert r.returncode == 0 and ID_A[:16] in r.stdout, r.stderr
    r = run_cli("gc", "--older-than", "0", "--store", str(store.root))
    assert r.returncode == 69, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert f"cannot remove {a}: Read-only file system (image store {store.root})" in line
    assert "run this where the store is writable" in line
    assert a.exists()


def test_read_only_store_build_of_a_missing_image(tmp_path, run_cli, read_only):
    ws = tmp_path / "ws"
    (ws / "envs").mkdir(parents=True)
    (ws / "envs" / "x.toml").write_text("date = 2024-06-01\n")
    (ws / "envs" / "x.lock.toml").write_text(
        'lock_version = 1\nspec_sha256 = "{}"\n'.format(
            __import__("snakemake_deploy_nixsnake.spec", fromlist=["x"]).parse_spec(b"date = 2024-06-01\n").spec_hash()
        )
        + 'date = "2024-06-01"\n[nixpkgs]\nbranch = "nixos-unstable"\nrev = "'
        + "1" * 40
        + '"\ncommit_time = "2024-01-15T12:00:00Z"\npinned = false\n'
    )
    store = Store(tmp_path / "store").ensure()
    read_only(store.root)
    r = run_cli("build", "--store", str(store.root), str(ws / "envs" / "x.toml"), cwd=ws)
    assert r.returncode == 69, r.stderr
    [line] = r.stderr.strip().splitlines()[-1:]
    assert "Read-only file system" in line and "run this where the store is writable" in line
    assert "internal error" not in r.stderr


def test_meta_from_json_names_what_is_wrong():
    assert Meta.from_json({"image_id": ID_A, "env_files": ["/a"], "future_key": 1}).env_files == ("/a",)
    for bad, why in [
        ([], "a JSON list"),
        ({"env_files": []}, "'image_id' is missing"),
        ({"image_id": ID_A, "env_files": "x"}, "'env_files' is not a list of strings"),
        ({"image_id": ID_A, "build_seconds": "1"}, "'build_seconds' is not a number"),
    ]:
        with pytest.raises(ValueError, match=why):
            Meta.from_json(bad)


def test_store_error_is_a_nixsnake_error():
    assert issubclass(StoreError, NixsnakeError)
