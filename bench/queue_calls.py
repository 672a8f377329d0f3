"""Queue benchmark (the issue's ``bench/queue.py``; named so as not to shadow the standard library's ``queue``
for the other scripts in this folder): many clerks calling next at once over one department's line.

Everything runs on 127.0.0.1 in a temporary folder (and, for PostgreSQL, a
scratch database ``cw_bench_<random>`` on 127.0.0.1:5432, dropped after).
For each engine (``--engines sqlite,postgresql``):

1. ``cloudwindow db upgrade`` and ``demo load``; then, through the services in
   this process, ``--clerks`` (200) clerk accounts and as many cloud windows
   are added to the district centre's civil-affairs department and
   ``--tickets`` (2,000) walk-in tickets are taken for as many cases (plus
   ``--baseline-calls`` more for the baseline).
2. ``cloudwindow serve`` starts in a subprocess (the real server, background
   scanner and all); every clerk logs in and signs in to its window over HTTP.
3. **Baseline**: one clerk calls ``--baseline-calls`` (100) tickets one after
   another: the latency of an uncontended call-next (its service time).
4. **Burst**: all clerks start at the same instant; each one repeatedly
   ``POST /windows/{id}/call-next`` (timed) and then ``POST
   /tickets/{id}/skip`` (not timed) to free its window, until the server
   answers 204 (nobody waits).  Reported: p50/p90/p99/max call-next latency,
   calls per second, and the burst p99 as a multiple of the baseline p50.
5. **Checks**: every ticket was called exactly once (the ids returned are
   distinct and cover every seeded ticket; in the database every ticket ended
   ``no_show``/``skipped`` and has exactly one ``ticket.called`` audit entry).
   A double serving fails the run (exit 1) whatever ``--strict`` says.

The latency measured is what a clerk's browser sees over loopback HTTP:
request parsing, authentication, the call-next transaction (window lock,
head of the line with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the case's
session, the audit chain) and the JSON answer.  The load generator runs in
this process, the server in its own; both share the machine's cores, which
the CPU figures printed show.

Target (issue acceptance): p99 <= 50 ms on PostgreSQL; ``--strict`` exits 1
when missed.  ``--smoke`` runs a few clerks and tickets in seconds (for CI).
Every loop is bounded in count and by ``--timeout`` (default 600 s).

Run: ``.venv/bin/python bench/queue_calls.py [--engines sqlite,postgresql] [--clerks N] [--tickets N] [--smoke]``.
Results and analysis: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argon2 import PasswordHasher  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from server.app import build_services  # noqa: E402
from server.services.cases import CaseCreate  # noqa: E402
from server.services.principal import Principal, Role  # noqa: E402
from server.services.queue import Outbox  # noqa: E402
from server.settings import MediaSettings, Settings  # noqa: E402
from server.storage.models import CaseAuditEntry, Department, OrgUnit, Ticket, User, Window  # noqa: E402
from server.storage.orgs import OrgRepository  # noqa: E402
from server.storage.users import UserRepository  # noqa: E402

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("CLOUDWINDOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "bench-password-1"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(n: int) -> str:
    """The ``n``-th of a family of valid, distinct 18-digit ID numbers (n < 50,000)."""
    body = f"330203{1950 + n // 1000:04d}0101{n % 1000:03d}"
    total = sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Result:
    engine: str
    baseline: list[float] = field(default_factory=list)
    burst: list[float] = field(default_factory=list)
    burst_seconds: float = 0.0
    called: Counter[int] = field(default_factory=Counter)
    seeded: int = 0
    server_cpu: float = 0.0
    machine_cpu: float = 0.0
    problems: list[str] = field(default_factory=list)


# -- set-up --------------------------------------------------------------------------------------------------------


async def _pg_database() -> tuple[str, str]:
    import asyncpg

    name = f"cw_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}", name


async def _drop_pg(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _env(data: Path, url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CLOUDWINDOW_DATA_DIR": str(data),
        "CLOUDWINDOW_DATABASE_URL": url,
        "CLOUDWINDOW_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "CLOUDWINDOW_LOG_FORMAT": "text",
        "CLOUDWINDOW_LOG_LEVEL": "WARNING",
        "CLOUDWINDOW_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "CLOUDWINDOW_MEDIA__ALLOWED_CIDRS": '["127.0.0.0/8"]',
        "CLOUDWINDOW_WEB_CLIENT_DIST": str(data / "no-web-client"),
        # Rings never time out during the run: every ticket is called exactly once by a clerk, not by the scanner.
        "CLOUDWINDOW_QUEUE__RING_TIMEOUT": "3600",
    }
    env.pop("CLOUDWINDOW_CONFIG", None)
    return env


async def seed(env: dict[str, str], clerks: int, tickets: int) -> None:
    """Clerks, windows and waiting tickets, added through the services (set-up, not measured)."""
    for args in (["db", "upgrade"], ["demo", "load", "--password", PASSWORD]):
        cmd = [str(BIN / "cloudwindow"), *args]
        await asyncio.to_thread(subprocess.run, cmd, env=env, check=True, capture_output=True, timeout=300)
    settings = Settings(
        data_dir=Path(env["CLOUDWINDOW_DATA_DIR"]),
        database_url=env["CLOUDWINDOW_DATABASE_URL"],
        secret_key=env["CLOUDWINDOW_SECRET_KEY"],
        media=MediaSettings(host_addresses=["127.0.0.1"], allowed_cidrs=["127.0.0.0/8"]),
    )
    services = build_services(settings)
    # A cheap argon2 hash: the server verifies with the parameters stored in the hash, so logins are quick.
    password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    try:
        async with services.db.transaction() as s:
            stmt = (
                select(Department, OrgUnit)
                .join(OrgUnit, Department.unit_id == OrgUnit.id)
                .where(OrgUnit.code == "D01", Department.code == "civil_affairs")
            )
            dept, unit = (await s.execute(stmt)).one()
            now = datetime.now(UTC)
            for i in range(clerks):
                user = User(
                    username=f"bclerk{i:03d}",
                    display_name=f"窗口人员{i:03d}",
                    password_hash=password_hash,
                    role="clerk",
                    unit_id=unit.id,
                    department_id=dept.id,
                    active=True,
                    created_at=now,
                )
                s.add(user)
                s.add(
                    Window(
                        code=f"BENCH-{i:03d}",
                        department_id=dept.id,
                        unit_id=unit.id,
                        name_zh=f"云窗口{i:03d}",
                        name_en=f"Cloud window {i:03d}",
                        state="closed",
                    )
                )
        async with services.db.transaction() as s:
            staff = await UserRepository(s).by_username("staff")
            assert staff is not None
            point = await OrgRepository(s).unit(staff.unit_id)
            assert point is not None
        who = Principal(
            user_id=staff.id,
            username=staff.username,
            display_name=staff.display_name,
            role=Role(staff.role),
            unit_id=staff.unit_id,
            unit_path=point.path,
            department_id=staff.department_id,
            session_id="bench",
        )
        for start in range(0, tickets, 200):
            async with services.db.transaction() as s:
                for i in range(start, min(tickets, start + 200)):
                    view = await services.cases.create(
                        s,
                        who,
                        CaseCreate(
                            matter_code="MZ-001",
                            applicant_name=f"申请人{i}",
                            applicant_id_number=id_number(i),
                            applicant_phone="13800138000",
                            centre_code="D01",
                        ),
                    )
                    await services.queue.take(s, who, view.case.id, Outbox())
    finally:
        await services.db.close()


class Server:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(logs / "server.log", "wb")
        self.proc = subprocess.Popen(
            [str(BIN / "cloudwindow"), "serve", "--port", str(self.port)], env=env, stdout=self.log, stderr=self.log
        )
        self.logs = logs

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"server did not start:\n{(self.logs / 'server.log').read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


# -- the measured part ---------------------------------------------------------------------------------------------


@dataclass
class Clerk:
    index: int
    token: str = ""
    window_id: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    if resp.status != status:
        raise RuntimeError(f"{resp.method} {resp.url.path}: {resp.status} {await resp.text()}")
    return await resp.json() if status != 204 else None


async def sign_in(http: aiohttp.ClientSession, url: str, clerks: list[Clerk], windows: dict[str, int]) -> None:
    gate = asyncio.Semaphore(20)

    async def one(c: Clerk) -> None:
        async with gate:
            body = {"username": f"bclerk{c.index:03d}", "password": PASSWORD}
            async with http.post(f"{url}/api/v1/auth/login", json=body) as resp:
                c.token = (await _json(resp, 200))["access_token"]
            c.window_id = windows[f"BENCH-{c.index:03d}"]
            async with http.post(f"{url}/api/v1/windows/{c.window_id}/sign-in", headers=c.headers) as resp:
                await _json(resp, 200)

    await asyncio.gather(*(one(c) for c in clerks))


async def call_loop(
    http: aiohttp.ClientSession, url: str, c: Clerk, limit: int, deadline: float, times: list[float], got: Counter[int]
) -> None:
    """Call next and skip, until nobody waits, ``limit`` calls were made or the deadline passed."""
    for _ in range(limit):
        if time.monotonic() > deadline:
            raise TimeoutError("the run took longer than --timeout")
        t0 = time.perf_counter()
        async with http.post(f"{url}/api/v1/windows/{c.window_id}/call-next", headers=c.headers) as resp:
            if resp.status == 204:
                return
            called = await _json(resp, 200)
        times.append(time.perf_counter() - t0)
        got[int(called["id"])] += 1
        async with http.post(f"{url}/api/v1/tickets/{called['id']}/skip", headers=c.headers) as resp:
            await _json(resp, 200)


async def run_engine(engine: str, args: argparse.Namespace, tmp: Path) -> Result:
    result = Result(engine)
    drop: str | None = None
    data = tmp / engine
    data.mkdir()
    if engine == "postgresql":
        url, drop = await _pg_database()
    else:
        url = f"sqlite+aiosqlite:///{data / 'bench.db'}"
    try:
        env = _env(data, url)
        total = args.tickets + args.baseline_calls
        t0 = time.monotonic()
        await seed(env, args.clerks, total)
        print(f"[{engine}] seeded {args.clerks} clerks/windows and {total} tickets in {time.monotonic() - t0:.1f} s")
        result.seeded = total
        server = Server(env, data)
        try:
            await server.ready()
            proc = psutil.Process(server.proc.pid)
            connector = aiohttp.TCPConnector(limit=0, force_close=False)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
                clerks = [Clerk(i) for i in range(args.clerks)]
                async with http.post(
                    f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
                ) as resp:
                    admin = (await _json(resp, 200))["access_token"]
                async with http.get(f"{server.url}/api/v1/org", headers={"Authorization": f"Bearer {admin}"}) as resp:
                    windows = {w["code"]: w["id"] for w in (await _json(resp, 200))["windows"]}
                await sign_in(http, server.url, clerks, windows)
                deadline = time.monotonic() + args.timeout
                # Baseline: one clerk alone.
                await call_loop(
                    http, server.url, clerks[0], args.baseline_calls, deadline, result.baseline, result.called
                )
                # Burst: everyone at once, until the line is empty.
                spy = None
                if args.profile:
                    out = Path(args.profile) / f"queue-{engine}.txt"
                    cmd = ["py-spy", "record", "--pid", str(server.proc.pid), "--rate", "250", "--format", "raw"]
                    spy = subprocess.Popen([str(BIN / cmd[0]), *cmd[1:], "-o", str(out)], stdout=subprocess.DEVNULL)  # noqa: ASYNC220
                    await asyncio.sleep(1.0)  # py-spy attaches
                cpu0, sys0 = proc.cpu_times(), psutil.cpu_times()
                start = time.perf_counter()
                per_clerk = args.tickets  # bounded: no clerk can make more calls than there are tickets
                await asyncio.gather(
                    *(call_loop(http, server.url, c, per_clerk, deadline, result.burst, result.called) for c in clerks)
                )
                result.burst_seconds = time.perf_counter() - start
                cpu1, sys1 = proc.cpu_times(), psutil.cpu_times()
                result.server_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / result.burst_seconds
                busy = (sys1.user + sys1.system - sys0.user - sys0.system) / result.burst_seconds
                result.machine_cpu = busy
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    await asyncio.to_thread(spy.wait, 60)
        finally:
            server.stop()
        await check(result, env)
    finally:
        if drop:
            await _drop_pg(drop)
    return result


async def check(result: Result, env: dict[str, str]) -> None:
    """No ticket served twice, none left out: from the answers and from the database."""
    twice = [t for t, n in result.called.items() if n > 1]
    if twice:
        result.problems.append(f"{len(twice)} tickets were called more than once: {twice[:10]}")
    if len(result.called) != result.seeded:
        result.problems.append(f"{len(result.called)} distinct tickets called, {result.seeded} seeded")
    settings = Settings(
        data_dir=Path(env["CLOUDWINDOW_DATA_DIR"]),
        database_url=env["CLOUDWINDOW_DATABASE_URL"],
        secret_key=env["CLOUDWINDOW_SECRET_KEY"],
    )
    services = build_services(settings)
    try:
        async with services.db.transaction() as s:
            states = Counter(dict((await s.execute(select(Ticket.state, func.count()).group_by(Ticket.state))).all()))
            calls = (
                await s.execute(
                    select(CaseAuditEntry.case_id, func.count())
                    .where(CaseAuditEntry.action == "ticket.called")
                    .group_by(CaseAuditEntry.case_id)
                )
            ).all()
    finally:
        await services.db.close()
    if states.get("no_show", 0) != result.seeded or sum(states.values()) != result.seeded:
        result.problems.append(f"ticket states after the run: {dict(states)}")
    if len(calls) != result.seeded or any(n != 1 for _, n in calls):
        result.problems.append(f"ticket.called audit entries per case not all 1 ({len(calls)} cases)")


def report(results: list[Result], args: argparse.Namespace) -> int:
    ms = 1000.0
    print()
    print(f"call-next latency over loopback HTTP: {args.clerks} clerks at once over {args.tickets} waiting tickets")
    head = (
        f"{'engine':<11} {'baseline p50':>12} {'burst p50':>10} {'p90':>8} {'p99':>8} {'max':>8} "
        f"{'calls/s':>8} {'p99/base':>8} {'server CPU':>10} {'machine':>8}"
    )
    print(head)
    print("-" * len(head))
    failed = 0
    for r in results:
        b50 = statistics.median(r.baseline) if r.baseline else float("nan")
        p50, p90, p99 = (pct(r.burst, p) for p in (50, 90, 99))
        print(
            f"{r.engine:<11} {b50 * ms:>10.1f}ms {p50 * ms:>8.1f}ms {p90 * ms:>6.1f}ms {p99 * ms:>6.1f}ms "
            f"{max(r.burst) * ms:>6.1f}ms {len(r.burst) / r.burst_seconds:>8.1f} {p99 / b50:>7.1f}x "
            f"{r.server_cpu:>9.2f}c {r.machine_cpu:>7.2f}c"
        )
        if r.problems:
            failed = 1
            for p in r.problems:
                print(f"  PROBLEM ({r.engine}): {p}")
        else:
            print(f"  {r.engine}: {len(r.called)} tickets, each called exactly once (answers and audit agree)")
    print("(c = cores busy on average during the burst; the machine has", psutil.cpu_count(), "cores)")
    if not args.smoke:
        pg = [r for r in results if r.engine == "postgresql"]
        for r in pg:
            hit = pct(r.burst, 99) <= 0.050
            print(f"target p99 <= 50 ms on PostgreSQL: {'met' if hit else 'MISSED'} ({pct(r.burst, 99) * ms:.1f} ms)")
            if args.strict and not hit:
                failed = 1
    return failed


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-queue-"))
    try:
        results = []
        for engine in args.engines.split(","):
            results.append(await asyncio.wait_for(run_engine(engine, args, tmp), args.timeout + 300))
        return report(results, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="sqlite,postgresql")
    p.add_argument("--clerks", type=int, default=200)
    p.add_argument("--tickets", type=int, default=2000)
    p.add_argument("--baseline-calls", type=int, default=100)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--strict", action="store_true", help="exit 1 when the p99 target is missed")
    p.add_argument("--smoke", action="store_true", help="a few clerks and tickets, seconds long (CI)")
    p.add_argument("--profile", metavar="DIR", help="record the server with py-spy during the burst (collapsed stacks)")
    args = p.parse_args(argv)
    if args.smoke:
        args.clerks, args.tickets, args.baseline_calls, args.timeout = 5, 30, 5, 120
    if not 1 <= args.clerks <= 999 or not 1 <= args.tickets + args.baseline_calls <= 49_000:
        p.error("--clerks must be 1..999 and tickets + baseline calls at most 49,000")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
