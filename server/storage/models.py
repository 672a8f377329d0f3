"""ORM tables.  One class per table; relationships are loaded explicitly by repositories."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.storage.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class OrgUnit(Base):
    """A node of the service tree: district centre (1) → town centre (2) → service point (3)."""

    __tablename__ = "org_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    tier: Mapped[int] = mapped_column(Integer)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    #: Materialised path of ids, ``/1/4/9/``: a subtree is ``path LIKE '/1/4/%'``.
    path: Mapped[str] = mapped_column(String(400), index=True, default="")


class Department(Base):
    __tablename__ = "departments"
    __table_args__ = (UniqueConstraint("unit_id", "code", name="uq_departments_unit_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))


class Window(Base):
    """A cloud window (云窗口): a remote counter of a department at a centre."""

    __tablename__ = "windows"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    #: ``open`` (calls tickets), ``paused`` (finishes its ticket, calls none), ``closed``.
    state: Mapped[str] = mapped_column(String(16), default="closed")
    #: The clerk signed in here; a clerk is signed in to one window at a time.
    clerk_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    signed_in_at: Mapped[datetime | None]
    #: A tidal window (潮汐窗口) closes itself at ``closes_at``, after finishing its current ticket.
    tidal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    closes_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class AuthSession(Base):
    """A login (or a redeemed invite): holds the hashed refresh token; revoked on logout."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    invite_id: Mapped[int | None] = mapped_column(ForeignKey("invites.id"))
    refresh_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    client_addr: Mapped[str | None] = mapped_column(String(64))


class Invite(Base):
    """A single-use, expiring link into one case's session; only the SHA-256 of the token is kept."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(200))
    invitee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    #: The one session the invite admits to (a consultation or inspection); ``NULL``: any session of the case.
    session_id: Mapped[int | None] = mapped_column(ForeignKey("media_sessions.id"), index=True)
    #: The expert of the library the invite was made for, if any (for the audit and the report).
    expert_id: Mapped[int | None] = mapped_column(ForeignKey("experts.id"))


class Matter(Base):
    """A kind of administrative service from the catalogue (事项)."""

    __tablename__ = "matters"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    department_code: Mapped[str] = mapped_column(String(64), index=True)
    promised_days: Mapped[int] = mapped_column(Integer, default=0)
    remote_capable: Mapped[bool] = mapped_column(Boolean, default=True)
    needs_inspection: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_days: Mapped[int] = mapped_column(Integer, default=365)
    inspection_checklist: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ChecklistItem(Base):
    __tablename__ = "checklist_items"
    __table_args__ = (UniqueConstraint("matter_id", "code", name="uq_checklist_items_matter_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    matter_id: Mapped[int] = mapped_column(ForeignKey("matters.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    required: Mapped[bool] = mapped_column(Boolean, default=True)
    accepted_types: Mapped[list[Any]] = mapped_column(default=list)
    max_size: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Case(Base):
    """One application for a matter (办件)."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_department_state", "department_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    matter_id: Mapped[int] = mapped_column(ForeignKey("matters.id"), index=True)
    #: The service point (or centre) where the case was opened.
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    #: Copy of the opening unit's path, so subtree visibility needs no join.
    unit_path: Mapped[str] = mapped_column(String(400), index=True)
    #: The department (at a centre) the case is routed to.
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    applicant_name: Mapped[str] = mapped_column(String(100))
    applicant_id_number: Mapped[str] = mapped_column(String(18))
    #: HMAC of the ID number: real-name rules look cases up without the number.
    applicant_id_hash: Mapped[str] = mapped_column(String(64), index=True)
    applicant_phone: Mapped[str] = mapped_column(String(20))
    is_proxy: Mapped[bool] = mapped_column(Boolean, default=False)
    proxy_name: Mapped[str | None] = mapped_column(String(100))
    proxy_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    #: A legal hold (法律保全) keeps the case's recordings past their retention period.
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy reads it as is


class CaseAuditEntry(Base):
    """Append-only, hash-chained audit trail of a case (``server.services.audit``)."""

    __tablename__ = "case_audit"
    __table_args__ = (UniqueConstraint("case_id", "seq", name="uq_case_audit_case_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_role: Mapped[str] = mapped_column(String(32))
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime]
    client_addr: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Document(Base):
    """An uploaded material (材料), stored in the object store under ``object_key``."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    checklist_item_id: Mapped[int | None] = mapped_column(ForeignKey("checklist_items.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(512), unique=True)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    #: 材料预审: ``pending`` until a clerk ``accepted`` it or ``returned`` it for correction (补正) with a reason.
    review_state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    review_reason: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None]


class MediaSession(Base):
    """A media room tied to a case (会话): a call, consultation or inspection."""

    __tablename__ = "media_sessions"
    __table_args__ = (Index("ix_media_sessions_case_state", "case_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    host_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))


class Recording(Base):
    """A finished recording in the case file: one participant's joined file, or the session composite."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("media_sessions.id"), index=True)
    #: ``participant`` or ``composite``.
    kind: Mapped[str] = mapped_column(String(16))
    participant_id: Mapped[str | None] = mapped_column(String(64))
    participant_display_name: Mapped[str | None] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    duration_s: Mapped[float] = mapped_column(Float)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(512), unique=True)
    created_at: Mapped[datetime]


class RecordingJob(Base):
    """The durable post-session job of a recorded session: join each participant's segments, store the results."""

    __tablename__ = "recording_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("media_sessions.id"), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    #: ``pending`` (waits for the session to end), ``done`` or ``failed`` (after ``attempts`` tries).
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class ChatMessage(Base):
    """A chat line said in a session, kept with the case."""

    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("media_sessions.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    display_name: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


# -- queue and appointments (issue 6) ------------------------------------------------------------------------------

#: Ticket states that hold a place: the real-name rule allows one per matter and ID number.
ACTIVE_TICKET_STATES = ("waiting", "called", "serving")
_ACTIVE_TICKET = text("state IN ('waiting', 'called', 'serving')")
_BOOKED = text("state = 'booked'")


class WindowMatter(Base):
    """A matter a window serves; a window with none serves all of its department's matters."""

    __tablename__ = "window_matters"

    window_id: Mapped[int] = mapped_column(ForeignKey("windows.id", ondelete="CASCADE"), primary_key=True)
    matter_id: Mapped[int] = mapped_column(ForeignKey("matters.id", ondelete="CASCADE"), primary_key=True)


class TicketCounter(Base):
    """Last ticket number given by a department on a (local) day; incremented by an atomic upsert."""

    __tablename__ = "ticket_counters"

    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), primary_key=True)
    #: Local calendar day, ``YYYY-MM-DD``.
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class AppointmentSlot(Base):
    """A bookable period of a department (or of one of its windows) with a capacity."""

    __tablename__ = "appointment_slots"
    __table_args__ = (Index("ix_appointment_slots_department_start", "department_id", "starts_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    capacity: Mapped[int] = mapped_column(Integer)
    #: Bookings holding a place (booked or checked in); changed only by guarded single-row UPDATEs.
    booked: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Appointment(Base):
    """A booking (预约) of a slot for a case; at most one ``booked`` per matter and ID number."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index(
            "uq_appointments_booked_person",
            "matter_id",
            "id_hash",
            unique=True,
            postgresql_where=_BOOKED,
            sqlite_where=_BOOKED,
        ),
        Index("ix_appointments_state_slot", "state", "slot_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("appointment_slots.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    matter_id: Mapped[int] = mapped_column(ForeignKey("matters.id"))
    #: The service point that booked (the case's unit).
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    id_hash: Mapped[str] = mapped_column(String(64))
    applicant_name: Mapped[str] = mapped_column(String(100))
    #: ``booked`` → ``checked_in`` | ``cancelled`` | ``no_show``.
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    cancelled_at: Mapped[datetime | None]
    checked_in_at: Mapped[datetime | None]
    no_show_at: Mapped[datetime | None]


class BookingBan(Base):
    """An ID number barred from booking until ``until`` (after a no-show)."""

    __tablename__ = "booking_bans"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(32))
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    created_at: Mapped[datetime]


class Ticket(Base):
    """A place in a department's queue (取号) for a case, taken at a service point."""

    __tablename__ = "tickets"
    __table_args__ = (
        # The real-name rule: one active ticket per matter per ID number.
        Index(
            "uq_tickets_active_person",
            "matter_id",
            "id_hash",
            unique=True,
            postgresql_where=_ACTIVE_TICKET,
            sqlite_where=_ACTIVE_TICKET,
        ),
        # Call-next: the head of a department's waiting line.
        Index("ix_tickets_queue", "department_id", "state", "priority", "order_key", "id"),
        Index("ix_tickets_state_alert_at", "state", "alert_at"),
        Index("ix_tickets_state_ring_deadline", "state", "ring_deadline"),
        Index("ix_tickets_window_state", "window_id", "state"),
        Index("ix_tickets_unit_state", "unit_id", "state"),
        Index("ix_tickets_department_finished", "department_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Readable per department and day: a letter per department and a daily counter (``B023``).
    number: Mapped[str] = mapped_column(String(12))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    matter_id: Mapped[int] = mapped_column(ForeignKey("matters.id"))
    #: The service point that took the ticket (rings go to ``unit:<id>``).
    unit_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"))
    id_hash: Mapped[str] = mapped_column(String(64))
    #: ``waiting → called → serving → done``; or ``no_show``, ``transferred``, ``cancelled``.
    state: Mapped[str] = mapped_column(String(16))
    #: 0: a checked-in appointment; 1: a walk-in.
    priority: Mapped[int] = mapped_column(Integer)
    #: Position key within a priority: the slot start for appointments, else ``waiting_since``.
    order_key: Mapped[datetime]
    #: When the citizen started waiting; kept across transfers and unanswered rings.
    waiting_since: Mapped[datetime]
    created_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    clerk_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    called_at: Mapped[datetime | None]
    ring_deadline: Mapped[datetime | None]
    served_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: Rings nobody answered; at the configured maximum the ticket becomes a no-show.
    unanswered: Mapped[int] = mapped_column(Integer, default=0)
    #: When a still-waiting ticket raises the wait-timeout alert (``waiting_since`` + the wait limit).
    alert_at: Mapped[datetime]
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    transferred_from_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    end_reason: Mapped[str | None] = mapped_column(String(32))


class QueuePolicy(Base):
    """Thresholds of a department or of one window; ``NULL`` fields inherit (window → department → config)."""

    __tablename__ = "queue_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``department:<id>`` or ``window:<id>``.
    scope: Mapped[str] = mapped_column(String(40), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    #: Seconds a ticket may wait before the wait-timeout alert (department scope only).
    wait_limit: Mapped[int | None] = mapped_column(Integer)
    #: Seconds a ring may go unanswered (department scope only).
    ring_timeout: Mapped[int | None] = mapped_column(Integer)
    yellow_length: Mapped[int | None] = mapped_column(Integer)
    red_length: Mapped[int | None] = mapped_column(Integer)
    yellow_wait: Mapped[int | None] = mapped_column(Integer)
    red_wait: Mapped[int | None] = mapped_column(Integer)
    #: Letter(s) of the department's ticket numbers (default: by the department's order in its centre).
    ticket_prefix: Mapped[str | None] = mapped_column(String(4))
    updated_at: Mapped[datetime]
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class QueueStatus(Base):
    """The current colour (green, yellow, red) of a department's or window's queue."""

    __tablename__ = "queue_status"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    colour: Mapped[str] = mapped_column(String(8))
    since: Mapped[datetime]


class QueueStatusChange(Base):
    """A change of colour, kept for reports (how many yellow and red per period)."""

    __tablename__ = "queue_status_changes"
    __table_args__ = (Index("ix_queue_status_changes_department_at", "department_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(40))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    from_colour: Mapped[str] = mapped_column(String(8))
    to_colour: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime]
    waiting: Mapped[int] = mapped_column(Integer)
    longest_wait: Mapped[int] = mapped_column(Integer)


class Alert(Base):
    """A warning to the department's supervisors: a wait timeout (once per ticket) or a status colour."""

    __tablename__ = "alerts"
    __table_args__ = (
        # Exactly once per ticket and kind, whatever restarts or concurrent scanners do.
        UniqueConstraint("ticket_id", "kind", name="uq_alerts_ticket_kind"),
        Index("ix_alerts_department_created", "department_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    window_id: Mapped[int | None] = mapped_column(ForeignKey("windows.id"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    #: ``wait_timeout`` or ``status``.
    kind: Mapped[str] = mapped_column(String(16))
    #: ``yellow`` or ``red`` (a wait timeout is ``red``).
    level: Mapped[str] = mapped_column(String(8))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


# -- expert library, consultation notes, site inspection (issue 7) -------------------------------------------------


class Expert(Base):
    """An entry of the expert library (专家库): an expert with an account, or an outside one without."""

    __tablename__ = "experts"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The expert's account (role ``expert``), if they have one; outside experts join by invite link only.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    title: Mapped[str | None] = mapped_column(String(100))
    #: Employer or department, free text (区市场监督管理局, an enterprise).
    organisation: Mapped[str] = mapped_column(String(200))
    #: Catalogue department code the expert advises (``market_regulation``), if any.
    department_code: Mapped[str | None] = mapped_column(String(64), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(200))
    #: ``available``, ``busy`` or ``unavailable``.
    availability: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ExpertField(Base):
    """A field of expertise of an expert (``food_safety``); the library is searched by these."""

    __tablename__ = "expert_fields"

    expert_id: Mapped[int] = mapped_column(ForeignKey("experts.id", ondelete="CASCADE"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class CaseNote(Base):
    """A note or the conclusion of a consultation, written into the case file."""

    __tablename__ = "case_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("media_sessions.id"))
    #: ``note`` or ``conclusion``.
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    author_name: Mapped[str] = mapped_column(String(200))
    author_role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class InspectionTask(Base):
    """A remote site inspection (远程踏勘) of a case: the matter's checklist, its session, results and report."""

    __tablename__ = "inspection_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("media_sessions.id"), index=True)
    #: ``open`` → ``completed``.
    state: Mapped[str] = mapped_column(String(16))
    #: The matter's inspection checklist when the task was made: ``[{code, name_zh, name_en}]``.
    checklist: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    last_lat: Mapped[float | None] = mapped_column(Float)
    last_lon: Mapped[float | None] = mapped_column(Float)
    last_accuracy: Mapped[float | None] = mapped_column(Float)
    last_location_at: Mapped[datetime | None]
    #: The latest generated report (a document of the case).
    report_document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))


class InspectionLocation(Base):
    """A position the inspector's phone reported (Geolocation API), with its accuracy in metres."""

    __tablename__ = "inspection_locations"
    __table_args__ = (Index("ix_inspection_locations_task_at", "task_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("inspection_tasks.id"))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    #: Server time of arrival; ``device_at`` is the phone's own time of the fix.
    at: Mapped[datetime]
    device_at: Mapped[datetime | None]


class InspectionEvidence(Base):
    """A still photo taken on site, with its GPS/time/device stamps and a server-signed manifest."""

    __tablename__ = "inspection_evidence"
    __table_args__ = (UniqueConstraint("task_id", "client_key", name="uq_inspection_evidence_task_client_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("inspection_tasks.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    item_code: Mapped[str | None] = mapped_column(String(64))
    #: The phone's idempotency key: a retried upload with the same key is not stored twice.
    client_key: Mapped[str] = mapped_column(String(64))
    #: The phone's sequence number (the order the photos were taken).
    client_seq: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(512), unique=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime]
    device: Mapped[str] = mapped_column(String(200))
    uploaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_by_name: Mapped[str] = mapped_column(String(200))
    #: For a photo sent by an invited inspector: who made the invite (signed with the rest; None before 0007).
    invited_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    invited_by_name: Mapped[str | None] = mapped_column(String(200))
    #: Canonical JSON of the signed fields, and its Ed25519 signature (base64) by key ``key_id``.
    manifest: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))


class InspectionResult(Base):
    """The clerk's mark on one checklist item: pass, fail or a note, with the evidence it rests on."""

    __tablename__ = "inspection_results"
    __table_args__ = (UniqueConstraint("task_id", "item_code", name="uq_inspection_results_task_item_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("inspection_tasks.id"))
    item_code: Mapped[str] = mapped_column(String(64))
    #: ``pass``, ``fail`` or ``note``.
    result: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text)
    evidence_ids: Mapped[list[Any]] = mapped_column(default=list)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_by_name: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime]
