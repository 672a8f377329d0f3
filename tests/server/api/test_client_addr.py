"""Client addresses behind reverse proxies: X-Forwarded-For is read from the right (issue: a client chose its own)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from server.api.routing import client_addr
from server.app import create_app
from server.clock import FakeClock
from server.settings import Settings


def request(*forwarded: str) -> Any:
    headers = CIMultiDict(("X-Forwarded-For", v) for v in forwarded)
    req = make_mocked_request("GET", "/", headers=headers)
    req._transport_peername = ("10.0.0.2", 40000)  # the reverse proxy
    return req


@pytest.mark.parametrize(
    ("forwarded", "trust", "proxies", "expected"),
    [
        ((), False, (), "10.0.0.2"),
        (("203.0.113.7",), False, (), "10.0.0.2"),  # not trusted: the peer
        (("203.0.113.7",), True, (), "203.0.113.7"),
        # The client wrote the left entry itself; our proxy appended what it saw.
        (("198.51.100.1, 203.0.113.7",), True, (), "203.0.113.7"),
        (("198.51.100.1", "203.0.113.7"), True, (), "203.0.113.7"),  # two header lines are one list
        # Two proxies of ours: the CDN edge (10.9.0.0/16) appended the client, the proxy appended the edge.
        (("198.51.100.1, 203.0.113.7, 10.9.0.4",), True, ("10.9.0.0/16",), "203.0.113.7"),
        (("2001:db8::7, 10.9.0.4",), True, ("10.9.0.0/16",), "2001:db8::7"),
        # Malformed entries stop the walk at the last address a trusted proxy vouched for.
        (("junk",), True, (), "10.0.0.2"),
        (("198.51.100.1, junk, 10.9.0.4",), True, ("10.9.0.0/16",), "10.9.0.4"),
        (("",), True, (), "10.0.0.2"),
    ],
)
def test_client_addr(forwarded: tuple[str, ...], trust: bool, proxies: tuple[str, ...], expected: str) -> None:
    assert client_addr(request(*forwarded), trust, proxies) == expected


async def test_a_locked_out_client_cannot_name_another_address(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, demo: dict[str, str]
) -> None:
    """BUG: with trust_forwarded_for the *first* entry was the client, so a prepended entry escaped the limiter."""
    app = create_app(settings.model_copy(update={"trust_forwarded_for": True}), clock=clock)
    client = await aiohttp_client(app)
    seen_by_proxy = {"X-Forwarded-For": "203.0.113.7"}
    for n in range(5):
        body = {"username": f"nobody{n}", "password": "wrong"}
        assert (await client.post("/api/v1/auth/login", json=body, headers=seen_by_proxy)).status == 401
    forged = {"X-Forwarded-For": "198.51.100.99, 203.0.113.7"}
    resp = await client.post("/api/v1/auth/login", json={"username": "clerk", "password": "x"}, headers=forged)
    assert resp.status == 429 and (await resp.json())["code"] == "login_rate_limited"
