"""Object store on a local (POSIX) filesystem.

Layout under the configured root::

    objects/<key>     one file per object: a 4 KiB header, then the bytes
    .tmp/*.part       uploads in progress (same filesystem, so renames are atomic)

The header (``CWOBJ1\\n`` + JSON ``{"size", "sha256", "content_type"}``, padded
with spaces to 4096 bytes) travels with the bytes in the same file, so one
``rename`` publishes data and metadata together: there is no sidecar that
could disagree with its object after a crash.  Object files are not usable
as-is by other tools; :meth:`FilesystemObjectStore.get` strips the header.

Paths are opened one component at a time relative to the parent directory's
file descriptor with ``O_NOFOLLOW``, and the fully resolved path is checked to
stay under the root, so a symbolic link planted inside the store is refused
(:class:`UnsafePath`) rather than followed -- on top of :func:`validate_key`.

A key cannot be both an object and a "folder" of other objects (``a`` and
``a/b``): the second ``put`` raises :class:`ObjectStoreError`.  S3 allows
this; the server's key scheme never needs it.

Blocking calls run in the event loop's default executor.  Uploads are written
in batches of about 1 MiB (hashing happens in the same thread, where hashlib
releases the GIL), and the next batch is received while the previous one is
being written.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

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
    normalize_sha256,
    validate_content_type,
    validate_filename,
    validate_key,
    validate_prefix,
)
from server.objectstore.signing import UrlSigner

log = logging.getLogger(__name__)

HEADER_SIZE = 4096
_MAGIC = b"CWOBJ1\n"
#: Incoming chunks are collected to at least this many bytes per write.
WRITE_BATCH = 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_COMMIT_ATTEMPTS = 3


class UnsafePath(ObjectStoreError):
    """A path inside the store is a symbolic link or resolves outside the root; refused."""


class FilesystemObjectStore:
    """:class:`~server.objectstore.base.ObjectStore` on a local directory.

    ``root`` is created if missing (the constructor does that synchronously)
    and resolved once, so the root itself may be a symlink; links *inside* it
    are refused.  Several processes may share one root.  ``signer`` signs the
    URLs :meth:`signed_url` returns; :func:`server.objectstore.http.object_routes`
    serves them under ``url_prefix``.
    """

    def __init__(self, root: Path, signer: UrlSigner, url_prefix: str = "/api/v1/objects") -> None:
        if not url_prefix.startswith("/"):
            raise ValueError("url_prefix must start with '/'")
        self.root = Path(os.path.realpath(root))
        self.signer = signer
        self.url_prefix = url_prefix.rstrip("/")
        self._objects = str(self.root / "objects")
        self._tmp = str(self.root / ".tmp")
        for folder in (self.root, Path(self._objects), Path(self._tmp)):
            folder.mkdir(parents=True, exist_ok=True)
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
        """See :meth:`ObjectStore.put`.  The object is durable (file and
        directory fsynced) when this returns."""
        validate_key(key)
        validate_content_type(content_type)
        check_max_size(max_size)
        expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None

        upload = await _aio.run_or_release(None, _TempObject.discard, _TempObject, self._tmp)
        inflight: asyncio.Future[None] | None = None
        try:
            size = 0
            buffer = bytearray()
            async for chunk in data:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise ObjectTooLarge(f"object exceeds the limit of {max_size} bytes")
                buffer += chunk
                if len(buffer) >= WRITE_BATCH:
                    if inflight is not None:
                        await asyncio.shield(inflight)
                    inflight = _aio.submit(None, upload.write, buffer)
                    buffer = bytearray()
                    # A producer that never blocks (data already buffered) must
                    # not monopolise the loop: yield once per batch.
                    await asyncio.sleep(0)
            if inflight is not None:
                await asyncio.shield(inflight)
            if buffer:
                inflight = _aio.submit(None, upload.write, buffer)
                await asyncio.shield(inflight)
            digest = upload.hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ChecksumMismatch(f"sha256 of the data is {digest}, expected {expected}")
            stored = StoredObject(key=key, size=size, sha256=digest, content_type=content_type)
            inflight = _aio.submit(None, self._commit, upload, stored)
            await asyncio.shield(inflight)
            return stored
        except BaseException:
            await self._background.run_to_completion(self._abandon(upload, inflight, key))
            raise

    async def get(
        self,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """See :meth:`ObjectStore.get`.  The file is opened once on the first
        ``__anext__``, so a concurrent overwrite or delete does not affect an
        iteration already started."""
        validate_key(key)
        check_range(start, end, chunk_size)
        fd, stored = await _aio.run_or_release(None, _close_first, self._open_object, key)
        stop = stored.size if end is None else min(end, stored.size)
        position = start
        reading: asyncio.Future[bytes] | None = None
        try:
            while position < stop:
                want = min(chunk_size, stop - position)
                reading = _aio.submit(None, os.pread, fd, want, HEADER_SIZE + position)
                chunk = await asyncio.shield(reading)
                reading = None
                if not chunk:
                    raise ObjectStoreError(f"object file for {key!r} is truncated")
                position += len(chunk)
                yield chunk
        finally:
            if reading is not None and not reading.done():
                reading.add_done_callback(lambda _done: os.close(fd))
            else:
                os.close(fd)

    async def stat(self, key: str) -> StoredObject:
        """See :meth:`ObjectStore.stat`."""
        validate_key(key)
        return await _aio.run(None, self._stat, key)

    async def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`.  Also removes parent folders left empty."""
        validate_key(key)
        await _aio.run(None, self._delete, key)

    async def list(self, prefix: str) -> AsyncGenerator[StoredObject, None]:
        """See :meth:`ObjectStore.list`.  Reads one directory at a time, so
        memory is bounded by the largest directory, not the whole listing.
        Symbolic links, in-progress uploads and unreadable files are skipped."""
        validate_prefix(prefix)
        *folders, name_prefix = prefix.split("/")
        try:
            fds = await _aio.run_or_release(None, _close_all, self._walk, folders, create=False)
        except ObjectNotFound:
            return
        _close_all(fds[:-1])
        base = "".join(f"{folder}/" for folder in folders)
        # Open folders, deepest last: (fd, key prefix, remaining entries).
        stack: builtins.list[tuple[int, str, Iterator[tuple[str, StoredObject | None]]]] = []
        scanning: asyncio.Future[builtins.list[tuple[str, StoredObject | None]]] | None = None
        try:
            stack.append((fds[-1], base, iter(())))
            scanning = _aio.submit(None, self._scan, fds[-1], base, name_prefix)
            stack[-1] = (fds[-1], base, iter(await asyncio.shield(scanning)))
            while stack:
                dir_fd, dir_key, items = stack[-1]
                item = next(items, None)
                if item is None:
                    stack.pop()
                    os.close(dir_fd)
                    continue
                sort_name, stored = item
                if stored is not None:
                    yield stored
                    continue
                name = sort_name[:-1]
                try:
                    sub = await _aio.run_or_release(None, os.close, self._open_dir, dir_fd, name, False)
                except (ObjectNotFound, UnsafePath):
                    continue  # removed or replaced since the scan
                sub_key = f"{dir_key}{name}/"
                stack.append((sub, sub_key, iter(())))
                scanning = _aio.submit(None, self._scan, sub, sub_key, "")
                stack[-1] = (sub, sub_key, iter(await asyncio.shield(scanning)))
        finally:
            open_fds = [entry[0] for entry in stack]
            if scanning is not None and not scanning.done():
                # A scan thread still uses the deepest fd: close once it is done.
                scanning.add_done_callback(lambda _done: _close_all(open_fds))
            else:
                _close_all(open_fds)

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A relative URL ``{url_prefix}/{key}?expires=<unix>&sig=<sig>[&filename=<name>]``,
        verified and served by :func:`server.objectstore.http.object_routes`."""
        validate_key(key)
        if expires_in < 1:
            raise ValueError("expires_in must be >= 1")
        if filename is not None:
            validate_filename(filename)
        expires_at = int(self.signer.now()) + expires_in
        query = [("expires", str(expires_at)), ("sig", self.signer.sign(key, expires_at, filename))]
        if filename is not None:
            query.append(("filename", filename))
        return f"{self.url_prefix}/{key}?{urlencode(query, quote_via=quote)}"

    async def ping(self) -> None:
        """Raise :class:`ObjectStoreError` unless the object and temp folders are writable."""
        await _aio.run(None, self._ping)

    async def close(self) -> None:
        """Wait for cleanup of cancelled uploads still running in the background."""
        await self._background.drain()

    async def cleanup_stale_uploads(self, older_than: float = 24 * 3600) -> int:
        """Delete temp files of uploads abandoned by a crashed process.

        Only files not modified for ``older_than`` seconds are removed, so
        uploads in progress in other processes sharing the root are safe.
        Returns how many files were removed.
        """
        return await _aio.run(None, self._cleanup_tmp, older_than)

    # -- blocking helpers (run in threads) ----------------------------------

    def _check_inside(self, key: str) -> None:
        """Defence in depth: the fully resolved path must stay under ``objects/``."""
        resolved = os.path.realpath(os.path.join(self._objects, key))
        if not resolved.startswith(self._objects + os.sep):
            raise UnsafePath(f"object key {key!r} resolves outside the store")

    def _open_dir(self, parent: int, name: str, create: bool) -> int:
        """Open ``name`` in ``parent`` as a directory without following links.

        Missing: :class:`ObjectNotFound`, or created when ``create``.  A
        regular file in the way: :class:`ObjectNotFound` (read) or
        :class:`ObjectStoreError` (create).  A symlink: :class:`UnsafePath`.
        """
        for _attempt in range(_COMMIT_ATTEMPTS):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise ObjectNotFound(name) from None
                try:
                    os.mkdir(name, dir_fd=parent)
                except FileExistsError:
                    continue
                os.fsync(parent)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                if exc.errno == errno.ELOOP or _is_symlink(parent, name):
                    raise UnsafePath(f"{name!r} inside the object store is a symbolic link") from None
                if create:
                    raise ObjectStoreError(f"{name!r} is an object, it cannot also be a folder") from None
                raise ObjectNotFound(name) from None
        raise ObjectStoreError(f"could not create folder {name!r}")

    def _walk(self, folders: Sequence[str], *, create: bool) -> builtins.list[int]:
        """File descriptors of ``objects/`` and each folder below it, in order."""
        fds = [os.open(self._objects, _DIR_FLAGS)]
        try:
            for name in folders:
                fds.append(self._open_dir(fds[-1], name, create))
        except BaseException:
            _close_all(fds)
            raise
        return fds

    def _open_object(self, key: str) -> tuple[int, StoredObject]:
        *folders, name = key.split("/")
        self._check_inside(key)
        fds = self._walk(folders, create=False)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=fds[-1])
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"object {key!r} is a symbolic link") from None
            raise ObjectStoreError(f"cannot open object {key!r}: {exc}") from exc
        finally:
            _close_all(fds)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ObjectNotFound(f"no object {key!r}")
            return fd, _read_header(fd, key, info.st_size)
        except BaseException:
            os.close(fd)
            raise

    def _stat(self, key: str) -> StoredObject:
        fd, stored = self._open_object(key)
        os.close(fd)
        return stored

    def _commit(self, upload: _TempObject, stored: StoredObject) -> None:
        upload.finish(stored)
        *folders, name = stored.key.split("/")
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            self._check_inside(stored.key)
            fds = self._walk(folders, create=True)
            try:
                try:
                    os.replace(upload.path, name, dst_dir_fd=fds[-1])
                except FileNotFoundError:
                    # A concurrent delete removed the (then empty) folder; recreate it.
                    if attempt < _COMMIT_ATTEMPTS and os.path.exists(upload.path):
                        continue
                    raise
                except IsADirectoryError:
                    raise ObjectStoreError(f"{stored.key!r} is a folder of other objects") from None
                upload.committed = True
                os.fsync(fds[-1])
                return
            finally:
                _close_all(fds)

    async def _abandon(self, upload: _TempObject, inflight: asyncio.Future[None] | None, key: str) -> None:
        """Undo a failed ``put``: wait for its thread, remove the temp file and,
        if the commit completed after all (cancelled mid-commit), the object."""
        await _aio.settle(inflight)
        try:
            await asyncio.to_thread(upload.discard)
            if upload.committed:
                await asyncio.to_thread(self._delete, key, upload.identity)
        except Exception:  # the caller re-raises the original error
            log.exception("could not clean up failed upload of %r", key)

    def _delete(self, key: str, identity: tuple[int, int] | None = None) -> None:
        """Remove ``key`` (only if it is still the file ``identity`` = (dev, ino), when given)."""
        *folders, name = key.split("/")
        self._check_inside(key)
        try:
            fds = self._walk(folders, create=False)
        except ObjectNotFound:
            return
        try:
            try:
                info = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(info.st_mode):
                raise UnsafePath(f"object {key!r} is a symbolic link")
            if not stat.S_ISREG(info.st_mode):
                return
            if identity is not None and (info.st_dev, info.st_ino) != identity:
                return
            try:
                os.unlink(name, dir_fd=fds[-1])
            except FileNotFoundError:
                return
            os.fsync(fds[-1])
            # Prune folders left empty, deepest first; stop at the first non-empty one.
            for depth in range(len(folders), 0, -1):
                try:
                    os.rmdir(folders[depth - 1], dir_fd=fds[depth - 1])
                except OSError:
                    break
        finally:
            _close_all(fds)

    def _scan(self, dir_fd: int, dir_key: str, name_prefix: str) -> builtins.list[tuple[str, StoredObject | None]]:
        """Entries of one folder as ``(sort name, object)``; sub-folders get
        ``"name/"`` and ``None`` so that sorting by sort name yields keys in
        global ascending order."""
        found: builtins.list[tuple[str, StoredObject | None]] = []
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(name_prefix) or entry.is_symlink():
                    continue
                key = dir_key + name
                try:
                    validate_key(key)
                except ObjectStoreError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    found.append((f"{name}/", None))
                elif entry.is_file(follow_symlinks=False):
                    stored = self._read_entry(dir_fd, name, key)
                    if stored is not None:
                        found.append((name, stored))
        found.sort(key=lambda item: item[0])
        return found

    def _read_entry(self, dir_fd: int, name: str, key: str) -> StoredObject | None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            return _read_header(fd, key, os.fstat(fd).st_size)
        except ObjectStoreError as exc:
            log.warning("skipping unreadable object file %r: %s", key, exc)
            return None
        finally:
            os.close(fd)

    def _ping(self) -> None:
        for folder in (self._objects, self._tmp):
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
                raise ObjectStoreError(f"object store folder {folder} is missing or not writable")

    def _cleanup_tmp(self, older_than: float) -> int:
        removed = 0
        cutoff = time.time() - older_than
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if not entry.name.endswith(".part") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


class _TempObject:
    """One upload's temp file in ``.tmp/``.  Methods block; one runs at a time."""

    def __init__(self, tmp_dir: str) -> None:
        self.fd, self.path = tempfile.mkstemp(dir=tmp_dir, prefix="put-", suffix=".part")
        info = os.fstat(self.fd)
        self.identity = (info.st_dev, info.st_ino)
        self.hasher = hashlib.sha256()
        self.committed = False
        os.lseek(self.fd, HEADER_SIZE, os.SEEK_SET)

    def write(self, block: bytearray) -> None:
        self.hasher.update(block)
        view = memoryview(block)
        try:
            written = 0
            while written < len(view):
                written += os.write(self.fd, view[written:])
        finally:
            view.release()

    def finish(self, stored: StoredObject) -> None:
        """Write the header, flush to disk and close; the file is ready to rename."""
        meta = {"size": stored.size, "sha256": stored.sha256, "content_type": stored.content_type}
        header = _MAGIC + json.dumps(meta, separators=(",", ":")).encode("ascii") + b"\n"
        if len(header) > HEADER_SIZE:
            raise ObjectStoreError("object metadata does not fit in the header")
        os.pwrite(self.fd, header.ljust(HEADER_SIZE, b" "), 0)
        os.fsync(self.fd)
        self._close()

    def discard(self) -> None:
        """Close and delete the temp file (if it still exists)."""
        self._close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _read_header(fd: int, key: str, file_size: int) -> StoredObject:
    header = os.pread(fd, HEADER_SIZE, 0)
    try:
        if len(header) != HEADER_SIZE or not header.startswith(_MAGIC):
            raise ValueError("bad magic")
        meta: Any = json.loads(header[len(_MAGIC) :])
        size, sha256, content_type = meta["size"], meta["sha256"], meta["content_type"]
        if not (isinstance(size, int) and isinstance(sha256, str) and isinstance(content_type, str)):
            raise ValueError("bad field types")
    except (ValueError, KeyError, TypeError) as exc:
        raise ObjectStoreError(f"object file for {key!r} has a corrupt header") from exc
    if file_size != HEADER_SIZE + size:
        raise ObjectStoreError(f"object file for {key!r} has {file_size - HEADER_SIZE} bytes, expected {size}")
    return StoredObject(key=key, size=size, sha256=sha256, content_type=content_type)


def _is_symlink(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


def _close_first(result: tuple[int, Any]) -> None:
    os.close(result[0])
