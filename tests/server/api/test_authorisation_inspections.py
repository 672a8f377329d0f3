"""Authorisation of the issue-7 objects: expert library, consultation notes, inspection tasks, evidence, reports.

Two MZ-007 cases (养老机构备案, needs inspection) are prepared by the demo
admin, each with an inspection task, a position, an evidence photo, a
result, a report and a note: ``own`` opened at P01 (routed to T01 civil
affairs) and ``other`` opened at P03 (routed to T02).  Every actor then
tries every operation on both; the expectation of each (actor, case,
operation group) is written out in :data:`EXPECTED`, not computed from the
policy.  Groups: ``read`` (task list and detail, locations, evidence list,
content and verification, notes, the report's content), ``inspect``
(snapshot request, marking an item, making a report), ``site`` (position,
evidence upload), ``notes`` (writing a note).  Denied: 404 (the case is
not visible: ``case_not_found`` / ``inspection_not_found``) or 403
``forbidden``, and no row changed.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from server.app import SERVICES
from server.storage.models import (
    CaseNote,
    Document,
    InspectionEvidence,
    InspectionLocation,
    InspectionResult,
    InspectionTask,
)
from tests.conftest import Session, login
from tests.server.api.conftest import CASE_BODY, form

ACTORS = ("admin", "clerk", "supervisor", "staff", "staff_other", "expert", "inspector", "guest")
GROUPS = ("read", "inspect", "site", "notes")
#: (actor, case) → the groups allowed; everything else is denied.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("admin", "own"): {"read", "inspect", "site", "notes"},
    ("admin", "other"): {"read", "inspect", "site", "notes"},
    ("clerk", "own"): {"read", "inspect", "site", "notes"},
    ("clerk", "other"): set(),
    ("supervisor", "own"): {"read"},
    ("supervisor", "other"): set(),
    ("staff", "own"): {"read", "notes"},
    ("staff", "other"): set(),
    ("staff_other", "own"): set(),
    ("staff_other", "other"): {"read", "notes"},
    ("expert", "own"): set(),
    ("expert", "other"): set(),
    # invited (as inspector / guest) to the own case's inspection session
    ("inspector", "own"): {"read", "site"},
    ("inspector", "other"): set(),
    ("guest", "own"): {"read"},
    ("guest", "other"): set(),
}
#: Who may search the expert library.
LIBRARY = {"admin", "clerk", "supervisor", "staff", "staff_other"}
USERNAMES = {
    "admin": "admin",
    "clerk": "clerk_t1",
    "supervisor": "supervisor_t1",
    "staff": "staff",
    "staff_other": "staff3",
    "expert": "expert",
}


def photo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 10)).save(buf, "JPEG")
    return buf.getvalue()


COUNTER = itertools.count(1)


def evidence_query(key: str) -> str:
    return f"client_key={key}&client_seq=1&captured_at=2026-12-01T10:00:00Z&device=phone&lat=29.1&lon=121.2&accuracy=5"


async def prepare(root: Session, client: Any, unit: str) -> dict[str, Any]:
    resp = await root.post("/api/v1/cases", json={**CASE_BODY, "matter_code": "MZ-007", "unit_code": unit})
    assert resp.status == 201, await resp.text()
    cid = (await resp.json())["id"]
    task = await (await root.post(f"/api/v1/cases/{cid}/inspections", json={})).json()
    tid = task["id"]
    invites = {}
    for role in ("inspector", "guest"):
        inv = await root.post(
            f"/api/v1/cases/{cid}/invites", json={"role": role, "display_name": role, "session_id": task["session_id"]}
        )
        token = (await inv.json())["token"]
        red = await client.post(f"/api/v1/sessions/{task['session_id']}/invites/redeem", json={"token": token})
        assert red.status == 200, await red.text()
        invites[role] = Session(client, (await red.json())["access_token"], "")
    await root.post(f"/api/v1/inspections/{tid}/locations", json={"lat": 29.1, "lon": 121.2, "accuracy": 5})
    ev = await root.post(
        f"/api/v1/inspections/{tid}/evidence?{evidence_query('seed-0001')}", data=form(photo(), "p.jpg", "image/jpeg")
    )
    assert ev.status == 201, await ev.text()
    eid = (await ev.json())["id"]
    await root.request(
        "PUT", f"/api/v1/inspections/{tid}/items/fire_equipment", json={"result": "pass", "evidence_ids": [eid]}
    )
    report = await (await root.post(f"/api/v1/inspections/{tid}/report", json={"lang": "en"})).json()
    await root.post(f"/api/v1/cases/{cid}/notes", json={"text": "seed"})
    return {"case_id": cid, "task_id": tid, "evidence_id": eid, "report_id": report["id"], "invites": invites}


async def counts(client: Any) -> dict[str, int]:
    async with client.app[SERVICES].db.transaction() as s:
        out = {}
        for model in (InspectionTask, InspectionLocation, InspectionEvidence, InspectionResult, Document, CaseNote):
            out[model.__tablename__] = (await s.execute(select(func.count()).select_from(model))).scalar_one()
        return out


async def attempt(actor: Session, group: str, t: dict[str, Any]) -> list[tuple[str, Any]]:
    cid, tid, eid = t["case_id"], t["task_id"], t["evidence_id"]
    base = f"/api/v1/inspections/{tid}"
    if group == "read":
        return [
            ("list", await actor.get(f"/api/v1/cases/{cid}/inspections")),
            ("detail", await actor.get(base)),
            ("locations", await actor.get(f"{base}/locations")),
            ("evidence", await actor.get(f"{base}/evidence")),
            ("content", await actor.get(f"{base}/evidence/{eid}/content")),
            ("verify", await actor.get(f"{base}/evidence/{eid}/verify")),
            ("notes", await actor.get(f"/api/v1/cases/{cid}/notes")),
            ("report", await actor.get(f"/api/v1/cases/{cid}/documents/{t['report_id']}/content")),
        ]
    if group == "inspect":
        return [
            ("snapshot", await actor.post(f"{base}/snapshot-requests", json={})),
            ("mark", await actor.request("PUT", f"{base}/items/emergency_call", json={"result": "note", "note": "x"})),
            ("report", await actor.post(f"{base}/report", json={"lang": "zh"})),
        ]
    if group == "site":
        key = f"try-{next(COUNTER):06d}"
        return [
            ("location", await actor.post(f"{base}/locations", json={"lat": 1, "lon": 1, "accuracy": 1})),
            (
                "evidence",
                await actor.post(f"{base}/evidence?{evidence_query(key)}", data=form(photo(), "p.jpg", "image/jpeg")),
            ),
        ]
    return [("note", await actor.post(f"/api/v1/cases/{cid}/notes", json={"text": "note"}))]


@pytest.mark.parametrize("actor_name", ACTORS)
async def test_inspection_objects_authorisation(actor_name: str, as_user: Any, client: Any) -> None:
    root = await as_user("admin")
    targets = {"own": await prepare(root, client, "P01"), "other": await prepare(root, client, "P03")}
    if actor_name in USERNAMES:
        actor = await login(client, USERNAMES[actor_name])
    else:
        actor = targets["own"]["invites"][actor_name]
    library = await actor.get("/api/v1/experts?field=food_safety")
    if actor_name in LIBRARY:
        assert library.status == 200, await library.text()
        assert [e["name"] for e in (await library.json())["items"]] == ["王慧"]
    else:
        assert library.status == 403 and (await library.json())["code"] == "forbidden"
    for relation, group in itertools.product(("own", "other"), GROUPS):
        allowed = group in EXPECTED[(actor_name, relation)]
        readable = "read" in EXPECTED[(actor_name, relation)]
        before = await counts(client)
        replies = await attempt(actor, group, targets[relation])
        after = await counts(client)
        for label, resp in replies:
            where = f"{actor_name}-{relation}-{group}-{label}"
            if allowed:
                assert 200 <= resp.status < 300, f"{where}: {resp.status} {await resp.text()}"
            elif readable:
                assert resp.status == 403, f"{where}: {resp.status} {await resp.text()}"
                assert (await resp.json())["code"] == "forbidden", where
            else:
                assert resp.status == 404, f"{where}: {resp.status} {await resp.text()}"
                assert (await resp.json())["code"] in ("case_not_found", "inspection_not_found"), where
        if not allowed:
            assert after == before, f"{actor_name}-{relation}-{group}: a denied request changed rows"


async def test_expert_library_keeping(as_user: Any, client: Any) -> None:
    root, clerk, expert = await as_user("admin"), await as_user("clerk_t1"), await as_user("expert")
    body = {"name": "赵敏", "organisation": "某食品企业", "fields": ["food_safety"], "availability": "available"}
    assert (await clerk.post("/api/v1/experts", json=body)).status == 403
    resp = await root.post("/api/v1/experts", json=body)
    assert resp.status == 201, await resp.text()
    new = await resp.json()
    found = await (await clerk.get("/api/v1/experts?field=food_safety&availability=available")).json()
    assert {e["name"] for e in found["items"]} == {"王慧", "赵敏"}
    assert (await (await clerk.get("/api/v1/experts?q=疾病预防")).json())["items"][0]["name"] == "王慧"
    bad = await root.post("/api/v1/experts", json={**body, "fields": ["Food Safety"]})
    assert bad.status == 422
    mine = next(e for e in (await (await root.get("/api/v1/experts?limit=100")).json())["items"] if e["user_id"])
    own = await expert.patch(f"/api/v1/experts/{mine['id']}", json={"availability": "busy"})
    assert own.status == 200 and (await own.json())["availability"] == "busy"
    assert (await expert.patch(f"/api/v1/experts/{mine['id']}", json={"phone": "123456"})).status == 403
    assert (await expert.patch(f"/api/v1/experts/{new['id']}", json={"availability": "busy"})).status == 403
    assert (await clerk.patch(f"/api/v1/experts/{new['id']}", json={"availability": "busy"})).status == 403
    resp = await root.patch(f"/api/v1/experts/{new['id']}", json={"active": False})
    assert resp.status == 200
    found = await (await clerk.get("/api/v1/experts?field=food_safety")).json()
    assert {e["name"] for e in found["items"]} == {"王慧"}
    assert (await clerk.get("/api/v1/experts/999999")).status == 404
