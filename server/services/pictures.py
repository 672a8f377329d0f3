"""Uploaded pictures are decoded once before they are kept.

The upload path sniffs a type from the first bytes (``filetype``), which a
JPEG header followed by garbage passes.  Such a file would be accepted as a
material or as inspection evidence and then break everything that renders
it later (the inspection report used to fail with 500 for ever after).  So a
picture is decoded here, in a worker thread, from a spooled copy taken as it
went to the store (:class:`PictureSpool`, so the store is not read again):
JPEG at 1/8 scale (``draft``: the DCT scales while decoding, so a
20-megapixel photo costs about 1 MB), other formats in full, bounded by
Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from typing import IO

from PIL import Image, UnidentifiedImageError

from server.errors import ValidationFailed

__all__ = ["PICTURE_TYPES", "PictureSpool", "verify_picture"]

PICTURE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
_SPOOL_IN_MEMORY = 1024 * 1024


def verify_picture(stream: IO[bytes]) -> tuple[int, int]:
    """Decode the picture in ``stream``; its ``(width, height)``, or ``ValueError`` saying why it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                size = im.size
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "truncated/corrupt"
        raise ValueError(f"the picture cannot be decoded: {exc}") from None
    if size[0] < 1 or size[1] < 1:
        raise ValueError("the picture has no pixels")
    return size


class PictureSpool:
    """A copy of an upload's bytes taken as they stream to the store, then decoded once (no second read)."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)

    async def feed(self, chunk: bytes) -> None:
        if self._file.tell() + len(chunk) > _SPOOL_IN_MEMORY:  # past the memory part: disk writes off the loop
            await asyncio.to_thread(self._file.write, chunk)
        else:
            self._file.write(chunk)

    async def verify(self) -> None:
        """``422 image_undecodable`` if the bytes fed are not a usable picture."""
        self._file.seek(0)
        try:
            await asyncio.to_thread(verify_picture, self._file)
        except ValueError as exc:
            raise ValidationFailed(
                "the picture cannot be decoded", code="image_undecodable", details={"error": str(exc)[:200]}
            ) from None

    def close(self) -> None:
        self._file.close()
