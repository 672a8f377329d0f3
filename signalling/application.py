"""What signalling needs from the application, declared as Protocols (DESIGN.md §3).

``server`` implements these; ``signalling`` never imports it.  Refusals are
raised as :class:`Refused` with a stable code that goes on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Refused(Exception):
    """The application says no; ``code`` is sent to the client (docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    """Who is on a socket; ``key`` is stable per person (user id or invite id) for rejoin."""

    key: str
    user_id: int | None
    display_name: str
    role: str
    #: The login (or invite) session behind the socket; two logins of one person differ here only.
    login: str = ""
    #: Notification rooms the socket joins on connect (``user:7``, ``unit:3``, ``department:5``):
    #: the application addresses real-time notices (a ringing call, a queue board) to them.
    rooms: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionInfo:
    """The session, and what the identity that asked (``authorise_join``) may do in it."""

    session_id: int
    case_id: int
    kind: str
    host_user_id: int | None
    #: May admit and refuse the waiting room, mute and remove participants (the host, the case's clerk, admin).
    moderator: bool = False
    #: Waits in the waiting room until a moderator admits it (whoever came in through an invite link).
    must_wait: bool = False


@dataclass(frozen=True)
class StoredChat:
    id: int
    at: datetime


class Authenticator(Protocol):
    async def authenticate(self, token: str, client_addr: str | None) -> Identity:
        """The identity behind an access token, or :class:`Refused` (``token_invalid`` …)."""
        ...


class SessionDirectory(Protocol):
    async def authorise_join(self, identity: Identity, session_id: int) -> SessionInfo:
        """May ``identity`` be in the session now?  Called on join and re-checked on events."""
        ...

    async def participant_joined(self, identity: Identity, session_id: int, participant_id: str) -> None: ...

    async def participant_left(self, identity: Identity, session_id: int, participant_id: str) -> None: ...

    async def session_emptied(self, session_id: int) -> None:
        """The last participant left and stayed away for the empty-session timeout: end it."""
        ...

    async def store_chat(self, identity: Identity, session_id: int, text: str) -> StoredChat: ...

    async def moderated(self, actor: Identity, target: Identity, session_id: int, action: str) -> None:
        """A moderator ``admitted``, ``refused``, ``muted``, ``unmuted`` or ``removed`` ``target``.

        The application records it; on ``refused`` and ``removed`` it also
        ends the target's access (an invite is revoked, so the same link
        cannot bring it back).
        """
        ...
