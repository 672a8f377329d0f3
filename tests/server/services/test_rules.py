"""Unit tests of pure rules: ID numbers, filenames, the audit chain, the login limiter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.clock import FakeClock
from server.errors import TooManyRequests
from server.services.audit import GENESIS, entry_digest, entry_fields, verify_entries
from server.services.auth import LoginRateLimiter
from server.services.documents import sanitise_filename
from server.services.identity import is_valid_id_number, mask_id_number
from server.storage.models import CaseAuditEntry


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("11010519491231002X", True),
        ("440524198001010013", True),
        ("440524198001010014", False),  # wrong check digit
        ("11010519491331002X", False),  # month 13
        ("1101051949123100", False),  # too short
        ("11010519491231002x", False),  # lower-case x is normalised before, not here
        ("A1010519491231002X", False),
        # BUG: \d and int() took these, making a twin of 11010519491231002X / 440524198001010013 with its own hash.
        ("\uff11\uff11\uff10\uff11\uff10\uff1519491231002X", False),  # fullwidth digits
        ("\u0664\u0664\u0660\u0665\u0662\u0664198001010013", False),  # Arabic-Indic digits
        ("44052419800101001\u0663", False),  # an Arabic-Indic check digit
        ("11010519491231002X\n", False),  # $ matches before a final newline
    ],
)
def test_id_number_checksum(value: str, ok: bool) -> None:
    assert is_valid_id_number(value) is ok


def test_mask_keeps_region_and_tail_only() -> None:
    assert mask_id_number("11010519491231002X") == "110105********002X"


@pytest.mark.parametrize(
    ("raw", "ctype", "expected"),
    [
        ("../../etc/passwd.png", "image/png", "passwd.png"),
        ("..\\..\\win.ini", "application/pdf", "win.pdf"),
        ("/abs/path/身份证.jpeg", "image/jpeg", "身份证.jpg"),
        ("evil\u202egnp.exe", "image/png", "evilgnp.png"),
        ("a\x00b.pdf", "application/pdf", "ab.pdf"),
        ("．．／secret.png", "image/png", "secret.png"),
        ("", "image/png", "document.png"),
        ("...", "image/png", "document.png"),
        ('a<b>:"c|d?.pdf', "application/pdf", "a_b___c_d_.pdf"),
        ("x" * 500 + ".pdf", "application/pdf", "x" * 100 + ".pdf"),
    ],
)
def test_sanitise_filename(raw: str, ctype: str, expected: str) -> None:
    assert sanitise_filename(raw, ctype) == expected


def _chain(n: int) -> list[CaseAuditEntry]:
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        e = CaseAuditEntry(
            case_id=7,
            seq=seq,
            actor_user_id=1,
            actor_role="clerk",
            actor_name="甲",
            action="case.transition",
            details={"to": str(seq)},
            at=datetime(2026, 11, 24, 9, seq, tzinfo=UTC),
            client_addr="127.0.0.1",
            prev_hash=prev,
        )
        e.hash = entry_digest(prev, entry_fields(e))
        prev = e.hash
        entries.append(e)
    return entries


def test_audit_chain_verifies_and_detects_each_kind_of_tampering() -> None:
    assert verify_entries(7, _chain(4)).ok
    edited = _chain(4)
    edited[2].details = {"to": "forged"}
    assert verify_entries(7, edited).broken_at == 3
    dropped = _chain(4)
    del dropped[1]
    assert not verify_entries(7, dropped).ok
    swapped = _chain(4)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert not verify_entries(7, swapped).ok
    rehashed = _chain(3)
    rehashed[0].actor_name = "乙"
    rehashed[0].hash = entry_digest(GENESIS, entry_fields(rehashed[0]))
    assert verify_entries(7, rehashed).broken_at == 2  # the next link no longer matches


def test_login_limiter_counts_per_key_and_forgets_after_window() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(clock, max_attempts=3, window=60)
    for _ in range(3):
        limiter.check("user:a")
        limiter.failed("user:a")
    with pytest.raises(TooManyRequests):
        limiter.check("user:a")
    limiter.check("user:b")
    clock.advance(61)
    limiter.check("user:a")
