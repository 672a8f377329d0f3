"""Rules every decoded document from outside obeys, whatever its entry point.

A JSON request body, an imported YAML/CSV catalogue and anything else parsed
into plain Python containers pass through :func:`check_structure` before
any model sees them.  Two rules, both checked without recursion so that the
check itself cannot be the thing that overflows the stack:

* nesting is at most ``max_depth`` containers deep (no legitimate document of
  this API nests more than a handful of levels; a 1 KB body can nest 500
  levels, and every recursive consumer downstream would pay for it);
* no string, key or value, contains U+0000 (PostgreSQL's ``text`` refuses it,
  SQLite keeps it and truncates it on the way out, and logs cut at it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "StructureRefused", "check_structure", "has_nul"]

DEFAULT_MAX_DEPTH = 32


class StructureRefused(ValueError):
    """A document broke one of the rules; ``reason`` is ``too_deep`` or ``nul_character``."""

    def __init__(self, reason: str, message: str, path: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


def has_nul(text: str) -> bool:
    return "\x00" in text


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and has_nul(key):
                raise StructureRefused("nul_character", "text may not contain NUL characters", str(key)[:40])
            yield str(key), item
    else:
        for index, item in enumerate(value):
            yield str(index), item


def check_structure(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise :class:`StructureRefused` if ``value`` nests deeper than ``max_depth`` or holds a NUL anywhere."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if has_nul(item):
                raise StructureRefused("nul_character", "text may not contain NUL characters", path or "/")
        elif isinstance(item, (dict, list, tuple)):
            if depth >= max_depth:
                raise StructureRefused(
                    "too_deep", f"the document nests deeper than {max_depth} levels", path[:200] or "/"
                )
            for key, child in _children(item):
                stack.append((child, depth + 1, f"{path}/{key}"))
