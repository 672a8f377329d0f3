"""Uploaded pictures are decoded once before they are kept.

The upload path sniffs a type from the first bytes (``filetype``), which a
JPEG header followed by garbage passes.  Such a file would be accepted as a
material or as inspection evidence and then break everything that renders
it later (the inspection report used to fail with 500 for ever after).  So a
picture is decoded here, in a worker thread, from a spooled copy of what was
stored: JPEG at 1/8 scale (``draft``: the DCT scales while decoding, so a
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
from server.objectstore import ObjectStore

__all__ = ["PICTURE_TYPES", "verify_picture", "verify_stored_picture"]

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


async def verify_stored_picture(store: ObjectStore, key: str) -> None:
    """Decode the stored object ``key``; ``422 image_undecodable`` if it is not a usable picture."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        async for chunk in store.get(key):
            spool.write(chunk)
        spool.seek(0)
        try:
            await asyncio.to_thread(verify_picture, spool)
        except ValueError as exc:
            raise ValidationFailed(
                "the picture cannot be decoded", code="image_undecodable", details={"error": str(exc)[:200]}
            ) from None
