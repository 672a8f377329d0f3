"""No module takes another module's private names (``from x import _helper``).

A leading underscore says "not part of this module's contract"; importing it
elsewhere freezes an internal detail (the inspection upload once took
``_chunks`` and ``_file_part`` from the documents API; they now live, public,
in ``server/api/multipart.py``).  Private *modules* (``server.objectstore._aio``)
are import-linter's business (``private_modules`` contract in pyproject.toml).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "signalling", "recordings", "tests", "bench")


def _module_file(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def test_no_private_names_imported_across_modules() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.module is None:
                    continue
                module = node.module
                if node.level:  # relative: resolve against the file's package
                    base = _package_of(path).split(".")
                    module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    name = alias.name
                    if not name.startswith("_") or name.startswith("__"):
                        continue
                    if _module_file(f"{module}.{name}"):
                        continue  # a private module, imported from its package (import-linter checks where)
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {module} import {name}")
    assert found == []
