"""Helpers for API tests: tiny valid files, a valid ID number, a case factory."""

from __future__ import annotations

import io
import zlib
from typing import Any

import aiohttp
import pytest

from tests.conftest import Session

#: A valid 18-digit ID number (checksum correct) and a second one.
ID_NUMBER = "11010519491231002X"
ID_NUMBER_2 = "440524198001010013"


def png_bytes(size: int = 0) -> bytes:
    """A real 1×1 PNG, padded with an ancillary chunk to about ``size`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
    idat = chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    pad = chunk(b"tEXt", b"c\x00" + b"x" * max(0, size - 80)) if size else b""
    return b"\x89PNG\r\n\x1a\n" + ihdr + pad + idat + chunk(b"IEND", b"")


def pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def form(data: bytes, filename: str = "scan.png", content_type: str = "image/png") -> aiohttp.FormData:
    fd = aiohttp.FormData()
    fd.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    return fd


CASE_BODY: dict[str, Any] = {
    "matter_code": "MZ-001",
    "applicant_name": "张秀英",
    "applicant_id_number": ID_NUMBER,
    "applicant_phone": "13800138000",
}


async def open_case(session: Session, **overrides: Any) -> dict[str, Any]:
    resp = await session.post("/api/v1/cases", json={**CASE_BODY, **overrides})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def open_call(session: Session, **overrides: Any) -> tuple[dict[str, Any], int]:
    """A new case and its call session: ``(case, session id)``."""
    case = await open_case(session, **overrides)
    resp = await session.post(f"/api/v1/cases/{case['id']}/sessions", json={"kind": "call"})
    assert resp.status == 201, await resp.text()
    return case, int((await resp.json())["id"])


async def upload(session: Session, case_id: int, item: str | None, data: bytes, **kw: Any) -> Any:
    path = f"/api/v1/cases/{case_id}/documents" + (f"?item={item}" if item else "")
    return await session.post(path, data=form(data, **kw))


@pytest.fixture
def id_number() -> str:
    return ID_NUMBER
