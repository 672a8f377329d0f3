"""Filesystem store specifics: traversal and symlink defences, on-disk layout,
batching, crash leftovers and the cancellation paths."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.objectstore import (
    FilesystemObjectStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStoreError,
    UnsafePath,
    UrlSigner,
)
from server.objectstore import filesystem as fs_module

MiB = 1024 * 1024


async def stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]


def snapshot(folder: Path, exclude: Path) -> dict[str, bytes]:
    """Every file under ``folder`` except those under ``exclude``."""
    found = {}
    for path in folder.rglob("*"):
        if exclude in path.parents or path == exclude or path.is_symlink() or path.is_dir():
            continue
        found[str(path.relative_to(folder))] = path.read_bytes()
    return found


TRAVERSAL_KEYS = [
    "../x",
    "../../x",
    "a/../../x",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a\\b",
    "..\\..\\x",
    "a\x00b",
    "．．/x",
    "\u2024\u2024/x",
    "%2e%2e/x",
    "..%2fx",
    "a/\u202egnp.exe",
    "",
    "k" * 513,
]


@pytest.fixture
def sandbox(tmp_path: Path, signer: UrlSigner) -> tuple[FilesystemObjectStore, Path]:
    """A store at ``tmp_path/inside/store`` with a decoy file outside it."""
    outside = tmp_path
    (outside / "x").write_bytes(b"outside, must not change")
    (outside / "inside").mkdir()
    return FilesystemObjectStore(outside / "inside" / "store", signer), outside


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
async def test_traversal_keys_rejected(sandbox: tuple[FilesystemObjectStore, Path], key: str) -> None:
    store, outside = sandbox
    before = snapshot(outside, store.root)
    with pytest.raises(InvalidKey):
        await store.put(key, stream(b"payload"))
    with pytest.raises(InvalidKey):
        await anext(store.get(key))
    with pytest.raises(InvalidKey):
        await store.stat(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert snapshot(outside, store.root) == before
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


async def test_symlinked_folder_inside_root_is_refused(sandbox: tuple[FilesystemObjectStore, Path]) -> None:
    store, outside = sandbox
    target = outside / "target"
    target.mkdir()
    (target / "secret").write_bytes(b"top secret")
    (store.root / "objects" / "evil").symlink_to(target, target_is_directory=True)
    before = snapshot(outside, store.root)

    with pytest.raises(UnsafePath):
        await store.put("evil/new", stream(b"payload"))
    with pytest.raises(UnsafePath):
        await store.put("evil/secret", stream(b"overwrite attempt"))
    with pytest.raises(UnsafePath):
        await anext(store.get("evil/secret"))
    with pytest.raises(UnsafePath):
        await store.stat("evil/secret")
    with pytest.raises(UnsafePath):
        await store.delete("evil/secret")
    with pytest.raises(UnsafePath):
        await anext(store.list("evil/"))
    assert [item.key async for item in store.list("")] == []  # links are skipped

    assert snapshot(outside, store.root) == before
    assert not (target / "new").exists()
    assert list((store.root / ".tmp").iterdir()) == []


async def test_symlinked_object_is_refused(sandbox: tuple[FilesystemObjectStore, Path]) -> None:
    store, outside = sandbox
    await store.put("real", stream(b"a real object"))
    (store.root / "objects" / "to-outside").symlink_to(outside / "x")
    (store.root / "objects" / "to-inside").symlink_to(store.root / "objects" / "real")
    before = snapshot(outside, store.root)

    for key in ("to-outside", "to-inside"):
        with pytest.raises(UnsafePath):
            await anext(store.get(key))
        with pytest.raises(UnsafePath):
            await store.stat(key)
        with pytest.raises(UnsafePath):
            await store.delete(key)
    with pytest.raises(UnsafePath):
        await store.put("to-outside", stream(b"overwrite attempt"))
    assert [item.key async for item in store.list("")] == ["real"]
    assert snapshot(outside, store.root) == before
    assert (store.root / "objects" / "to-outside").is_symlink()


def test_symlink_errors_are_object_store_errors() -> None:
    assert issubclass(UnsafePath, ObjectStoreError)


async def test_root_itself_may_be_a_symlink(tmp_path: Path, signer: UrlSigner) -> None:
    (tmp_path / "real-root").mkdir()
    (tmp_path / "link-root").symlink_to(tmp_path / "real-root")
    store = FilesystemObjectStore(tmp_path / "link-root", signer)
    await store.put("a/b", stream(b"ok"))
    assert (tmp_path / "real-root" / "objects" / "a" / "b").is_file()
    assert store.root == tmp_path / "real-root"


async def test_on_disk_layout(fs_store: FilesystemObjectStore) -> None:
    data = b"hello world"
    stored = await fs_store.put("a/b/c.txt", stream(data), content_type="text/plain")
    raw = (fs_store.root / "objects" / "a" / "b" / "c.txt").read_bytes()
    assert len(raw) == fs_module.HEADER_SIZE + len(data)
    assert raw.startswith(b"CWOBJ1\n")
    assert hashlib.sha256(data).hexdigest().encode() in raw[: fs_module.HEADER_SIZE]
    assert raw[fs_module.HEADER_SIZE :] == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert list((fs_store.root / ".tmp").iterdir()) == []


async def test_list_ignores_temp_and_foreign_files(fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("a", stream(b"1"))
    (fs_store.root / ".tmp" / "put-stale.part").write_bytes(b"partial")
    (fs_store.root / "objects" / "bad name").write_bytes(b"not an object key")
    (fs_store.root / "objects" / "garbage").write_bytes(b"no header")
    assert [item.key async for item in fs_store.list("")] == ["a"]
    with pytest.raises(ObjectStoreError):
        await fs_store.stat("garbage")


async def test_truncated_object_detected(fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("t", stream(b"0123456789"))
    path = fs_store.root / "objects" / "t"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ObjectStoreError):
        await fs_store.stat("t")
    assert [item.key async for item in fs_store.list("")] == []


async def test_object_and_folder_cannot_share_a_name(fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("a", stream(b"object"))
    with pytest.raises(ObjectStoreError):
        await fs_store.put("a/b", stream(b"nested"))
    await fs_store.put("x/y", stream(b"nested"))
    with pytest.raises(ObjectStoreError):
        await fs_store.put("x", stream(b"object"))
    with pytest.raises(ObjectNotFound):
        await fs_store.stat("x")  # a folder is not an object
    with pytest.raises(ObjectNotFound):
        await fs_store.stat("a/b")
    await fs_store.delete("x")  # deleting a folder name is a no-op
    assert [item.key async for item in fs_store.list("")] == ["a", "x/y"]
    assert list((fs_store.root / ".tmp").iterdir()) == []


async def test_delete_prunes_empty_folders(fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("p/q/r/one", stream(b"1"))
    await fs_store.put("p/two", stream(b"2"))
    await fs_store.delete("p/q/r/one")
    assert not (fs_store.root / "objects" / "p" / "q").exists()
    assert (fs_store.root / "objects" / "p" / "two").exists()
    await fs_store.delete("p/two")
    assert list((fs_store.root / "objects").iterdir()) == []


async def test_writes_are_batched(fs_store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    original = fs_module._TempObject.write

    def recording(self: fs_module._TempObject, block: bytearray) -> None:
        sizes.append(len(block))
        original(self, block)

    monkeypatch.setattr(fs_module._TempObject, "write", recording)
    data = os.urandom(5 * MiB + 1000)
    await fs_store.put("batched", stream(data, chunk=64 * 1024))
    assert sum(sizes) == len(data)
    assert all(size >= fs_module.WRITE_BATCH for size in sizes[:-1])
    assert len(sizes) <= 6


async def test_reading_overlaps_writing(fs_store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one batch is being written, the next one is already being received."""
    received_more = threading.Event()
    overlapped: list[bool] = []
    original = fs_module._TempObject.write

    def slow_first_write(self: fs_module._TempObject, block: bytearray) -> None:
        if not overlapped:
            overlapped.append(received_more.wait(timeout=5))
        original(self, block)

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(40):  # 2.5 MiB
            if index == 20:  # well after the first 1 MiB batch was handed off
                received_more.set()
            yield b"\2" * 65536

    monkeypatch.setattr(fs_module._TempObject, "write", slow_first_write)
    await fs_store.put("overlap", chunks())
    assert overlapped == [True]


async def test_get_keeps_reading_the_version_it_opened(fs_store: FilesystemObjectStore) -> None:
    old = os.urandom(100_000)
    await fs_store.put("v", stream(old))
    iterator = fs_store.get("v", chunk_size=10_000)
    first = await anext(iterator)
    await fs_store.put("v", stream(b"new content"))
    rest = b"".join([chunk async for chunk in iterator])
    assert first + rest == old
    await fs_store.delete("v")


async def test_abandoned_get_closes_its_file(fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("f", stream(os.urandom(100_000)))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        iterator = fs_store.get("f", chunk_size=1000)
        await anext(iterator)
        await iterator.aclose()
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_cancel_during_commit_rolls_back(
    fs_store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the commit thread is running: the commit completes in
    its thread, then the object is removed again -- nothing stays visible."""
    in_commit = threading.Event()
    original = FilesystemObjectStore._commit

    def slow_commit(self: FilesystemObjectStore, upload: fs_module._TempObject, stored: object) -> None:
        in_commit.set()
        time.sleep(0.3)
        original(self, upload, stored)  # type: ignore[arg-type]

    monkeypatch.setattr(FilesystemObjectStore, "_commit", slow_commit)
    task = asyncio.create_task(fs_store.put("late", stream(b"content")))
    assert await asyncio.to_thread(in_commit.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ObjectNotFound):
        await fs_store.stat("late")
    assert list((fs_store.root / ".tmp").iterdir()) == []
    assert list((fs_store.root / "objects").iterdir()) == []


async def test_cleanup_stale_uploads(fs_store: FilesystemObjectStore) -> None:
    tmp = fs_store.root / ".tmp"
    (tmp / "put-old.part").write_bytes(b"old")
    (tmp / "put-new.part").write_bytes(b"new")
    old = time.time() - 2 * 24 * 3600
    os.utime(tmp / "put-old.part", (old, old))
    assert await fs_store.cleanup_stale_uploads() == 1
    assert [p.name for p in tmp.iterdir()] == ["put-new.part"]


async def test_ping_fails_when_folder_missing(fs_store: FilesystemObjectStore) -> None:
    await fs_store.ping()
    (fs_store.root / ".tmp").rmdir()
    with pytest.raises(ObjectStoreError):
        await fs_store.ping()


async def test_signed_url_format(fs_store: FilesystemObjectStore, signer: UrlSigner) -> None:
    url = await fs_store.signed_url("a/b.pdf", expires_in=300, filename="x y&z.pdf")
    expires = int(signer.now()) + 300
    sig = signer.sign("a/b.pdf", expires, "x y&z.pdf")
    assert url == f"/api/v1/objects/a/b.pdf?expires={expires}&sig={sig}&filename=x%20y%26z.pdf"
    assert await fs_store.signed_url("k", expires_in=5) == f"/api/v1/objects/k?expires={expires - 295}&sig=" + (
        signer.sign("k", expires - 295, None)
    )


def test_url_prefix_must_be_absolute(tmp_path: Path, signer: UrlSigner) -> None:
    with pytest.raises(ValueError):
        FilesystemObjectStore(tmp_path, signer, url_prefix="objects")
