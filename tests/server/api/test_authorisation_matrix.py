"""The authorisation matrix: who may read, write and move which case and which materials.

Every role × (own unit, sibling unit, parent unit) × (case, document) ×
(read, write, transition) has an expected allow/deny in :data:`EXPECTED`,
written out by hand from the rules (DESIGN.md §1, issue 3), not computed
from ``server.services.policy``.  Each row is a set of real HTTP requests
against a case prepared for that row alone.

The actors and what "own", "sibling" and "parent" mean for each of them.
A target is (unit the case is opened at, centre whose civil-affairs
department it is routed to); the demo admin opens every case
(``unit_code`` + ``centre_code``), of matter MZ-005; for the document rows
and for any case that must be submitted first it also uploads both required
materials (so the checklist is complete):

* community_staff: demo ``staff`` (service point P01).
  own = opened at P01; sibling = opened at P02 (the other point under T01);
  parent = opened at T01 itself.
* clerk: demo ``clerk_t1`` (T01, civil_affairs).
  own = routed to T01 civil_affairs (opened at P01);
  sibling = routed to T02 civil_affairs (opened at P03);
  parent = routed to D01 civil_affairs, although opened at P01 in the
  clerk's own town (so neither the opening unit nor the subtree may leak it).
* supervisor: demo ``supervisor_t1`` (T01).
  own = opened in T01's subtree (P01, routed to T01); sibling = opened under
  T02 (P03, routed to T02); parent = opened at D01 and routed to D01.
* admin, expert, inspector: the demo accounts of these roles sit at the
  district centre D01, the root, which has no sibling and no parent; so the
  demo admin creates one account of each role at T01 (``admin_t1``,
  ``expert_t1``, ``inspector_t1``).  own = opened at T01 and routed to T01;
  sibling = opened at T02 and routed to T02; parent = opened at D01 and
  routed to D01.  Admin may do everything; experts and inspectors, without
  an invite, nothing (not even see that the case exists).
* guest: a principal from ``POST /cases/{id}/invites/redeem`` (invite role
  ``guest``, no account), one per row, invited to a case opened at P01.
  Its "unit" is the unit of that case: own = the invited case itself;
  sibling = a case opened at P02; parent = a case opened at T01.  It may
  read the invited case and nothing else.

The operations of each row:

* case read: ``GET /cases/{id}`` and ``GET /cases/{id}/audit`` (the audit is 403 for an invitee even on its own case);
* case write: ``PATCH /cases/{id}`` (a draft) and ``POST /cases/{id}/invites``;
* case transition: clerk ``submitted → accepted`` (on a submitted case);
  everyone else the staff move ``draft → cancelled``;
* document read: the list, one document's metadata, its content and its
  signed URL; and the case's session recordings: their list, and a signed
  URL to play one (fetched: the bytes must be the recording's);
* document write: upload a PNG, and delete one of the existing documents;
* document transition: the move that acts on the materials: for the clerk
  ``submitted → rejected`` with a reason about the materials; for everyone
  else submitting the materials, ``draft → submitted`` (the API checks the
  checklist on the way).

Allowed: every request answers 2xx and has its effect.  Denied: every
request answers 404 ``case_not_found`` when the row's actor may not even
read the case, 403 ``forbidden`` when it may read but not act; and the case
is unchanged: every column of its row, its documents, its invites and its
audit trail.  Both are checked by re-reading the case from the database
before and after.  Also ``GET /cases`` lists exactly the cases whose
"case read" row allows, and a reader who may not change the case sees
neither the unmasked ID number nor any allowed transition.

One test per role (per engine), one subtest per row (``clerk-sibling-document-write``),
so the setup (app + demo district) is paid 7 times, not 126.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from server.app import SERVICES
from server.services import audit
from server.storage.cases import CaseRepository
from server.storage.database import Database
from server.storage.models import Case, MediaSession, Recording
from server.storage.users import InviteRepository
from tests.conftest import DEMO_PASSWORD, Session, login
from tests.server.api.conftest import CASE_BODY, ID_NUMBER, form, open_case, png_bytes

ROLES = ("admin", "supervisor", "clerk", "community_staff", "expert", "inspector", "guest")
RELATIONS = ("own", "sibling", "parent")
OBJECTS = ("case", "document")
ACTIONS = ("read", "write", "transition")

Row = tuple[str, str, str, str]
Client = TestClient[web.Request, web.Application]

#: (role, relation, object, action) → allowed?
EXPECTED: dict[Row, bool] = {
    # admin: everything, everywhere.
    ("admin", "own", "case", "read"): True,
    ("admin", "own", "case", "write"): True,
    ("admin", "own", "case", "transition"): True,
    ("admin", "own", "document", "read"): True,
    ("admin", "own", "document", "write"): True,
    ("admin", "own", "document", "transition"): True,
    ("admin", "sibling", "case", "read"): True,
    ("admin", "sibling", "case", "write"): True,
    ("admin", "sibling", "case", "transition"): True,
    ("admin", "sibling", "document", "read"): True,
    ("admin", "sibling", "document", "write"): True,
    ("admin", "sibling", "document", "transition"): True,
    ("admin", "parent", "case", "read"): True,
    ("admin", "parent", "case", "write"): True,
    ("admin", "parent", "case", "transition"): True,
    ("admin", "parent", "document", "read"): True,
    ("admin", "parent", "document", "write"): True,
    ("admin", "parent", "document", "transition"): True,
    # supervisor: reads its own subtree, changes nothing.
    ("supervisor", "own", "case", "read"): True,
    ("supervisor", "own", "case", "write"): False,
    ("supervisor", "own", "case", "transition"): False,
    ("supervisor", "own", "document", "read"): True,
    ("supervisor", "own", "document", "write"): False,
    ("supervisor", "own", "document", "transition"): False,
    ("supervisor", "sibling", "case", "read"): False,
    ("supervisor", "sibling", "case", "write"): False,
    ("supervisor", "sibling", "case", "transition"): False,
    ("supervisor", "sibling", "document", "read"): False,
    ("supervisor", "sibling", "document", "write"): False,
    ("supervisor", "sibling", "document", "transition"): False,
    ("supervisor", "parent", "case", "read"): False,
    ("supervisor", "parent", "case", "write"): False,
    ("supervisor", "parent", "case", "transition"): False,
    ("supervisor", "parent", "document", "read"): False,
    ("supervisor", "parent", "document", "write"): False,
    ("supervisor", "parent", "document", "transition"): False,
    # clerk: the cases routed to its own department.
    ("clerk", "own", "case", "read"): True,
    ("clerk", "own", "case", "write"): True,
    ("clerk", "own", "case", "transition"): True,
    ("clerk", "own", "document", "read"): True,
    ("clerk", "own", "document", "write"): True,
    ("clerk", "own", "document", "transition"): True,
    ("clerk", "sibling", "case", "read"): False,
    ("clerk", "sibling", "case", "write"): False,
    ("clerk", "sibling", "case", "transition"): False,
    ("clerk", "sibling", "document", "read"): False,
    ("clerk", "sibling", "document", "write"): False,
    ("clerk", "sibling", "document", "transition"): False,
    ("clerk", "parent", "case", "read"): False,
    ("clerk", "parent", "case", "write"): False,
    ("clerk", "parent", "case", "transition"): False,
    ("clerk", "parent", "document", "read"): False,
    ("clerk", "parent", "document", "write"): False,
    ("clerk", "parent", "document", "transition"): False,
    # community staff: the cases opened at its own service point.
    ("community_staff", "own", "case", "read"): True,
    ("community_staff", "own", "case", "write"): True,
    ("community_staff", "own", "case", "transition"): True,
    ("community_staff", "own", "document", "read"): True,
    ("community_staff", "own", "document", "write"): True,
    ("community_staff", "own", "document", "transition"): True,
    ("community_staff", "sibling", "case", "read"): False,
    ("community_staff", "sibling", "case", "write"): False,
    ("community_staff", "sibling", "case", "transition"): False,
    ("community_staff", "sibling", "document", "read"): False,
    ("community_staff", "sibling", "document", "write"): False,
    ("community_staff", "sibling", "document", "transition"): False,
    ("community_staff", "parent", "case", "read"): False,
    ("community_staff", "parent", "case", "write"): False,
    ("community_staff", "parent", "case", "transition"): False,
    ("community_staff", "parent", "document", "read"): False,
    ("community_staff", "parent", "document", "write"): False,
    ("community_staff", "parent", "document", "transition"): False,
    # expert: nothing without an invite, not even at its own unit.
    ("expert", "own", "case", "read"): False,
    ("expert", "own", "case", "write"): False,
    ("expert", "own", "case", "transition"): False,
    ("expert", "own", "document", "read"): False,
    ("expert", "own", "document", "write"): False,
    ("expert", "own", "document", "transition"): False,
    ("expert", "sibling", "case", "read"): False,
    ("expert", "sibling", "case", "write"): False,
    ("expert", "sibling", "case", "transition"): False,
    ("expert", "sibling", "document", "read"): False,
    ("expert", "sibling", "document", "write"): False,
    ("expert", "sibling", "document", "transition"): False,
    ("expert", "parent", "case", "read"): False,
    ("expert", "parent", "case", "write"): False,
    ("expert", "parent", "case", "transition"): False,
    ("expert", "parent", "document", "read"): False,
    ("expert", "parent", "document", "write"): False,
    ("expert", "parent", "document", "transition"): False,
    # inspector: likewise.
    ("inspector", "own", "case", "read"): False,
    ("inspector", "own", "case", "write"): False,
    ("inspector", "own", "case", "transition"): False,
    ("inspector", "own", "document", "read"): False,
    ("inspector", "own", "document", "write"): False,
    ("inspector", "own", "document", "transition"): False,
    ("inspector", "sibling", "case", "read"): False,
    ("inspector", "sibling", "case", "write"): False,
    ("inspector", "sibling", "case", "transition"): False,
    ("inspector", "sibling", "document", "read"): False,
    ("inspector", "sibling", "document", "write"): False,
    ("inspector", "sibling", "document", "transition"): False,
    ("inspector", "parent", "case", "read"): False,
    ("inspector", "parent", "case", "write"): False,
    ("inspector", "parent", "case", "transition"): False,
    ("inspector", "parent", "document", "read"): False,
    ("inspector", "parent", "document", "write"): False,
    ("inspector", "parent", "document", "transition"): False,
    # invite guest: reads the one case it was invited to.
    ("guest", "own", "case", "read"): True,
    ("guest", "own", "case", "write"): False,
    ("guest", "own", "case", "transition"): False,
    ("guest", "own", "document", "read"): True,
    ("guest", "own", "document", "write"): False,
    ("guest", "own", "document", "transition"): False,
    ("guest", "sibling", "case", "read"): False,
    ("guest", "sibling", "case", "write"): False,
    ("guest", "sibling", "case", "transition"): False,
    ("guest", "sibling", "document", "read"): False,
    ("guest", "sibling", "document", "write"): False,
    ("guest", "sibling", "document", "transition"): False,
    ("guest", "parent", "case", "read"): False,
    ("guest", "parent", "case", "write"): False,
    ("guest", "parent", "case", "transition"): False,
    ("guest", "parent", "document", "read"): False,
    ("guest", "parent", "document", "write"): False,
    ("guest", "parent", "document", "transition"): False,
}

#: The account acting for each role (the guest is a fresh invite per row).
ACTORS: dict[str, str | None] = {
    "admin": "admin_t1",
    "supervisor": "supervisor_t1",
    "clerk": "clerk_t1",
    "community_staff": "staff",
    "expert": "expert_t1",
    "inspector": "inspector_t1",
    "guest": None,
}
#: Accounts the demo admin creates at T01 (see the module docstring): username → role.
CREATED_AT_T01 = {"admin_t1": "admin", "expert_t1": "expert", "inspector_t1": "inspector"}

_T01_ANCHORED = {"own": ("T01", "T01"), "sibling": ("T02", "T02"), "parent": ("D01", "D01")}
#: role → relation → (unit_code the case is opened at, centre_code whose civil-affairs department handles it).
TARGETS: dict[str, dict[str, tuple[str, str]]] = {
    "admin": _T01_ANCHORED,
    "supervisor": {"own": ("P01", "T01"), "sibling": ("P03", "T02"), "parent": ("D01", "D01")},
    "clerk": {"own": ("P01", "T01"), "sibling": ("P03", "T02"), "parent": ("P01", "D01")},
    "community_staff": {"own": ("P01", "T01"), "sibling": ("P02", "T01"), "parent": ("T01", "T01")},
    "expert": _T01_ANCHORED,
    "inspector": _T01_ANCHORED,
    "guest": {"own": ("P01", "T01"), "sibling": ("P02", "T01"), "parent": ("T01", "T01")},
}

#: A civil-affairs matter with two required materials, both accepting PNG.
MATTER = "MZ-005"
REQUIRED_ITEMS = ("id_card", "photo")
NEW_PHONE = "13911112222"
PNG = png_bytes()


@dataclass(frozen=True)
class Move:
    start: str
    to: str
    reason: str | None = None

    @property
    def body(self) -> dict[str, str]:
        return {"to": self.to, **({"reason": self.reason} if self.reason else {})}


def move_for(role: str, obj: str) -> Move:
    """The transition a row of ``role`` attempts (only clerk and admin/staff moves exist)."""
    if role == "clerk":
        return Move("submitted", "accepted") if obj == "case" else Move("submitted", "rejected", "身份证照片不清晰")
    return Move("draft", "cancelled") if obj == "case" else Move("draft", "submitted")


def row_id(row: Row) -> str:
    return "-".join(row)


@dataclass
class Reply:
    label: str
    status: int
    ok: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.label} → {self.status} {self.body[:200]!r}"


async def call(session: Session, label: str, ok: int, method: str, path: str, **kw: Any) -> Reply:
    resp = await session.request(method, path, **kw)
    return Reply(label, resp.status, ok, await resp.read())


@dataclass
class Org:
    unit_ids: dict[str, int]
    #: (unit_code, department_code) → department id
    department_ids: dict[tuple[str, str], int]


async def org_of(session: Session) -> Org:
    resp = await session.get("/api/v1/org")
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    units = {u["id"]: u["code"] for u in data["units"]}
    return Org(
        unit_ids={code: uid for uid, code in units.items()},
        department_ids={(units[d["unit_id"]], d["code"]): d["id"] for d in data["departments"]},
    )


@dataclass
class World:
    client: Client
    #: The demo admin: prepares every case and re-reads it afterwards.
    root: Session
    db: Database
    org: Org
    created: list[int] = field(default_factory=list)
    #: (relation, case id) of every row's target case.
    targets: list[tuple[str, int]] = field(default_factory=list)


async def prepare_case(world: World, unit: str, centre: str, state: str, *, materials: bool) -> int:
    """A MZ-005 case opened at ``unit``, routed to ``centre``'s civil affairs, in ``state``.

    With ``materials`` (needed to submit), both required documents are uploaded.
    """
    root = world.root
    resp = await root.post(
        "/api/v1/cases", json={**CASE_BODY, "matter_code": MATTER, "unit_code": unit, "centre_code": centre}
    )
    assert resp.status == 201, await resp.text()
    case = await resp.json()
    assert case["unit_id"] == world.org.unit_ids[unit]
    assert case["department_id"] == world.org.department_ids[(centre, "civil_affairs")]
    cid = int(case["id"])
    world.created.append(cid)
    for item in REQUIRED_ITEMS if materials or state != "draft" else ():
        resp = await root.post(f"/api/v1/cases/{cid}/documents?item={item}", data=form(PNG))
        assert resp.status == 201, await resp.text()
    if materials:
        await add_recording(world, cid)
    if state == "submitted":
        resp = await root.post(f"/api/v1/cases/{cid}/transitions", json={"to": "submitted"})
        assert resp.status == 200, await resp.text()
    return cid


#: The bytes of every prepared recording (a stand-in file: playback authorisation does not depend on its content).
RECORDING = b"\x1aE\xdf\xa3" + bytes(range(256)) * 8


async def add_recording(world: World, cid: int) -> None:
    """An ended session of the case with one finished recording, as the post-session job leaves them."""
    services = world.client.app[SERVICES]
    now = services.clock.now()
    async with world.db.transaction() as s:
        session = MediaSession(case_id=cid, kind="call", state="ended", created_at=now, ended_at=now)
        s.add(session)
        await s.flush()
        key = f"recordings/session-{session.id}/p1.webm"

        async def body() -> AsyncIterator[bytes]:
            yield RECORDING

        stored = await services.store.put(key, body(), content_type="video/webm")
        s.add(
            Recording(
                case_id=cid,
                session_id=session.id,
                kind="participant",
                participant_id="p1",
                participant_display_name="测试",
                content_type="video/webm",
                duration_s=1.0,
                size=stored.size,
                sha256=stored.sha256,
                object_key=key,
                created_at=now,
            )
        )


async def invite_guest(world: World, cid: int) -> Session:
    """A principal that joined case ``cid`` through a guest invite."""
    resp = await world.root.post(f"/api/v1/cases/{cid}/invites", json={"role": "guest", "display_name": "申请人家属"})
    assert resp.status == 201, await resp.text()
    token = (await resp.json())["token"]
    resp = await world.client.post(f"/api/v1/cases/{cid}/invites/redeem", json={"token": token})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert data["role"] == "guest"
    return Session(world.client, data["access_token"], data["refresh_token"])


async def snapshot(world: World, cid: int) -> dict[str, Any]:
    """The case as stored: every column, its documents, invites and audit trail.

    Read straight from the database rather than through four admin API
    calls, which would double the module's runtime; it is also the stricter
    check (nothing the API hides can change unnoticed).
    """
    async with world.db.transaction() as s:
        repo = CaseRepository(s)
        case = await repo.get(cid)
        assert case is not None
        entries = await repo.audit(cid)
        return {
            "case": {c.key: getattr(case, c.key) for c in Case.__table__.columns},
            "documents": [d.id for d in await repo.documents(cid)],
            "audit_entries": len(entries),
            "audit_verified": audit.verify_entries(cid, entries).ok,
            "invites": [i.id for i in await InviteRepository(s).for_case(cid)],
            "recordings": list((await s.execute(select(Recording.id).where(Recording.case_id == cid))).scalars()),
        }


async def perform(actor: Session, row: Row, cid: int, doc_id: int, rec_id: int) -> list[Reply]:
    """The requests of one row, in order."""
    role, _, obj, action = row
    base = f"/api/v1/cases/{cid}"
    doc = f"{base}/documents/{doc_id}"
    if action == "transition":
        return [await call(actor, "transition", 200, "POST", f"{base}/transitions", json=move_for(role, obj).body)]
    if (obj, action) == ("case", "read"):
        # The audit trail (with staff client addresses) is a staff matter: an invitee reading its case gets 403.
        audit_status = 403 if role == "guest" else 200  # the guest's session is an invite's
        return [
            await call(actor, "get case", 200, "GET", base),
            await call(actor, "audit", audit_status, "GET", f"{base}/audit"),
        ]
    if (obj, action) == ("case", "write"):
        return [
            await call(actor, "patch", 200, "PATCH", base, json={"applicant_phone": NEW_PHONE}),
            await call(
                actor, "invite", 201, "POST", f"{base}/invites", json={"role": "expert", "display_name": "专家"}
            ),
        ]
    if (obj, action) == ("document", "read"):
        return [
            await call(actor, "list documents", 200, "GET", f"{base}/documents"),
            await call(actor, "document metadata", 200, "GET", doc),
            await call(actor, "document content", 200, "GET", f"{doc}/content"),
            await call(actor, "document url", 200, "GET", f"{doc}/url"),
            await call(actor, "list recordings", 200, "GET", f"{base}/recordings"),
            await call(actor, "recording url", 200, "GET", f"{base}/recordings/{rec_id}/url"),
        ]
    assert (obj, action) == ("document", "write")
    return [
        await call(actor, "upload", 201, "POST", f"{base}/documents", data=form(PNG, filename="extra.png")),
        await call(actor, "delete document", 204, "DELETE", doc),
    ]


async def check_allowed(
    row: Row, replies: list[Reply], before: dict[str, Any], after: dict[str, Any], cid: int, world_client: Client
) -> None:
    role, relation, obj, action = row
    for r in replies:
        assert r.status == r.ok, f"allowed, but {r}"
    if action == "transition":
        move = move_for(role, obj)
        assert before["case"]["state"] == move.start
        assert after["case"]["state"] == move.to, f"state {after['case']['state']!r} after {move.body}"
        assert after["audit_entries"] == before["audit_entries"] + 1
    elif (obj, action) == ("case", "read"):
        detail = replies[0].json()
        assert detail["id"] == cid
        # Someone who may read but not change the case sees neither the ID number nor any move.
        writer = EXPECTED[(role, relation, "case", "write")]
        mover = EXPECTED[(role, relation, "case", "transition")]
        assert detail["applicant_id_number"] == (ID_NUMBER if writer else None)
        assert (detail["allowed_transitions"] != []) is mover
        if replies[1].status == 200:
            assert replies[1].json()["verified"] is True
        else:  # an invitee: need to know, so no audit trail and a masked phone
            assert replies[1].json()["code"] == "forbidden"
            assert "*" in detail["applicant_phone"]
        assert after == before
    elif (obj, action) == ("case", "write"):
        assert after["case"]["applicant_phone"] == NEW_PHONE
        assert len(after["invites"]) == len(before["invites"]) + 1
        assert after["case"]["state"] == before["case"]["state"]
    elif (obj, action) == ("document", "read"):
        assert [d["id"] for d in replies[0].json()["items"]] == before["documents"]
        assert replies[1].json()["sha256"]
        assert replies[2].body == PNG
        assert replies[3].json()["url"]
        assert [r["id"] for r in replies[4].json()["items"]] == before["recordings"]
        signed = await world_client.get(replies[5].json()["url"])
        assert signed.status == 200 and await signed.read() == RECORDING
        assert after == before
    else:
        new_id, deleted = replies[0].json()["id"], before["documents"][0]
        assert after["documents"] == sorted([*before["documents"][1:], new_id])
        assert deleted not in after["documents"]
    assert after["audit_verified"] is True


def check_denied(row: Row, replies: list[Reply], before: dict[str, Any], after: dict[str, Any]) -> None:
    role, relation, _, _ = row
    # A case the actor may not even read must look like one that does not exist.
    if EXPECTED[(role, relation, "case", "read")]:
        status, code = 403, "forbidden"
    else:
        status, code = 404, "case_not_found"
    for r in replies:
        if r.label == "audit" and role == "guest":  # staff-only for an invitee whatever the case: tells nothing
            assert (r.status, r.json()["code"]) == (403, "forbidden"), f"denied: expected 403, got {r}"
            continue
        assert r.status == status, f"denied: expected {status}, got {r}"
        body = r.json()
        assert isinstance(body, dict) and body.get("code") == code, f"denied: expected code {code!r}, got {r}"
    assert after == before, "a denied request changed the case"


async def run_row(world: World, actor: Session | None, row: Row) -> Session:
    role, relation, obj, action = row
    state = move_for(role, obj).start if action == "transition" else "draft"
    unit, centre = TARGETS[role][relation]
    cid = await prepare_case(world, unit, centre, state, materials=obj == "document")
    world.targets.append((relation, cid))
    if actor is None:  # guest: invited to its "own" case, opened for this row
        if relation == "own":
            own = cid
        else:
            own = await prepare_case(world, *TARGETS[role]["own"], state="draft", materials=False)
        actor = await invite_guest(world, own)
    before = await snapshot(world, cid)
    first = {k: before[k][0] if before[k] else 0 for k in ("documents", "recordings")}
    replies = await perform(actor, row, cid, first["documents"], first["recordings"])
    after = await snapshot(world, cid)
    if EXPECTED[row]:
        await check_allowed(row, replies, before, after, cid, world.client)
    else:
        check_denied(row, replies, before, after)
    return actor


async def listed_ids(session: Session) -> tuple[set[int], int]:
    resp = await session.get("/api/v1/cases?limit=100")
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    return {c["id"] for c in data["items"]}, data["total"]


def test_the_table_is_complete() -> None:
    every = set(itertools.product(ROLES, RELATIONS, OBJECTS, ACTIONS))
    assert len(every) == 7 * 3 * 2 * 3
    assert set(EXPECTED) == every, f"missing: {sorted(every - set(EXPECTED))}; extra: {sorted(set(EXPECTED) - every)}"
    assert all(isinstance(v, bool) for v in EXPECTED.values())
    assert set(TARGETS) == set(ROLES) == set(ACTORS)
    assert all(set(t) == set(RELATIONS) for t in TARGETS.values())


@pytest.mark.parametrize("role", ROLES)
async def test_authorisation_matrix(role: str, client: Client, as_user: Any, subtests: pytest.Subtests) -> None:
    root = await as_user("admin")
    world = World(client, root, client.app[SERVICES].db, await org_of(root))
    username = ACTORS[role]
    actor: Session | None = None
    if username is not None:
        if username in CREATED_AT_T01:
            body = {
                "username": username,
                "password": DEMO_PASSWORD,
                "display_name": username,
                "role": CREATED_AT_T01[username],
                "unit_code": "T01",
            }
            resp = await root.post("/api/v1/users", json=body)
            assert resp.status == 201, await resp.text()
        actor = await login(client, username)

    for relation, obj, action in itertools.product(RELATIONS, OBJECTS, ACTIONS):
        row = (role, relation, obj, action)
        with subtests.test(msg=row_id(row)):
            row_actor = await run_row(world, actor, row)
            if actor is None:
                # A guest lists its one invited case (the row's own case or the extra one opened for it).
                assert await listed_ids(row_actor) == ({world.created[-1]}, 1)

    if actor is not None:
        with subtests.test(msg=f"{role}-list"):
            visible = {cid for relation, cid in world.targets if EXPECTED[(role, relation, "case", "read")]}
            ids, total = await listed_ids(actor)
            assert ids == visible, f"GET /cases lists {sorted(ids)}, expected {sorted(visible)}"
            assert total == len(visible)


async def test_a_document_is_reachable_only_through_its_own_case(as_user: Any) -> None:
    """A readable (own) case id does not open another case's document id."""
    root, staff = await as_user("admin"), await as_user("staff")
    mine = (await open_case(staff, matter_code=MATTER))["id"]
    theirs = (await open_case(root, matter_code=MATTER, unit_code="P02"))["id"]
    resp = await root.post(f"/api/v1/cases/{theirs}/documents", data=form(PNG))
    assert resp.status == 201, await resp.text()
    doc = (await resp.json())["id"]
    for method, suffix in (("GET", ""), ("GET", "/content"), ("GET", "/url"), ("DELETE", "")):
        resp = await staff.request(method, f"/api/v1/cases/{mine}/documents/{doc}{suffix}")
        assert resp.status == 404, f"{method} …/{doc}{suffix} → {resp.status} {await resp.text()}"
        assert (await resp.json())["code"] == "document_not_found"
    listed = await (await root.get(f"/api/v1/cases/{theirs}/documents")).json()
    assert [d["id"] for d in listed["items"]] == [doc]


async def test_an_invite_never_carries_more_than_reading_its_case(as_user: Any, client: Client) -> None:
    """Whoever redeems an invite may read the invited case and nothing else.

    An invite may name an invitee account (``invitee_user_id``); the token is
    handed out by the inviter and redeemed without logging in, so the
    session it opens must not carry that account's own rights.  Here
    service-point staff name the administrator: either the invite is refused,
    or the redeemed session is confined to reading the one case.
    """
    root, staff = await as_user("admin"), await as_user("staff")
    users = (await (await root.get("/api/v1/users?limit=100")).json())["items"]
    admin_id = next(u["id"] for u in users if u["username"] == "admin")
    mine = (await open_case(staff, matter_code=MATTER))["id"]
    other = (await open_case(root, matter_code=MATTER, unit_code="P03"))["id"]
    resp = await staff.post(
        f"/api/v1/cases/{mine}/invites",
        json={"role": "expert", "display_name": "专家", "invitee_user_id": admin_id},
    )
    if resp.status != 201:
        assert resp.status in (403, 422), await resp.text()
        return
    token = (await resp.json())["token"]
    resp = await client.post(f"/api/v1/cases/{mine}/invites/redeem", json={"token": token})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    redeemed = Session(client, data["access_token"], data["refresh_token"])
    assert (await redeemed.get(f"/api/v1/cases/{mine}")).status == 200
    checks = [
        ("GET /users", 403, await redeemed.get("/api/v1/users")),
        ("GET other case", 404, await redeemed.get(f"/api/v1/cases/{other}")),
        ("PATCH invited case", 403, await redeemed.patch(f"/api/v1/cases/{mine}", json={"applicant_phone": NEW_PHONE})),
        (
            "cancel invited case",
            403,
            await redeemed.post(f"/api/v1/cases/{mine}/transitions", json={"to": "cancelled"}),
        ),
    ]
    wrong = [f"{label}: {r.status}, expected {want}" for label, want, r in checks if r.status != want]
    assert not wrong, f"a redeemed invite naming the admin account acts as admin: {wrong}"
    assert await listed_ids(redeemed) == ({mine}, 1)
