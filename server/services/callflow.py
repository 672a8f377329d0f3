"""The one state machine of a remote service call: ticket × case × media session.

A case (``server.services.cases``), its queue ticket (``server.services.queue``)
and its call session (``server.services.sessions``) each have states of their
own; this module says which combinations may exist and what a move of one
does to the others.  Every case move made through the API and every ticket
move of the queue asks it (:func:`case_move`, :func:`case_after_ticket`), so
no path can leave, say, a completed case with a ticket still ringing.  The
diagram is in ``docs/architecture.md`` ("The call state machine").

"Applicant joined" is a durable fact: the signalling layer reports each join
(``session.joined`` in the case audit, with the participant's role); the
applicant side is service-point staff or a guest who came by invite link
(屏对屏).  A join counts for the current call only when it happened at or
after the ticket was called (or, without a ticket, after the call session opened).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import Conflict
from server.services.principal import Role
from server.storage.cases import CaseRepository
from server.storage.models import Case, MediaSession, Ticket
from server.storage.queue import TicketRepository
from server.storage.sessions import SessionRepository

#: Roles whose join makes "the applicant side joined": the point's staff, or the citizen by invite link.
APPLICANT_ROLES = (str(Role.COMMUNITY_STAFF), str(Role.GUEST))
#: A case decision: made in a call only when the applicant side is in it.
DECISIONS = frozenset({"accepted", "rejected"})
#: Case states after which the case holds no place in any queue.
CASE_DONE = frozenset({"accepted", "rejected", "completed", "cancelled"})
#: Ticket states that ring or are being served (the case is in a call through them).
IN_CALL = frozenset({"called", "serving"})


class TicketEffect(StrEnum):
    """What a case move does to the case's active ticket."""

    KEEP = "keep"
    #: Back to the line at its old place (``waiting``; order and waiting time kept).
    REQUEUE = "requeue"
    #: Served: ``done``.
    DONE = "done"
    #: Ended unserved: ``cancelled``.
    CANCEL = "cancel"


@dataclass(frozen=True)
class CallState:
    """What the state machine needs to know about a case besides its own state."""

    #: The case's ticket holding a place (waiting, called or serving), if any.
    ticket: Ticket | None
    #: The case's open media session of kind ``call``, if any.
    call: MediaSession | None
    #: The applicant side joined the current call (see the module docstring).
    joined: bool

    @property
    def ticket_state(self) -> str | None:
        return self.ticket.state if self.ticket is not None else None


async def call_state(s: AsyncSession, case: Case, *, lock_ticket: bool = False) -> CallState:
    ticket = await TicketRepository(s).active_for_case(case.id, for_update=lock_ticket)
    session = await SessionRepository(s).open_for_case(case.id)
    call = session if session is not None and session.kind == "call" else None
    since = None
    if ticket is not None and ticket.state in IN_CALL:
        since = ticket.called_at
    elif call is not None:
        since = call.created_at
    joined = since is not None and await CaseRepository(s).joined_since(case.id, since, APPLICANT_ROLES)
    return CallState(ticket, call, joined)


def applicant_not_joined(state: CallState, reason: str) -> Conflict:
    return Conflict(
        "the applicant has not joined the call: use 'applicant absent' (back to the line or no-show) instead",
        code="applicant_not_joined",
        details={"ticket_state": state.ticket_state, "why": reason},
    )


def case_move(case_from: str, to: str, state: CallState) -> TicketEffect:
    """Check a case move (already legal for the case alone) against its ticket and call; its ticket effect.

    Raises ``applicant_not_joined`` (409) for a decision in a call the
    applicant side never joined: a ticket still ringing (``called``), an
    answered ticket nobody from the point joined, or (without a ticket) an
    open call of an ``in_session`` case with nobody from the point in it.
    """
    ts = state.ticket_state
    if to in DECISIONS:
        if ts == "called":
            raise applicant_not_joined(state, "not_answered")
        if ts == "serving" and not state.joined:
            raise applicant_not_joined(state, "not_joined")
        if ts is None and case_from == "in_session" and state.call is not None and not state.joined:
            raise applicant_not_joined(state, "not_joined")
    if ts is None:
        return TicketEffect.KEEP
    if to in CASE_DONE:
        return TicketEffect.DONE if ts == "serving" else TicketEffect.CANCEL
    if case_from == "in_session" and to == "submitted" and ts in IN_CALL:
        return TicketEffect.REQUEUE
    return TicketEffect.KEEP


def case_after_ticket(ticket_from: str, ticket_to: str, case_state: str) -> str | None:
    """The case state a ticket move leads to (``None``: unchanged).

    A call (``waiting → called``) moves a ``submitted`` case into the session;
    a call that ends without a decision (``called``/``serving`` to anything
    but itself) moves an ``in_session`` case back to ``submitted``, where it
    can be queued, called or decided again.
    """
    if ticket_from == "waiting" and ticket_to == "called" and case_state == "submitted":
        return "in_session"
    if ticket_from in IN_CALL and ticket_to not in IN_CALL and case_state == "in_session":
        return "submitted"
    return None
