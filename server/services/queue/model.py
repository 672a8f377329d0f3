"""The queue's vocabulary: the outbox and its notices, thresholds and colours, views, request bodies and event
payloads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from server.clock import UtcInstant
from server.settings import QueueSettings
from server.storage.models import (
    Alert,
    Department,
    QueuePolicy,
    Ticket,
    Window,
)
from server.storage.queue import (
    LineTicket,
)

log = logging.getLogger("server.queue")

COLOURS = ("green", "yellow", "red")
COLOUR_RANK = {c: i for i, c in enumerate(COLOURS)}


class Notifier(Protocol):
    """Where real-time notices go (``signalling.server.SignallingServer`` satisfies it)."""

    async def notify(self, room: str, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Notice:
    room: str
    event: str
    data: dict[str, Any]


@dataclass
class Outbox:
    """Notices collected inside a unit of work, sent by :meth:`QueueService.publish` after it commits."""

    notices: list[Notice] = field(default_factory=list)
    #: Departments whose boards changed: ``queue.changed`` and ``queue.position`` are computed at publish time.
    departments: set[int] = field(default_factory=set)
    #: What the scanner did (counts per kind), for logs and tests.
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, room: str, event: str, data: dict[str, Any]) -> None:
        self.notices.append(Notice(room, event, data))

    def changed(self, department_id: int) -> None:
        self.departments.add(department_id)

    def count(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n


@dataclass(frozen=True)
class Thresholds:
    wait_limit: int
    ring_timeout: int
    yellow_length: int
    red_length: int
    yellow_wait: int
    red_wait: int


THRESHOLD_FIELDS = ("yellow_length", "red_length", "yellow_wait", "red_wait")
DEPARTMENT_FIELDS = ("wait_limit", "ring_timeout", *THRESHOLD_FIELDS)


def colour(waiting: int, longest_wait: int, t: Thresholds) -> str:
    """Green, yellow or red for a queue of ``waiting`` tickets whose oldest waited ``longest_wait`` seconds."""

    def reached(value: int, limit: int) -> bool:
        return limit > 0 and value >= limit

    if reached(waiting, t.red_length) or reached(longest_wait, t.red_wait):
        return "red"
    if reached(waiting, t.yellow_length) or reached(longest_wait, t.yellow_wait):
        return "yellow"
    return "green"


def ticket_letters(rank: int) -> str:
    """A, B, ... Z, AA, AB, ... for the 0-based ``rank`` of a department in its centre."""
    letters = ""
    rank += 1
    while rank:
        rank, rest = divmod(rank - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


class PolicyBook:
    """The policies in force: window row → department row → configuration, field by field."""

    def __init__(self, settings: QueueSettings, rows: Sequence[QueuePolicy]) -> None:
        self.settings = settings
        self.rows = {r.scope: r for r in rows}

    def thresholds(self, department_id: int, window_id: int | None = None) -> Thresholds:
        values: dict[str, int] = {f: int(getattr(self.settings, f)) for f in DEPARTMENT_FIELDS}
        scopes = [f"department:{department_id}"] + ([f"window:{window_id}"] if window_id is not None else [])
        for scope in scopes:
            row = self.rows.get(scope)
            if row is not None:
                for f in DEPARTMENT_FIELDS:
                    value = getattr(row, f)
                    if value is not None:
                        values[f] = int(value)
        return Thresholds(**values)

    def window_scopes(self) -> list[QueuePolicy]:
        """Window rows that set a threshold of their own (their windows get a colour of their own)."""
        return [
            r
            for r in self.rows.values()
            if r.window_id is not None and any(getattr(r, f) is not None for f in THRESHOLD_FIELDS)
        ]


class TicketAct(StrEnum):
    READ = "read"
    #: The service point's part: answer the ring, cancel.
    POINT = "point"
    #: The clerk's part: recall, skip, complete, transfer.
    CLERK = "clerk"


@dataclass
class TicketCall:
    ticket: Ticket
    session_id: int
    window: Window


@dataclass
class RingInfo:
    """What a point needs to answer a ringing ticket."""

    session_id: int | None
    window: Window
    department: Department


@dataclass
class BoardEntry:
    ticket: LineTicket
    position: int
    estimated_wait: int


@dataclass
class WindowState:
    window: Window
    current: Ticket | None
    #: Matters the window serves (empty: all of its department's).
    matter_codes: list[str]


@dataclass
class Board:
    department_id: int
    window_id: int | None
    colour: str
    waiting: int
    longest_wait: int
    mean_service_time: float
    open_windows: int
    entries: list[BoardEntry]
    windows: list[WindowState]
    thresholds: Thresholds


@dataclass
class TicketPosition:
    ticket: Ticket
    position: int | None
    estimated_wait: int | None


# -- request bodies ---------------------------------------------------------------------------------------------------


class TidalOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The window closes itself at this time, after finishing its current ticket.
    until: UtcInstant
    #: Matters it serves; omitted: keep the window's (empty: all of the department's).
    matter_codes: list[str] | None = Field(default=None, max_length=500)


class WindowMatters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Matters the window serves; empty: all of its department's matters.
    matter_codes: list[str] = Field(max_length=500)


class TransferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department_id: int = Field(ge=1, le=2**31 - 1)
    reason: str | None = Field(default=None, max_length=500)


class AbsentBody(BaseModel):
    """The applicant never came into the call: back to the line, or a no-show with a reason."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["requeue", "no_show"]
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class PolicyUpdate(BaseModel):
    """Fields sent override; ``null`` returns a field to the inherited value; omitted fields are kept."""

    model_config = ConfigDict(extra="forbid")

    wait_limit: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    ring_timeout: int | None = Field(default=None, ge=1, le=3600)
    yellow_length: int | None = Field(default=None, ge=0, le=1_000_000)
    red_length: int | None = Field(default=None, ge=0, le=1_000_000)
    yellow_wait: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    red_wait: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    ticket_prefix: str | None = Field(default=None, pattern=r"^[A-Z]{1,3}$")


ReportBucket = Literal["day", "month", "all"]


@dataclass
class ReportRow:
    department_id: int
    period: str
    yellow: int = 0
    red: int = 0
    wait_timeouts: int = 0


# -- event payloads ---------------------------------------------------------------------------------------------------


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_event(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "number": t.number,
        "state": t.state,
        "department_id": t.department_id,
        "case_id": t.case_id,
        "unit_id": t.unit_id,
        "window_id": t.window_id,
        "priority": t.priority,
        "waiting_since": iso_or_none(t.waiting_since),
        "called_at": iso_or_none(t.called_at),
        "ring_deadline": iso_or_none(t.ring_deadline),
    }


def window_event(w: Window) -> dict[str, Any]:
    return {
        "id": w.id,
        "code": w.code,
        "name_zh": w.name_zh,
        "name_en": w.name_en,
        "department_id": w.department_id,
        "state": w.state,
        "clerk_user_id": w.clerk_user_id,
        "tidal": w.tidal,
        "closes_at": iso_or_none(w.closes_at),
    }


def department_event(d: Department) -> dict[str, Any]:
    return {"id": d.id, "code": d.code, "name_zh": d.name_zh, "name_en": d.name_en}


def ring_event(t: Ticket, session_id: int, window: Window, department: Department) -> dict[str, Any]:
    return {
        "ticket": ticket_event(t),
        "session_id": session_id,
        "window": window_event(window),
        "department": department_event(department),
    }


def alert_event(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "department_id": a.department_id,
        "window_id": a.window_id,
        "ticket_id": a.ticket_id,
        "kind": a.kind,
        "level": a.level,
        "details": a.details,
        "created_at": iso_or_none(a.created_at),
    }


def board_event(b: Board, limit: int | None = None) -> dict[str, Any]:
    entries = b.entries if limit is None else b.entries[:limit]
    return {
        "department_id": b.department_id,
        "window_id": b.window_id,
        "colour": b.colour,
        "waiting": b.waiting,
        "longest_wait": b.longest_wait,
        "open_windows": b.open_windows,
        "tickets": [
            {"id": e.ticket.id, "number": e.ticket.number, "position": e.position, "estimated_wait": e.estimated_wait}
            for e in entries
        ],
        "windows": [{**window_event(w.window), "current": w.current.number if w.current else None} for w in b.windows],
    }
