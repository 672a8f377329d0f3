"""Queue benchmark (the issue's ``bench/queue.py``; named so as not to shadow the standard library's ``queue``
for the other scripts in this folder): many clerks calling next at once over one department's line.

Everything runs on 127.0.0.1 in a temporary folder (and, for PostgreSQL, a
scratch database ``cw_bench_<random>`` on 127.0.0.1:5432, dropped after).
For each engine (``--engines sqlite,postgresql``):

1. ``cloudwindow db upgrade`` and ``demo load``; then, through the services in
   this process, ``--clerks`` (200) clerk accounts and as many cloud windows
   are added to the district centre's civil-affairs department.  Before each
   phase, ``--tickets`` (2,000) walk-in tickets are taken for as many new
   cases (``--baseline-calls`` for the baseline), with the server idle.
2. ``cloudwindow serve`` starts in a subprocess (the real server, background
   scanner and all); every clerk logs in and signs in to its window over HTTP,
   as does the service point's staff (who answers rings in the paced mode).
3. **Baseline**: one clerk alone calls ``--baseline-calls`` (100) tickets one
   after another (call, then skip): the uncontended call-next latency, in the
   same run and on the same loaded machine as the other phases.
4. **Burst** (saturation): all clerks start at the same instant; each one
   repeatedly ``POST /windows/{id}/call-next`` (timed) and ``POST
   /tickets/{id}/skip`` (not timed), with no pause, until the server answers
   204.  A closed loop with zero think time: the latency is mostly queueing
   behind the other 199 clerks, and calls/s is the server's throughput.
5. **Paced** (the hall): all clerks work at once, but as clerks do: each one's
   first call comes at a random moment of the first service time (sign-ins
   are not synchronised), and after each call the point answers the ring and
   the clerk serves the citizen for a random service time drawn uniformly from
   ``--service-time`` (seeded by ``--seed``) before completing the ticket and
   calling the next one.  The offered call rate is ``clerks / (mean service
   time + the call's own latency)``; the report prints the rate achieved.
6. With ``--processes 1,2`` (PostgreSQL only) the burst and paced phases are
   run again on two server processes sharing the database and Redis
   (127.0.0.1:6379, a key prefix of its own), clerks split between them.
7. **Checks**: every ticket was called exactly once (the ids returned are
   distinct and cover every seeded ticket; in the database every baseline and
   burst ticket ended ``no_show``, every paced ticket ``done``, and each case
   has exactly one ``ticket.called`` audit entry).  A double serving fails the
   run (exit 1) whatever ``--strict`` says.

The latency measured is what a clerk's browser sees over loopback HTTP:
request parsing, authentication, the call-next transaction (window lock,
head of the line with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the case's
session, the audit chain) and the JSON answer.  The load generator runs in
this process, the server in its own; both share the machine's cores (and,
here, with whatever else runs): the report prints server and machine CPU and
the load average.

Target (issue acceptance): p99 <= 50 ms on PostgreSQL; ``--strict`` exits 1
when the paced mode misses it.  ``--smoke`` runs a few clerks and tickets in
seconds (for CI).  Every loop is bounded in count and by ``--timeout``.

Run: ``.venv/bin/python bench/queue_calls.py [--engines sqlite,postgresql] [--processes 1,2] [--clerks N]
[--tickets N] [--service-time 4,12] [--smoke]``.  Results and analysis: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
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
REDIS_URL = os.environ.get("CLOUDWINDOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")
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
class Phase:
    """One measured phase: its call-next latencies and what the machine did meanwhile."""

    mode: str  # baseline, burst, paced
    processes: int
    times: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0
    machine_cpu: float = 0.0
    load: float = 0.0
    tickets: list[int] = field(default_factory=list)


@dataclass
class Result:
    engine: str
    phases: list[Phase] = field(default_factory=list)
    called: Counter[int] = field(default_factory=Counter)
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


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


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
    env.pop("CLOUDWINDOW_REDIS_URL", None)
    return env


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env["CLOUDWINDOW_DATA_DIR"]),
        database_url=env["CLOUDWINDOW_DATABASE_URL"],
        secret_key=env["CLOUDWINDOW_SECRET_KEY"],
        media=MediaSettings(host_addresses=["127.0.0.1"], allowed_cidrs=["127.0.0.0/8"]),
    )


async def seed_staff(env: dict[str, str], clerks: int) -> None:
    """Migrations, the demo district, and ``clerks`` clerks with a closed window each (set-up, not measured)."""
    for args in (["db", "upgrade"], ["demo", "load", "--password", PASSWORD]):
        cmd = [str(BIN / "cloudwindow"), *args]
        await asyncio.to_thread(subprocess.run, cmd, env=env, check=True, capture_output=True, timeout=300)
    services = build_services(_settings(env))
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
                s.add(
                    User(
                        username=f"bclerk{i:03d}",
                        display_name=f"窗口人员{i:03d}",
                        password_hash=password_hash,
                        role="clerk",
                        unit_id=unit.id,
                        department_id=dept.id,
                        active=True,
                        created_at=now,
                    )
                )
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
    finally:
        await services.db.close()


async def seed_tickets(env: dict[str, str], first: int, n: int) -> list[int]:
    """``n`` cases with a walk-in ticket each, taken by the service point's staff through the services; ticket ids."""
    services = build_services(_settings(env))
    ids: list[int] = []
    try:
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
        for start in range(first, first + n, 200):
            async with services.db.transaction() as s:
                for i in range(start, min(first + n, start + 200)):
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
                    ids.append((await services.queue.take(s, who, view.case.id, Outbox())).id)
    finally:
        await services.db.close()
    return ids


class Server:
    def __init__(self, env: dict[str, str], logs: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "cloudwindow"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        self.ps = psutil.Process(self.proc.pid)

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
                    raise SystemExit(f"server did not start:\n{self.log_path.read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

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
    url: str = ""
    token: str = ""
    window_id: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Point:
    """The service point's staff on each server (answers the rings in the paced mode)."""

    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[url]}"}


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    if resp.status != status:
        raise RuntimeError(f"{resp.method} {resp.url.path}: {resp.status} {await resp.text()}")
    return await resp.json() if status != 204 else None


async def _login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    body = {"username": username, "password": PASSWORD}
    async with http.post(f"{url}/api/v1/auth/login", json=body) as resp:
        return str((await _json(resp, 200))["access_token"])


async def sign_in(http: aiohttp.ClientSession, clerks: list[Clerk], windows: dict[str, int]) -> None:
    gate = asyncio.Semaphore(20)

    async def one(c: Clerk) -> None:
        async with gate:
            c.token = await _login(http, c.url, f"bclerk{c.index:03d}")
            c.window_id = windows[f"BENCH-{c.index:03d}"]
            async with http.post(f"{c.url}/api/v1/windows/{c.window_id}/sign-in", headers=c.headers) as resp:
                await _json(resp, 200)

    await asyncio.gather(*(one(c) for c in clerks))


async def _call(http: aiohttp.ClientSession, c: Clerk, times: list[float], got: Counter[int]) -> int | None:
    """One timed call-next; the ticket id, or None when nobody waits."""
    t0 = time.perf_counter()
    async with http.post(f"{c.url}/api/v1/windows/{c.window_id}/call-next", headers=c.headers) as resp:
        if resp.status == 204:
            return None
        called = await _json(resp, 200)
    times.append(time.perf_counter() - t0)
    ticket = int(called["id"])
    got[ticket] += 1
    return ticket


async def skip_loop(
    http: aiohttp.ClientSession, c: Clerk, limit: int, deadline: float, times: list[float], got: Counter[int]
) -> None:
    """Call next and skip at once, until nobody waits, ``limit`` calls were made or the deadline passed."""
    for _ in range(limit):
        if time.monotonic() > deadline:
            raise TimeoutError("the run took longer than --timeout")
        ticket = await _call(http, c, times, got)
        if ticket is None:
            return
        async with http.post(f"{c.url}/api/v1/tickets/{ticket}/skip", headers=c.headers) as resp:
            await _json(resp, 200)


async def serve_loop(
    http: aiohttp.ClientSession,
    c: Clerk,
    point: Point,
    service: tuple[float, float],
    rng: random.Random,
    limit: int,
    deadline: float,
    times: list[float],
    got: Counter[int],
) -> None:
    """A clerk's working rhythm: call, the point answers, serve for a random time, complete; until nobody waits."""
    await asyncio.sleep(rng.uniform(0, sum(service) / 2))  # clerks do not all sign in at the same instant
    for _ in range(limit):
        if time.monotonic() > deadline:
            raise TimeoutError("the run took longer than --timeout")
        ticket = await _call(http, c, times, got)
        if ticket is None:
            return
        async with http.post(f"{c.url}/api/v1/tickets/{ticket}/answer", headers=point.headers(c.url)) as resp:
            await _json(resp, 200)
        await asyncio.sleep(rng.uniform(*service))
        async with http.post(f"{c.url}/api/v1/tickets/{ticket}/complete", headers=c.headers) as resp:
            await _json(resp, 200)


async def measured(phase: Phase, servers: list[Server], profile: Path | None, work: Any, label: str) -> None:
    """Run ``work`` (a coroutine) as one phase: wall time, server and machine CPU, load, optional py-spy."""
    spies = []
    if profile is not None:
        for i, server in enumerate(servers):
            out = profile / f"{label}-{i}.txt"
            cmd = [str(BIN / "py-spy"), "record", "--pid", str(server.proc.pid), "--rate", "250", "--format", "raw"]
            spies.append(subprocess.Popen([*cmd, "-o", str(out)], stdout=subprocess.DEVNULL))  # noqa: ASYNC220
        await asyncio.sleep(1.0)  # py-spy attaches
    phase.load = os.getloadavg()[0]
    cpu0, sys0 = sum(s.cpu() for s in servers), psutil.cpu_times()
    start = time.perf_counter()
    await work
    phase.seconds = time.perf_counter() - start
    cpu1, sys1 = sum(s.cpu() for s in servers), psutil.cpu_times()
    phase.server_cpu = (cpu1 - cpu0) / phase.seconds
    phase.machine_cpu = (sys1.user + sys1.system - sys0.user - sys0.system) / phase.seconds
    phase.load = max(phase.load, os.getloadavg()[0])
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        await asyncio.to_thread(spy.wait, 60)


async def run_engine(engine: str, args: argparse.Namespace, tmp: Path) -> Result:
    result = Result(engine)
    drop: str | None = None
    data = tmp / engine
    data.mkdir()
    if engine == "postgresql":
        url, drop = await _pg_database()
    else:
        url = f"sqlite+aiosqlite:///{data / 'bench.db'}"
    processes = [1] if engine == "sqlite" else args.processes
    profile = Path(args.profile) if args.profile else None
    rng = random.Random(args.seed)
    next_case = 0

    async def tickets(n: int) -> list[int]:
        nonlocal next_case
        t0 = time.monotonic()
        ids = await seed_tickets(env, next_case, n)
        next_case += n
        print(f"[{engine}] seeded {n} tickets in {time.monotonic() - t0:.1f} s", flush=True)
        return ids

    try:
        env = _env(data, url)
        await seed_staff(env, args.clerks)
        deadline = time.monotonic() + args.timeout
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
            clerks = [Clerk(i) for i in range(args.clerks)]
            point = Point()
            windows: dict[str, int] = {}
            for n in processes:
                server_env = dict(env)
                if n > 1:
                    server_env["CLOUDWINDOW_REDIS_URL"] = REDIS_URL
                    server_env["CLOUDWINDOW_REDIS_PREFIX"] = f"cwbench-{uuid.uuid4().hex[:8]}"
                if n == processes[0] and "baseline" in args.modes:
                    baseline = Phase("baseline", n, tickets=await tickets(args.baseline_calls))
                if "burst" in args.modes:
                    burst = Phase("burst", n, tickets=await tickets(args.tickets))
                servers = [Server(server_env, data, f"server-{n}-{i}") for i in range(n)]
                try:
                    await asyncio.gather(*(s.ready() for s in servers))
                    for i, c in enumerate(clerks):
                        c.url = servers[i % n].url
                    for s in servers:
                        point.tokens[s.url] = await _login(http, s.url, "staff")
                    if not windows:
                        admin = await _login(http, servers[0].url, "admin")
                        hdrs = {"Authorization": f"Bearer {admin}"}
                        async with http.get(f"{servers[0].url}/api/v1/org", headers=hdrs) as resp:
                            windows = {w["code"]: w["id"] for w in (await _json(resp, 200))["windows"]}
                        await sign_in(http, clerks, windows)
                    if n == processes[0] and "baseline" in args.modes:
                        await measured(
                            baseline,
                            servers,
                            None,
                            skip_loop(http, clerks[0], args.baseline_calls, deadline, baseline.times, result.called),
                            "baseline",
                        )
                        result.phases.append(baseline)
                    if "burst" in args.modes:
                        # Burst: everyone at once, no pause, until the line is empty (nobody can call more than all).
                        burst_work = asyncio.gather(
                            *(skip_loop(http, c, args.tickets, deadline, burst.times, result.called) for c in clerks)
                        )
                        await measured(burst, servers, profile, burst_work, f"{engine}-{n}p-burst")
                        result.phases.append(burst)
                    if "paced" not in args.modes:
                        continue
                    # Paced: the line refilled with the server idle, then clerks serve at their own pace.
                    paced = Phase("paced", n, tickets=await tickets(args.tickets))
                    rngs = [random.Random(rng.random()) for _ in clerks]
                    paced_work = asyncio.gather(
                        *(
                            serve_loop(
                                http, c, point, args.service, r, args.tickets, deadline, paced.times, result.called
                            )
                            for c, r in zip(clerks, rngs, strict=True)
                        )
                    )
                    await measured(paced, servers, profile, paced_work, f"{engine}-{n}p-paced")
                    result.phases.append(paced)
                finally:
                    for s in servers:
                        s.stop()
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
    seeded = {t: p.mode for p in result.phases for t in p.tickets}
    if set(result.called) != set(seeded):
        result.problems.append(f"{len(result.called)} distinct tickets called, {len(seeded)} seeded")
    services = build_services(_settings(env))
    try:
        async with services.db.transaction() as s:
            states = dict((await s.execute(select(Ticket.id, Ticket.state))).all())
            calls = (
                await s.execute(
                    select(CaseAuditEntry.case_id, func.count())
                    .where(CaseAuditEntry.action == "ticket.called")
                    .group_by(CaseAuditEntry.case_id)
                )
            ).all()
    finally:
        await services.db.close()
    wrong = Counter(
        (mode, states.get(t))
        for t, mode in seeded.items()
        if states.get(t) != ("done" if mode == "paced" else "no_show")
    )
    if wrong or len(states) != len(seeded):
        result.problems.append(f"tickets not in their expected end state: {dict(wrong)} ({len(states)} in all)")
    if len(calls) != len(seeded) or any(n != 1 for _, n in calls):
        result.problems.append(f"ticket.called audit entries per case not all 1 ({len(calls)} cases)")


def report(results: list[Result], args: argparse.Namespace) -> int:
    ms = 1000.0
    lo, hi = args.service
    print()
    print(
        f"call-next latency over loopback HTTP: {args.clerks} clerks, {args.tickets} waiting tickets per phase; "
        f"paced service time uniform {lo:g}-{hi:g} s (seed {args.seed})"
    )
    head = (
        f"{'engine':<11} {'procs':>5} {'mode':<8} {'calls':>6} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9} "
        f"{'calls/s':>8} {'server CPU':>10} {'machine':>8} {'load':>5}"
    )
    print(head)
    print("-" * len(head))
    failed = 0
    for r in results:
        for p in r.phases:
            t = p.times
            print(
                f"{r.engine:<11} {p.processes:>5} {p.mode:<8} {len(t):>6} {pct(t, 50) * ms:>7.1f}ms "
                f"{pct(t, 90) * ms:>7.1f}ms {pct(t, 99) * ms:>7.1f}ms {max(t) * ms:>7.1f}ms "
                f"{len(t) / p.seconds:>8.1f} {p.server_cpu:>9.2f}c {p.machine_cpu:>7.2f}c {p.load:>5.1f}"
            )
        if r.problems:
            failed = 1
            for problem in r.problems:
                print(f"  PROBLEM ({r.engine}): {problem}")
        else:
            print(f"  {r.engine}: {len(r.called)} tickets, each called exactly once (answers and audit agree)")
    print(
        f"(c = cores busy on average during the phase, server processes / whole machine; the machine has "
        f"{psutil.cpu_count()} cores; load = 1-minute load average, the highest seen at the phase's start or end)"
    )
    mean = (lo + hi) / 2
    print(f"paced offered rate: {args.clerks} clerks / {mean:g} s mean service = {args.clerks / mean:.1f} calls/s")
    if not args.smoke:
        for r in results:
            if r.engine != "postgresql":
                continue
            for p in r.phases:
                hit = pct(p.times, 99) <= 0.050
                print(
                    f"target p99 <= 50 ms on PostgreSQL, {p.mode}, {p.processes} process(es): "
                    f"{'met' if hit else 'MISSED'} ({pct(p.times, 99) * ms:.1f} ms)"
                )
                if args.strict and p.mode == "paced" and not hit:
                    failed = 1
    return failed


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-queue-"))
    try:
        results = []
        for engine in args.engines.split(","):
            results.append(await asyncio.wait_for(run_engine(engine, args, tmp), args.timeout + 900))
        return report(results, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="sqlite,postgresql")
    p.add_argument("--processes", default="1", help="server process counts to run on PostgreSQL, e.g. 1,2 (Redis)")
    p.add_argument("--clerks", type=int, default=200)
    p.add_argument("--tickets", type=int, default=2000, help="waiting tickets per burst and per paced phase")
    p.add_argument("--baseline-calls", type=int, default=100)
    p.add_argument("--service-time", default="4,12", help="paced mode: MIN,MAX seconds of service per ticket")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--modes", default="baseline,burst,paced", help="the phases to run (a subset of the three)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for the measured phases of one engine")
    p.add_argument("--strict", action="store_true", help="exit 1 when the paced p99 target is missed")
    p.add_argument("--smoke", action="store_true", help="a few clerks and tickets, seconds long (CI)")
    p.add_argument("--profile", metavar="DIR", help="record the servers with py-spy during burst and paced phases")
    args = p.parse_args(argv)
    if args.smoke:
        args.clerks, args.tickets, args.baseline_calls, args.timeout = 5, 30, 5, 120
        args.service_time = "0.05,0.2"
    try:
        args.processes = sorted({int(n) for n in args.processes.split(",")})
        args.modes = set(args.modes.split(","))
        lo, hi = (float(x) for x in args.service_time.split(","))
    except ValueError:
        p.error("--processes is a list of integers, --service-time MIN,MAX")
    args.service = (lo, hi)
    if not 0 <= lo <= hi <= 600:
        p.error("--service-time must be 0 <= MIN <= MAX <= 600")
    if not args.modes or args.modes - {"baseline", "burst", "paced"}:
        p.error("--modes: a comma-separated subset of baseline,burst,paced")
    if not all(1 <= n <= 4 for n in args.processes):
        p.error("--processes: 1 to 4 server processes")
    if args.processes != [1] and not redis_reachable():
        p.error(f"several server processes need Redis at {REDIS_URL}")
    phases = 2 * len(args.processes)
    if not 1 <= args.clerks <= 999 or not 1 <= args.tickets * phases + args.baseline_calls <= 49_000:
        p.error("--clerks must be 1..999 and all tickets of the run at most 49,000")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
