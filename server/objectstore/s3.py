"""Object store on S3 or an S3-compatible service (MinIO, Ceph, moto...), via boto3.

Every blocking boto3 call runs in a thread pool, never on the event loop.

Uploads
    An object of at most ``part_size`` bytes goes up with one ``PutObject``.  A
    larger one streams as a multipart upload: each part is sent while the next
    one is being received, and at most about two parts are buffered.  Every
    request carries ``x-amz-checksum-sha256`` of its body, which S3 verifies
    (moto does not -- see the tests).  The SHA-256 of the whole object is
    computed on the way and stored as user metadata ``x-amz-meta-sha256``.

    S3 cannot attach metadata when a multipart upload *completes*, so after
    completing, the object is copied onto itself with the metadata
    (``CopyObject``, ``MetadataDirective=REPLACE``, ``If-Match`` the completed
    ETag).  That copy is the commit point: an object **without** the
    ``sha256`` metadata is treated as not (yet) stored -- ``stat``/``get``
    raise :class:`ObjectNotFound` and ``list`` skips it.  The copy also asks S3
    for a full-object SHA-256 and, when the service returns one, checks it
    against the locally computed digest.  Because ``CopyObject`` is limited to
    5 GiB, so are objects in this store (:data:`MAX_OBJECT_SIZE`).

    On any failure or cancellation the multipart upload is aborted, or the
    object written is deleted, so nothing remains (a failure while
    overwriting may leave the key empty).

Reads
    ``get`` issues one ranged ``GetObject`` and streams the body in
    ``chunk_size`` reads.  ``list`` pages through ``ListObjectsV2`` and, since
    listings carry neither metadata nor content type, issues one
    ``HeadObject`` per key (a few in parallel) -- fine for the short listings
    the server does, expensive for huge prefixes.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from server.objectstore import _aio
from server.objectstore.base import (
    DEFAULT_CHUNK_SIZE,
    ChecksumMismatch,
    ObjectNotFound,
    ObjectStoreError,
    ObjectTooLarge,
    StoredObject,
    check_max_size,
    check_range,
    content_disposition,
    normalize_sha256,
    validate_content_type,
    validate_filename,
    validate_key,
    validate_prefix,
)
from server.settings import S3Settings

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest object this store accepts (the ``CopyObject`` limit, see module docs).
MAX_OBJECT_SIZE = 5 * 1024**3
#: Longest lifetime of a SigV4 presigned URL.
MAX_SIGNED_URL_TTL = 7 * 24 * 3600
#: Metadata key (``x-amz-meta-sha256``) holding the object's lowercase hex SHA-256.
SHA256_METADATA = "sha256"
_DEFAULT_WORKERS = 16
_LIST_CONCURRENCY = 8
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


class S3ObjectStore:
    """:class:`~server.objectstore.base.ObjectStore` on one S3 bucket.

    ``settings.access_key_id``/``secret_access_key`` left unset fall back to
    boto3's usual credential chain.  Blocking calls run in ``executor``, or in
    a pool this store creates and shuts down in :meth:`close`.  Presigned URLs
    point at ``settings.endpoint_url``, which must therefore be reachable by
    whoever receives them.
    """

    def __init__(self, settings: S3Settings, *, executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.part_size = settings.part_size
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=_DEFAULT_WORKERS, thread_name_prefix="s3")
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=max(_DEFAULT_WORKERS, getattr(self._executor, "_max_workers", 0)),
            # We send our own SHA-256 checksums; do not add CRC32 ones (some
            # S3-compatible services reject them).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
            config=config,
        )
        self._background = _aio.Background()

    # -- public API ---------------------------------------------------------

    async def put(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredObject:
        """See :meth:`ObjectStore.put`.  Also :class:`ObjectTooLarge` beyond :data:`MAX_OBJECT_SIZE`."""
        validate_key(key)
        validate_content_type(content_type)
        check_max_size(max_size)
        expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None
        limit = MAX_OBJECT_SIZE if max_size is None else min(max_size, MAX_OBJECT_SIZE)

        upload = _Upload(self._client, self.bucket, key, content_type)
        inflight: asyncio.Future[Any] | None = None
        try:
            size = 0
            buffer = bytearray()
            async for chunk in data:
                size += len(chunk)
                if size > limit:
                    raise ObjectTooLarge(f"object exceeds the limit of {limit} bytes")
                buffer += chunk
                # Only once more than part_size bytes are known is the object multipart.
                while len(buffer) > self.part_size:
                    part = _take(buffer, self.part_size)
                    if upload.upload_id is None:
                        inflight = _aio.submit(self._executor, upload.start)
                        await asyncio.shield(inflight)
                    if inflight is not None:
                        await asyncio.shield(inflight)
                    inflight = _aio.submit(self._executor, upload.send_part, part)
                    await asyncio.sleep(0)  # let other tasks run even if `data` never blocks
            if upload.upload_id is None:
                inflight = _aio.submit(self._executor, upload.put_whole, bytes(buffer), expected)
            else:
                if inflight is not None:
                    await asyncio.shield(inflight)
                if buffer:
                    inflight = _aio.submit(self._executor, upload.send_part, bytes(buffer))
                    await asyncio.shield(inflight)
                inflight = _aio.submit(self._executor, upload.complete, expected)
            stored: StoredObject = await asyncio.shield(inflight)
            return stored
        except BaseException:
            await self._background.run_to_completion(self._abandon(upload, inflight))
            raise

    async def get(
        self,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """See :meth:`ObjectStore.get`.  Network errors after the first chunk
        surface as :class:`ObjectStoreError` mid-iteration."""
        validate_key(key)
        check_range(start, end, chunk_size)
        if end is not None and end == start:
            await self.stat(key)  # nothing to read, but a missing key is still an error
            return
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start > 0 or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await _aio.run_or_release(
                self._executor, lambda r: r["Body"].close(), self._client.get_object, **params
            )
        except ClientError as exc:
            if _status(exc) == 416 or _code(exc) == "InvalidRange":
                return  # the object exists but has no byte at `start`
            raise _translate(exc, "GetObject", key) from exc
        except BotoCoreError as exc:
            raise _translate(exc, "GetObject", key) from exc
        body: StreamingBody = response["Body"]
        reading: asyncio.Future[bytes] | None = None
        try:
            if SHA256_METADATA not in response.get("Metadata", {}):
                raise ObjectNotFound(f"no object {key!r} (upload not committed)")
            while True:
                reading = _aio.submit(self._executor, _read_body, body, chunk_size)
                chunk = await asyncio.shield(reading)
                reading = None
                if not chunk:
                    break
                yield chunk
        finally:
            if reading is not None and not reading.done():
                reading.add_done_callback(lambda _done: body.close())
            else:
                body.close()

    async def stat(self, key: str) -> StoredObject:
        """See :meth:`ObjectStore.stat` (one ``HeadObject``)."""
        validate_key(key)
        stored = await self._head(key)
        if stored is None:
            raise ObjectNotFound(f"no object {key!r}")
        return stored

    async def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`."""
        validate_key(key)
        await self._call("DeleteObject", key, self._client.delete_object, Bucket=self.bucket, Key=key)

    async def list(self, prefix: str) -> AsyncGenerator[StoredObject, None]:
        """See :meth:`ObjectStore.list`.  Keys that are not valid object keys
        (written by other tools) and uncommitted objects are skipped."""
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
        limiter = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def head(key: str) -> StoredObject | None:
            async with limiter:
                return await self._head(key)

        while True:
            page = await self._call("ListObjectsV2", prefix, next, pages, None)
            if page is None:
                return
            keys = [item["Key"] for item in page.get("Contents", []) if _is_valid_key(item.get("Key", ""))]
            for stored in await asyncio.gather(*(head(key) for key in keys)):
                if stored is not None:
                    yield stored

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A SigV4 presigned ``GetObject`` URL (absolute, on the configured
        endpoint); with ``filename`` it sets ``response-content-disposition``."""
        validate_key(key)
        if not 1 <= expires_in <= MAX_SIGNED_URL_TTL:
            raise ValueError(f"expires_in must be between 1 and {MAX_SIGNED_URL_TTL}")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(validate_filename(filename))
        url: str = await self._call(
            "presign",
            key,
            self._client.generate_presigned_url,
            "get_object",
            Params=params,
            ExpiresIn=expires_in,
        )
        return url

    async def ping(self) -> None:
        """``HeadBucket``; :class:`ObjectStoreError` if the bucket is unreachable or missing."""
        try:
            await self._call("HeadBucket", self.bucket, self._client.head_bucket, Bucket=self.bucket)
        except ObjectNotFound as exc:
            raise ObjectStoreError(f"bucket {self.bucket!r} does not exist") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (and is ours).  Safe to call concurrently."""
        try:
            await _aio.run(self._executor, self._client.head_bucket, Bucket=self.bucket)
            return
        except ClientError as exc:
            if _status(exc) != 404 and _code(exc) not in ("NoSuchBucket", "NotFound", "404"):
                raise _translate(exc, "HeadBucket", self.bucket) from exc
        except BotoCoreError as exc:
            raise _translate(exc, "HeadBucket", self.bucket) from exc
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.settings.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
        try:
            await _aio.run(self._executor, self._client.create_bucket, **params)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise _translate(exc, "CreateBucket", self.bucket) from exc
        except BotoCoreError as exc:
            raise _translate(exc, "CreateBucket", self.bucket) from exc

    async def close(self) -> None:
        """Finish background cleanups, close connections and (if owned) the thread pool."""
        await self._background.drain()
        self._client.close()
        if self._own_executor:
            await asyncio.to_thread(self._executor.shutdown, True)

    # -- helpers --------------------------------------------------------------

    async def _call(self, operation: str, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a boto3 call in the pool, translating its errors to :class:`ObjectStoreError`."""
        try:
            return await _aio.run(self._executor, fn, *args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, operation, key) from exc

    async def _head(self, key: str) -> StoredObject | None:
        """The object's metadata, or ``None`` if missing or uncommitted."""
        try:
            head = await _aio.run(self._executor, self._client.head_object, Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            error = _translate(exc, "HeadObject", key)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc
        sha256 = head.get("Metadata", {}).get(SHA256_METADATA)
        if sha256 is None:
            return None
        return StoredObject(
            key=key,
            size=head["ContentLength"],
            sha256=sha256,
            content_type=head.get("ContentType", "application/octet-stream"),
        )

    async def _abandon(self, upload: _Upload, inflight: asyncio.Future[Any] | None) -> None:
        """Undo a failed ``put`` once its in-flight request has finished."""
        await _aio.settle(inflight)
        try:
            await _aio.run(self._executor, upload.roll_back)
        except Exception:  # the caller re-raises the original error
            log.exception("could not clean up failed upload of %r", upload.key)


class _Upload:
    """State of one ``put``.  Methods block and are called one at a time, in order."""

    def __init__(self, client: S3Client, bucket: str, key: str, content_type: str) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.content_type = content_type
        self.upload_id: str | None = None
        self.parts: builtins.list[CompletedPartTypeDef] = []
        self.hasher = hashlib.sha256()
        self.size = 0
        #: An object written by this upload exists under the key (it must be
        #: deleted on roll-back).
        self.written = False

    def put_whole(self, body: bytes, expected: str | None) -> StoredObject:
        digest = hashlib.sha256(body).digest()
        stored = self._stored(len(body), digest.hex(), expected)
        self.written = True  # set first: a timeout may hide a successful write
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=body,
            ContentType=self.content_type,
            Metadata={SHA256_METADATA: stored.sha256},
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(digest),
        )
        return stored

    def start(self) -> None:
        response = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, ContentType=self.content_type, ChecksumAlgorithm="SHA256"
        )
        self.upload_id = response["UploadId"]

    def send_part(self, part: bytes) -> None:
        assert self.upload_id is not None
        self.hasher.update(part)
        self.size += len(part)
        checksum = _b64(hashlib.sha256(part).digest())
        number = len(self.parts) + 1
        response = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        echoed = response.get("ChecksumSHA256")
        if echoed is not None and echoed != checksum:
            raise ObjectStoreError(f"S3 stored part {number} of {self.key!r} with a different checksum")
        self.parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})

    def complete(self, expected: str | None) -> StoredObject:
        assert self.upload_id is not None
        digest = self.hasher.digest()
        stored = self._stored(self.size, digest.hex(), expected)
        self.written = True
        completed = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        self.upload_id = None
        copied = self.client.copy_object(
            Bucket=self.bucket,
            Key=self.key,
            CopySource={"Bucket": self.bucket, "Key": self.key},
            CopySourceIfMatch=completed["ETag"],
            MetadataDirective="REPLACE",
            Metadata={SHA256_METADATA: stored.sha256},
            ContentType=self.content_type,
            ChecksumAlgorithm="SHA256",
        )
        server_checksum = copied.get("CopyObjectResult", {}).get("ChecksumSHA256")
        if server_checksum is not None and "-" not in server_checksum and server_checksum != _b64(digest):
            raise ObjectStoreError(f"S3 computed a different SHA-256 for {self.key!r}")
        return stored

    def roll_back(self) -> None:
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    raise
            self.upload_id = None
        if self.written:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def _stored(self, size: int, sha256: str, expected: str | None) -> StoredObject:
        if expected is not None and sha256 != expected:
            raise ChecksumMismatch(f"sha256 of the data is {sha256}, expected {expected}")
        return StoredObject(key=self.key, size=size, sha256=sha256, content_type=self.content_type)


def _take(buffer: bytearray, count: int) -> bytes:
    """Remove and return the first ``count`` bytes of ``buffer`` (one copy)."""
    with memoryview(buffer) as view:
        head = bytes(view[:count])
    del buffer[:count]
    return head


def _read_body(body: StreamingBody, size: int) -> bytes:
    try:
        data: bytes = body.read(size)
    except (BotoCoreError, OSError, urllib3.exceptions.HTTPError) as exc:
        raise ObjectStoreError(f"reading from S3 failed: {exc}") from exc
    return data


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _translate(exc: ClientError | BotoCoreError, operation: str, key: str) -> ObjectStoreError:
    if isinstance(exc, ClientError) and (_code(exc) in _NOT_FOUND_CODES or _status(exc) == 404):
        return ObjectNotFound(f"{operation} {key!r}: {_code(exc) or 'not found'}")
    return ObjectStoreError(f"S3 {operation} {key!r} failed: {exc}")


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except ObjectStoreError:
        return False
    return True
