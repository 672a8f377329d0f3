"""A case from opening at a service point to completion by the district clerk."""

from __future__ import annotations

import hashlib
from typing import Any

from server.app import SERVICES
from tests.server.api.conftest import CASE_BODY, ID_NUMBER, open_case, pdf_bytes, png_bytes, upload


async def test_full_case_flow(as_user: Any, client: Any) -> None:
    staff = await as_user("staff")
    clerk = await as_user("clerk")

    # Routed to the district centre's civil-affairs department (default: the town's).
    case = await open_case(staff, is_proxy=True, proxy_name="李明", centre_code="D01")
    assert case["state"] == "draft"
    assert case["applicant_id_masked"] == "110105********002X"
    assert case["applicant_id_number"] == ID_NUMBER
    assert not case["checklist_complete"]
    cid = case["id"]

    # Submitting before the required materials are there is refused with the missing items.
    resp = await staff.post(f"/api/v1/cases/{cid}/transitions", json={"to": "submitted"})
    assert resp.status == 409
    body = await resp.json()
    assert body["code"] == "checklist_incomplete"
    assert set(body["details"]["missing"]) == {i["code"] for i in case["checklist"] if i["required"]}

    pdf = pdf_bytes()
    for item in case["checklist"]:
        data = pdf if item["code"] == "id_card" else png_bytes()
        resp = await upload(staff, cid, item["code"], data, filename=f"../{item['code']}.bin")
        assert resp.status == 201, await resp.text()
        doc = await resp.json()
        assert doc["sha256"] == hashlib.sha256(data).hexdigest()
        assert "/" not in doc["filename"]

    resp = await staff.get(f"/api/v1/cases/{cid}")
    assert (await resp.json())["checklist_complete"] is True

    resp = await staff.post(f"/api/v1/cases/{cid}/transitions", json={"to": "submitted"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["due_at"] is not None

    # The district civil-affairs clerk sees it in the list, with the ID number masked.
    resp = await clerk.get("/api/v1/cases?state=submitted")
    listed = (await resp.json())["items"]
    assert [c["id"] for c in listed] == [cid]
    assert "applicant_id_number" not in listed[0]
    assert ID_NUMBER not in await resp.text()

    docs = (await (await clerk.get(f"/api/v1/cases/{cid}/documents")).json())["items"]
    first = docs[0]
    resp = await clerk.get(f"/api/v1/cases/{cid}/documents/{first['id']}/content")
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest() == first["sha256"]
    resp = await clerk.get(f"/api/v1/cases/{cid}/documents/{first['id']}/url")
    url = (await resp.json())["url"]
    resp = await client.get(url, headers={"Range": "bytes=0-3"})
    assert resp.status == 206
    assert await resp.read() == b"%PDF"

    for to in ("in_session", "accepted", "completed"):
        resp = await clerk.post(f"/api/v1/cases/{cid}/transitions", json={"to": to})
        assert resp.status == 200, await resp.text()
    resp = await clerk.post(f"/api/v1/cases/{cid}/transitions", json={"to": "cancelled"})
    assert resp.status == 409
    assert (await resp.json())["code"] == "illegal_transition"

    resp = await clerk.get(f"/api/v1/cases/{cid}/audit")
    audit = await resp.json()
    assert audit["verified"] is True
    actions = [e["action"] for e in audit["entries"]]
    assert actions[0] == "case.created"
    assert actions.count("document.uploaded") == len(case["checklist"])
    assert actions.count("case.transition") == 4
    assert ID_NUMBER not in await resp.text()


async def test_default_routing_is_the_nearest_centre(as_user: Any) -> None:
    staff = await as_user("staff")
    town_clerk = await as_user("clerk_t1")
    district_clerk = await as_user("clerk")
    cid = (await open_case(staff))["id"]
    assert (await town_clerk.get(f"/api/v1/cases/{cid}")).status == 200
    assert (await district_clerk.get(f"/api/v1/cases/{cid}")).status == 404
    resp = await staff.post("/api/v1/cases", json={**CASE_BODY, "centre_code": "T02"})
    assert resp.status == 422
    assert (await resp.json())["code"] == "invalid_centre"


async def test_audit_tampering_is_detected(as_user: Any, client: Any) -> None:
    from sqlalchemy import update

    from server.storage.models import CaseAuditEntry

    staff = await as_user("staff")
    cid = (await open_case(staff))["id"]
    await staff.patch(f"/api/v1/cases/{cid}", json={"applicant_phone": "13900139000"})
    async with client.app[SERVICES].db.transaction() as s:
        await s.execute(
            update(CaseAuditEntry)
            .where(CaseAuditEntry.case_id == cid, CaseAuditEntry.seq == 1)
            .values(actor_name="someone else")
        )
    audit = await (await staff.get(f"/api/v1/cases/{cid}/audit")).json()
    assert audit["verified"] is False
    assert audit["broken_at"] == 1
