"""Every error ``code`` the server can send has words in both web catalogues.

The server's messages stay English (they are for developers and logs); the web
client shows ``errors.<code>`` from ``web_client/src/locales/errors.{zh-CN,en}.ts``
instead (``web_client/src/lib/errors.ts``).  This test reads the server's own
source to find every code it can emit, so a new code without a translation fails
here rather than showing English in the Chinese interface.

Where a code comes from, by the shapes the source uses:

- ``code="..."`` keyword arguments (``Conflict("...", code="window_busy")``);
- ``code = "..."`` class attributes of exception classes (``ApiError`` subclasses);
- the argument in the position of a parameter named ``code`` of any function or
  exception class defined in the packages (``refuse("not_joined", ...)``,
  ``MediaPolicyError("sdp_invalid", ...)``, ``_error_response(500, "internal_error", ...)``);
- ``Literal[...]`` aliases named ``*Code`` (``signalling/sfu/errors.py``);
- dict literals ``{"code": "...", "message": ...}`` (Socket.IO error acks);
- HTTP status tables ``{404: ("route_not_found", "no such endpoint")}``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "signalling", "recordings")
LOCALES = ROOT / "web_client" / "src" / "locales"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
#: Codes only the web client makes (``web_client/src/lib/api.ts``, ``errors.ts``).
CLIENT_CODES = {"network_error", "http_error", "error", "timeout"}


def _sources() -> list[tuple[Path, ast.Module]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out.append((path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return out


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value):
        return node.value
    return None


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _code_positions(trees: list[tuple[Path, ast.Module]]) -> dict[str, set[int]]:
    """Callable name -> positional index of its ``code`` parameter (``self`` not counted; classes via ``__init__``)."""
    positions: dict[str, set[int]] = {}

    def record(name: str, fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> None:
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if method and params:
            params = params[1:]
        if "code" in params:
            positions.setdefault(name, set()).add(params.index("code"))

    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        record(node.name if item.name == "__init__" else item.name, item, method=True)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                record(node.name, node, method=False)
    return positions


def _exception_classes(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    bases: dict[str, set[str]] = {}
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, set()).update(n for b in node.bases if (n := _name(b)))
    errors = {"Exception", "ValueError", "ImportError"}
    grew = True
    while grew:
        grew = False
        for cls, parents in bases.items():
            if cls not in errors and parents & errors:
                errors.add(cls)
                grew = True
    return errors


def _codes_in(tree: ast.Module, positions: dict[str, set[int]], exceptions: set[str]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "code" and (s := _str(kw.value)):
                    yield s
            callee = _name(node.func)
            for i in positions.get(callee or "", ()):
                if i < len(node.args) and (s := _str(node.args[i])):
                    yield s
        elif isinstance(node, ast.ClassDef) and node.name in exceptions:
            for item in node.body:
                if isinstance(item, ast.Assign) and any(_name(t) == "code" for t in item.targets):
                    if s := _str(item.value):
                        yield s
                elif isinstance(item, ast.AnnAssign) and _name(item.target) == "code" and (s := _str(item.value)):
                    yield s
        elif isinstance(node, ast.Assign) and any((_name(t) or "").endswith("Code") for t in node.targets):
            if isinstance(node.value, ast.Subscript) and _name(node.value.value) == "Literal":
                for elt in ast.walk(node.value.slice):
                    if s := _str(elt):
                        yield s
        elif isinstance(node, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            if "code" in keys and "message" in keys and (s := _str(node.values[keys.index("code")])):
                yield s
            if keys and all(isinstance(k, int) and 400 <= k < 600 for k in keys):
                for v in node.values:
                    if isinstance(v, ast.Tuple) and len(v.elts) == 2 and (s := _str(v.elts[0])):
                        yield s


def server_codes() -> set[str]:
    trees = _sources()
    positions = _code_positions(trees)
    exceptions = _exception_classes(trees)
    return {code for _, tree in trees for code in _codes_in(tree, positions, exceptions)}


def documented_codes() -> set[str]:
    """The codes of the "Error codes" table in ``docs/api.md`` (first column, back-quoted)."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    codes: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([a-z][a-z0-9_]*)`", line.split("|")[1]))
    return codes


def catalogue_codes(language: str) -> set[str]:
    """The keys of ``errors.<language>.ts``'s ``codes`` group, read as text."""
    text = (LOCALES / f"errors.{language}.ts").read_text(encoding="utf-8")
    match = re.search(r"\bcodes: \{(.*?)\n\s*\},", text, re.S)
    assert match, f"errors.{language}.ts has no `codes: {{ ... }}` group"
    return set(re.findall(r"^\s+([a-z][a-z0-9_]*): ", match.group(1), re.M))


def test_the_scan_finds_the_known_shapes() -> None:
    codes = server_codes()
    # One of each shape the module docstring lists, so a scanner that lost a shape fails here.
    for code in (
        "window_busy",  # keyword
        "forbidden",  # class attribute
        "not_joined",  # refuse("...", ...) in signalling
        "internal_error",  # _error_response(500, "...") and the cluster's dict ack
        "candidate_not_allowed",  # MediaPolicyError / PolicyCode
        "negotiation_timeout",  # RoomCode
        "route_not_found",  # HTTP status table
    ):
        assert code in codes, code
    assert len(codes) > 100


def test_every_documented_code_is_found_by_the_scan() -> None:
    # docs/api.md lists codes; the scan must see each of them, or it misses a shape the source uses.
    missing = documented_codes() - server_codes()
    assert not missing, f"documented in docs/api.md but not found in the source: {sorted(missing)}"


def test_every_code_has_words_in_both_catalogues() -> None:
    codes = server_codes() | documented_codes() | CLIENT_CODES
    for language in ("zh-CN", "en"):
        missing = codes - catalogue_codes(language)
        assert not missing, f"errors.{language}.ts lacks: {sorted(missing)}"


def test_the_catalogues_have_no_codes_the_server_cannot_send() -> None:
    # A stale key is harmless to users but hides a renamed code; keep the two sets equal.
    known = server_codes() | documented_codes() | CLIENT_CODES
    for language in ("zh-CN", "en"):
        stale = catalogue_codes(language) - known
        assert not stale, f"errors.{language}.ts has codes nobody sends: {sorted(stale)}"
