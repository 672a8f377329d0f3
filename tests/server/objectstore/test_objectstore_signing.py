"""UrlSigner: binding, expiry, tampering, malformed input."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from server.objectstore.base import ObjectStoreError
from server.objectstore.signing import SignatureExpired, SignatureInvalid, UrlSigner

SECRET = "signing-secret-0123456789"
NOW = 1_800_000_000


def make(now: float = NOW, secret: str | bytes = SECRET) -> UrlSigner:
    return UrlSigner(secret, clock=lambda: now)


def test_roundtrip() -> None:
    signer = make()
    sig = signer.sign("a/b", NOW + 60, None)
    signer.verify("a/b", str(NOW + 60), sig, None)
    sig_named = signer.sign("a/b", NOW + 60, "名前.pdf")
    signer.verify("a/b", str(NOW + 60), sig_named, "名前.pdf")
    assert sig != sig_named


def test_errors_are_object_store_errors() -> None:
    assert issubclass(SignatureInvalid, ObjectStoreError)
    assert issubclass(SignatureExpired, ObjectStoreError)


@pytest.mark.parametrize(
    ("key", "expires", "filename"),
    [
        ("a/c", NOW + 60, None),  # other key
        ("a/b", NOW + 61, None),  # other expiry
        ("a/b", NOW + 60, ""),  # filename None vs ""
        ("a/b", NOW + 60, "x.pdf"),  # filename added
    ],
)
def test_signature_binds_every_field(key: str, expires: int, filename: str | None) -> None:
    signer = make()
    sig = signer.sign("a/b", NOW + 60, None)
    with pytest.raises(SignatureInvalid):
        signer.verify(key, str(expires), sig, filename)


def test_other_secret_rejected() -> None:
    sig = make(secret="another-secret-0123456789").sign("k", NOW + 60, None)
    with pytest.raises(SignatureInvalid):
        make().verify("k", str(NOW + 60), sig, None)


def test_secret_bytes_and_str_agree() -> None:
    assert make(secret=SECRET.encode()).sign("k", 5, None) == make().sign("k", 5, None)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner("short")


def test_expiry_boundary() -> None:
    sig = make().sign("k", NOW + 10, None)
    make(now=NOW + 9.999).verify("k", str(NOW + 10), sig, None)
    with pytest.raises(SignatureExpired):
        make(now=NOW + 10).verify("k", str(NOW + 10), sig, None)


def test_forged_expiry_is_invalid_not_expired() -> None:
    sig = make().sign("k", NOW - 10, None)
    with pytest.raises(SignatureExpired):
        make().verify("k", str(NOW - 10), sig, None)
    with pytest.raises(SignatureInvalid):
        make().verify("k", str(NOW - 11), sig, None)


@pytest.mark.parametrize("expires", ["", "-1", "1e9", " 1", "1800000060\n", "١٢٣", "9" * 13])
def test_malformed_expires(expires: str) -> None:
    with pytest.raises(SignatureInvalid):
        make().verify("k", expires, "x" * 43, None)


def test_malformed_or_tampered_sig() -> None:
    signer = make()
    sig = signer.sign("k", NOW + 60, None)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for bad in ["", sig + "=", sig[:-1], flipped, sig + "\u00e9", "é" * 43, sig.upper()]:
        with pytest.raises(SignatureInvalid):
            signer.verify("k", str(NOW + 60), bad, None)


def test_domain_separated() -> None:
    """The MAC is not a plain HMAC of the message, so tokens from other uses of
    the secret cannot be replayed here."""
    signer = make()
    message = json.dumps(["k", NOW + 60, None], separators=(",", ":")).encode()
    plain = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    import base64

    assert signer.sign("k", NOW + 60, None) != base64.urlsafe_b64encode(plain).rstrip(b"=").decode()
