"""The ObjectStore contract: every scenario runs against the filesystem and the S3 store."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from server.objectstore import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    S3ObjectStore,
    StoredObject,
)

MiB = 1024 * 1024
RawStateFn = Callable[[ObjectStore], Awaitable[Any]]


async def stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]
        await asyncio.sleep(0)


async def failing_stream(data: bytes, fail_after: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    async for piece in stream(data, chunk):
        if sent >= fail_after:
            raise RuntimeError("client went away")
        sent += len(piece)
        yield piece


async def read_all(store: ObjectStore, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, **kwargs)])


async def listed(store: ObjectStore, prefix: str = "") -> list[str]:
    return [item.key async for item in store.list(prefix)]


async def assert_nothing_stored(store: ObjectStore, raw_state: RawStateFn, key: str) -> None:
    with pytest.raises(ObjectNotFound):
        await store.stat(key)
    assert await listed(store) == []
    state = await raw_state(store)
    assert state.objects == []
    assert state.pending == []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_put_stat_get_roundtrip(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    stored = await store.put("docs/a/file.bin", stream(data), content_type="application/pdf")
    assert stored == StoredObject("docs/a/file.bin", len(data), sha(data), "application/pdf")
    assert await store.stat("docs/a/file.bin") == stored
    assert await read_all(store, "docs/a/file.bin") == data


async def test_empty_object(store: ObjectStore) -> None:
    stored = await store.put("empty", stream(b""))
    assert stored == StoredObject("empty", 0, sha(b""), "application/octet-stream")
    assert await store.stat("empty") == stored
    assert await read_all(store, "empty") == b""
    assert await read_all(store, "empty", start=0, end=10) == b""


async def test_overwrite_replaces_object(store: ObjectStore) -> None:
    await store.put("k", stream(b"first version"), content_type="text/plain")
    stored = await store.put("k", stream(b"second"), content_type="image/png")
    assert stored.size == 6
    assert await store.stat("k") == stored
    assert await read_all(store, "k") == b"second"


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, None), (10, None), (0, 10), (10, 20), (990, 1100), (999, None), (1000, None), (5000, None), (7, 7)],
)
async def test_get_ranges(store: ObjectStore, start: int, end: int | None) -> None:
    data = os.urandom(1000)
    await store.put("r", stream(data, chunk=333))
    assert await read_all(store, "r", start=start, end=end) == data[start:end]


async def test_get_respects_chunk_size(store: ObjectStore) -> None:
    data = os.urandom(1000)
    await store.put("c", stream(data))
    chunks = [chunk async for chunk in store.get("c", start=3, chunk_size=64)]
    assert b"".join(chunks) == data[3:]
    assert all(0 < len(chunk) <= 64 for chunk in chunks)


@pytest.mark.parametrize(("start", "end", "chunk_size"), [(-1, None, 10), (5, 4, 10), (0, None, 0)])
async def test_get_rejects_bad_arguments(store: ObjectStore, start: int, end: int | None, chunk_size: int) -> None:
    await store.put("x", stream(b"abcdef"))
    with pytest.raises(ValueError):
        await anext(store.get("x", start=start, end=end, chunk_size=chunk_size))


async def test_multipart_sized_object(store: ObjectStore) -> None:
    # 12 MiB with 5 MiB parts on S3: three parts.  Odd chunking on purpose.
    data = os.urandom(12 * MiB + 12345)
    stored = await store.put("big/object", stream(data, chunk=100_003), content_type="video/mp4")
    assert stored.size == len(data)
    assert stored.sha256 == sha(data)
    assert await store.stat("big/object") == stored
    assert await read_all(store, "big/object", chunk_size=MiB) == data
    boundary = 5 * MiB
    assert (
        await read_all(store, "big/object", start=boundary - 10, end=boundary + 10)
        == data[boundary - 10 : boundary + 10]
    )


@pytest.mark.parametrize("size", [5 * MiB, 5 * MiB + 1])
async def test_object_at_part_size_boundary(store: ObjectStore, size: int) -> None:
    data = os.urandom(size)
    stored = await store.put("edge", stream(data, chunk=MiB))
    assert (stored.size, stored.sha256) == (size, sha(data))
    assert await read_all(store, "edge", chunk_size=MiB) == data


async def test_max_size_equal_is_accepted(store: ObjectStore) -> None:
    stored = await store.put("m", stream(b"x" * 1000), max_size=1000)
    assert stored.size == 1000


@pytest.mark.parametrize(("size", "max_size"), [(5000, 4999), (12 * MiB, 7 * MiB)])
async def test_max_size_exceeded_leaves_nothing(
    store: ObjectStore, raw_state: RawStateFn, size: int, max_size: int
) -> None:
    with pytest.raises(ObjectTooLarge):
        await store.put("too/large", stream(os.urandom(size)), max_size=max_size)
    await assert_nothing_stored(store, raw_state, "too/large")


async def test_max_size_stops_reading_early(store: ObjectStore) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1000
            yield b"\0" * 1000

    with pytest.raises(ObjectTooLarge):
        await store.put("endless", endless(), max_size=10_000)
    assert consumed == 11_000


@pytest.mark.parametrize("size", [4000, 12 * MiB])
async def test_checksum_mismatch_leaves_nothing(store: ObjectStore, raw_state: RawStateFn, size: int) -> None:
    data = os.urandom(size)
    with pytest.raises(ChecksumMismatch):
        await store.put("checked", stream(data), expected_sha256=sha(b"something else"))
    await assert_nothing_stored(store, raw_state, "checked")


async def test_expected_checksum_accepted_in_any_case(store: ObjectStore) -> None:
    data = b"verified content"
    stored = await store.put("ok", stream(data), expected_sha256=sha(data).upper())
    assert stored.sha256 == sha(data)


async def test_malformed_arguments_rejected(store: ObjectStore, raw_state: RawStateFn) -> None:
    with pytest.raises(ValueError):
        await store.put("k", stream(b"x"), expected_sha256="abc")
    with pytest.raises(ValueError):
        await store.put("k", stream(b"x"), content_type="text/html\r\nX-Injected: 1")
    with pytest.raises(ValueError):
        await store.put("k", stream(b"x"), max_size=-1)
    await assert_nothing_stored(store, raw_state, "k")


@pytest.mark.parametrize(("size", "fail_after"), [(200_000, 100_000), (12 * MiB, 11 * MiB)])
async def test_failing_data_iterator_leaves_nothing(
    store: ObjectStore, raw_state: RawStateFn, size: int, fail_after: int
) -> None:
    with pytest.raises(RuntimeError, match="client went away"):
        await store.put("broken", failing_stream(os.urandom(size), fail_after))
    await assert_nothing_stored(store, raw_state, "broken")


@pytest.mark.parametrize("sent_before_cancel", [100_000, 7 * MiB, 11 * MiB])
async def test_cancelled_put_leaves_nothing(store: ObjectStore, raw_state: RawStateFn, sent_before_cancel: int) -> None:
    stalled = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        sent = 0
        while sent < sent_before_cancel:
            yield b"\1" * 65536
            sent += 65536
        stalled.set()
        await asyncio.Event().wait()  # the client stops sending
        yield b""  # pragma: no cover

    task = asyncio.create_task(store.put("cancelled", stalling()))
    await asyncio.wait_for(stalled.wait(), timeout=30)
    await asyncio.sleep(0.05)  # let an in-flight write or part upload get going
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_nothing_stored(store, raw_state, "cancelled")


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.delete("never/existed")
    await store.put("d/x", stream(b"data"))
    await store.delete("d/x")
    with pytest.raises(ObjectNotFound):
        await store.stat("d/x")
    await store.delete("d/x")
    assert await listed(store) == []


async def test_list_by_prefix_sorted(store: ObjectStore) -> None:
    keys = ["b/2", "a/1", "a-b", "a/0/x", "a0", "ab/c", "c", "a/1x", "A"]
    for key in keys:
        await store.put(key, stream(key.encode()), content_type="text/plain")
    assert await listed(store) == sorted(keys)
    assert await listed(store, "a") == ["a-b", "a/0/x", "a/1", "a/1x", "a0", "ab/c"]
    assert await listed(store, "a/") == ["a/0/x", "a/1", "a/1x"]
    assert await listed(store, "a/1") == ["a/1", "a/1x"]
    assert await listed(store, "a/0/x") == ["a/0/x"]
    assert await listed(store, "zzz") == []
    assert await listed(store, "zzz/") == []
    items = [item async for item in store.list("b/")]
    assert items == [StoredObject("b/2", 3, sha(b"b/2"), "text/plain")]


@pytest.mark.parametrize("prefix", ["../", "/a", "a//", "a/../", "a\\b", "é", "%2e"])
async def test_list_rejects_impossible_prefix(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await anext(store.list(prefix))


async def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.stat("missing/key")
    iterator = store.get("missing/key")
    with pytest.raises(ObjectNotFound):
        await anext(iterator)  # raised by the first __anext__, before any data
    with pytest.raises(ObjectNotFound):
        await anext(store.get("missing/key", start=3, end=3))


@pytest.mark.parametrize("key", ["", "../x", "a//b", "/abs", "a/./b", "a\\b", "a\x00b", "ｘ", "a b"])
async def test_invalid_keys_rejected_everywhere(store: ObjectStore, raw_state: RawStateFn, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, stream(b"x"))
    with pytest.raises(InvalidKey):
        await anext(store.get(key))
    with pytest.raises(InvalidKey):
        await store.stat(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        await store.signed_url(key, expires_in=60)
    state = await raw_state(store)
    assert (state.objects, state.pending) == ([], [])


async def test_concurrent_puts(store: ObjectStore) -> None:
    blobs = {f"c/{i}": os.urandom(50_000 + i) for i in range(8)}
    results = await asyncio.gather(*(store.put(k, stream(v, chunk=7000)) for k, v in blobs.items()))
    assert [r.sha256 for r in results] == [sha(v) for v in blobs.values()]
    for key, value in blobs.items():
        assert await read_all(store, key) == value


async def test_ping(store: ObjectStore) -> None:
    await store.ping()


async def test_signed_url_serves_object(store: ObjectStore, fetch: Any) -> None:
    data = os.urandom(100_000)
    await store.put("signed/doc.pdf", stream(data), content_type="application/pdf")
    url = await store.signed_url("signed/doc.pdf", expires_in=300)
    full = await fetch(url)
    assert full.status == 200
    assert full.body == data

    ranged = await fetch(url, {"Range": "bytes=10-19"})
    assert ranged.status == 206
    assert ranged.body == data[10:20]
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(data)}"

    suffix = await fetch(url, {"Range": "bytes=-7"})
    assert (suffix.status, suffix.body) == (206, data[-7:])


async def test_signed_url_with_filename(store: ObjectStore, fetch: Any) -> None:
    await store.put("signed/report", stream(b"%PDF-1.7 ..."), content_type="application/pdf")
    url = await store.signed_url("signed/report", expires_in=300, filename="报告 2026.pdf")
    response = await fetch(url)
    assert response.status == 200
    assert response.body == b"%PDF-1.7 ..."
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf" in disposition


async def test_signed_url_for_missing_object_is_404(store: ObjectStore, fetch: Any) -> None:
    url = await store.signed_url("not/there", expires_in=300)
    assert (await fetch(url)).status == 404


async def test_signed_url_rejects_bad_arguments(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        await store.signed_url("k", expires_in=0)
    with pytest.raises(ValueError):
        await store.signed_url("k", expires_in=60, filename="evil\r\nSet-Cookie: x=1")


async def test_store_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    if isinstance(store, S3ObjectStore):
        assert store.part_size == 5 * MiB  # the contract's multipart cases depend on it
