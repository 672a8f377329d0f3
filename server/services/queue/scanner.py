"""The durable scanner (ring timeouts, wait-timeout alerts, colours, tidal closing, closed cases) and the
after-commit publishing of what a unit of work collected in its :class:`~server.services.queue.model.Outbox`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.services import audit
from server.services.cases import OPEN_STATES
from server.services.queue.base import QueueBase
from server.services.queue.model import (
    COLOUR_RANK,
    Notice,
    Outbox,
    PolicyBook,
    Thresholds,
    alert_event,
    board_event,
    colour,
    log,
    ticket_event,
)
from server.storage.cases import CaseRepository
from server.storage.models import (
    Alert,
    QueueStatus,
    QueueStatusChange,
)
from server.storage.queue import (
    QueuePolicyRepository,
    TicketRepository,
    WaitingStats,
    WindowRepository,
)


class QueueScanner(QueueBase):
    """Due work, in one transaction per pass, and the pushes after commit."""

    async def tick(self, s: AsyncSession) -> Outbox:
        """Do all due work in the caller's transaction; the notices to send after it commits.

        Safe to run from several processes at once: on PostgreSQL only the
        holder of the scanner's advisory lock works (the others return at
        once), on SQLite writers are serialised anyway; each step also locks
        the rows it changes and re-reads their state.
        """
        out = Outbox()
        if not await QueuePolicyRepository(s).try_scanner_lock():
            return out
        now = self.clock.now()
        book = await self._book(s)
        supervisors: dict[int, list[int]] = {}
        await self._ring_timeouts(s, now, out)
        await self._closed_cases(s, now, out)
        await self._wait_alerts(s, now, book, supervisors, out)
        for window in await WindowRepository(s).tidal_due(now, self.settings.scan_batch):
            await self._close_tidal_if_due(s, window, out)
        lapsed = await self.appointments.expire(s, now, self.settings.scan_batch)
        for appointment in lapsed:
            out.add(
                f"unit:{appointment.unit_id}",
                "appointment.no_show",
                {"appointment_id": appointment.id, "case_id": appointment.case_id},
            )
        out.count("no_shows", len(lapsed))
        await self._colours(s, now, book, supervisors, out)
        return out

    async def _ring_timeouts(self, s: AsyncSession, now: datetime, out: Outbox) -> None:
        limit = self.settings.max_unanswered
        for t in await TicketRepository(s).ring_due(now, self.settings.scan_batch):
            clerk, window_id = t.clerk_user_id, t.window_id
            give_up = limit > 0 and t.unanswered + 1 >= limit
            await self._case_follows(
                s, None, t, "no_show" if give_up else "waiting", f"ticket {t.number}: nobody answered"
            )
            t.unanswered += 1
            t.window_id = t.clerk_user_id = t.called_at = t.ring_deadline = None
            if give_up:
                t.state, t.end_reason, t.finished_at = "no_show", "unanswered", now
            else:
                t.state = "waiting"  # order_key and waiting_since are kept: back at the head of the line
            await s.flush()
            await audit.append(
                s,
                self.clock,
                t.case_id,
                None,
                "ticket.unanswered",
                {"ticket_id": t.id, "number": t.number, "unanswered": t.unanswered, "no_show": give_up},
            )
            data = {"ticket": ticket_event(t), "window_id": window_id, "no_show": give_up}
            if clerk is not None:
                out.add(f"user:{clerk}", "queue.unanswered", data)
            self._ring_ended(
                t, "called", "no_show" if give_up else "unanswered", out, window_id=window_id, no_show=give_up
            )
            out.changed(t.department_id)
            out.count("unanswered")
            if window_id is not None:
                await self._close_tidal_if_due(s, await self._window(s, window_id), out)

    async def _closed_cases(self, s: AsyncSession, now: datetime, out: Outbox) -> None:
        """Waiting tickets whose case was closed (cancelled, decided) leave the line."""
        for t in await TicketRepository(s).waiting_for_closed_cases(sorted(OPEN_STATES), self.settings.scan_batch):
            t.state, t.end_reason, t.finished_at = "cancelled", "case_closed", now
            await s.flush()
            out.add(f"unit:{t.unit_id}", "queue.cancelled", {"ticket": ticket_event(t), "reason": "case_closed"})
            out.changed(t.department_id)
            out.count("case_closed")

    async def _alert_notices(
        self, s: AsyncSession, alert: Alert, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        """An alert goes to the department's room and to each supervisor of its centre and the centres above."""
        ids = supervisors.get(alert.department_id)
        if ids is None:
            path = await CaseRepository(s).department_unit_path(alert.department_id)
            units = [int(p) for p in path.strip("/").split("/") if p]
            ids = supervisors[alert.department_id] = await QueuePolicyRepository(s).supervisor_ids(units)
        data = alert_event(alert)
        out.add(f"department:{alert.department_id}", "queue.alert", data)
        for user_id in ids:
            out.add(f"user:{user_id}", "queue.alert", data)

    async def _wait_alerts(
        self, s: AsyncSession, now: datetime, book: PolicyBook, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        tickets = TicketRepository(s)
        due = await tickets.alert_due(now, self.settings.scan_batch)
        if not due:
            return
        repo = QueuePolicyRepository(s)
        ids = await repo.add_ticket_alerts(
            [
                {
                    "department_id": t.department_id,
                    "window_id": None,
                    "ticket_id": t.id,
                    "kind": "wait_timeout",
                    "level": "red",
                    "details": {
                        "number": t.number,
                        "unit_id": t.unit_id,
                        "waited": int((now - t.waiting_since).total_seconds()),
                        "limit": book.thresholds(t.department_id).wait_limit,
                    },
                    "created_at": now,
                    "acknowledged_at": None,
                    "acknowledged_by": None,
                }
                for t in due
            ]
        )
        await tickets.mark_alerted([t.id for t in due])
        for alert in await repo.alerts_by_id(ids):
            await self._alert_notices(s, alert, supervisors, out)
        out.count("wait_alerts", len(ids))

    async def _colours(
        self, s: AsyncSession, now: datetime, book: PolicyBook, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        repo = QueuePolicyRepository(s)
        tickets = TicketRepository(s)
        stats = await tickets.waiting_stats()
        current = await repo.statuses()
        departments = set(stats) | {
            r.department_id for r in current.values() if r.window_id is None and r.colour != "green"
        }
        for d in sorted(departments):
            await self._evaluate(
                s,
                now,
                d,
                None,
                stats.get(d, WaitingStats(0, None)),
                book.thresholds(d),
                current,
                supervisors,
                out,
            )
        for row in book.window_scopes():
            assert row.window_id is not None
            matters = await WindowRepository(s).served_matter_ids(row.window_id) or None
            st = await tickets.waiting_stats_for(row.department_id, matters)
            limits = book.thresholds(row.department_id, row.window_id)
            await self._evaluate(s, now, row.department_id, row.window_id, st, limits, current, supervisors, out)

    async def _evaluate(
        self,
        s: AsyncSession,
        now: datetime,
        department_id: int,
        window_id: int | None,
        stats: WaitingStats,
        limits: Thresholds,
        current: dict[str, QueueStatus],
        supervisors: dict[int, list[int]],
        out: Outbox,
    ) -> None:
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        longest = max(0, int((now - stats.oldest).total_seconds())) if stats.oldest is not None else 0
        new = colour(stats.waiting, longest, limits)
        row = current.get(scope)
        old = row.colour if row is not None else "green"
        if new == old:
            return
        repo = QueuePolicyRepository(s)
        if row is None:
            await repo.set_status(
                QueueStatus(scope=scope, department_id=department_id, window_id=window_id, colour=new, since=now)
            )
        else:
            row.colour, row.since = new, now
        await repo.add_change(
            QueueStatusChange(
                scope=scope,
                department_id=department_id,
                window_id=window_id,
                from_colour=old,
                to_colour=new,
                at=now,
                waiting=stats.waiting,
                longest_wait=longest,
            )
        )
        details = {"from": old, "to": new, "waiting": stats.waiting, "longest_wait": longest}
        out.add(f"department:{department_id}", "queue.status", {**details, "window_id": window_id})
        out.changed(department_id)
        out.count("status_changes")
        if COLOUR_RANK[new] > COLOUR_RANK[old]:
            alert = await repo.add_alert(
                Alert(
                    department_id=department_id,
                    window_id=window_id,
                    ticket_id=None,
                    kind="status",
                    level=new,
                    details=details,
                    created_at=now,
                    acknowledged_at=None,
                    acknowledged_by=None,
                )
            )
            await self._alert_notices(s, alert, supervisors, out)
            out.count("status_alerts")

    async def publish(self, out: Outbox) -> None:
        """Send the notices of a committed unit of work; the boards of the departments it changed follow shortly.

        Failures are logged, never raised: the database is the record, and
        clients re-read boards and alert lists when they (re)connect.
        """
        await self._send(out.notices)
        if out.departments:
            self._dirty |= out.departments
            if self._boards is None or self._boards.done():
                self._boards = asyncio.create_task(self._send_boards_soon(), name="queue-boards")

    async def _send(self, notices: Sequence[Notice]) -> None:
        for n in notices:
            try:
                await self.notifier.notify(n.room, n.event, n.data)
            except Exception:
                log.exception("queue notice %s to %s failed", n.event, n.room)

    async def _send_boards_soon(self) -> None:
        while self._dirty:
            await asyncio.sleep(self.settings.board_interval)
            await self.flush_boards()

    async def flush_boards(self) -> None:
        """Send the boards of the departments changed since the last time, now."""
        departments, self._dirty = self._dirty, set()
        if not departments:
            return
        notices: list[Notice] = []
        try:
            async with self.db.read() as s:
                for department_id in sorted(departments):
                    board = await self._board(s, department_id, None)
                    notices.append(
                        Notice(
                            f"department:{department_id}",
                            "queue.changed",
                            board_event(board, self.settings.board_notice_tickets),
                        )
                    )
                    per_unit: dict[int, list[dict[str, Any]]] = {}
                    for e in board.entries:
                        per_unit.setdefault(e.ticket.unit_id, []).append(
                            {
                                "id": e.ticket.id,
                                "number": e.ticket.number,
                                "position": e.position,
                                "estimated_wait": e.estimated_wait,
                            }
                        )
                    for unit_id, entries in sorted(per_unit.items()):
                        notices.append(
                            Notice(
                                f"unit:{unit_id}",
                                "queue.position",
                                {"department_id": department_id, "waiting": board.waiting, "tickets": entries},
                            )
                        )
        except Exception:
            log.exception("queue boards could not be computed")
        await self._send(notices)

    async def close(self) -> None:
        """Send boards still due and stop (called at shutdown, before the signalling server closes)."""
        if self._boards is not None and not self._boards.done():
            self._boards.cancel()
            await asyncio.gather(self._boards, return_exceptions=True)
        await self.flush_boards()

    async def scan(self) -> Outbox:
        """One scanner round: due work in one transaction, then its notices."""
        async with self.db.transaction() as s:
            out = await self.tick(s)
        await self.publish(out)
        if out.counts:
            log.info("queue scan: %s", out.counts)
        return out

    async def run_scanner(self) -> None:
        """Scan every ``scan_interval`` seconds until cancelled (the pace is wall time; due-ness is the clock's)."""
        while True:
            await asyncio.sleep(self.settings.scan_interval)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue scan failed")
