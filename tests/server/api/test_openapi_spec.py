"""The served OpenAPI document is precise enough to fuzz: ids, statuses, download types, uploads, error bodies."""

from __future__ import annotations

from typing import Any

import pytest

from server.api.routing import MAX_DB_ID
from server.app import openapi_document

DOC = openapi_document()
OPS = [(path, method, op) for path, ops in DOC["paths"].items() for method, op in ops.items()]


def op(method: str, path: str) -> dict[str, Any]:
    return dict(DOC["paths"]["/api/v1" + path][method])


def test_every_id_in_a_path_is_a_bounded_integer() -> None:
    ids = [(path, p) for path, _, o in OPS for p in o["parameters"] if p["in"] == "path" and p["name"].endswith("_id")]
    assert len(ids) > 50
    for path, p in ids:
        assert p["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_DB_ID}, path
    codes = [p for _, _, o in OPS for p in o["parameters"] if p["in"] == "path" and not p["name"].endswith("_id")]
    assert {p["name"] for p in codes} == {"code", "item_code"}
    assert all(p["schema"] == {"type": "string"} for p in codes)


def test_optional_query_parameters_are_never_null() -> None:
    for path, _, o in OPS:
        for p in o["parameters"]:
            if p["in"] == "query":
                assert "null" not in str(p["schema"]), (path, p)
                assert p["schema"].get("default", 0) is not None, (path, p)


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/cases", {"201"}),
        ("post", "/cases/{case_id}/sessions", {"201", "200"}),
        ("post", "/inspections/{task_id}/evidence", {"201", "200"}),
        ("post", "/windows/{window_id}/call-next", {"200", "204"}),
        ("delete", "/cases/{case_id}/documents/{document_id}", {"204"}),
        ("post", "/inspections/{task_id}/snapshot-requests", {"202"}),
        ("get", "/cases", {"200"}),
    ],
)
def test_success_statuses_are_the_real_ones(method: str, path: str, statuses: set[str]) -> None:
    responses = op(method, path)["responses"]
    assert set(responses) - {"4XX"} == statuses
    for status in statuses:
        if status == "204":
            assert "content" not in responses[status]
        else:
            assert responses[status]["content"]


def test_downloads_declare_their_real_types() -> None:
    material = op("get", "/cases/{case_id}/documents/{document_id}/content")["responses"]["200"]["content"]
    assert set(material) == {"image/jpeg", "image/png", "image/webp", "application/pdf"}
    photo = op("get", "/inspections/{task_id}/evidence/{evidence_id}/content")["responses"]["200"]["content"]
    assert set(photo) == {"image/jpeg", "image/png", "image/webp"}
    for content in (material, photo):
        assert all(c["schema"] == {"type": "string", "format": "binary"} for c in content.values())


def test_uploads_require_the_file_part() -> None:
    for path in ("/cases/{case_id}/documents", "/inspections/{task_id}/evidence"):
        schema = op("post", path)["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert schema["required"] == ["file"], path
        assert schema["properties"]["file"] == {"type": "string", "format": "binary"}


def test_errors_and_response_fields_are_always_present() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["code", "message", "details"]
    for _, _, o in OPS:
        assert o["responses"]["4XX"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }


@pytest.mark.parametrize("raw", ["0", "2147483648", "1e3", "０１", "-1"])
async def test_an_id_out_of_range_is_refused_as_the_spec_says(as_user: Any, raw: str) -> None:
    staff = await as_user("staff")
    resp = await staff.get(f"/api/v1/cases/{raw}/documents")
    assert resp.status == 422
    assert (await resp.json())["code"] == "invalid_path_parameter"
