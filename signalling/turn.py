"""ICE server lists with TURN REST credentials.

coturn's ``use-auth-secret`` (the "TURN REST API" draft,
draft-uberti-behave-turn-rest-00 §2.2): username ``"<expiry unix time>:<user>"``,
password ``base64(HMAC-SHA1(shared secret, username))``; coturn recomputes it
and refuses it after the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IceServerConfig:
    urls: list[str]
    #: For TURN with coturn ``use-auth-secret``: the shared ``static-auth-secret``.
    auth_secret: str | None = None
    #: Fixed credentials instead (e.g. a STUN server that needs none: leave both empty).
    username: str | None = None
    credential: str | None = None
    ttl: int = 3600
    extra: dict[str, Any] = field(default_factory=dict)


def turn_credentials(secret: str, user: str, now: float, ttl: int) -> tuple[str, str]:
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(configs: list[IceServerConfig], user: str, now: float) -> list[dict[str, Any]]:
    """``RTCIceServer`` dictionaries for one participant."""
    out: list[dict[str, Any]] = []
    for c in configs:
        entry: dict[str, Any] = {"urls": list(c.urls)}
        if c.auth_secret:
            entry["username"], entry["credential"] = turn_credentials(c.auth_secret, user, now, c.ttl)
        elif c.username is not None:
            entry["username"], entry["credential"] = c.username, c.credential or ""
        out.append(entry)
    return out
