"""HTTP download endpoint for the filesystem store's signed URLs.

``GET``/``HEAD {url_prefix}/{key}?expires=..&sig=..[&filename=..]`` -- the URL
:meth:`FilesystemObjectStore.signed_url` produces.  The signature is the only
authorisation: no session or token is needed (or looked at).  Error responses
are rendered here as ``{"code", "message", "details"}`` JSON so the routes work
with or without the application's error middleware:

=====  ======================  ==============================================
400    ``invalid_key``         the key in the path is not a valid object key
403    ``signature_invalid``   ``sig``/``expires`` missing, repeated, malformed or wrong
403    ``signature_expired``   authentic URL past its expiry
404    ``object_not_found``    no object under the key
416    ``range_not_satisfiable``  ``Range`` starts beyond the object
=====  ======================  ==============================================

Range requests support a single ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``
range (with ``If-Range`` against the ETag); multi-range or malformed ``Range``
headers are ignored and the whole object is sent, as RFC 9110 allows.  The
ETag is the quoted SHA-256 of the object.

:func:`send_object` is the other way out: an API handler that has already
authorised the caller streams a stored object (a material, an evidence photo)
with the same headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from server.errors import ApiError, BadRequest, Forbidden, NotFound
from server.objectstore.base import InvalidKey, ObjectNotFound, ObjectStore, content_disposition, validate_key
from server.objectstore.filesystem import FilesystemObjectStore
from server.objectstore.signing import SignatureExpired, SignatureInvalid, UrlSigner

#: Media types a browser may render inline from our origin without running
#: script.  Anything else is always sent as an attachment.
_INLINE_SAFE = re.compile(
    r"(image/(png|jpeg|gif|webp|avif|bmp)|application/pdf|text/plain|audio/[a-z0-9.+-]+|video/[a-z0-9.+-]+)"
    r"(;.*)?",
    re.IGNORECASE,
)
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]{0,19})[ \t]*-[ \t]*([0-9]{0,19})[ \t]*")
_SIGNED_PARAMS = ("expires", "sig", "filename")


class InvalidKeyError(BadRequest):
    code = "invalid_key"


class SignatureInvalidError(Forbidden):
    code = "signature_invalid"


class SignatureExpiredError(Forbidden):
    code = "signature_expired"


class ObjectNotFoundError(NotFound):
    code = "object_not_found"


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """The half-open byte range ``[start, end)`` to send."""

    start: int
    end: int


class Unsatisfiable(Exception):
    """The ``Range`` header is valid but selects no byte of the object."""


async def send_object(
    request: web.Request, store: ObjectStore, key: str, *, content_type: str, size: int, sha256: str, filename: str
) -> web.StreamResponse:
    """Stream ``key`` from ``store`` as the answer to ``request`` (the caller is authorised already); never cached."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Length": str(size),
            "Content-Disposition": content_disposition(filename),
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{sha256}"',
            "Cache-Control": "private, no-store",
        }
    )
    await resp.prepare(request)
    async for chunk in store.get(key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def parse_range(header: str, size: int) -> ByteRange | None:
    """Interpret a ``Range`` header for an object of ``size`` bytes.

    Returns the range to send, or ``None`` when the header must be ignored
    (other unit, several ranges, bad syntax such as ``a > b``): the caller
    sends the whole object.  Raises :class:`Unsatisfiable` when the range
    starts at or beyond the end (or is ``bytes=-0``, or the object is empty).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.fullmatch(spec)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    end = min(int(last) + 1, size) if last else size
    return ByteRange(start, end)


def object_routes(store: FilesystemObjectStore, signer: UrlSigner) -> list[web.RouteDef]:
    """``GET`` and ``HEAD`` routes under ``store.url_prefix`` serving signed downloads.

    ``signer`` must be the one the store signs with.
    """
    path = f"{store.url_prefix}/{{key:.+}}"

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await _serve(request, store, signer)
        except ApiError as err:
            return _error_response(err)

    return [web.get(path, handle, allow_head=False), web.head(path, handle)]


async def _serve(request: web.Request, store: FilesystemObjectStore, signer: UrlSigner) -> web.StreamResponse:
    key = request.match_info["key"]
    try:
        validate_key(key)
    except InvalidKey as exc:
        raise InvalidKeyError(str(exc)) from None

    query = request.query
    if any(len(query.getall(name, [])) > 1 for name in _SIGNED_PARAMS):
        raise SignatureInvalidError("signed URL parameters may appear only once")
    expires, sig, filename = query.get("expires"), query.get("sig"), query.get("filename")
    if expires is None or sig is None:
        raise SignatureInvalidError("the URL is not signed")
    try:
        signer.verify(key, expires, sig, filename)
    except SignatureExpired as exc:
        raise SignatureExpiredError(str(exc)) from None
    except SignatureInvalid as exc:
        raise SignatureInvalidError(str(exc)) from None

    try:
        stored = await store.stat(key)
    except ObjectNotFound:
        raise ObjectNotFoundError("no such object", details={"key": key}) from None

    etag = f'"{stored.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Type": stored.content_type,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    if filename is not None:
        headers["Content-Disposition"] = content_disposition(filename)
    elif not _INLINE_SAFE.fullmatch(stored.content_type):
        headers["Content-Disposition"] = "attachment"

    byte_range: ByteRange | None = None
    range_header = request.headers.get("Range")
    if request.method == "GET" and range_header is not None:
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() == etag:
            try:
                byte_range = parse_range(range_header, stored.size)
            except Unsatisfiable:
                err = RangeNotSatisfiable("range not satisfiable", details={"size": stored.size})
                refusal = _error_response(err)
                refusal.headers["Content-Range"] = f"bytes */{stored.size}"
                return refusal

    start, end = (byte_range.start, byte_range.end) if byte_range else (0, stored.size)
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    if byte_range:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    response.content_length = end - start

    if request.method == "HEAD" or start == end:
        await response.prepare(request)
        await response.write_eof()
        return response

    chunks = store.get(key, start=start, end=end)
    try:
        # Fetch the first chunk before sending headers: a delete racing with
        # this request still gets a clean 404 instead of a truncated 200.
        try:
            first = await anext(chunks)
        except ObjectNotFound:
            raise ObjectNotFoundError("no such object", details={"key": key}) from None
        except StopAsyncIteration:
            first = b""
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


def _error_response(err: ApiError) -> web.Response:
    response = web.json_response(err.to_json(), status=err.status)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
