"""HMAC signatures for the filesystem store's download URLs.

A signature binds the object key, the expiry time and the optional download
filename together, so none of them can be changed without invalidating it.
The MAC input is domain-separated from every other use of the server secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable

from server.objectstore.base import ObjectStoreError

_DOMAIN = b"cloudwindow-object-url\0"
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")
_MIN_SECRET_BYTES = 16


class SignatureInvalid(ObjectStoreError):
    """The signature is missing, malformed, or does not match the request."""


class SignatureExpired(ObjectStoreError):
    """The signature is authentic but its expiry time has passed."""


class UrlSigner:
    """Signs and verifies ``(key, expires_at, filename)`` triples.

    ``secret`` must be at least 16 bytes (a ``str`` is UTF-8 encoded).
    ``clock`` returns the current Unix time; tests inject a fake one.  A URL is
    valid while ``clock() < expires_at``.
    """

    def __init__(self, secret: bytes | str, clock: Callable[[], float] = time.time) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < _MIN_SECRET_BYTES:
            raise ValueError(f"signing secret must be at least {_MIN_SECRET_BYTES} bytes")
        self._secret = raw
        self._clock = clock

    def now(self) -> float:
        """The signer's notion of the current Unix time."""
        return self._clock()

    def sign(self, key: str, expires_at: int, filename: str | None) -> str:
        """The signature (unpadded URL-safe base64 of an HMAC-SHA256) for the triple."""
        return base64.urlsafe_b64encode(self._mac(key, expires_at, filename)).rstrip(b"=").decode("ascii")

    def verify(self, key: str, expires: str, sig: str, filename: str | None) -> None:
        """Return if ``sig`` is valid for the triple and not expired.

        ``expires`` is the raw query-string value.  Raises
        :class:`SignatureInvalid` for anything malformed or not matching
        (checked first, in constant time), then :class:`SignatureExpired`.
        """
        if not isinstance(expires, str) or not _EXPIRES_RE.fullmatch(expires):
            raise SignatureInvalid("malformed expiry")
        try:
            given = sig.encode("ascii")
        except (AttributeError, UnicodeEncodeError):
            raise SignatureInvalid("malformed signature") from None
        expires_at = int(expires)
        expected = self.sign(key, expires_at, filename).encode("ascii")
        if not hmac.compare_digest(given, expected):
            raise SignatureInvalid("signature does not match")
        if self._clock() >= expires_at:
            raise SignatureExpired("signed URL has expired")

    def _mac(self, key: str, expires_at: int, filename: str | None) -> bytes:
        # A JSON array is an unambiguous encoding of the triple (None != "").
        message = json.dumps([key, expires_at, filename], ensure_ascii=True, separators=(",", ":"))
        return hmac.new(self._secret, _DOMAIN + message.encode("ascii"), hashlib.sha256).digest()
