"""The local store's promises to the rest of the machine: modes whatever the umask, no link leads out of
it, and temporaries of killed writers are told apart from live ones."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pipeline.errors import NotFoundError
from pipeline.store import LocalBackend, Store, local
from pipeline.store.gc import sweep_uploads
from pipeline.store.local import UPLOAD_BUFFER
from tests.conftest import write_tree
from tests.registry_fixtures import running_registry

HOUR = 3600.0


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_store_modes_do_not_follow_the_umask(tmp_path: Path, umask: int) -> None:
    model = write_tree(tmp_path / "model", {"config.json": b"{}", "sub/w.bin": os.urandom(4096)})
    store = tmp_path / "new" / "store"  # its parent too is made by the build
    command = [sys.executable, "-m", "pipeline", "build", "--from-dir", str(model), "--name", "org/m"]
    result = subprocess.run(
        [*command, "--store", str(store)], capture_output=True, text=True, preexec_fn=lambda: os.umask(umask)
    )
    assert result.returncode == 0, result.stderr
    modes = {path: stat.S_IMODE(path.lstat().st_mode) for path in [store, *store.rglob("*")]}
    assert len([p for p in modes if p.is_file()]) > 6  # blobs, tags, catalog record
    assert {path: mode for path, mode in modes.items() if path.is_dir() and mode != 0o755} == {}
    assert {path: mode for path, mode in modes.items() if path.is_file() and mode != 0o644} == {}
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o755


def test_no_link_leads_out_of_the_store(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.txt": b"OUTSIDE-THE-STORE"})
    root = tmp_path / "store"
    backend = LocalBackend(root)
    backend.write("site/index.html", b"<h1>home</h1>")
    (root / "site" / "etcdir").symlink_to(outside)  # a directory outside
    (root / "site" / "secret.txt").symlink_to(outside / "secret.txt")  # a file outside
    (root / "site" / "up.txt").symlink_to("../../outside/secret.txt")  # relative, climbing out
    (root / "site" / "home.html").symlink_to("index.html")  # inside: allowed
    os.mkfifo(root / "site" / "fifo")  # must not hang a reader
    for key in ("site/etcdir/secret.txt", "site/secret.txt", "site/up.txt", "site/fifo"):
        assert backend.stat(key) is None, key
        with pytest.raises(NotFoundError):
            backend.read(key)
        with pytest.raises(NotFoundError):
            list(backend.read_range(key, 0, 5))
    assert backend.read("site/home.html") == b"<h1>home</h1>"
    assert [info.key for info in backend.list("site/")] == ["site/home.html", "site/index.html"]

    with running_registry(str(root), tmp_path / "serve") as registry:
        for path in ("/etcdir/secret.txt", "/secret.txt", "/up.txt", "/fifo"):
            response = httpx.get(registry.url + path, timeout=10)
            assert response.status_code == 404, path
            assert b"OUTSIDE" not in response.content
        assert httpx.get(registry.url + "/home.html").content == b"<h1>home</h1>"


def test_a_killed_writers_temporary_is_told_from_a_live_one(store: Store) -> None:
    backend = store.backend
    live = backend.upload()
    live.write(b"being written")
    killed = backend.upload()
    killed.write(bytes(UPLOAD_BUFFER) + b"left behind")  # more than the writer holds: bytes reach the file
    killed._close()  # type: ignore[attr-defined]  # what a SIGKILL does: the lock goes, the file stays
    starting = Path(backend.url()) / "uploads" / "starting.part"
    starting.touch()  # empty and unlocked: maybe a writer about to lock it
    keys = {"live": f"uploads/{live.path.name}", "killed": f"uploads/{killed.path.name}"}  # type: ignore[attr-defined]
    assert backend.upload_in_progress(keys["live"]) is True
    assert backend.upload_in_progress(keys["killed"]) is False
    assert backend.upload_in_progress("uploads/starting.part") is None

    assert [info.key for info in sweep_uploads(store, grace=HOUR)] == [keys["killed"]]
    far_later = sweep_uploads(store, grace=HOUR, now=starting.stat().st_mtime + 2 * HOUR)
    assert [info.key for info in far_later] == ["uploads/starting.part"]  # a live writer is never swept
    live.commit("blobs/sha256/" + "0" * 64)
    assert list(backend.list("uploads/")) == []


def test_each_write_is_durable_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a crash of the machine keeps must be a prefix of the writes: before a write begins, the
    # one before it (the file, its rename, and every directory made for it) has been fsynced.
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

    def fsync(descriptor: int) -> None:
        real_fsync(descriptor)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("write", str(source)))  # the temporary's bytes are complete
        real_replace(source, target)
        events.append(("rename", str(target)))

    def mkdir(path: str | Path, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        events.append(("mkdir", str(path)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    store = Store(LocalBackend(tmp_path / "store"))
    digest = store.put_blob(b"{}")
    store.backend.write("repositories/org/model/tags/latest", digest.encode())
    store.put_catalog("org/model", {"index_digest": digest})
    assert [kind for kind, _ in events].count("rename") == 3

    undurable: set[str] = set()  # made or renamed, not yet fsynced in its directory
    synced: set[str] = set()  # files whose bytes were fsynced
    for kind, path in events:
        if kind == "fsync":
            undurable = {entry for entry in undurable if os.path.dirname(entry) != path}
            synced.add(path)
        elif kind == "write":
            assert path in synced, f"{path} renamed into place before its bytes were fsynced"
        elif kind == "rename":
            assert undurable == set(), f"renamed onto {path} while {sorted(undurable)} may not survive a crash"
            undurable.add(path)
        else:
            undurable.add(path)
    assert undurable == set()


# Writes bypass the page cache where the filesystem takes O_DIRECT, in whole blocks; elsewhere they are buffered.

SIZES = [0, 1, 4095, 4096, 4097, UPLOAD_BUFFER - 1, UPLOAD_BUFFER, UPLOAD_BUFFER + 1, 3 * UPLOAD_BUFFER + 12_345]


def takes_direct_io(directory: Path) -> bool:
    probe = directory / "direct-probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


@pytest.mark.parametrize("io", ["direct", "buffered"])
def test_an_upload_writes_every_byte_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, io: str
) -> None:
    if io == "buffered":
        monkeypatch.setattr(local, "O_DIRECT", 0)  # as on a platform without it: through the page cache
    backend = LocalBackend(tmp_path / "store")
    for size in SIZES:
        data = os.urandom(size)
        upload = backend.upload()
        direct = upload._direct  # type: ignore[attr-defined]
        for start in range(0, size, 1_000_003):  # pieces that straddle the buffer's and the blocks' edges
            upload.write(data[start : start + 1_000_003])
        upload.commit(f"blobs/{size}")
        assert backend.read(f"blobs/{size}") == data, f"{size} bytes, direct={direct}"
    assert direct == (io == "direct" and takes_direct_io(tmp_path))
    assert list((tmp_path / "store" / "uploads").iterdir()) == []
