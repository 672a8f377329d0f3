"""The application side of signalling: implements ``signalling.application``'s Protocols."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from server.errors import ApiError
from server.services.auth import AuthService
from server.services.principal import Principal
from server.services.sessions import SessionService
from server.storage.database import Database
from signalling.application import Identity, Refused, SessionInfo, StoredChat


def _identity(p: Principal) -> Identity:
    key = f"user:{p.user_id}" if p.user_id is not None else f"invite:{p.session_id}"
    rooms = [key]
    if p.invite_case_id is None:
        if p.unit_id is not None:
            rooms.append(f"unit:{p.unit_id}")
        if p.department_id is not None:
            rooms.append(f"department:{p.department_id}")
    return Identity(
        key=key,
        user_id=p.user_id,
        display_name=p.display_name,
        role=str(p.role),
        login=p.session_id,
        rooms=tuple(rooms),
    )


PRINCIPAL_CACHE = 10_000


def _who(p: Principal) -> dict[str, object]:
    return {"display_name": p.display_name, "role": str(p.role), "invite_id": p.invite_id}


class RealtimeApplication:
    """Answers signalling's questions from the database; remembers each identity's principal."""

    def __init__(self, *, db: Database, auth: AuthService, sessions: SessionService) -> None:
        self.db = db
        self.auth = auth
        self.sessions = sessions
        #: Principals of recent identities (keeps the client address for the audit); bounded, least recently
        #: used first out.  A miss is not an error: the principal is loaded again from its login session.
        self._principals: OrderedDict[Identity, Principal] = OrderedDict()
        #: When each live participant joined (for the duration in the audit), by (session id, participant id).
        self._joined_at: dict[tuple[int, str], datetime] = {}

    async def _principal(self, identity: Identity) -> Principal:
        """The principal behind an identity; one authenticated by another process is loaded from its login."""
        principal = self._principals.get(identity)
        if principal is not None:
            self._principals.move_to_end(identity)
        else:
            try:
                async with self.db.transaction() as s:
                    principal = await self.auth.principal_for_session(s, identity.login)
            except ApiError as exc:
                raise Refused(exc.code, exc.message) from None
            if _identity(principal) != identity:
                raise Refused("auth_required", "identity does not match its login")
            self._remember(identity, principal)
        return principal

    async def authenticate(self, token: str, client_addr: str | None) -> Identity:
        try:
            async with self.db.transaction() as s:
                principal = await self.auth.authenticate(s, token, client_addr)
        except ApiError as exc:
            raise Refused(exc.code, exc.message) from None
        identity = _identity(principal)
        self._remember(identity, principal)
        return identity

    def _remember(self, identity: Identity, principal: Principal) -> None:
        self._principals[identity] = principal
        self._principals.move_to_end(identity)
        while len(self._principals) > PRINCIPAL_CACHE:
            self._principals.popitem(last=False)

    async def authorise_join(self, identity: Identity, session_id: int) -> SessionInfo:
        principal = await self._principal(identity)
        try:
            async with self.db.transaction() as s:
                # Re-check the login session too: a logout or revoked invite ends media access.
                await self.auth.check_session(s, principal.session_id)
                row = await self.sessions.get_joinable(s, principal, session_id)
                moderator, must_wait = await self.sessions.admission(s, principal, row)
        except ApiError as exc:
            raise Refused(exc.code, exc.message) from None
        return SessionInfo(row.id, row.case_id, row.kind, row.host_user_id, moderator=moderator, must_wait=must_wait)

    async def participant_joined(self, identity: Identity, session_id: int, participant_id: str) -> None:
        principal = await self._principal(identity)
        self._joined_at[(session_id, participant_id)] = self.sessions.clock.now()
        if len(self._joined_at) > PRINCIPAL_CACHE:  # bounded: a lost leave never grows it without end
            self._joined_at.pop(next(iter(self._joined_at)))
        async with self.db.transaction() as s:
            await self.sessions.record_presence(
                s, principal, session_id, "session.joined", participant_id, _who(principal)
            )

    async def participant_left(self, identity: Identity, session_id: int, participant_id: str) -> None:
        principal = await self._principal(identity)
        joined = self._joined_at.pop((session_id, participant_id), None)
        extra: dict[str, object] = _who(principal)
        if joined is not None:
            extra["duration_s"] = round((self.sessions.clock.now() - joined).total_seconds(), 1)
        async with self.db.transaction() as s:
            await self.sessions.record_presence(s, principal, session_id, "session.left", participant_id, extra)

    async def moderated(self, actor: Identity, target: Identity, session_id: int, action: str) -> None:
        """Audit a moderation step; a refused or removed invitee's invite is revoked (its link is dead)."""
        moderator = await self._principal(actor)
        try:
            subject: Principal | None = await self._principal(target)
        except Refused:
            subject = None
        async with self.db.transaction() as s:
            revoked = None
            if action in ("refused", "removed") and subject is not None and subject.invite_id is not None:
                revoked = await self.auth.revoke_invite_by_id(s, subject.invite_id)
            details: dict[str, object] = {"target": target.display_name, "target_role": target.role}
            if revoked is not None:
                details["invite_id"] = revoked
            await self.sessions.record_presence(s, moderator, session_id, f"participant.{action}", "", details)

    async def session_emptied(self, session_id: int) -> None:
        async with self.db.transaction() as s:
            await self.sessions.end(s, None, session_id, "empty")

    async def store_chat(self, identity: Identity, session_id: int, text: str) -> StoredChat:
        async with self.db.transaction() as s:
            msg = await self.sessions.add_chat(s, await self._principal(identity), session_id, text)
        return StoredChat(msg.id, msg.at)
