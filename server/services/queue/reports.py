"""Alerts, per-department queue policies (thresholds, prefixes) and the period report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import NotFound, ValidationFailed
from server.services.principal import Principal
from server.services.queue.base import QueueBase
from server.services.queue.model import (
    THRESHOLD_FIELDS,
    PolicyUpdate,
    ReportBucket,
    ReportRow,
    Thresholds,
)
from server.storage.models import (
    Alert,
    QueuePolicy,
)
from server.storage.queue import (
    QueuePolicyRepository,
    TicketRepository,
)


class QueueReports(QueueBase):
    """What supervisors read and set."""

    async def alerts(
        self,
        s: AsyncSession,
        principal: Principal,
        *,
        department_id: int | None,
        open_only: bool,
        kind: str | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Alert], int]:
        ids = await self.supervised_departments(s, principal)
        if department_id is not None:
            ids = [department_id] if ids is None or department_id in ids else []
        return await QueuePolicyRepository(s).alerts(
            department_ids=ids, open_only=open_only, kind=kind, limit=limit, offset=offset
        )

    async def acknowledge(self, s: AsyncSession, principal: Principal, alert_id: int) -> Alert:
        """Acknowledge an alert (idempotent: the first acknowledgement is kept)."""
        ids = await self.supervised_departments(s, principal)
        alert = await QueuePolicyRepository(s).alert(alert_id, for_update=True)
        if alert is None or (ids is not None and alert.department_id not in ids):
            raise NotFound("no such alert", code="alert_not_found")
        if alert.acknowledged_at is None:
            alert.acknowledged_at = self.clock.now()
            alert.acknowledged_by = principal.user_id
            await s.flush()
        return alert

    async def policy(
        self, s: AsyncSession, principal: Principal, department_id: int, window_id: int | None = None
    ) -> tuple[QueuePolicy | None, Thresholds]:
        self._may_watch(principal)
        await self._department(s, department_id)
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        return await QueuePolicyRepository(s).policy(scope), await self._thresholds(s, department_id, window_id)

    async def set_policy(
        self,
        s: AsyncSession,
        principal: Principal,
        department_id: int | None,
        body: PolicyUpdate,
        window_id: int | None = None,
    ) -> tuple[QueuePolicy, Thresholds]:
        """Override thresholds of a department (or of one window: colours only)."""
        if window_id is not None:
            department_id = (await self._window(s, window_id, for_update=False)).department_id
        assert department_id is not None
        await self._department(s, department_id)
        await self._require_manager(s, principal, department_id)
        changes = {k: getattr(body, k) for k in body.model_fields_set}
        if window_id is not None and set(changes) - set(THRESHOLD_FIELDS):
            raise ValidationFailed(
                "a window sets only its colour thresholds",
                code="invalid_policy",
                details={"allowed": list(THRESHOLD_FIELDS)},
            )
        repo = QueuePolicyRepository(s)
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        row = await repo.policy(scope)
        now = self.clock.now()
        if row is None:
            row = await repo.add_policy(
                QueuePolicy(scope=scope, department_id=department_id, window_id=window_id, updated_at=now)
            )
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at, row.updated_by = now, principal.user_id
        await s.flush()
        limits = await self._thresholds(s, department_id, window_id)
        if "wait_limit" in changes:
            for t in await TicketRepository(s).waiting_unalerted(department_id):
                t.alert_at = t.waiting_since + timedelta(seconds=limits.wait_limit)
            await s.flush()
        return row, limits

    def _period(self, at: datetime, bucket: ReportBucket) -> str:
        local = at.astimezone(self.zone)
        if bucket == "day":
            return local.date().isoformat()
        if bucket == "month":
            return f"{local:%Y-%m}"
        return "all"

    async def report(
        self, s: AsyncSession, principal: Principal, since: datetime, until: datetime, bucket: ReportBucket
    ) -> list[ReportRow]:
        """Yellow and red warnings (turns of a department's queue to that colour) and wait timeouts per period."""
        ids = await self.supervised_departments(s, principal)
        rows: dict[tuple[int, str], ReportRow] = {}
        for alert in await QueuePolicyRepository(s).alerts_between(ids, since, until):
            if alert.kind == "status" and alert.window_id is not None:
                continue
            key = (alert.department_id, self._period(alert.created_at, bucket))
            row = rows.setdefault(key, ReportRow(*key))
            if alert.kind == "wait_timeout":
                row.wait_timeouts += 1
            elif alert.level == "red":
                row.red += 1
            else:
                row.yellow += 1
        return [rows[k] for k in sorted(rows)]
