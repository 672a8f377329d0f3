"""The signed download endpoint for the filesystem store (``object_routes``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.objectstore import FilesystemObjectStore, object_routes
from server.objectstore.http import ByteRange, Unsatisfiable, parse_range

DATA = os.urandom(10_000)
Client = TestClient[web.Request, web.Application]


async def stream(data: bytes, chunk: int = 4096) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]


@pytest.fixture
async def client(fs_store: FilesystemObjectStore) -> AsyncIterator[Client]:
    app = web.Application()
    app.add_routes(object_routes(fs_store, fs_store.signer))
    test_client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


@pytest.fixture
async def url(fs_store: FilesystemObjectStore) -> str:
    stored = await fs_store.put("docs/file.bin", stream(DATA), content_type="application/pdf")
    assert stored.size == len(DATA)
    return await fs_store.signed_url("docs/file.bin", expires_in=300)


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return f"{parts.path}?{urlencode(query)}"


async def error_code(client: Client, url: str, status: int, **kwargs: object) -> str:
    response = await client.get(url, **kwargs)  # type: ignore[arg-type]
    assert response.status == status
    body = await response.json()
    assert set(body) == {"code", "message", "details"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return str(body["code"])


async def test_full_download(client: Client, url: str, fs_store: FilesystemObjectStore) -> None:
    response = await client.get(url)
    assert response.status == 200
    assert await response.read() == DATA
    stored = await fs_store.stat("docs/file.bin")
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{stored.sha256}"'
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Disposition" not in response.headers  # PDF may be shown inline


async def test_head(client: Client, url: str) -> None:
    response = await client.head(url, headers={"Range": "bytes=0-9"})
    assert response.status == 200  # Range is ignored for HEAD
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert await response.read() == b""


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=9990-", 9990, 10_000),
        ("bytes=-5", 9995, 10_000),
        ("bytes=-20000", 0, 10_000),
        ("bytes=500-999999", 500, 10_000),
        ("bytes=9999-9999", 9999, 10_000),
        ("Bytes = 1-2", 1, 3),
    ],
)
async def test_ranges(client: Client, url: str, header: str, start: int, end: int) -> None:
    response = await client.get(url, headers={"Range": header})
    assert response.status == 206
    assert await response.read() == DATA[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
async def test_unsatisfiable_range(client: Client, url: str, header: str) -> None:
    response = await client.get(url, headers={"Range": header})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert (await response.json())["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=", "bytes=a-b", "bytes=-"])
async def test_ignored_range_sends_everything(client: Client, url: str, header: str) -> None:
    response = await client.get(url, headers={"Range": header})
    assert response.status == 200
    assert await response.read() == DATA


async def test_if_range(client: Client, url: str) -> None:
    etag = (await client.head(url)).headers["ETag"]
    matching = await client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert (matching.status, await matching.read()) == (206, DATA[:4])
    stale = await client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"0000"'})
    assert (stale.status, await stale.read()) == (200, DATA)


async def test_empty_object(client: Client, fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("empty", stream(b""), content_type="text/plain")
    url = await fs_store.signed_url("empty", expires_in=60)
    response = await client.get(url)
    assert (response.status, await response.read()) == (200, b"")
    assert response.headers["Content-Length"] == "0"
    assert (await client.get(url, headers={"Range": "bytes=0-"})).status == 416


async def test_filename_sets_attachment(client: Client, fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("named", stream(b"data"), content_type="application/pdf")
    url = await fs_store.signed_url("named", expires_in=60, filename='申请表 "final".pdf')
    response = await client.get(url)
    assert response.status == 200
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"___ _final_.pdf\"; filename*=UTF-8''%E7%94%B3%E8%AF%B7%E8%A1%A8%20%22final%22.pdf"
    )


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/xhtml+xml", "text/xml"])
async def test_active_content_is_never_inline(
    client: Client, fs_store: FilesystemObjectStore, content_type: str
) -> None:
    await fs_store.put("active", stream(b"<script>alert(1)</script>"), content_type=content_type)
    response = await client.get(await fs_store.signed_url("active", expires_in=60))
    assert response.status == 200
    assert response.headers["Content-Disposition"] == "attachment"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_unsigned_or_tampered(client: Client, url: str, fs_store: FilesystemObjectStore) -> None:
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    assert await error_code(client, "/api/v1/objects/docs/file.bin", 403) == "signature_invalid"
    assert await error_code(client, with_query(url, sig=None), 403) == "signature_invalid"
    assert await error_code(client, with_query(url, expires=None), 403) == "signature_invalid"
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert await error_code(client, with_query(url, sig=flipped), 403) == "signature_invalid"
    later = str(int(dict(parse_qsl(urlsplit(url).query))["expires"]) + 3600)
    assert await error_code(client, with_query(url, expires=later), 403) == "signature_invalid"
    assert await error_code(client, with_query(url, filename="other.exe"), 403) == "signature_invalid"
    assert await error_code(client, url + "&sig=" + sig, 403) == "signature_invalid"  # repeated


async def test_signature_is_bound_to_the_key(client: Client, url: str, fs_store: FilesystemObjectStore) -> None:
    await fs_store.put("docs/other.bin", stream(b"other"))
    other = url.replace("docs/file.bin", "docs/other.bin")
    assert await error_code(client, other, 403) == "signature_invalid"


async def test_expired(client: Client, url: str, url_clock: Any) -> None:
    assert (await client.get(url)).status == 200
    url_clock.now += 299
    assert (await client.get(url)).status == 200
    url_clock.now += 1
    assert await error_code(client, url, 403) == "signature_expired"


async def test_missing_object(client: Client, fs_store: FilesystemObjectStore) -> None:
    url = await fs_store.signed_url("docs/gone", expires_in=60)
    assert await error_code(client, url, 404) == "object_not_found"
    head = await client.head(url)
    assert head.status == 404


@pytest.mark.parametrize("path", ["a%5Cb", "a%00b", "%E2%80%AEexe", "a%20b", "a%2F%2Fb", "%EF%BC%8E%EF%BC%8E/x"])
async def test_invalid_key_in_path(client: Client, path: str) -> None:
    assert await error_code(client, f"/api/v1/objects/{path}?expires=1&sig=x", 400) == "invalid_key"


async def test_traversal_in_path_never_reaches_outside(client: Client, fs_store: FilesystemObjectStore) -> None:
    (fs_store.root / "secret").write_bytes(b"TOP-SECRET-CONTENT")
    for path in ("../secret", "%2e%2e/secret", "..%2fsecret", "a/..%2f..%2fsecret"):
        response = await client.get(f"/api/v1/objects/{path}?expires=1&sig=x")
        assert response.status in (400, 403, 404)
        assert b"TOP-SECRET-CONTENT" not in await response.read()


def test_parse_range() -> None:
    assert parse_range("bytes=0-0", 10) == ByteRange(0, 1)
    assert parse_range("bytes=3-", 10) == ByteRange(3, 10)
    assert parse_range("bytes=-3", 10) == ByteRange(7, 10)
    assert parse_range("bytes=" + "9" * 20 + "-", 10) is None  # absurdly long: ignored
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=-1", 0)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=10-", 10)
