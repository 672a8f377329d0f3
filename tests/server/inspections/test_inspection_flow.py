"""Remote site inspection end to end over the API (both engines): task, location, snapshots, evidence, report.

A food business licence case (SJ-004, routed to the district's market
regulation clerk) gets an inspection task with the matter's checklist; an
inspector invited to the task's session reports positions and uploads
photos (a retried upload is stored once); the clerk marks the items; the
evidence verifies, and stops verifying when the photo, its record or its
signed manifest is edited; the PDF report lists the results and embeds
the photos; ``cloudwindow evidence verify`` agrees.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pypdf
from PIL import Image
from sqlalchemy import update

from server.app import SERVICES
from server.cli import main as cli_main
from server.settings import Settings
from server.storage.models import InspectionEvidence
from tests.conftest import Session
from tests.media_harness import Caller, until
from tests.server.api.conftest import form, open_case

CAPTURED = "2026-12-01T09:30:00+08:00"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


async def start(as_user: Any, client: Any) -> tuple[Session, Session, dict[str, Any], Session]:
    staff, clerk = await as_user("staff"), await as_user("clerk2")
    case = await open_case(staff, matter_code="SJ-004")
    resp = await clerk.post(f"/api/v1/cases/{case['id']}/inspections", json={})
    assert resp.status == 201, await resp.text()
    task = await resp.json()
    inv = await clerk.post(
        f"/api/v1/cases/{case['id']}/invites",
        json={"role": "inspector", "display_name": "吴磊", "session_id": task["session_id"]},
    )
    assert inv.status == 201, await inv.text()
    resp = await client.post(
        f"/api/v1/sessions/{task['session_id']}/invites/redeem", json={"token": (await inv.json())["token"]}
    )
    assert resp.status == 200, await resp.text()
    inspector = Session(client, (await resp.json())["access_token"], "")
    return staff, clerk, task, inspector


def evidence_path(task: dict[str, Any], key: str, seq: int, item: str | None = None, **stamps: Any) -> str:
    query = {
        "client_key": key,
        "client_seq": seq,
        "captured_at": CAPTURED,
        "device": "iPhone 15 / Safari 18",
        "lat": 29.8683,
        "lon": 121.5440,
        "accuracy": 8.5,
        **stamps,
    }
    if item:
        query["item"] = item
    qs = "&".join(f"{k}={v}".replace("+", "%2B") for k, v in query.items())
    return f"/api/v1/inspections/{task['id']}/evidence?{qs}"


async def up(inspector: Session, task: dict[str, Any], key: str, seq: int, item: str | None, data: bytes) -> Any:
    """Upload ``data`` as the evidence photo ``key``/``seq`` (a PDF is sent as one, to be refused)."""
    ctype = "application/pdf" if data.startswith(b"%PDF") else "image/jpeg"
    return await inspector.post(evidence_path(task, key, seq, item), data=form(data, "photo", ctype))


async def put(session: Session, path: str, body: dict[str, Any]) -> Any:
    return await session.request("PUT", f"/api/v1{path}", json=body)


async def test_inspection_task_location_evidence_and_results(as_user: Any, client: Any, settings: Settings) -> None:
    staff, clerk, task, inspector = await start(as_user, client)
    tid = task["id"]
    codes = [i["code"] for i in task["checklist"]]
    assert codes[:4] == ["kitchen_area", "disinfection", "refrigeration", "water_supply"]
    sessions = (await (await clerk.get(f"/api/v1/cases/{task['case_id']}/sessions")).json())["items"]
    assert [s["kind"] for s in sessions if s["id"] == task["session_id"]] == ["inspection"]

    # Only one open inspection per case; a matter without inspection gets none.
    again = await clerk.post(f"/api/v1/cases/{task['case_id']}/inspections", json={})
    assert again.status == 409 and (await again.json())["code"] == "inspection_already_open"
    other = await open_case(staff)
    resp = await (await as_user("clerk_t1")).post(f"/api/v1/cases/{other['id']}/inspections", json={})
    assert resp.status == 409 and (await resp.json())["code"] == "inspection_not_needed"

    # Location: from the inspector, shown to the clerk; the point's staff may read but not report.
    resp = await inspector.post(
        f"/api/v1/inspections/{tid}/locations", json={"lat": 29.8683, "lon": 121.544, "accuracy": 12}
    )
    assert resp.status == 201, await resp.text()
    detail = await (await clerk.get(f"/api/v1/inspections/{tid}")).json()
    assert detail["location"]["accuracy"] == 12 and detail["location"]["lat"] == 29.8683
    resp = await staff.post(f"/api/v1/inspections/{tid}/locations", json={"lat": 1, "lon": 1, "accuracy": 1})
    assert resp.status == 403
    resp = await inspector.post(f"/api/v1/inspections/{tid}/locations", json={"lat": 91, "lon": 1, "accuracy": 1})
    assert resp.status == 422
    assert len((await (await clerk.get(f"/api/v1/inspections/{tid}/locations")).json())["items"]) == 1

    # Snapshot requests: the clerk asks, the inspector may not.
    resp = await clerk.post(f"/api/v1/inspections/{tid}/snapshot-requests", json={"item": "kitchen_area"})
    assert resp.status == 202, await resp.text()
    assert (await inspector.post(f"/api/v1/inspections/{tid}/snapshot-requests", json={})).status == 403

    # Evidence: stored once however often the phone retries; a different photo under a used key is refused.
    kitchen = jpeg((200, 40, 40))
    first = await inspector.post(
        evidence_path(task, "photo-0001", 1, "kitchen_area"), data=form(kitchen, "k.jpg", "image/jpeg")
    )
    assert first.status == 201, await first.text()
    ev1 = await first.json()
    retry = await inspector.post(
        evidence_path(task, "photo-0001", 1, "kitchen_area"), data=form(kitchen, "k.jpg", "image/jpeg")
    )
    assert retry.status == 200 and (await retry.json())["id"] == ev1["id"]
    clash = await inspector.post(
        evidence_path(task, "photo-0001", 1), data=form(jpeg((0, 0, 0)), "x.jpg", "image/jpeg")
    )
    assert clash.status == 409 and (await clash.json())["code"] == "evidence_key_conflict"
    fridge = jpeg((40, 40, 200), (480, 640))
    second = await inspector.post(
        evidence_path(task, "photo-0002", 2, "refrigeration"), data=form(fridge, "f.jpg", "image/jpeg")
    )
    assert second.status == 201
    ev2 = await second.json()
    listed = (await (await clerk.get(f"/api/v1/inspections/{tid}/evidence")).json())["items"]
    assert [e["id"] for e in listed] == [ev1["id"], ev2["id"]]
    assert ev1["lat"] == 29.8683 and ev1["accuracy"] == 8.5 and ev1["device"] == "iPhone 15 / Safari 18"
    content = await clerk.get(f"/api/v1/inspections/{tid}/evidence/{ev1['id']}/content")
    assert await content.read() == kitchen
    bad = await inspector.post(
        evidence_path(task, "photo-0003", 3, "no_such_item"), data=form(kitchen, "k.jpg", "image/jpeg")
    )
    assert bad.status == 422 and (await bad.json())["code"] == "unknown_inspection_item"
    pdf = await inspector.post(
        evidence_path(task, "photo-0004", 4), data=form(b"%PDF-1.4\n%%EOF\n", "a.pdf", "application/pdf")
    )
    assert pdf.status == 415
    async with client.app[SERVICES].db.transaction() as s:
        stored = (await s.execute(InspectionEvidence.__table__.select())).all()
    assert len(stored) == 2, "a retried or refused upload left a row"

    # Results: pass with evidence; fail needs a note; evidence must be this inspection's.
    resp = await clerk.request(
        "PUT", f"/api/v1/inspections/{tid}/items/kitchen_area", json={"result": "pass", "evidence_ids": [ev1["id"]]}
    )
    assert resp.status == 200, await resp.text()
    resp = await put(clerk, f"/inspections/{tid}/items/refrigeration", {"result": "fail"})
    assert resp.status == 422 and (await resp.json())["code"] == "note_required"
    resp = await clerk.request(
        "PUT",
        f"/api/v1/inspections/{tid}/items/refrigeration",
        json={"result": "fail", "note": "冷藏温度 9°C，超过 5°C", "evidence_ids": [ev2["id"]]},
    )
    assert resp.status == 200
    resp = await clerk.request(
        "PUT", f"/api/v1/inspections/{tid}/items/disinfection", json={"result": "pass", "evidence_ids": [999999]}
    )
    assert resp.status == 422 and (await resp.json())["code"] == "evidence_not_found"
    assert (await put(inspector, f"/inspections/{tid}/items/disinfection", {"result": "pass"})).status == 403

    # Verification: intact, then a tampered photo, a tampered record, a tampered manifest.
    services = client.app[SERVICES]

    async def verify(eid: int) -> dict[str, Any]:
        resp = await clerk.get(f"/api/v1/inspections/{tid}/evidence/{eid}/verify")
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    assert (await verify(ev1["id"]))["valid"] is True
    key = await (await clerk.get("/api/v1/evidence/public-key")).json()
    assert key["key_id"] == ev1["key_id"] and key["algorithm"] == "Ed25519"
    assert await asyncio.to_thread(cli_main, ["--config", str(await _config(settings)), "evidence", "verify"]) == 0

    async with services.db.transaction() as s:
        row = await s.get(InspectionEvidence, ev1["id"])
        assert row is not None
        object_key, manifest = row.object_key, row.manifest

    async def body() -> Any:
        yield jpeg((0, 255, 0))

    await services.store.put(object_key, body(), content_type="image/jpeg")
    result = await verify(ev1["id"])
    assert result["valid"] is False and result["content_matches"] is False and result["signature_valid"] is True

    async with services.db.transaction() as s:
        await s.execute(update(InspectionEvidence).where(InspectionEvidence.id == ev2["id"]).values(lat=30.0))
    result = await verify(ev2["id"])
    assert result["valid"] is False and result["manifest_matches_record"] is False
    assert any("lat" in p for p in result["problems"])

    forged = manifest.replace('"lat":29.8683', '"lat":30.0')
    assert forged != manifest
    async with services.db.transaction() as s:
        await s.execute(
            update(InspectionEvidence).where(InspectionEvidence.id == ev1["id"]).values(lat=30.0, manifest=forged)
        )
    result = await verify(ev1["id"])
    assert result["signature_valid"] is False and result["manifest_matches_record"] is True and not result["valid"]
    assert await asyncio.to_thread(cli_main, ["--config", str(await _config(settings)), "evidence", "verify"]) == 1


async def _config(settings: Settings) -> Any:
    """A TOML config naming the test's database, data directory and secret (for the CLI)."""
    path = settings.data_dir.parent / "cli.toml"
    path.write_text(
        f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings.database_url}"\n'
        f'secret_key = "{settings.secret_key}"\n',
        encoding="utf-8",
    )
    return path


async def test_inspection_report_pdf_lists_results_and_embeds_photos(as_user: Any, client: Any) -> None:
    staff, clerk, task, inspector = await start(as_user, client)
    tid = task["id"]
    await inspector.post(f"/api/v1/inspections/{tid}/locations", json={"lat": 29.8683, "lon": 121.544, "accuracy": 6})
    ids = []
    for seq, (item, colour) in enumerate((("kitchen_area", (220, 30, 30)), ("water_supply", (30, 30, 220))), 1):
        resp = await inspector.post(
            evidence_path(task, f"photo-{seq:04d}", seq, item), data=form(jpeg(colour), "p.jpg", "image/jpeg")
        )
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    await clerk.request(
        "PUT", f"/api/v1/inspections/{tid}/items/kitchen_area", json={"result": "pass", "evidence_ids": [ids[0]]}
    )
    await clerk.request(
        "PUT",
        f"/api/v1/inspections/{tid}/items/water_supply",
        json={"result": "fail", "note": "no hot water", "evidence_ids": [ids[1]]},
    )
    resp = await clerk.post(f"/api/v1/inspections/{tid}/complete")
    assert resp.status == 200 and (await resp.json())["state"] == "completed"
    late = await inspector.post(f"/api/v1/inspections/{tid}/locations", json={"lat": 1, "lon": 1, "accuracy": 1})
    assert late.status == 409 and (await late.json())["code"] == "inspection_completed"

    texts = {}
    for lang in ("zh", "en"):
        resp = await clerk.post(f"/api/v1/inspections/{tid}/report", json={"lang": lang})
        assert resp.status == 201, await resp.text()
        doc = await resp.json()
        assert doc["content_type"] == "application/pdf"
        files = (await (await staff.get(f"/api/v1/cases/{task['case_id']}/documents")).json())["items"]
        assert doc["id"] in [f["id"] for f in files], "the report is listed in the case file"
        data = await (await staff.get(f"/api/v1/cases/{task['case_id']}/documents/{doc['id']}/content")).read()
        reader = pypdf.PdfReader(io.BytesIO(data))
        texts[lang] = "\n".join(page.extract_text() for page in reader.pages)
        images = [img for page in reader.pages for img in page.images]
        assert len(images) == 2, f"{lang}: {len(images)} images embedded"
    en = texts["en"]
    for needle in (
        "Remote site inspection report",
        "Kitchen",
        "pass",
        "fail",
        "no hot water",
        "29.868300",
        "121.544000",
    ):
        assert needle in en, needle
    zh = texts["zh"]
    for needle in (
        "远程踏勘报告",
        "食品经营许可（新办）",
        "厨房（加工操作间）面积与布局",
        "合格",
        "不合格",
        "供水及排水设施",
    ):
        assert needle in zh, needle
    detail = await (await clerk.get(f"/api/v1/inspections/{tid}")).json()
    assert detail["report_document_id"] is not None
    audit = await (await clerk.get(f"/api/v1/cases/{task['case_id']}/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("inspection.report") == 2 and "inspection.completed" in actions and audit["verified"]


async def test_inspection_notices_reach_the_session(as_user: Any, client: Any) -> None:
    """The clerk sees the phone's position and photos live; the phone hears the snapshot request."""
    _, clerk, task, inspector = await start(as_user, client)
    url = f"http://127.0.0.1:{client.server.port}"
    desk, phone = Caller(url, clerk.token, 0), Caller(url, inspector.token, 0)
    try:
        for c in (desk, phone):
            await c.connect()
        joined = await desk.sio.call("session.join", {"session_id": task["session_id"]}, timeout=10)
        # An inspection session is an ordinary case session: recorded like a call.
        assert joined["ok"] and joined["session"]["kind"] == "inspection" and joined["session"]["recording"] is True
        assert (await phone.sio.call("session.join", {"session_id": task["session_id"]}, timeout=10))["waiting"]
        await until(lambda: any(e == "waiting.joined" for e, _ in desk.events), 5, "waiting.joined")
        waiter = next(d for e, d in desk.events if e == "waiting.joined")["waiter"]
        assert waiter["role"] == "inspector"
        assert (await desk.sio.call("session.admit", {"waiter_id": waiter["waiter_id"]}, timeout=10))["ok"]
        await until(lambda: any(e == "session.admitted" for e, _ in phone.events), 5, "session.admitted")

        here = {"lat": 29.8683, "lon": 121.544, "accuracy": 9.0}
        assert (await inspector.post(f"/api/v1/inspections/{task['id']}/locations", json=here)).status == 201
        await until(lambda: any(e == "inspection.location" for e, _ in desk.events), 5, "inspection.location")
        seen = next(d for e, d in desk.events if e == "inspection.location")
        assert (seen["task_id"], seen["lat"], seen["lon"], seen["accuracy"]) == (task["id"], 29.8683, 121.544, 9.0)

        asked = await clerk.post(f"/api/v1/inspections/{task['id']}/snapshot-requests", json={"item": "disinfection"})
        request_id = (await asked.json())["request_id"]
        await until(lambda: any(e == "inspection.snapshot_requested" for e, _ in phone.events), 5, "snapshot request")
        notice = next(d for e, d in phone.events if e == "inspection.snapshot_requested")
        assert notice["request_id"] == request_id and notice["item"] == "disinfection"

        resp = await up(inspector, task, "photo-live-01", 1, "disinfection", jpeg((9, 9, 9)))
        assert resp.status == 201
        await until(lambda: any(e == "inspection.evidence" for e, _ in desk.events), 5, "inspection.evidence")
        shown = next(d for e, d in desk.events if e == "inspection.evidence")
        assert shown["item_code"] == "disinfection" and "signature" not in shown

        # The report names who took part (from the session's audit entries).
        doc = await (await clerk.post(f"/api/v1/inspections/{task['id']}/report", json={})).json()
        data = await (await clerk.get(f"/api/v1/cases/{task['case_id']}/documents/{doc['id']}/content")).read()
        text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(data)).pages)
        for needle in ("参与人员", "周建平", "吴磊", "踏勘员", "坐席"):
            assert needle in text, needle
    finally:
        for c in (desk, phone):
            await c.close()
