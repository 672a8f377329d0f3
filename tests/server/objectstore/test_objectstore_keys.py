"""Key, prefix, content type and filename validation (shared by both stores)."""

from __future__ import annotations

import pytest

from server.objectstore.base import (
    InvalidKey,
    content_disposition,
    normalize_sha256,
    validate_content_type,
    validate_filename,
    validate_key,
    validate_prefix,
)

GOOD_KEYS = [
    "a",
    "docs/2026/11/0f9c2b1e-report.pdf",
    "A-Z_a-z.0-9",
    "..hidden-but-not-dot-only",
    "x." * 50,
    "a/" * 255 + "b",  # 511 characters
    "k" * 512,
]

BAD_KEYS = [
    "",
    ".",
    "..",
    "...",
    "../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "a/",
    "a//b",
    "a/./b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a\x7fb",
    "．．/x",  # fullwidth full stops
    "\u2024\u2024/x",  # ONE DOT LEADER
    "\u2025/x",  # TWO DOT LEADER
    "%2e%2e/x",
    "%2E%2E%2Fx",
    "a/\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE
    "a\u200bb",  # zero-width space
    "a\u200fb",  # RIGHT-TO-LEFT MARK
    "\xc0\xae\xc0\xae/x",  # overlong UTF-8 '.' seen as Latin-1
    "caf\u00e9",
    "cafe\u0301",
    "a b",
    "a:b",
    "C:/x",
    "a?b",
    "a#b",
    "a*b",
    "~/x",
    "k" * 513,
    "a/" * 256 + "b",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) is key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_invalid_key_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_key("../x")


@pytest.mark.parametrize("key", [None, b"abc", 3])
def test_non_string_keys(key: object) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)  # type: ignore[arg-type]


def test_error_message_escapes_the_key() -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key("a/\u202eevil\x00")
    assert "\u202e" not in str(info.value)
    assert "\x00" not in str(info.value)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b.", "..x", ".", "..", "a/.."])
def test_valid_prefixes(prefix: str) -> None:
    # A trailing incomplete segment may be dots: it only matches keys like "..x".
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../", "a/./", "./", "a\\", "é", "%2e", "k" * 513])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        validate_prefix(prefix)


@pytest.mark.parametrize(
    "value",
    ["application/pdf", "image/svg+xml", "text/plain; charset=utf-8", 'multipart/x; boundary="a b"', "a/b;c=d"],
)
def test_valid_content_types(value: str) -> None:
    assert validate_content_type(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "pdf", "text/html\r\nSet-Cookie: a=b", "text/plain; charset=utf-8\n", "tëxt/plain", "a/b;" + "x" * 300],
)
def test_invalid_content_types(value: str) -> None:
    with pytest.raises(ValueError):
        validate_content_type(value)


def test_normalize_sha256() -> None:
    assert normalize_sha256("AB" * 32) == "ab" * 32
    for bad in ["", "ab" * 31, "zz" * 32, "ab" * 32 + "\n"]:
        with pytest.raises(ValueError):
            normalize_sha256(bad)


@pytest.mark.parametrize("name", ["", "a\x00b", "a\r\nb", "x\u202etxt.exe", "n" * 256])
def test_invalid_filenames(name: str) -> None:
    with pytest.raises(ValueError):
        validate_filename(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        ("a b.pdf", "attachment; filename=\"a b.pdf\"; filename*=UTF-8''a%20b.pdf"),
        ("报告.pdf", "attachment; filename=\"__.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf"),
        ('q"uo\\te/.pdf', "attachment; filename=\"q_uo_te_.pdf\"; filename*=UTF-8''q%22uo%5Cte%2F.pdf"),
        ("a;b=c.txt", "attachment; filename=\"a;b=c.txt\"; filename*=UTF-8''a%3Bb%3Dc.txt"),
    ],
)
def test_content_disposition(name: str, expected: str) -> None:
    assert content_disposition(name) == expected
