"""Who is acting: the authenticated user (or invite guest) behind a request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    CLERK = "clerk"
    COMMUNITY_STAFF = "community_staff"
    EXPERT = "expert"
    INSPECTOR = "inspector"
    #: An outside party who joined through an invite link, without an account.
    GUEST = "guest"


ACCOUNT_ROLES = tuple(r for r in Role if r is not Role.GUEST)


@dataclass(frozen=True)
class Principal:
    user_id: int | None
    username: str
    display_name: str
    role: Role
    unit_id: int | None
    #: Materialised path of the user's unit (``/1/4/``); subtree checks compare prefixes.
    unit_path: str
    department_id: int | None
    session_id: str
    #: Set for a principal that came in through an invite: the one case it may touch.
    invite_case_id: int | None = None
    #: For an invite scoped to one session (a consultation or inspection): the only session it may join.
    invite_session_id: int | None = None
    #: The invite behind this principal (revoked when the host removes the participant).
    invite_id: int | None = None
    client_addr: str | None = None
