"""S3 store specifics, against moto: checksums on the wire, metadata, the
commit-by-copy protocol, overlap and memory bounds, bucket management."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server.objectstore import (
    FilesystemObjectStore,
    ObjectNotFound,
    ObjectStoreError,
    S3ObjectStore,
    create_object_store,
    open_object_store,
)
from server.settings import ObjectStoreSettings, S3Settings

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
CHUNK = 64 * 1024


async def stream(data: bytes, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
async def s3_store(s3_settings: S3Settings) -> AsyncIterator[S3ObjectStore]:
    store = S3ObjectStore(s3_settings)
    yield store
    await store.close()


class Recorder:
    """Records requests the store's boto3 client sends (in its worker threads)."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.sent: list[tuple[str, dict[str, str], bytes]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        events = store._client.meta.events
        events.register("before-send.s3", self._on_send)

    def _on_send(self, request: Any, **kwargs: Any) -> None:
        body = request.body
        if hasattr(body, "read"):  # a file-like wrapper: read it and rewind
            position = body.tell()
            data = body.read()
            body.seek(position)
            body = data
        body = bytes(body or b"")
        operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        with self.lock:
            self.sent.append((operation, dict(request.headers), body))
            self.threads.add(threading.get_ident())

    def of(self, operation: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for op, headers, body in self.sent if op == operation]


def header(headers: dict[str, Any], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    raise KeyError(name)


async def test_small_object_single_put_with_checksum_and_metadata(s3_store: S3ObjectStore, s3_client: Any) -> None:
    recorder = Recorder(s3_store)
    data = os.urandom(5 * MiB)  # exactly part_size: still one PutObject
    stored = await s3_store.put("one/shot", stream(data), content_type="image/png")
    puts = recorder.of("PutObject")
    assert len(puts) == 1
    assert recorder.of("CreateMultipartUpload") == []
    headers, body = puts[0]
    assert body == data
    assert header(headers, "x-amz-checksum-sha256") == b64sha(data)
    head = s3_client.head_object(Bucket=s3_store.bucket, Key="one/shot")
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert head["ContentType"] == "image/png"
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


async def test_multipart_parts_carry_sha256(s3_store: S3ObjectStore, s3_client: Any) -> None:
    recorder = Recorder(s3_store)
    data = os.urandom(12 * MiB)
    stored = await s3_store.put("multi/part", stream(data), content_type="video/mp4")
    parts = recorder.of("UploadPart")
    assert [len(body) for _, body in parts] == [5 * MiB, 5 * MiB, 2 * MiB]
    for headers, body in parts:
        assert header(headers, "x-amz-checksum-sha256") == b64sha(body)
    assert b"".join(body for _, body in parts) == data
    assert len(recorder.of("CompleteMultipartUpload")) == 1
    ((copy_headers, _),) = recorder.of("CopyObject")
    assert header(copy_headers, "x-amz-metadata-directive") == "REPLACE"
    assert header(copy_headers, "x-amz-meta-sha256") == stored.sha256
    head = s3_client.head_object(Bucket=s3_store.bucket, Key="multi/part")
    assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert head["ContentType"] == "video/mp4"
    assert s3_client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []


async def test_copy_checksum_is_verified(s3_store: S3ObjectStore, s3_client: Any) -> None:
    """The commit copy asks S3 for a full-object SHA-256 and compares it."""
    seen: list[str | None] = []

    def corrupt(parsed: dict[str, Any], **kwargs: Any) -> None:
        result = parsed.setdefault("CopyObjectResult", {})
        seen.append(result.get("ChecksumSHA256"))
        result["ChecksumSHA256"] = b64sha(b"something else")

    data = os.urandom(11 * MiB)
    s3_store._client.meta.events.register("after-call.s3.CopyObject", corrupt)
    with pytest.raises(ObjectStoreError, match="different SHA-256"):
        await s3_store.put("verified", stream(data))
    assert seen == [b64sha(data)]  # moto computes it, so the check really runs
    assert s3_client.list_objects_v2(Bucket=s3_store.bucket).get("Contents", []) == []


async def test_blocking_calls_stay_off_the_event_loop(s3_store: S3ObjectStore) -> None:
    recorder = Recorder(s3_store)
    await s3_store.put("t/a", stream(os.urandom(11 * MiB)))
    await s3_store.stat("t/a")
    assert len(b"".join([c async for c in s3_store.get("t/a", start=5, chunk_size=MiB)])) == 11 * MiB - 5
    assert [o.key async for o in s3_store.list("t/")] == ["t/a"]
    await s3_store.delete("t/a")
    await s3_store.ping()
    assert recorder.sent
    assert threading.get_ident() not in recorder.threads


async def test_reading_overlaps_part_upload(s3_store: S3ObjectStore) -> None:
    """Part 1 is still uploading while the data for part 2 is being received."""
    received_more = threading.Event()
    overlapped: list[bool] = []

    def slow_part(**kwargs: Any) -> None:
        if not overlapped:
            overlapped.append(received_more.wait(timeout=10))

    s3_store._client.meta.events.register("before-send.s3.UploadPart", slow_part)

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(11 * MiB // CHUNK):
            if index * CHUNK >= 7 * MiB:
                received_more.set()
            yield b"\3" * CHUNK

    await s3_store.put("overlap", chunks())
    assert overlapped == [True]


async def test_buffering_is_bounded(s3_store: S3ObjectStore) -> None:
    """The store never runs more than about two parts ahead of what S3 has acknowledged."""
    acknowledged = 0
    worst = 0
    lock = threading.Lock()

    def on_part_done(http_response: Any, parsed: Any, model: Any, **kwargs: Any) -> None:
        nonlocal acknowledged
        with lock:
            acknowledged += 5 * MiB

    s3_store._client.meta.events.register("after-call.s3.UploadPart", on_part_done)

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal worst
        produced = 0
        for _ in range(26 * MiB // CHUNK):
            await asyncio.sleep(0)
            produced += CHUNK
            with lock:
                worst = max(worst, produced - acknowledged)
            yield b"\4" * CHUNK

    await s3_store.put("bounded", chunks())
    assert worst <= 2 * 5 * MiB + 2 * CHUNK


async def test_uncommitted_object_is_invisible(s3_store: S3ObjectStore, s3_client: Any) -> None:
    """An object without the sha256 metadata (a multipart upload completed but
    not yet committed by the metadata copy) does not exist for the store."""
    s3_client.put_object(Bucket=s3_store.bucket, Key="half/done", Body=b"bytes")
    with pytest.raises(ObjectNotFound):
        await s3_store.stat("half/done")
    with pytest.raises(ObjectNotFound):
        await anext(s3_store.get("half/done"))
    assert [o.key async for o in s3_store.list("half/")] == []
    await s3_store.delete("half/done")
    assert s3_client.list_objects_v2(Bucket=s3_store.bucket).get("Contents", []) == []


async def test_foreign_keys_are_skipped_by_list(s3_store: S3ObjectStore, s3_client: Any) -> None:
    s3_client.put_object(Bucket=s3_store.bucket, Key="x/../y", Body=b"1", Metadata={"sha256": "0" * 64})
    s3_client.put_object(Bucket=s3_store.bucket, Key="x//y", Body=b"1", Metadata={"sha256": "0" * 64})
    await s3_store.put("x/ok", stream(b"fine"))
    assert [o.key async for o in s3_store.list("x/")] == ["x/ok"]


async def test_cancel_during_commit_rolls_back(s3_store: S3ObjectStore, s3_client: Any) -> None:
    in_copy = threading.Event()

    def slow_copy(**kwargs: Any) -> None:
        in_copy.set()
        time.sleep(0.3)

    s3_store._client.meta.events.register("before-send.s3.CopyObject", slow_copy)
    task = asyncio.create_task(s3_store.put("late", stream(os.urandom(6 * MiB))))
    assert await asyncio.to_thread(in_copy.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert s3_client.list_objects_v2(Bucket=s3_store.bucket).get("Contents", []) == []
    assert s3_client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []


async def test_presigned_url_shape(s3_store: S3ObjectStore, moto_endpoint: str) -> None:
    url = await s3_store.signed_url("a/b.pdf", expires_in=120, filename="b.pdf")
    assert url.startswith(f"{moto_endpoint}/{s3_store.bucket}/a/b.pdf?")
    assert "X-Amz-Expires=120" in url
    assert "response-content-disposition=attachment" in url
    with pytest.raises(ValueError):
        await s3_store.signed_url("a/b.pdf", expires_in=8 * 24 * 3600)


async def test_ensure_bucket_and_ping(s3_settings: S3Settings, s3_client: Any) -> None:
    settings = s3_settings.model_copy(update={"bucket": f"cw-new-{uuid.uuid4().hex[:12]}"})
    store = S3ObjectStore(settings)
    try:
        with pytest.raises(ObjectStoreError, match="does not exist") as info:
            await store.ping()
        assert not isinstance(info.value, ObjectNotFound)
        await store.ensure_bucket()
        await store.ensure_bucket()  # idempotent
        await store.ping()
        s3_client.head_bucket(Bucket=settings.bucket)
    finally:
        await store.close()


async def test_given_executor_is_not_shut_down(s3_settings: S3Settings) -> None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        store = S3ObjectStore(s3_settings, executor=executor)
        await store.put("e", stream(b"x"))
        await store.close()
        assert executor.submit(lambda: 42).result() == 42


async def test_factory(s3_settings: S3Settings, tmp_path: Path, s3_client: Any) -> None:
    fs = create_object_store(ObjectStoreSettings(), root=tmp_path / "objects", secret="x" * 32)
    assert isinstance(fs, FilesystemObjectStore)
    assert fs.root == (tmp_path / "objects").resolve()
    await fs.close()

    s3 = create_object_store(ObjectStoreSettings(kind="s3", s3=s3_settings), root=tmp_path, secret="x" * 32)
    assert isinstance(s3, S3ObjectStore)
    assert s3.bucket == s3_settings.bucket
    await s3.close()

    fresh = s3_settings.model_copy(update={"bucket": f"cw-open-{uuid.uuid4().hex[:12]}", "create_bucket": True})
    opened = await open_object_store(ObjectStoreSettings(kind="s3", s3=fresh), root=tmp_path, secret="x" * 32)
    try:
        s3_client.head_bucket(Bucket=fresh.bucket)
    finally:
        await opened.close()

    missing = s3_settings.model_copy(update={"bucket": f"cw-none-{uuid.uuid4().hex[:12]}"})
    with pytest.raises(ObjectStoreError):
        await open_object_store(ObjectStoreSettings(kind="s3", s3=missing), root=tmp_path, secret="x" * 32)
