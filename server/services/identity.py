"""Chinese resident ID numbers (GB 11643-1999): validation, masking, keyed hashing."""

from __future__ import annotations

import hashlib
import hmac
import re

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
#: ASCII only: ``\d`` (and ``int()``) also accept fullwidth and Arabic-Indic digits, which would make a "twin" of a
#: real number with another keyed hash, sidestepping the one-ticket-per-matter and no-show rules.
_PATTERN = re.compile(r"^[0-9]{17}[0-9X]$", re.ASCII)


def normalise_id_number(value: str) -> str:
    return value.strip().upper()


def is_valid_id_number(value: str) -> bool:
    """18 characters, a plausible birth date and the ISO 7064 MOD 11-2 check digit."""
    if not _PATTERN.fullmatch(value):  # fullmatch: ``$`` would also match before a final newline
        return False
    year, month, day = int(value[6:10]), int(value[10:12]), int(value[12:14])
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _WEIGHTS, strict=True))
    return _CHECK[total % 11] == value[17]


def mask_id_number(value: str) -> str:
    """``110101********123X``: enough to tell two people apart at the counter, not to misuse."""
    if len(value) < 10:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


def mask_phone(value: str) -> str:
    """``138****8000``: the digits' shape for a guest who must recognise the call, not the number."""
    digits = [c for c in value if c.isdigit()]
    if len(digits) < 7:
        return "*" * len(value)
    return "".join(digits[:3]) + "*" * (len(digits) - 7) + "".join(digits[-4:])


def id_number_hash(secret: str, value: str) -> str:
    """Keyed hash for real-name lookups without storing the number in another index."""
    return hmac.new(secret.encode(), b"id-number\0" + value.encode(), hashlib.sha256).hexdigest()
