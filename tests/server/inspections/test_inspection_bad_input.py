"""Bad input to the inspection and consultation endpoints: stable 4xx codes, nothing half-written."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from server.app import SERVICES
from server.storage.models import InspectionEvidence, InspectionLocation
from tests.server.api.conftest import form
from tests.server.inspections.test_inspection_flow import CAPTURED, evidence_path, jpeg, start


async def code(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["code"]


async def test_bad_input_is_refused_with_stable_codes(as_user: Any, client: Any) -> None:
    _, clerk, task, inspector = await start(as_user, client)
    tid = task["id"]
    base = f"/api/v1/inspections/{tid}"
    for body in (
        {"lat": "north", "lon": 1, "accuracy": 1},
        {"lat": 1, "lon": 181, "accuracy": 1},
        {"lat": 1, "lon": 1, "accuracy": -1},
        {"lat": 1, "lon": 1},
        {"lat": 1, "lon": 1, "accuracy": 1, "speed": 3},
        {"lat": 1, "lon": 1, "accuracy": 1, "at": "yesterday"},
    ):
        assert await code(await inspector.post(f"{base}/locations", json=body)) == (422, "validation_error"), body
    assert await code(await clerk.get("/api/v1/inspections/abc")) == (422, "invalid_path_parameter")
    assert await code(await clerk.get("/api/v1/inspections/999999")) == (404, "inspection_not_found")
    assert await code(await clerk.request("PUT", f"{base}/items/NOT-A-CODE", json={"result": "pass"})) == (
        422,
        "invalid_path_parameter",
    )
    assert await code(await clerk.request("PUT", f"{base}/items/no_such", json={"result": "pass"})) == (
        404,
        "unknown_inspection_item",
    )
    assert await code(await clerk.request("PUT", f"{base}/items/kitchen_area", json={"result": "maybe"})) == (
        422,
        "validation_error",
    )
    assert await code(await clerk.post(f"{base}/snapshot-requests", json={"item": "nope"})) == (
        422,
        "unknown_inspection_item",
    )
    assert await code(await clerk.post(f"{base}/report", json={"lang": "fr"})) == (422, "validation_error")

    # Evidence stamps: missing or malformed query parameters, one coordinate without the other, no file part.
    photo = jpeg((1, 2, 3))
    for path in (
        f"{base}/evidence?client_seq=1&captured_at=2026-12-01T10:00:00Z&device=x",
        evidence_path(task, "short", 1),
        evidence_path(task, "photo-bad-time", 1, captured_at="2026-12-01T10:00:00"),
        evidence_path(task, "photo-bad-seq", -1),
        evidence_path(task, "photo-bad-lat", 1, lat=123),
    ):
        assert await code(await inspector.post(path, data=form(photo, "p.jpg", "image/jpeg"))) == (
            422,
            "invalid_query",
        ), path
    when = CAPTURED.replace("+", "%2B")
    one = f"{base}/evidence?client_key=photo-one-coord&client_seq=1&captured_at={when}&device=x&lat=1"
    assert await code(await inspector.post(one, data=form(photo, "p.jpg", "image/jpeg"))) == (422, "validation_error")
    resp = await inspector.post(evidence_path(task, "photo-no-file", 1), json={"x": 1})
    assert await code(resp) == (415, "unsupported_content_type")
    resp = await inspector.post(evidence_path(task, "photo-empty", 1), data=form(b"", "p.jpg", "image/jpeg"))
    assert await code(resp) == (422, "empty_file")

    # Notes and experts.
    cid = task["case_id"]
    assert await code(await clerk.post(f"/api/v1/cases/{cid}/notes", json={"text": ""})) == (422, "validation_error")
    assert await code(await clerk.post(f"/api/v1/cases/{cid}/notes", json={"text": "x" * 20_001})) == (
        422,
        "validation_error",
    )
    assert await code(await clerk.post(f"/api/v1/cases/{cid}/notes", json={"text": "x", "session_id": 999999})) == (
        404,
        "session_not_found",
    )
    assert await code(await clerk.get("/api/v1/experts?availability=maybe")) == (422, "invalid_query")
    assert await code(await clerk.get("/api/v1/experts?field=Food")) == (422, "invalid_query")

    async with client.app[SERVICES].db.transaction() as s:
        for model in (InspectionEvidence, InspectionLocation):
            assert (await s.execute(select(func.count()).select_from(model))).scalar_one() == 0, model


async def test_offline_photos_arrive_late_and_out_of_order_but_are_listed_in_order(as_user: Any, client: Any) -> None:
    """The phone uploads what it kept while offline; retries of the same photo are stored once."""
    _, clerk, task, inspector = await start(as_user, client)
    photos = {seq: jpeg((seq * 40, 10, 10)) for seq in (1, 2, 3)}
    for seq in (1, 3, 2, 3, 1):  # a retry after a lost response, and one upload overtaking another
        resp = await inspector.post(
            evidence_path(task, f"offline-{seq:04d}", seq), data=form(photos[seq], "p.jpg", "image/jpeg")
        )
        assert resp.status in (200, 201), await resp.text()
    listed = (await (await clerk.get(f"/api/v1/inspections/{task['id']}/evidence")).json())["items"]
    assert [e["client_seq"] for e in listed] == [1, 2, 3]
    assert len({e["id"] for e in listed}) == 3


async def test_instants_out_of_range_are_refused(as_user: Any, client: Any) -> None:
    """BUG: year 1 at +14:00 or year 9999 at -12:00 overflowed on the conversion to UTC (500)."""
    _, _, task, inspector = await start(as_user, client)
    base = f"/api/v1/inspections/{task['id']}"
    photo = jpeg((4, 5, 6))
    for n, at in enumerate(("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"), start=1):
        body = {"lat": 1, "lon": 1, "accuracy": 1, "at": at}
        assert await code(await inspector.post(f"{base}/locations", json=body)) == (422, "validation_error"), at
        path = evidence_path(task, f"photo-far-{n}", n, captured_at=at)
        resp = await inspector.post(path, data=form(photo, "p.jpg", "image/jpeg"))
        assert await code(resp) == (422, "invalid_query"), at
    async with client.app[SERVICES].db.read() as s:
        assert (await s.execute(select(func.count()).select_from(InspectionEvidence))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(InspectionLocation))).scalar_one() == 0


def _broken_jpegs() -> dict[str, bytes]:
    good = jpeg((200, 120, 40))
    return {
        "magic-then-garbage": good[:4] + bytes(range(256)) * 40,
        "truncated": good[: len(good) // 3],
    }


async def test_undecodable_photo_is_refused_and_nothing_is_kept(as_user: Any, client: Any) -> None:
    """BUG: a JPEG header followed by garbage was accepted as evidence; every later report on the task gave 500."""
    _, clerk, task, inspector = await start(as_user, client)
    store = client.app[SERVICES].store
    for n, (name, data) in enumerate(_broken_jpegs().items(), start=1):
        resp = await inspector.post(evidence_path(task, f"photo-{name}", n), data=form(data, "p.jpg", "image/jpeg"))
        assert await code(resp) == (422, "image_undecodable"), name
    async with client.app[SERVICES].db.read() as s:
        assert (await s.execute(select(func.count()).select_from(InspectionEvidence))).scalar_one() == 0
    assert [o async for o in store.list(f"cases/{task['case_id']}/inspections/")] == []
    resp = await clerk.post(f"/api/v1/inspections/{task['id']}/report", json={"lang": "zh"})
    assert resp.status == 201, await resp.text()


async def test_report_survives_a_stored_photo_that_no_longer_decodes(as_user: Any, client: Any) -> None:
    """A photo damaged in the store (or kept from before uploads were decoded) is listed without its picture."""
    _, clerk, task, inspector = await start(as_user, client)
    resp = await inspector.post(evidence_path(task, "photo-ok", 1), data=form(jpeg((9, 9, 9)), "p.jpg", "image/jpeg"))
    assert resp.status == 201, await resp.text()
    store = client.app[SERVICES].store
    (stored,) = [o async for o in store.list(f"cases/{task['case_id']}/inspections/")]

    async def garbage() -> Any:
        yield _broken_jpegs()["magic-then-garbage"]

    await store.put(stored.key, garbage(), content_type="image/jpeg")
    for lang in ("zh", "en"):
        resp = await clerk.post(f"/api/v1/inspections/{task['id']}/report", json={"lang": lang})
        assert resp.status == 201, await resp.text()


async def test_service_point_staff_cannot_make_their_own_inspector(as_user: Any, client: Any) -> None:
    """BUG: staff invited an 'inspector' on their own case, redeemed it and uploaded server-signed evidence."""
    staff, _, task, _ = await start(as_user, client)
    resp = await staff.post(
        f"/api/v1/cases/{task['case_id']}/invites",
        json={"role": "inspector", "display_name": "自称踏勘员", "session_id": task["session_id"]},
    )
    assert await code(resp) == (403, "inspector_invite_forbidden")
    # A guest (a relative joining the call) is still theirs to invite.
    resp = await staff.post(f"/api/v1/cases/{task['case_id']}/invites", json={"role": "guest", "display_name": "家属"})
    assert resp.status == 201, await resp.text()


async def test_the_report_document_can_be_deleted_and_made_again(as_user: Any, client: Any) -> None:
    """BUG: deleting the inspection report document the task points to failed on the foreign key (500)."""
    staff, clerk, task, _ = await start(as_user, client)
    tid, cid = task["id"], task["case_id"]
    doc = await (await clerk.post(f"/api/v1/inspections/{tid}/report", json={})).json()
    assert (await (await clerk.get(f"/api/v1/inspections/{tid}")).json())["report_document_id"] == doc["id"]
    resp = await staff.delete(f"/api/v1/cases/{cid}/documents/{doc['id']}")
    assert resp.status == 204, await resp.text()
    assert (await (await clerk.get(f"/api/v1/inspections/{tid}")).json())["report_document_id"] is None
    again = await (await clerk.post(f"/api/v1/inspections/{tid}/report", json={})).json()
    assert (await (await clerk.get(f"/api/v1/inspections/{tid}")).json())["report_document_id"] == again["id"]


async def test_evidence_names_who_invited_its_inspector_and_still_verifies(as_user: Any, client: Any) -> None:
    """The invite's creator is in the evidence record and its signed manifest (issue 19, item 9)."""
    _, clerk, task, inspector = await start(as_user, client)
    resp = await inspector.post(evidence_path(task, "photo-who", 1), data=form(jpeg((1, 2, 3)), "p.jpg", "image/jpeg"))
    assert resp.status == 201, await resp.text()
    ev = await resp.json()
    me = await (await clerk.get("/api/v1/me")).json()
    assert ev["invited_by_name"] == me["display_name"]
    assert '"invited_by_name"' in ev["manifest"]
    check = await (await clerk.get(f"/api/v1/inspections/{task['id']}/evidence/{ev['id']}/verify")).json()
    assert check["valid"], check
    # The clerk's own photo (no invite) has no inviter, and its manifest has no such field.
    resp = await clerk.post(evidence_path(task, "photo-clerk", 2), data=form(jpeg((3, 2, 1)), "p.jpg", "image/jpeg"))
    own = await resp.json()
    assert own["invited_by_name"] is None and "invited_by" not in own["manifest"]
