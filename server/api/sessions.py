"""Media sessions of a case: open, list, end, the chat transcript (the media itself runs over Socket.IO + WebRTC)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from server.api.routing import Api, Call, Page, PageQuery
from server.services.sessions import SessionCreate
from server.storage.models import ChatMessage, MediaSession

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
    query=PageQuery,
    response=Page[SessionOut],
)
async def list_sessions(call: Call) -> Page[SessionOut]:
    q = call.query
    async with call.services.db.transaction() as s:
        rows, total = await call.services.sessions.list_page(
            s, call.me, call.path_int("case_id"), limit=q.limit, offset=q.offset
        )
    return Page[SessionOut](items=[SessionOut.of(r) for r in rows], total=total, limit=q.limit, offset=q.offset)


class ChatQuery(PageQuery):
    #: Only this session's messages (it must be one of the case's sessions).
    session_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ChatOut(BaseModel):
    """One chat line as said in a session (``chat.message`` without the per-join ``participant_id``)."""

    id: int
    case_id: int
    session_id: int
    user_id: int | None
    display_name: str
    text: str
    at: datetime

    @classmethod
    def of(cls, row: ChatMessage) -> ChatOut:
        return cls.model_validate(row, from_attributes=True)


@api.route(
    "GET",
    "/cases/{case_id}/chat",
    summary="The case's chat transcript, oldest first (optionally one session's)",
    tags=["sessions"],
    query=ChatQuery,
    response=Page[ChatOut],
)
async def chat_transcript(call: Call) -> Page[ChatOut]:
    q = call.query
    async with call.services.db.transaction() as s:
        rows, total = await call.services.sessions.chat(
            s, call.me, call.path_int("case_id"), session_id=q.session_id, limit=q.limit, offset=q.offset
        )
    return Page[ChatOut](items=[ChatOut.of(r) for r in rows], total=total, limit=q.limit, offset=q.offset)


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
