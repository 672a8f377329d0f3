"""Security headers, one test per header, on every kind of response (issue 19, item 14)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.clock import FakeClock
from server.settings import Settings, SignallingSettings
from tests.conftest import DEMO_PASSWORD, login


@pytest.fixture
async def web(aiohttp_client: Any, settings: Settings, clock: FakeClock, tmp_path: Path) -> Any:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>云窗口</title>", encoding="utf-8")
    (dist / "assets" / "app.js").write_text("console.log(1)", encoding="utf-8")
    return await aiohttp_client(create_app(settings.model_copy(update={"web_client_dist": dist}), clock=clock))


async def responses(web: Any) -> dict[str, Any]:
    """One response of each kind: API JSON (authenticated and not), an API error, a 405, the page, an asset."""
    staff = await login(web, "staff")
    return {
        "me": await staff.get("/api/v1/me"),
        "login": await web.post("/api/v1/auth/login", json={"username": "staff", "password": "wrong"}),
        "unknown-route": await web.get("/api/v1/no-such-thing"),
        "405": await web.put("/api/v1/cases"),
        "page": await web.get("/"),
        "asset": await web.get("/assets/app.js"),
        "healthz": await web.get("/healthz"),
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("Server", "CloudWindow"),
    ],
)
async def test_every_response_carries(web: Any, demo: dict[str, str], header: str, expected: str) -> None:
    for name, resp in (await responses(web)).items():
        assert resp.headers.get(header) == expected, (name, dict(resp.headers))


async def test_content_security_policy(web: Any, demo: dict[str, str]) -> None:
    for name, resp in (await responses(web)).items():
        csp = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
        assert csp["script-src"] == "'self'", name  # no inline script, no eval, no CDN
        assert csp["frame-ancestors"] == "'self'" and csp["object-src"] == "'none'", name
        assert csp["default-src"] == "'self'" and csp["connect-src"] == "'self'", name


async def test_api_answers_are_not_cached(web: Any, demo: dict[str, str]) -> None:
    got = await responses(web)
    for name in ("me", "login", "unknown-route", "405"):
        assert got[name].headers.get("Cache-Control") == "no-store", name
    tokens = await web.post("/api/v1/auth/login", json={"username": "staff", "password": DEMO_PASSWORD})
    assert tokens.status == 200 and tokens.headers.get("Cache-Control") == "no-store"


async def test_405_names_the_allowed_methods(web: Any, demo: dict[str, str]) -> None:
    """BUG: the JSON error rendering dropped aiohttp's Allow header (RFC 9110 section 15.5.6)."""
    resp = (await responses(web))["405"]
    assert resp.status == 405 and (await resp.json())["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_server_header_names_no_versions(web: Any, demo: dict[str, str]) -> None:
    for name, resp in (await responses(web)).items():
        server = resp.headers.get("Server", "").lower()
        assert "aiohttp" not in server and "python" not in server, name


POLL = "/socket.io/?EIO=4&transport=polling"


async def test_socketio_refuses_another_sites_page(client: Any) -> None:
    """BUG: Socket.IO accepted any Origin (cors_allowed_origins=[] turns engine.io's check off)."""
    evil = await client.get(POLL, headers={"Origin": "https://evil.example"})
    assert evil.status == 400
    own = f"http://{client.server.host}:{client.server.port}"
    assert (await client.get(POLL, headers={"Origin": own})).status == 200
    assert (await client.get(POLL)).status == 200  # not a browser: no Origin


async def test_socketio_allowed_origins_are_configurable(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> None:
    sig = SignallingSettings(allowed_origins=["https://portal.example.gov.cn"])
    web = await aiohttp_client(create_app(settings.model_copy(update={"signalling": sig}), clock=clock))
    assert (await web.get(POLL, headers={"Origin": "https://portal.example.gov.cn"})).status == 200
    assert (await web.get(POLL, headers={"Origin": "https://evil.example"})).status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",  # NUL in a header value
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-B: " + b"y" * 70_000 + b"\r\n\r\n",  # an over-long header line
    ],
    ids=["nul-in-header", "header-too-long"],
)
async def test_malformed_request_is_one_info_line(client: Any, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    """BUG: aiohttp logged a malformed header as an ERROR with a traceback (anyone could fill the log with them)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(64), 10)
        writer.close()
        await asyncio.sleep(0.05)
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.levelno == logging.INFO and not r.exc_info for r in records), records
    assert "Traceback" not in caplog.text
    assert "malformed HTTP request from 127.0.0.1 refused (400)" in caplog.text
