"""Media sessions (会话) of a case: open, end, join authorisation, chat storage.

The signalling layer asks this service (through the Protocols it declares in
``signalling.application``) whether a user may join, and tells it when
sessions start and end, who joined and left and what was said; every such
fact is written to the case audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, Forbidden, NotFound
from server.services import audit
from server.services.cases import OPEN_STATES, CaseService
from server.services.policy import Action, may
from server.services.principal import Principal, Role
from server.storage.models import ChatMessage, MediaSession
from server.storage.sessions import SessionRepository

SessionKind = Literal["call", "consultation", "inspection"]
#: Session kinds whose invitees wait to be admitted.
WAITING_ROOM_KINDS = frozenset({"consultation", "inspection"})


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SessionKind = "call"


class SessionService:
    def __init__(self, *, clock: Clock, cases: CaseService) -> None:
        self.clock = clock
        self.cases = cases

    async def open(self, s: AsyncSession, principal: Principal, case_id: int, kind: str) -> tuple[MediaSession, bool]:
        """The case's open session, creating one if there is none; ``(session, created)``."""
        view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
        if view.case.state not in OPEN_STATES:
            raise Conflict("sessions can only be opened for an open case", code="case_closed")
        repo = SessionRepository(s)
        existing = await repo.open_for_case(case_id)
        if existing is not None:
            return existing, False
        row = await repo.add(
            MediaSession(
                case_id=case_id,
                kind=kind,
                state="open",
                host_user_id=principal.user_id,
                created_at=self.clock.now(),
                ended_at=None,
                end_reason=None,
            )
        )
        await audit.append(s, self.clock, case_id, principal, "session.opened", {"session_id": row.id, "kind": kind})
        return row, True

    async def list(self, s: AsyncSession, principal: Principal, case_id: int) -> list[MediaSession]:
        await self.cases.load(s, principal, case_id, Action.READ)
        return list(await SessionRepository(s).for_case(case_id))

    async def get_joinable(self, s: AsyncSession, principal: Principal, session_id: int) -> MediaSession:
        """The session if ``principal`` may be in it (may read its case), else a refusal."""
        row = await SessionRepository(s).get(session_id)
        if row is None:
            raise NotFound("no such session", code="session_not_found")
        try:
            await self.cases.load(s, principal, row.case_id, Action.READ)
        except NotFound:
            raise Forbidden("you may not join this session", code="join_forbidden") from None
        if principal.invite_session_id is not None and principal.invite_session_id != row.id:
            raise Forbidden("this invite is for another session", code="join_forbidden")
        if row.state != "open":
            raise Forbidden("the session has ended", code="session_ended")
        return row

    async def admission(self, s: AsyncSession, principal: Principal, row: MediaSession) -> tuple[bool, bool]:
        """``(moderator, must_wait)`` for ``principal`` in the session.

        Moderators (the host, a clerk of the case, an admin) admit and refuse
        the waiting room, mute and remove participants.  In a consultation or
        an inspection, whoever came in through an invite link waits in the
        waiting room until admitted; in a plain call (the citizen at home by
        link, 屏对屏) an invitee joins directly, as do account holders of the case.
        """
        if principal.invite_case_id is not None:
            return False, row.kind in WAITING_ROOM_KINDS
        is_host = principal.user_id is not None and principal.user_id == row.host_user_id
        if is_host or principal.role is Role.ADMIN:
            return True, False
        if principal.role is Role.CLERK:
            view = await self.cases.load(s, principal, row.case_id, Action.READ)
            return may(principal, Action.TRANSITION, view.scope), False
        return False, False

    async def end(self, s: AsyncSession, principal: Principal | None, session_id: int, reason: str) -> MediaSession:
        repo = SessionRepository(s)
        row = await repo.get(session_id, for_update=True)
        if row is None:
            raise NotFound("no such session", code="session_not_found")
        if principal is not None:
            view = await self.cases.load(s, principal, row.case_id, Action.READ)
            is_host = principal.user_id is not None and principal.user_id == row.host_user_id
            if not (
                is_host
                or principal.role is Role.ADMIN
                or (principal.role is Role.CLERK and may(principal, Action.TRANSITION, view.scope))
            ):
                raise Forbidden("only the host, the case's clerk or an admin ends a session", code="forbidden")
        if row.state == "open":
            row.state = "ended"
            row.ended_at = self.clock.now()
            row.end_reason = reason
            await s.flush()
            await audit.append(
                s, self.clock, row.case_id, principal, "session.ended", {"session_id": row.id, "reason": reason}
            )
        return row

    async def record_presence(
        self,
        s: AsyncSession,
        principal: Principal,
        session_id: int,
        action: str,
        participant_id: str,
        extra: dict[str, object] | None = None,
    ) -> None:
        """Audit a join, leave, admission or removal (with the participant's role, name and, on leave, duration)."""
        row = await SessionRepository(s).get(session_id)
        if row is not None:
            await audit.append(
                s,
                self.clock,
                row.case_id,
                principal,
                action,
                {"session_id": session_id, "participant_id": participant_id, **(extra or {})},
            )

    async def chat(
        self,
        s: AsyncSession,
        principal: Principal,
        case_id: int,
        *,
        session_id: int | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[ChatMessage], int]:
        """A page of the case's chat transcript, oldest first, and the number of messages in all.

        Whoever may read the case reads its chat (the same check as ``GET /cases/{id}``, so an
        outsider gets the case's own ``case_not_found``).  ``session_id`` narrows it to one session
        of the case; a session of another case is ``session_not_found``.
        """
        await self.cases.load(s, principal, case_id, Action.READ)
        repo = SessionRepository(s)
        if session_id is not None:
            row = await repo.get(session_id)
            if row is None or row.case_id != case_id:
                raise NotFound("no such session in this case", code="session_not_found")
        rows, total = await repo.chat_page(case_id, session_id=session_id, limit=limit, offset=offset)
        return rows, total

    async def list_page(
        self, s: AsyncSession, principal: Principal, case_id: int, *, limit: int, offset: int
    ) -> tuple[Sequence[MediaSession], int]:
        """A page of the case's sessions, oldest first, and how many there are."""
        await self.cases.load(s, principal, case_id, Action.READ)
        rows, total = await SessionRepository(s).page_for_case(case_id, limit=limit, offset=offset)
        return rows, total

    async def add_chat(self, s: AsyncSession, principal: Principal, session_id: int, text: str) -> ChatMessage:
        row = await SessionRepository(s).get(session_id)
        if row is None:
            raise NotFound("no such session", code="session_not_found")
        msg = await SessionRepository(s).add_chat(
            ChatMessage(
                session_id=session_id,
                case_id=row.case_id,
                user_id=principal.user_id,
                display_name=principal.display_name,
                text=text,
                at=self.clock.now(),
            )
        )
        await audit.append(
            s,
            self.clock,
            row.case_id,
            principal,
            "chat.message",
            {"session_id": session_id, "message_id": msg.id, "length": len(text)},
        )
        return msg
