"""The object store contract shared by every backend.

An object store maps *keys* to immutable byte strings plus a little metadata
(:class:`StoredObject`).  Keys are produced by the server, never taken verbatim
from a client, but every backend still validates them with :func:`validate_key`
so that a bug elsewhere cannot turn into a path traversal or a key that one
backend accepts and another does not.

Guarantees every backend gives (the contract tests in
``tests/server/objectstore`` run the same scenarios against each one):

* ``put`` streams: memory use is bounded by the backend's buffer size, not by
  the object size.
* ``put`` is atomic: afterwards either the complete new object is visible under
  the key, or the call raised and nothing of it is visible (no partial object,
  no temporary file, no pending multipart upload).  This holds when the size
  limit is exceeded, the checksum does not match, the data iterator raises, or
  the calling task is cancelled.  When ``put`` fails while overwriting an
  existing key, the key may afterwards be empty (the old object is not
  guaranteed to survive a failed overwrite).
* ``sha256`` is always the lowercase hex SHA-256 of exactly the stored bytes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import quote

#: Longest accepted key, in characters (keys are ASCII, so also bytes).
MAX_KEY_LENGTH = 512
#: Longest accepted ``content_type``.
MAX_CONTENT_TYPE_LENGTH = 255
#: Longest accepted download ``filename`` for signed URLs, in characters.
MAX_FILENAME_LENGTH = 255
#: Default ``chunk_size`` of :meth:`ObjectStore.get`.
DEFAULT_CHUNK_SIZE = 256 * 1024

_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]*")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
# RFC 9110 token "/" token, optionally followed by parameters; printable ASCII only.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 (an RFC 9110 token, not a password)
_CONTENT_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[ !#-\[\]-~]*\"))*")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Metadata of one stored object."""

    key: str
    #: Length of the object in bytes.
    size: int
    #: Lowercase hex SHA-256 of the object's bytes.
    sha256: str
    content_type: str


class ObjectStoreError(Exception):
    """Base class of every error an object store raises on purpose.

    Backend failures (I/O errors, an unreachable S3 endpoint, a corrupt file)
    surface as plain :class:`ObjectStoreError`; the subclasses name the cases a
    caller is expected to handle.
    """


class InvalidKey(ObjectStoreError, ValueError):
    """The key (or list prefix) is not acceptable; see :func:`validate_key`."""


class ObjectNotFound(ObjectStoreError):
    """No object is stored under the key."""


class ObjectTooLarge(ObjectStoreError):
    """``put`` received more than ``max_size`` bytes; nothing was stored."""


class ChecksumMismatch(ObjectStoreError):
    """``put`` was given ``expected_sha256`` and the data differs; nothing was stored."""


@runtime_checkable
class ObjectStore(Protocol):
    """What the rest of the server may rely on, whatever the backend."""

    async def put(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        max_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredObject:
        """Store everything ``data`` yields under ``key``, replacing any previous object.

        Streams (never holds the whole object in memory) and is atomic as the
        module docstring describes.  Raises :class:`InvalidKey`,
        :class:`ObjectTooLarge` as soon as more than ``max_size`` bytes have
        arrived, :class:`ChecksumMismatch`, ``ValueError`` for a malformed
        ``content_type`` or ``expected_sha256``, and whatever ``data`` raises.
        """
        ...

    def get(
        self,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes]:
        """Yield the bytes ``[start, end)`` of the object in chunks of at most ``chunk_size``.

        ``end=None`` means "to the end"; an ``end`` beyond the object is
        clamped, and a ``start`` at or beyond the end yields nothing.  All
        errors -- :class:`InvalidKey`, :class:`ObjectNotFound`, ``ValueError``
        for ``start < 0``, ``end < start`` or ``chunk_size < 1`` -- are raised by
        the *first* ``__anext__``, before any data is yielded, so a caller can
        fetch the first chunk before committing to a response.  Both backends
        return async generators: a caller that stops early should ``aclose()``
        it (e.g. ``contextlib.aclosing``) to release the file or connection
        promptly.
        """
        ...

    async def stat(self, key: str) -> StoredObject:
        """Metadata of the object; :class:`ObjectNotFound` if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object.  Deleting a missing key is not an error."""
        ...

    def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Yield every object whose key starts with ``prefix`` (a plain string
        prefix, not a folder), in ascending key order.  ``prefix=""`` lists
        everything.  :class:`InvalidKey` if the prefix contains characters no
        key can contain."""
        ...

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that lets its holder GET the object for ``expires_in`` seconds.

        With ``filename`` the download is served as an attachment with that
        name.  The URL may be relative (filesystem store: served by this
        server) or absolute (S3: served by the bucket).  Does not check that the
        object exists.
        """
        ...

    async def ping(self) -> None:
        """Readiness check: return if the store is usable, raise :class:`ObjectStoreError` if not."""
        ...

    async def close(self) -> None:
        """Release connections and threads.  The store is unusable afterwards."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is an acceptable object key, else raise :class:`InvalidKey`.

    A key is 1 to :data:`MAX_KEY_LENGTH` characters of ``/``-separated
    segments, each made only of ASCII ``A-Z a-z 0-9 . _ -`` and not made only
    of dots (so no ``.`` / ``..``).  There are no empty segments, so no leading
    or trailing ``/`` and no ``//``.  The allowed alphabet excludes, by
    construction, backslashes, NUL and control characters, ``%`` (no
    percent-encoded forms), and all non-ASCII characters (fullwidth or
    look-alike dots, bidi controls, overlong UTF-8 decoded to surrogates...).
    Keys are never normalised: a key that would need it is rejected.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("object key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key is longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(f"object key {_show(key)} has an empty segment")
        if not _SEGMENT_RE.fullmatch(segment):
            raise InvalidKey(f"object key {_show(key)} contains characters outside [A-Za-z0-9._-/]")
        if segment.strip(".") == "":
            raise InvalidKey(f"object key {_show(key)} has a dot-only segment")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it could begin some valid key, else raise :class:`InvalidKey`.

    The empty prefix is valid.  A prefix may end with ``/`` or in the middle of
    a segment, but every *complete* segment must be valid as in
    :func:`validate_key`, so no prefix can reach outside the store.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"list prefix must be a string, not {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_LENGTH or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidKey(f"list prefix {_show(prefix)} cannot start any valid key")
    complete = prefix.split("/")[:-1]
    for segment in complete:
        if not segment or segment.strip(".") == "":
            raise InvalidKey(f"list prefix {_show(prefix)} cannot start any valid key")
    return prefix


def validate_content_type(content_type: str) -> str:
    """Return ``content_type`` if it is a well-formed ``type/subtype[; param=value]``
    media type of printable ASCII (safe to put in an HTTP header), else raise ``ValueError``."""
    if (
        not isinstance(content_type, str)
        or len(content_type) > MAX_CONTENT_TYPE_LENGTH
        or not _CONTENT_TYPE_RE.fullmatch(content_type)
    ):
        raise ValueError(f"invalid content type {_show(str(content_type))}")
    return content_type


def normalize_sha256(value: str) -> str:
    """Return the lowercase form of a 64-digit hex SHA-256, else raise ``ValueError``."""
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ValueError("expected_sha256 must be 64 hex digits")
    return value.lower()


def validate_filename(filename: str) -> str:
    """Return ``filename`` if it can be offered as a download name, else raise ``ValueError``.

    Any Unicode text of 1 to :data:`MAX_FILENAME_LENGTH` characters without
    control or format characters (which covers NUL, CR/LF and bidi overrides);
    :func:`content_disposition` takes care of encoding it.
    """
    if not isinstance(filename, str) or not filename or len(filename) > MAX_FILENAME_LENGTH:
        raise ValueError("filename must be 1 to 255 characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in filename):
        raise ValueError("filename contains control characters")
    return filename


_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 5987 attr-char, besides ALPHA / DIGIT


def content_disposition(filename: str) -> str:
    """An ``attachment`` Content-Disposition value naming ``filename``.

    Carries an ASCII ``filename`` fallback (non-ASCII, quotes, backslashes and
    path separators replaced by ``_``) and the exact name as RFC 5987
    ``filename*=UTF-8''...``.  The result is pure ASCII without CR/LF.
    """
    validate_filename(filename)
    fallback = "".join(ch if (" " <= ch <= "~" and ch not in '"\\/') else "_" for ch in filename)
    encoded = quote(filename, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """Raise ``ValueError`` for the arguments :meth:`ObjectStore.get` rejects."""
    if start < 0:
        raise ValueError("start must be >= 0")
    if end is not None and end < start:
        raise ValueError("end must be >= start")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")


def check_max_size(max_size: int | None) -> None:
    """Raise ``ValueError`` if ``max_size`` is negative."""
    if max_size is not None and max_size < 0:
        raise ValueError("max_size must be >= 0")


def _show(text: str) -> str:
    """A short, escaped rendering of untrusted text for error messages."""
    shown = ascii(text[:80])
    return shown + ("..." if len(text) > 80 else "")
