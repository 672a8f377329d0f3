"""Object-level authorisation: who may read, write or move which case.

One place decides; HTTP handlers never do.  The rules (DESIGN.md §1, issue 3):

* admin: everything;
* community staff: cases opened at their own unit (their service point);
* clerk: cases routed to their own department (its windows' queue);
* supervisor: reads cases opened anywhere in their centre's subtree, or
  routed to a department of that subtree; no writes;
* expert, inspector, guest: nothing through the case API, except the one
  case an invite scoped them to, which they may read.

Writes include document upload and deletion; transitions are further
limited by the state machine in ``server.services.cases``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from server.services.principal import Principal, Role


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    TRANSITION = "transition"


@dataclass(frozen=True)
class CaseScope:
    """The facts about a case that authorisation depends on."""

    case_id: int
    unit_id: int
    unit_path: str
    department_id: int
    department_unit_path: str


def may(principal: Principal, action: Action, case: CaseScope) -> bool:
    role = principal.role
    if role is Role.ADMIN:
        return True
    if role is Role.COMMUNITY_STAFF:
        return principal.unit_id == case.unit_id
    if role is Role.CLERK:
        return principal.department_id is not None and principal.department_id == case.department_id
    if role is Role.SUPERVISOR:
        if action is not Action.READ:
            return False
        return case.unit_path.startswith(principal.unit_path) or case.department_unit_path.startswith(
            principal.unit_path
        )
    # expert, inspector, guest
    return action is Action.READ and principal.invite_case_id == case.case_id


def may_inspect(principal: Principal, case: CaseScope) -> bool:
    """Run a site inspection of the case: open the task, ask for snapshots, mark items, make the report."""
    return principal.role in (Role.CLERK, Role.ADMIN) and may(principal, Action.WRITE, case)


def may_report_from_site(principal: Principal, case: CaseScope) -> bool:
    """Send the phone's location and evidence photos: the inspector invited to the case, or who runs it."""
    invited = principal.role is Role.INSPECTOR and principal.invite_case_id == case.case_id
    return invited or may_inspect(principal, case)
