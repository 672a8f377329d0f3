"""Media sessions of a case: open, list, end (the media itself runs over Socket.IO + WebRTC)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel

from server.api.routing import Api, Call, Page
from server.services.sessions import SessionCreate
from server.storage.models import MediaSession

api = Api()


class SessionOut(BaseModel):
    id: int
    case_id: int
    kind: str
    state: str
    host_user_id: int | None
    created_at: datetime
    ended_at: datetime | None
    end_reason: str | None

    @classmethod
    def of(cls, row: MediaSession) -> SessionOut:
        return cls.model_validate(row, from_attributes=True)


@api.route(
    "POST",
    "/cases/{case_id}/sessions",
    summary="Open the case's media session (or return the open one)",
    tags=["sessions"],
    body=SessionCreate,
    response=SessionOut,
    status=201,
    also=(200,),
)
async def open_session(call: Call) -> web.Response:
    sv = call.services
    async with sv.db.transaction() as s:
        row, created = await sv.sessions.open(s, call.me, call.path_int("case_id"), call.body.kind)
    return web.Response(
        text=SessionOut.of(row).model_dump_json(), status=201 if created else 200, content_type="application/json"
    )


@api.route(
    "GET",
    "/cases/{case_id}/sessions",
    summary="The case's media sessions",
    tags=["sessions"],
    response=Page[SessionOut],
)
async def list_sessions(call: Call) -> Page[SessionOut]:
    async with call.services.db.transaction() as s:
        rows = await call.services.sessions.list(s, call.me, call.path_int("case_id"))
    return Page[SessionOut](items=[SessionOut.of(r) for r in rows], total=len(rows), limit=len(rows), offset=0)


@api.route(
    "POST",
    "/sessions/{session_id}/end",
    summary="End a media session (host, the case's clerk, admin)",
    tags=["sessions"],
    response=SessionOut,
)
async def end_session(call: Call) -> SessionOut:
    sv = call.services
    session_id = call.path_int("session_id")
    async with sv.db.transaction() as s:
        row = await sv.sessions.end(s, call.me, session_id, "ended_by_host")
    await sv.signalling.end_session(session_id, "ended_by_host")
    return SessionOut.of(row)
