"""Materials in the call (issue 17): upload while the case is in session, per-material review (材料预审),
return for correction (补正) and re-upload, each step audited and pushed at once over Socket.IO."""

from __future__ import annotations

from typing import Any

from tests.conftest import Session
from tests.server.api.conftest import open_case, pdf_bytes, png_bytes, upload
from tests.server.test_realtime import Peer


async def _in_session(staff: Session, clerk: Session) -> dict[str, Any]:
    """A case with every required material, submitted, and taken into a session by the town clerk."""
    case = await open_case(staff)
    for item in case["checklist"]:
        assert (await upload(staff, case["id"], item["code"], png_bytes())).status == 201
    resp = await staff.post(f"/api/v1/cases/{case['id']}/transitions", json={"to": "submitted"})
    assert resp.status == 200, await resp.text()
    resp = await clerk.post(f"/api/v1/cases/{case['id']}/transitions", json={"to": "in_session"})
    assert resp.status == 200, await resp.text()
    return case


async def _materials(session: Session, case_id: int) -> dict[str, Any]:
    resp = await session.get(f"/api/v1/cases/{case_id}/materials")
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


def _item(materials: dict[str, Any], code: str) -> dict[str, Any]:
    return next(i for i in materials["checklist"] if i["code"] == code)


async def test_upload_review_return_reupload_during_the_call(as_user: Any, client: Any) -> None:
    staff = await as_user("staff")
    clerk = await as_user("clerk_t1")
    case = await _in_session(staff, clerk)
    cid = case["id"]
    staff_push = Peer(client, staff.token)
    clerk_push = Peer(client, clerk.token)
    # Outsiders: another point's staff and another centre's civil-affairs clerk are never told.
    outsiders = [Peer(client, (await as_user(name)).token) for name in ("staff2", "clerk")]
    for peer in (staff_push, clerk_push, *outsiders):
        await peer.connect()
    try:
        # The summary for the clerk's call screen: applicant with the ID masked, number, matter, checklist.
        m = await _materials(clerk, cid)
        assert m["applicant_id_masked"] == case["applicant_id_masked"] and "*" in m["applicant_id_masked"]
        assert m["number"] == case["number"] and m["matter_code"] == "MZ-001" and m["state"] == "in_session"
        assert m["ticket"] is None
        assert _item(m, "id_card")["status"] == "pending"

        # The point adds a PDF to the ID-card item while the case is in session; both sides are told at once.
        resp = await upload(staff, cid, "id_card", pdf_bytes(), filename="id.pdf", content_type="application/pdf")
        assert resp.status == 201, await resp.text()
        added = await resp.json()
        assert added["review_state"] == "pending" and added["item"] == "id_card"
        one = await (await clerk.get(f"/api/v1/cases/{cid}/documents/{added['id']}")).json()
        assert one["item"] == "id_card" and one["review_state"] == "pending"
        for peer in (clerk_push, staff_push):
            data = await peer.wait_for("document.added", lambda d: d["document"]["id"] == added["id"])
            assert data["case_id"] == cid and data["item"] == "id_card" and data["item_status"] == "pending"

        # Returning needs a reason; the point may not review; the clerk returns it with one.
        review = f"/api/v1/cases/{cid}/documents/{added['id']}/review"
        resp = await clerk.post(review, json={"decision": "returned"})
        assert resp.status == 422 and (await resp.json())["code"] == "review_reason_required"
        resp = await clerk.post(review, json={"decision": "returned", "reason": "   "})
        assert resp.status == 422 and (await resp.json())["code"] == "review_reason_required"
        resp = await clerk.post(review, json={"decision": "maybe"})
        assert resp.status == 422 and (await resp.json())["code"] == "validation_error"
        resp = await staff.post(review, json={"decision": "accepted"})
        assert resp.status == 403 and (await resp.json())["code"] == "review_not_allowed"
        resp = await clerk.post(review, json={"decision": "returned", "reason": "照片模糊，请重新拍摄"})
        assert resp.status == 200, await resp.text()
        returned = await resp.json()
        assert returned["review_state"] == "returned" and returned["review_reason"] == "照片模糊，请重新拍摄"
        assert returned["reviewed_by"] is not None and returned["reviewed_at"] is not None
        data = await staff_push.wait_for("document.reviewed", lambda d: d["document"]["id"] == added["id"])
        assert data["item_status"] == "returned" and data["document"]["review_reason"] == "照片模糊，请重新拍摄"

        # The point sees the reason on the item, which no longer counts as satisfied.
        m = await _materials(staff, cid)
        ident = _item(m, "id_card")
        assert ident["status"] == "returned" and not ident["satisfied"]
        assert ident["review_reason"] == "照片模糊，请重新拍摄" and ident["document_id"] == added["id"]
        assert m["checklist_complete"] is False
        detail = await (await staff.get(f"/api/v1/cases/{cid}")).json()
        assert next(i for i in detail["checklist"] if i["code"] == "id_card")["status"] == "returned"
        assert detail["checklist_complete"] is False

        # The re-upload supersedes the returned document: the item is pending again, the old one can't be reviewed.
        resp = await upload(staff, cid, "id_card", png_bytes(), filename="id-again.png")
        assert resp.status == 201, await resp.text()
        again = await resp.json()
        await clerk_push.wait_for("document.added", lambda d: d["document"]["id"] == again["id"])
        assert _item(await _materials(clerk, cid), "id_card")["status"] == "pending"
        resp = await clerk.post(review, json={"decision": "accepted"})
        assert resp.status == 409 and (await resp.json())["code"] == "document_superseded"
        resp = await clerk.post(f"/api/v1/cases/{cid}/documents/{again['id']}/review", json={"decision": "accepted"})
        assert resp.status == 200, await resp.text()
        await staff_push.wait_for("document.reviewed", lambda d: d["document"]["id"] == again["id"])
        m = await _materials(staff, cid)
        assert _item(m, "id_card")["status"] == "accepted" and m["checklist_complete"] is True
        returned_doc = next(d for d in m["documents"] if d["id"] == added["id"])
        assert returned_doc["review_state"] == "returned"  # kept in the file, marked

        # Every step is in the audit, the re-upload naming the document it replaces.
        entries = (await (await clerk.get(f"/api/v1/cases/{cid}/audit")).json())["entries"]
        steps = [(e["action"], e["details"].get("document_id")) for e in entries if e["action"].startswith("document.")]
        assert ("document.uploaded", added["id"]) in steps
        assert ("document.returned", added["id"]) in steps
        assert ("document.uploaded", again["id"]) in steps
        assert ("document.accepted", again["id"]) in steps
        reup = next(
            e for e in entries if e["action"] == "document.uploaded" and e["details"]["document_id"] == again["id"]
        )
        assert reup["details"]["replaces"] == added["id"]
        ret = next(e for e in entries if e["action"] == "document.returned")
        assert ret["details"]["reason"] == "照片模糊，请重新拍摄"
        # Removing the newest brings the returned one back as the item's newest: the item needs correction again.
        resp = await staff.delete(f"/api/v1/cases/{cid}/documents/{again['id']}")
        assert resp.status == 204
        data = await clerk_push.wait_for("document.removed", lambda d: d["document_id"] == again["id"])
        assert data["item"] == "id_card" and data["item_status"] == "returned"
        assert _item(await _materials(clerk, cid), "id_card")["status"] == "returned"
        for peer in outsiders:
            assert not [name for name, _ in peer.events if name.startswith("document.")]
    finally:
        for peer in (staff_push, clerk_push, *outsiders):
            await peer.close()


async def test_final_states_refuse_uploads_and_reviews(as_user: Any) -> None:
    staff = await as_user("staff")
    clerk = await as_user("clerk_t1")
    case = await _in_session(staff, clerk)
    cid = case["id"]
    doc = (await (await staff.get(f"/api/v1/cases/{cid}/documents")).json())["items"][0]
    resp = await clerk.post(f"/api/v1/cases/{cid}/transitions", json={"to": "accepted"})
    assert resp.status == 200, await resp.text()
    resp = await upload(staff, cid, "id_card", png_bytes())
    assert resp.status == 409 and (await resp.json())["code"] == "case_closed"
    resp = await clerk.post(f"/api/v1/cases/{cid}/documents/{doc['id']}/review", json={"decision": "accepted"})
    assert resp.status == 409 and (await resp.json())["code"] == "case_closed"


async def test_only_the_cases_clerk_reviews(as_user: Any) -> None:
    staff = await as_user("staff")
    town = await as_user("clerk_t1")
    district = await as_user("clerk")
    case = await _in_session(staff, town)
    cid = case["id"]
    doc = (await (await staff.get(f"/api/v1/cases/{cid}/documents")).json())["items"][0]
    path = f"/api/v1/cases/{cid}/documents/{doc['id']}/review"
    # Another centre's clerk cannot even see the case; a missing document is its own code.
    resp = await district.post(path, json={"decision": "accepted"})
    assert resp.status == 404 and (await resp.json())["code"] == "case_not_found"
    # The centre's supervisor reads the case but changes nothing.
    supervisor = await as_user("supervisor_t1")
    assert (await supervisor.get(f"/api/v1/cases/{cid}/materials")).status == 200
    resp = await supervisor.post(path, json={"decision": "accepted"})
    assert resp.status == 403 and (await resp.json())["code"] == "forbidden"
    resp = await town.post(f"/api/v1/cases/{cid}/documents/999999/review", json={"decision": "accepted"})
    assert resp.status == 404 and (await resp.json())["code"] == "document_not_found"
    resp = await town.post(path, json={"decision": "returned", "reason": "x" * 501})
    assert resp.status == 422
    resp = await district.get(f"/api/v1/cases/{cid}/materials")
    assert resp.status == 404
