"""Bad input the schema refuses is refused by the server too: no lenient coercion behind the declared types.

Found by the OpenAPI fuzzer (``test_fuzz_openapi.py``, schemathesis' ``negative_data_rejection``): JSON bodies were
validated in pydantic's lax mode (``{"hold": 0}`` was taken as ``false``, ``false`` as the number 0) and an instant
could be a number, read as Unix time (``?until=0.5`` was 1970).  JSON bodies are now validated strictly, and
instants are ISO 8601 strings only.  Each case: one request, the exact 422 and code, and nothing changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.api.conftest import open_case


async def test_a_number_is_not_a_boolean(as_user: Any) -> None:
    case = await open_case(await as_user("staff"))
    admin = await as_user("admin")
    resp = await admin.request("PUT", f"/api/v1/cases/{case['id']}/legal-hold", json={"hold": 0})
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["code"] == "validation_error"
    assert body["details"]["errors"][0]["loc"] == ["hold"]
    resp = await admin.request("PUT", f"/api/v1/cases/{case['id']}/legal-hold", json={"hold": True})
    assert resp.status == 200 and (await resp.json())["legal_hold"] is True


@pytest.mark.parametrize("value", [False, "30", 30.5], ids=["bool", "string", "fraction"])
async def test_a_boolean_or_a_string_is_not_a_number(as_user: Any, value: object) -> None:
    admin = await as_user("admin")
    before = await (await admin.get("/api/v1/departments/1/queue-policy")).json()
    resp = await admin.request("PUT", "/api/v1/departments/1/queue-policy", json={"red_wait": value})
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["code"] == "validation_error"
    assert await (await admin.get("/api/v1/departments/1/queue-policy")).json() == before


@pytest.mark.parametrize("until", ["0.5", "1700000000", "-1"])
async def test_an_instant_in_a_query_is_not_unix_time(as_user: Any, until: str) -> None:
    staff = await as_user("staff")
    resp = await staff.get(f"/api/v1/departments/1/slots?until={until}")
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["code"] == "invalid_query"
    assert body["details"]["errors"][0]["loc"] == ["until"]
    resp = await staff.get("/api/v1/departments/1/slots?until=2030-01-01T00:00:00%2B08:00")
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("until", [1700000000, 0.5], ids=["int", "float"])
async def test_an_instant_in_a_body_is_not_unix_time(as_user: Any, until: float) -> None:
    supervisor = await as_user("supervisor")
    org = await (await supervisor.get("/api/v1/org")).json()
    window = org["windows"][0]["id"]
    resp = await supervisor.post(f"/api/v1/windows/{window}/tidal", json={"until": until})
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["code"] == "validation_error"
    assert body["details"]["errors"][0]["loc"] == ["until"]
