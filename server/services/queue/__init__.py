"""The remote queue (取号/叫号): cloud windows, tickets, calls into a case's session, warnings, the scanner.

A ticket is taken for a case at a service point and waits in the queue of the
case's department; a clerk signed in to an open window of that department
calls the next one (checked-in appointments first, by slot time, then
walk-ins in order of arrival), which opens the case's media session and rings
the point.  States: ``waiting → called → serving → done``, or ``no_show``
(skipped, or rings unanswered too often), ``transferred`` (a new ticket in
another department keeps the original waiting time) and ``cancelled``.

Time is durable: every deadline (ring timeouts, the wait-timeout alert, a
tidal window's closing time, appointment no-shows) is a column, and one
scanner (:meth:`QueueService.tick`) does all due work in one transaction.
Nothing is kept in memory timers, so a restart loses nothing; unique
constraints make each wait-timeout alert exactly-once however many scanners
or restarts there are.  Real-time notices are collected in an
:class:`Outbox` during the transaction and sent after it commits
(:meth:`QueueService.publish`), so nobody is told about a change that was
rolled back.  The stored alert list is the record; the push is a courtesy
(a crash between commit and send loses that one push, never the alert).

The package splits one service by concern: :mod:`.model` (outbox, thresholds,
views, request bodies, event payloads), :mod:`.base` (collaborators,
authorisation and the helpers several parts use), :mod:`.tickets`,
:mod:`.windows` (with the boards), :mod:`.reports` (alerts, policies, the
period report) and :mod:`.scanner` (due work and the after-commit pushes).
:class:`QueueService` is their sum; callers see one object.
"""

from __future__ import annotations

from server.services.queue.model import (
    COLOUR_RANK,
    COLOURS,
    DEPARTMENT_FIELDS,
    THRESHOLD_FIELDS,
    AbsentBody,
    Board,
    BoardEntry,
    Notice,
    Notifier,
    Outbox,
    PolicyBook,
    PolicyUpdate,
    ReportBucket,
    ReportRow,
    RingInfo,
    Thresholds,
    TicketAct,
    TicketCall,
    TicketPosition,
    TidalOpen,
    TransferBody,
    WindowMatters,
    WindowState,
    alert_event,
    board_event,
    colour,
    department_event,
    ring_event,
    ticket_event,
    ticket_letters,
    window_event,
)
from server.services.queue.reports import QueueReports
from server.services.queue.scanner import QueueScanner
from server.services.queue.tickets import QueueTickets
from server.services.queue.windows import QueueWindows

__all__ = [
    "COLOURS",
    "COLOUR_RANK",
    "DEPARTMENT_FIELDS",
    "THRESHOLD_FIELDS",
    "AbsentBody",
    "Board",
    "BoardEntry",
    "Notice",
    "Notifier",
    "Outbox",
    "PolicyBook",
    "PolicyUpdate",
    "QueueService",
    "ReportBucket",
    "ReportRow",
    "RingInfo",
    "Thresholds",
    "TicketAct",
    "TicketCall",
    "TicketPosition",
    "TidalOpen",
    "TransferBody",
    "WindowMatters",
    "WindowState",
    "alert_event",
    "board_event",
    "colour",
    "department_event",
    "ring_event",
    "ticket_event",
    "ticket_letters",
    "window_event",
]


class QueueService(QueueTickets, QueueWindows, QueueReports, QueueScanner):
    """The remote queue: one object, its concerns in the modules of this package (see the package docstring)."""
