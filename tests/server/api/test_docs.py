"""docs/api.md stays true: the endpoint table is current and every error code is documented."""

from __future__ import annotations

import re
from pathlib import Path

from server.reference import BEGIN, END, render_block

ROOT = Path(__file__).resolve().parents[3]
API_MD = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def test_endpoint_table_is_current() -> None:
    block = API_MD[API_MD.index(BEGIN) : API_MD.index(END) + len(END)]
    assert block == render_block(), "run: .venv/bin/python -m server.reference"


def test_every_error_code_is_documented() -> None:
    codes: set[str] = set()
    for path in (ROOT / "server").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes |= set(re.findall(r'code="([a-z_]+)"', text))
        codes |= set(re.findall(r'^\s+code = "([a-z_]+)"', text, re.M))
    documented = set(re.findall(r"`([a-z_]+)`", API_MD))
    assert codes, "no codes found: the pattern is stale"
    assert sorted(codes - documented) == []
