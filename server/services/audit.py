"""The append-only, hash-chained case audit trail.

Each entry's ``hash`` is SHA-256 over the previous entry's hash and a
canonical JSON encoding of the entry's own fields (sorted keys, UTF-8, no
whitespace, timestamps in UTC ISO-8601 with microseconds).  The first entry
of a case chains to 64 zeros.  Changing, inserting, removing or reordering
any entry breaks every hash after it, which :func:`verify_case` reports.
This detects tampering by someone without the code path; it does not
prevent a database owner from rewriting the whole chain (anchor the heads
externally if that matters).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.services.principal import Principal
from server.storage.cases import CaseRepository
from server.storage.models import CaseAuditEntry

GENESIS = "0" * 64


def entry_digest(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(prev_hash.encode() + b"\n" + payload.encode()).hexdigest()


def entry_fields(e: CaseAuditEntry) -> dict[str, Any]:
    return {
        "case_id": e.case_id,
        "seq": e.seq,
        "actor_user_id": e.actor_user_id,
        "actor_role": e.actor_role,
        "actor_name": e.actor_name,
        "action": e.action,
        "details": e.details,
        "at": e.at.isoformat(timespec="microseconds"),
        "client_addr": e.client_addr,
    }


async def append(
    session: AsyncSession,
    clock: Clock,
    case_id: int,
    actor: Principal | None,
    action: str,
    details: dict[str, Any] | None = None,
) -> CaseAuditEntry:
    """Append one entry; the caller's unit of work commits it with the change it records.

    The case row is locked first so concurrent appends to one case serialise
    (the unique (case_id, seq) constraint backs this up); the chain's head is
    read under that lock once per transaction (``CaseRepository.audit_head``).
    """
    repo = CaseRepository(session)
    head = await repo.audit_head(case_id)
    seq, prev_hash = head if head is not None else (0, GENESIS)
    entry = CaseAuditEntry(
        case_id=case_id,
        seq=seq + 1,
        actor_user_id=actor.user_id if actor else None,
        actor_role=str(actor.role) if actor else "system",
        actor_name=actor.display_name if actor else "system",
        action=action,
        # A copy: the entry is written at the next flush, after its hash is taken from these details.
        details=dict(details) if details else {},
        at=clock.now(),
        client_addr=actor.client_addr if actor else None,
        prev_hash=prev_hash,
    )
    entry.hash = entry_digest(entry.prev_hash, entry_fields(entry))
    return await repo.add_audit(entry)


@dataclass(frozen=True)
class VerifyResult:
    case_id: int
    entries: int
    ok: bool
    #: Sequence number of the first entry that does not verify.
    broken_at: int | None = None
    reason: str | None = None


def verify_entries(case_id: int, entries: Sequence[CaseAuditEntry]) -> VerifyResult:
    prev = GENESIS
    for index, e in enumerate(entries, start=1):
        if e.seq != index:
            return VerifyResult(case_id, len(entries), False, e.seq, f"expected seq {index}")
        if e.prev_hash != prev:
            return VerifyResult(case_id, len(entries), False, e.seq, "prev_hash does not match")
        if entry_digest(prev, entry_fields(e)) != e.hash:
            return VerifyResult(case_id, len(entries), False, e.seq, "hash does not match content")
        prev = e.hash
    return VerifyResult(case_id, len(entries), True)


async def verify_case(session: AsyncSession, case_id: int) -> VerifyResult:
    return verify_entries(case_id, await CaseRepository(session).audit(case_id))


async def verify_all(session: AsyncSession) -> list[VerifyResult]:
    repo = CaseRepository(session)
    return [verify_entries(cid, await repo.audit(cid)) for cid in await repo.audited_case_ids()]
