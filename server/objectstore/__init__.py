"""Object storage for uploaded documents and recordings: a filesystem or S3 backend
behind one :class:`ObjectStore` protocol.

:func:`create_object_store` is the only place that reads configuration; the
composition root calls it (or :func:`open_object_store`, which also prepares
and checks the store) and hands the result to the services.  With the
filesystem backend, the app must also mount
``object_routes(store, store.signer)`` so that its signed URLs can be served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.objectstore.base import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectTooLarge,
    StoredObject,
    validate_key,
)
from server.objectstore.filesystem import FilesystemObjectStore, UnsafePath
from server.objectstore.http import object_routes
from server.objectstore.s3 import S3ObjectStore
from server.objectstore.signing import SignatureExpired, SignatureInvalid, UrlSigner
from server.settings import ObjectStoreSettings

__all__ = [
    "ChecksumMismatch",
    "FilesystemObjectStore",
    "InvalidKey",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectTooLarge",
    "S3ObjectStore",
    "SignatureExpired",
    "SignatureInvalid",
    "StoredObject",
    "UnsafePath",
    "UrlSigner",
    "create_object_store",
    "object_routes",
    "open_object_store",
    "validate_key",
]


def create_object_store(
    settings: ObjectStoreSettings, *, root: Path, secret: str, now: Callable[[], float] | None = None
) -> ObjectStore:
    """Build the configured store without network I/O.

    ``root`` is ``Settings.resolved_object_root()`` (used by the filesystem
    backend, created if missing); ``secret`` is the server secret, from which
    the filesystem backend's URL signer is keyed (S3 presigns with its own
    credentials instead).  Call :meth:`ObjectStore.close` on shutdown.
    """
    if settings.kind == "s3":
        return S3ObjectStore(settings.s3)
    return FilesystemObjectStore(root, UrlSigner(secret, clock=now) if now else UrlSigner(secret))


async def open_object_store(settings: ObjectStoreSettings, *, root: Path, secret: str) -> ObjectStore:
    """:func:`create_object_store`, then create the S3 bucket if
    ``settings.s3.create_bucket``, then :meth:`~ObjectStore.ping`.

    Raises :class:`ObjectStoreError` (after closing the store) if the store is
    not usable, so start-up fails early.
    """
    store = create_object_store(settings, root=root, secret=secret)
    try:
        if isinstance(store, S3ObjectStore) and settings.s3.create_bucket:
            await store.ensure_bucket()
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store
