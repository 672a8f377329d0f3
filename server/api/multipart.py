"""Reading an upload's ``file`` part from a multipart body, streamed, for every upload endpoint.

Materials (``server/api/documents.py``) and inspection evidence
(``server/api/inspections.py``) take their file the same way: the first part
named ``file``, read in chunks, a body cut off before its closing boundary
being an error (``400 malformed_multipart``), never a short file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from server.errors import BadRequest, UnsupportedMediaType

__all__ = ["CHUNK", "MULTIPART_OVERHEAD", "file_chunks", "file_part"]

CHUNK = 1024 * 1024
#: Multipart framing allowance on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def _malformed(exc: Exception) -> BadRequest:
    return BadRequest("malformed multipart body", code="malformed_multipart", details={"error": str(exc)[:200]})


async def file_part(request: web.Request) -> BodyPartReader:
    """The part named ``file`` (parts before it are skipped); ``415`` if not multipart, ``400 missing_file``."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "upload as multipart/form-data with a part named 'file'",
            code="unsupported_content_type",
            details={"got": request.content_type},
        )
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, BodyPartReader) and part.name == "file":
                return part
            if isinstance(part, BodyPartReader):
                await part.release()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise _malformed(exc) from None
    raise BadRequest("no part named 'file' in the upload", code="missing_file")


async def file_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """The part's bytes; a body cut off before its closing boundary is an error, never a short file."""
    while True:
        try:
            chunk = await part.read_chunk(CHUNK)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            raise _malformed(exc) from None
        if not chunk:
            if not part.at_eof():
                raise _malformed(ValueError("body ended before the closing boundary"))
            return
        yield chunk
