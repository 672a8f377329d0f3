"""Upload benchmark: stream a large document through HTTP into CloudWindow.

Starts everything it needs on 127.0.0.1 in a temporary folder (nothing else is
touched, nothing leaves the machine) and prints one table:

* **CloudWindow, filesystem store** -- ``cloudwindow serve`` in a subprocess
  (after ``db upgrade`` and ``demo load``), the ``staff`` demo user opens a
  case and uploads ``--size`` bytes (default 1 GiB) to
  ``POST /api/v1/cases/{id}/documents`` as one ``multipart/form-data`` part
  ``file``.  The body is produced on the fly by an async generator (a PDF
  header, then filler), so neither side holds the file in memory.  Reported:
  wall time from the first byte sent to the ``201`` response (which the server
  only sends once the object is fsynced and the row committed), MB/s
  (10^6 bytes) and MiB/s, and the growth of the server's RSS over its value
  just before the upload (after a warm-up upload), sampled every 20 ms with
  psutil and cross-checked with the kernel's high-water mark (``VmHWM`` after
  resetting it through ``/proc/<pid>/clear_refs``).  The ``sha256`` and
  ``size`` the server returns must equal the client's.
* **CloudWindow, S3 store** -- the same against a second server configured for
  S3, talking to moto's S3 server (``moto_server``, a separate process so that
  its memory is measured on its own).  moto keeps every object, part and copy
  in its own memory, so its RSS grows by a multiple of the upload; that is
  moto, not CloudWindow, and is reported separately.
* **Baselines**, same machine, same run, same request body: a plain write of
  the same number of bytes to a file on the same disk (``fsync`` included);
  a bare aiohttp server that parses the multipart body and drops it (the
  loopback/HTTP ceiling); and a bare aiohttp server that does the essential
  work of the filesystem store (SHA-256, write, ``fsync``).  CloudWindow's
  figure is printed as a ratio of each.  ``--what-if`` adds the last one with
  early writeback (``posix_fadvise``), a candidate change for the store.

Each measurement is ``--runs`` timed uploads (default 3, each deleted again
afterwards); the table shows the median run and the worst RSS growth, and
every run's MB/s.  CPU use of the server, this client and everything else on
the machine is printed, so that a run disturbed by other load is visible.
``--profile DIR`` records one extra upload per CloudWindow server with py-spy.

Targets (issue acceptance): filesystem >= 100 MB/s and <= 64 MiB server RSS
growth.  ``--strict`` exits 1 when one is missed.  ``--smoke`` runs the whole
thing with a few MiB in seconds (for CI; targets are not judged).  The run is
aborted with a clear message after ``--timeout`` seconds (default 600).

Run: ``make bench`` or ``.venv/bin/python bench/upload.py [--size N] [--s3-size N]
[--runs N] [--skip-s3] [--smoke]`` (``--help`` for all).  Sizes accept suffixes:
``512MiB``, ``1GiB``, ``200MB``.  Results and analysis: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
KiB, MiB, GiB = 1024, 1024**2, 1024**3
MB = 10**6

#: Client write size and server read size.
BLOCK = MiB
#: A real PDF header (what ``filetype`` sniffs); the rest of the body is filler.
PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
#: Distinct random filler blocks, cycled (generated once, so the client stays cheap).
_PATTERN = [random.Random(20240501 + i).randbytes(BLOCK) for i in range(4)]

TARGET_MBPS = 100.0
TARGET_RSS_MIB = 64.0
#: The demo user who opens cases at a service point (as in the API tests).
USER = "staff"
CASE_BODY = {
    "matter_code": "MZ-001",
    "applicant_name": "张秀英",
    "applicant_id_number": "11010519491231002X",
    "applicant_phone": "13800138000",
}
RSS_INTERVAL = 0.02


class BenchError(Exception):
    """A failure that ends the run with a message (not a traceback)."""


# -- the request body ------------------------------------------------------------


def payload_blocks(size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes: a PDF header then filler, in blocks of at most 1 MiB."""
    first = PDF_HEAD + _PATTERN[0][len(PDF_HEAD) :]
    sent = 0
    index = 0
    while sent < size:
        block = first if index == 0 else _PATTERN[index % len(_PATTERN)]
        n = min(BLOCK, size - sent)
        yield block if n == BLOCK else block[:n]
        sent += n
        index += 1


def payload_sha256(size: int) -> str:
    """The SHA-256 of :func:`payload_blocks` (computed before timing, off the measured path)."""
    h = hashlib.sha256()
    for block in payload_blocks(size):
        h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Sent:
    """When the client handed the last byte to the socket (set by the body generator)."""

    at: float | None = None


def multipart_request(
    size: int, sent: Sent, filename: str = "bench.pdf"
) -> tuple[AsyncIterator[bytes], dict[str, str]]:
    """A streaming ``multipart/form-data`` body with one part ``file`` and its headers.

    Framed by hand, so the ``Content-Length`` is known up front (no chunked
    encoding) and, like a browser, the part itself carries no length.
    """
    boundary = f"----cloudwindow-bench-{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    async def body() -> AsyncIterator[bytes]:
        yield head
        for block in payload_blocks(size):
            yield block
        yield tail
        sent.at = time.perf_counter()

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    return body(), headers


# -- processes and memory ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The bench's environment without CloudWindow/AWS/proxy settings, plus ``extra``."""
    drop = ("CLOUDWINDOW_", "AWS_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k.lower() not in proxies}
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Child:
    """A server subprocess with its output in a log file; stopped with SIGINT, then SIGKILL."""

    registry: list[Child] = []  # noqa: RUF012 (every child, for the hard-abort watchdog)

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.proc = psutil.Process(self.popen.pid)
        Child.registry.append(self)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    async def wait_http(self, url: str, within: float, *, ok: tuple[int, ...] = (200,)) -> None:
        """Poll ``url`` until it answers with a status in ``ok``."""
        deadline = time.monotonic() + within
        last = "no answer"
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status in ok:
                            return
                        last = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {within:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        with contextlib.suppress(ValueError):
            Child.registry.remove(self)


def reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) of ``pid``; False if not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def read_hwm(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` in bytes, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * KiB if match else None


class RssSampler:
    """Samples the RSS of some processes every ``interval`` seconds in a thread, keeping peaks."""

    def __init__(self, procs: dict[str, psutil.Process], interval: float = RSS_INTERVAL) -> None:
        self.procs = procs
        self.interval = interval
        self.baseline = {name: p.memory_info().rss for name, p in procs.items()}
        self.peak = dict(self.baseline)
        self.samples = 0
        self.hwm_reset = {name: reset_hwm(p.pid) for name, p in procs.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, p in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    if rss > self.peak[name]:
                        self.peak[name] = rss
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, p in self.procs.items():
            hwm = read_hwm(p.pid) if self.hwm_reset[name] else None
            if hwm is not None and hwm > self.peak[name]:
                self.peak[name] = hwm

    def growth_mib(self, name: str) -> float:
        return (self.peak[name] - self.baseline[name]) / MiB


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


# -- results ----------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    label: str
    size: int
    seconds: float
    #: Time from the last byte sent to the response (server-side finishing: fsync, commit...).
    tail: float | None = None
    #: RSS growth (MiB) of the server under test, and of a side process (moto).
    rss_growth: float | None = None
    side_growth: float | None = None
    side_cpu: float | None = None
    side_label: str = ""
    #: CPU used during the upload, in cores (1.0 = one core busy the whole time).
    server_cpu: float | None = None
    client_cpu: float | None = None
    #: CPU used by everything else on the machine (cores), and CPU stolen by the hypervisor.
    other_cpu: float | None = None
    steal: float | None = None
    sha_ok: bool | None = None
    #: MB/s of every run, in order (the other fields describe the median run).
    all_mb_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def mb_s(self) -> float:
        return self.size / MB / self.seconds

    @property
    def mib_s(self) -> float:
        return self.size / MiB / self.seconds


_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


def combine(runs: list[Result]) -> Result:
    """The median run (lower middle for an even count), with the worst RSS growth of all."""
    ordered = sorted(runs, key=lambda r: r.mb_s)
    median = ordered[(len(ordered) - 1) // 2]
    growths = [r.rss_growth for r in runs if r.rss_growth is not None]
    sides = [r.side_growth for r in runs if r.side_growth is not None]
    return dataclasses.replace(
        median,
        rss_growth=max(growths) if growths else None,
        side_growth=max(sides) if sides else None,
        all_mb_s=[r.mb_s for r in runs],
    )


def human(n: int) -> str:
    if n >= GiB:
        return f"{n / GiB:.3g} GiB"
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    return f"{n / KiB:g} KiB"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB, 1GiB, 500MB)")
    number, unit = float(match.group(1)), (match.group(2) or "b").lower()
    scale = {"b": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}[unit[0]]
    if len(unit) >= 2 and unit[1] == "b" and unit[0] != "b":  # kb, mb, gb: decimal
        scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[unit[0]]
    size = int(number * scale)
    if size < 64 * KiB:
        raise argparse.ArgumentTypeError("size must be at least 64 KiB")
    return size


# -- the benchmark ----------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.bin = _venv_bin()
        self.server_cmd = str(args.server_cmd or self.bin / "cloudwindow")
        self.password = secrets.token_urlsafe(16)
        self.secret_key = secrets.token_urlsafe(48)
        self.results: list[Result] = []
        self.stage = "starting"
        self._sha: dict[int, str] = {}
        self._have_template = False
        self.max_size = max(args.size, args.s3_size) + 16 * MiB

    def say(self, text: str) -> None:
        print(text, flush=True)

    async def sha_of(self, size: int) -> str:
        if size not in self._sha:
            self._sha[size] = await asyncio.to_thread(payload_sha256, size)
        return self._sha[size]

    # -- helpers

    async def run_cli(self, env: dict[str, str], *argv: str) -> None:
        cmd = [self.server_cmd, *argv]
        proc = await asyncio.to_thread(
            subprocess.run, cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        if proc.returncode != 0:
            shown = " ".join(a if a != self.password else "***" for a in argv)
            raise BenchError(f"`cloudwindow {shown}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    async def prepare_database(self, data_dir: Path, env: dict[str, str]) -> None:
        """``db upgrade`` and ``demo load`` once (argon2 makes the latter take seconds);
        later servers get a copy of that SQLite file."""
        template = self.work / "template.db"
        if self._have_template:
            await asyncio.to_thread(_copy_into, template, data_dir)
            return
        self.stage = "db upgrade / demo load"
        await self.run_cli(env, "db", "upgrade")
        await self.run_cli(env, "demo", "load", "--password", self.password)
        await asyncio.to_thread(shutil.copyfile, data_dir / "cloudwindow.db", template)
        self._have_template = True

    async def start_profiler(self, server: Child) -> subprocess.Popen[bytes]:
        """``py-spy record`` on the server (all threads, on-CPU samples only) until stopped."""
        py_spy = shutil.which("py-spy", path=str(self.bin)) or shutil.which("py-spy")
        if py_spy is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        out_dir = self.args.profile
        out_dir.mkdir(parents=True, exist_ok=True)
        argv = [py_spy, "record", "--pid", str(server.proc.pid), "--threads", "--rate", "250", "--nonblocking"]
        argv += ["--format", "raw", "--output", str(out_dir / f"{server.name}.txt")]
        log = (out_dir / f"{server.name}.py-spy.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220 (returns at once)
        log.close()
        await asyncio.sleep(1.0)  # attach before the upload starts
        if proc.poll() is not None:
            raise BenchError(f"py-spy exited with {proc.returncode}; see {out_dir / (server.name + '.py-spy.log')}")
        return proc

    async def stop_profiler(self, proc: subprocess.Popen[bytes], server: Child) -> None:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 30)
        out = self.args.profile / f"{server.name}.txt"
        if out.exists():
            self.say(summarise_profile(out))

    async def start_cloudwindow(self, name: str, extra: dict[str, str]) -> tuple[Child, str]:
        data_dir = self.work / name
        port = free_port()
        env = child_env(
            {
                "CLOUDWINDOW_DATA_DIR": str(data_dir),
                "CLOUDWINDOW_HOST": "127.0.0.1",
                "CLOUDWINDOW_PORT": str(port),
                "CLOUDWINDOW_SECRET_KEY": self.secret_key,
                "CLOUDWINDOW_UPLOAD__MAX_SIZE": str(self.max_size),
                "CLOUDWINDOW_LOG_LEVEL": "WARNING",
                "CLOUDWINDOW_WEB_CLIENT_DIST": str(self.work / "no-web-client"),
                **extra,
            }
        )
        await self.prepare_database(data_dir, env)
        self.stage = f"{name}: starting the server"
        child = Child(name, [self.server_cmd, "serve"], env, self.work / f"{name}.log")
        base = f"http://127.0.0.1:{port}"
        await child.wait_http(f"{base}/readyz", within=60)
        return child, base

    async def login_and_open_case(self, http: aiohttp.ClientSession, base: str) -> tuple[str, int]:
        async with http.post(f"{base}/api/v1/auth/login", json={"username": USER, "password": self.password}) as resp:
            if resp.status != 200:
                raise BenchError(f"login as {USER} failed: HTTP {resp.status} {await resp.text()}")
            token = str((await resp.json())["access_token"])
        async with http.post(
            f"{base}/api/v1/cases", json=CASE_BODY, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            if resp.status != 201:
                raise BenchError(f"opening a case failed: HTTP {resp.status} {await resp.text()}")
            case_id = int((await resp.json())["id"])
        return token, case_id

    async def post_body(
        self, http: aiohttp.ClientSession, url: str, size: int, token: str | None = None
    ) -> tuple[dict[str, Any], float, float | None]:
        """Upload ``size`` bytes; returns the JSON answer, wall seconds and the tail seconds."""
        sent = Sent()
        body, headers = multipart_request(size, sent)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as resp:
            text = await resp.text()
        finished = time.perf_counter()
        if resp.status not in (200, 201):
            raise BenchError(f"upload of {human(size)} to {url} failed: HTTP {resp.status} {text[:500]}")
        answer: dict[str, Any] = json.loads(text)
        tail = finished - sent.at if sent.at is not None else None
        return answer, finished - started, tail

    async def measured_upload(
        self,
        label: str,
        http: aiohttp.ClientSession,
        url: str,
        server: Child,
        size: int,
        token: str | None = None,
        side: Child | None = None,
        check_sha: bool = True,
        profile: bool = False,
        after: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> Result:
        """A warm-up upload, then ``--runs`` timed ones (``after`` cleans up after each);
        returns the median run, with the worst RSS growth of all runs."""
        self.stage = f"{label}: warm-up upload"
        answer, _, _ = await self.post_body(http, url, self.args.warmup, token)
        if after is not None:
            await after(answer)
        expected = await self.sha_of(size) if check_sha else None
        runs: list[Result] = []
        for n in range(1, self.args.runs + 1):
            await asyncio.sleep(0.5)  # let the server (and the disk) settle
            self.stage = f"{label}: uploading {human(size)} (run {n})"
            result, answer = await self.one_upload(label, http, url, server, size, token, side, expected)
            runs.append(result)
            if after is not None:
                await after(answer)
        if self.args.profile and profile:
            await asyncio.sleep(0.5)
            self.stage = f"{label}: profiled upload"
            self.say(f"  {label}: one more upload under py-spy (not counted) ...")
            profiler = await self.start_profiler(server)
            try:
                _, answer = await self.one_upload(label, http, url, server, size, token, side, expected)
            finally:
                await self.stop_profiler(profiler, server)
            if after is not None:
                await after(answer)
        return combine(runs)

    async def one_upload(
        self,
        label: str,
        http: aiohttp.ClientSession,
        url: str,
        server: Child,
        size: int,
        token: str | None,
        side: Child | None,
        expected: str | None,
    ) -> tuple[Result, dict[str, Any]]:
        """One timed upload with RSS and CPU sampling; verifies size and sha256."""
        procs = {"server": server.proc}
        if side is not None:
            procs["side"] = side.proc
        me = psutil.Process()
        ours = {**procs, "client": me}
        cpu0 = {name: cpu_seconds(p) for name, p in ours.items()}
        machine0 = psutil.cpu_times()
        with RssSampler(procs) as rss:
            answer, seconds, tail = await self.post_body(http, url, size, token)
        machine1 = psutil.cpu_times()
        cpu = {name: (cpu_seconds(p) - cpu0[name]) / seconds for name, p in ours.items()}
        busy = sum(getattr(machine1, f) - getattr(machine0, f) for f in _BUSY_FIELDS if hasattr(machine0, f))
        steal = getattr(machine1, "steal", 0.0) - getattr(machine0, "steal", 0.0)
        if int(answer.get("size", -1)) != size:
            raise BenchError(f"{label}: server stored {answer.get('size')} bytes, sent {size}")
        sha_ok = None
        if expected is not None:
            sha_ok = answer.get("sha256") == expected
            if not sha_ok:
                raise BenchError(f"{label}: sha256 mismatch: server {answer.get('sha256')}, client {expected}")
        result = Result(
            label,
            size,
            seconds,
            tail=tail,
            rss_growth=rss.growth_mib("server"),
            side_growth=rss.growth_mib("side") if side is not None else None,
            side_cpu=cpu.get("side"),
            server_cpu=cpu["server"],
            client_cpu=cpu["client"],
            other_cpu=min(float(os.cpu_count() or 1), max(0.0, busy / seconds - sum(cpu.values()))),
            steal=steal / seconds,
            sha_ok=sha_ok,
        )
        self.say(
            f"  {label}: {human(size)} at {result.mb_s:.1f} MB/s ({result.mib_s:.1f} MiB/s) in {seconds:.2f} s; "
            f"server RSS +{result.rss_growth:.1f} MiB ({rss.samples} samples), CPU {result.server_cpu:.2f} cores"
            + (
                f"; {side.name} RSS +{result.side_growth:.1f} MiB, CPU {result.side_cpu:.2f} cores"
                if side is not None
                else ""
            )
            + f"; other load {result.other_cpu:.2f} cores, steal {result.steal:.2f}"
            + ("; sha256 ok" if sha_ok else "")
        )
        return result, answer

    # -- the runs

    async def disk_baseline(self) -> Result:
        size = self.args.size
        self.stage = "baseline: disk write"
        path = self.work / "disk-baseline.bin"

        def write() -> float:
            started = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for block in payload_blocks(size):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            return time.perf_counter() - started

        label = "baseline: file write + fsync (no HTTP)"
        runs = []
        for n in range(1, self.args.runs + 1):
            self.stage = f"{label} (run {n})"
            await asyncio.sleep(0.5)
            machine0 = psutil.cpu_times()
            seconds = await asyncio.to_thread(write)
            machine1 = psutil.cpu_times()
            await asyncio.to_thread(path.unlink)
            steal = getattr(machine1, "steal", 0.0) - getattr(machine0, "steal", 0.0)
            result = Result(label, size, seconds, steal=steal / seconds)
            self.say(f"  {label}: {human(size)} at {result.mb_s:.1f} MB/s in {seconds:.2f} s")
            runs.append(result)
        return combine(runs)

    async def sink_baseline(self, mode: str) -> Result:
        size = self.args.size
        port = free_port()
        out_dir = self.work / f"sink-{mode}"
        out_dir.mkdir()
        argv = [
            sys.executable,
            str(THIS),
            "--baseline-server",
            str(port),
            "--baseline-mode",
            mode,
            "--baseline-dir",
            str(out_dir),
        ]
        label = {
            "null": "baseline: aiohttp multipart -> /dev/null",
            "file": "baseline: aiohttp multipart -> sha256+file+fsync",
            "fadvise": "what-if: the same + fadvise(DONTNEED) every 8 MiB",
        }[mode]
        self.stage = f"{label}: starting"
        child = Child(f"sink-{mode}", argv, child_env({}), self.work / f"sink-{mode}.log")
        try:
            base = f"http://127.0.0.1:{port}"
            await child.wait_http(f"{base}/healthz", within=30)

            async def clear(_answer: dict[str, Any]) -> None:
                await asyncio.to_thread(_empty_folder, out_dir)

            async with _client() as http:
                return await self.measured_upload(
                    label, http, f"{base}/upload", child, size, check_sha=(mode != "null"), after=clear
                )
        finally:
            child.stop()
            shutil.rmtree(out_dir, ignore_errors=True)

    async def cloudwindow_fs(self) -> Result:
        child, base = await self.start_cloudwindow("cloudwindow-fs", {})
        try:
            async with _client() as http:
                token, case_id = await self.login_and_open_case(http, base)
                url = f"{base}/api/v1/cases/{case_id}/documents"
                return await self.measured_upload(
                    "CloudWindow, filesystem store",
                    http,
                    url,
                    child,
                    self.args.size,
                    token,
                    profile=True,
                    after=_deleter(http, url, token),
                )
        finally:
            child.stop()
            shutil.rmtree(self.work / "cloudwindow-fs", ignore_errors=True)

    async def cloudwindow_s3(self) -> Result:
        self.stage = "S3: starting moto"
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        moto = Child(
            "moto",
            [str(self.bin / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            child_env({}),
            self.work / "moto.log",
        )
        try:
            await moto.wait_http(f"{endpoint}/moto-api/", within=60, ok=(200, 404))
            bucket, key_id, key_secret = "cloudwindow-bench", "bench", "bench-secret"
            await asyncio.to_thread(_create_bucket, endpoint, bucket, key_id, key_secret)
            child, base = await self.start_cloudwindow(
                "cloudwindow-s3",
                {
                    "CLOUDWINDOW_OBJECT_STORE__KIND": "s3",
                    "CLOUDWINDOW_OBJECT_STORE__S3__ENDPOINT_URL": endpoint,
                    "CLOUDWINDOW_OBJECT_STORE__S3__BUCKET": bucket,
                    "CLOUDWINDOW_OBJECT_STORE__S3__ACCESS_KEY_ID": key_id,
                    "CLOUDWINDOW_OBJECT_STORE__S3__SECRET_ACCESS_KEY": key_secret,
                    "CLOUDWINDOW_OBJECT_STORE__S3__CREATE_BUCKET": "true",
                },
            )
            try:
                async with _client() as http:
                    token, case_id = await self.login_and_open_case(http, base)
                    url = f"{base}/api/v1/cases/{case_id}/documents"
                    result = await self.measured_upload(
                        "CloudWindow, S3 store (moto)",
                        http,
                        url,
                        child,
                        self.args.s3_size,
                        token,
                        side=moto,
                        profile=True,
                        after=_deleter(http, url, token),
                    )
                    result.side_label = "moto"
                    return result
            finally:
                child.stop()
                shutil.rmtree(self.work / "cloudwindow-s3", ignore_errors=True)
        finally:
            moto.stop()

    async def run(self) -> None:
        a = self.args
        self.say(
            f"CloudWindow upload benchmark: {human(a.size)} filesystem"
            + ("" if a.skip_s3 else f", {human(a.s3_size)} S3 (moto)")
            + f"; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}"
            + f"; work dir {self.work}"
        )
        self.stage = "hashing the payload"
        await self.sha_of(a.size)
        if not a.skip_baselines:
            self.results.append(await self.disk_baseline())
            self.results.append(await self.sink_baseline("null"))
            self.results.append(await self.sink_baseline("file"))
            if a.what_if:
                self.results.append(await self.sink_baseline("fadvise"))
        self.results.append(await self.cloudwindow_fs())
        if not a.skip_s3:
            self.results.append(await self.cloudwindow_s3())
        self.stage = "done"

    # -- the report

    def report(self) -> bool:
        """Print the table; True if the targets are met (or not judged)."""
        header = ("measurement", "size", "time s", "MB/s", "MiB/s", "tail s", "srv RSS+", "srv CPU", "cli CPU")
        rows = [(*header, "other CPU", "steal", "sha256")]
        for r in self.results:
            rows.append(
                (
                    r.label,
                    human(r.size),
                    f"{r.seconds:.2f}",
                    f"{r.mb_s:.1f}",
                    f"{r.mib_s:.1f}",
                    _opt(r.tail, "{:.2f}"),
                    _opt(r.rss_growth, "{:.1f} MiB"),
                    _opt(r.server_cpu, "{:.2f}"),
                    _opt(r.client_cpu, "{:.2f}"),
                    _opt(r.other_cpu, "{:.2f}"),
                    _opt(r.steal, "{:.2f}"),
                    {None: "-", True: "ok", False: "MISMATCH"}[r.sha_ok],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        self.say("")
        for n, row in enumerate(rows):
            cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
            self.say("  ".join(cells))
            if n == 0:
                self.say("  ".join("-" * w for w in widths))
        self.say(
            f"Median of {self.args.runs} run(s); RSS+ is the worst run.  MB = 10^6 bytes.  time: first byte sent to "
            "response; tail: last byte sent to response.  CPU in cores (this machine has "
            f"{os.cpu_count()}): srv = server under test, cli = this script, other = everything else "
            "(other users, kernel I/O threads; coarse for short runs), "
            "steal = taken by the hypervisor."
        )
        for r in self.results:
            if len(r.all_mb_s) > 1:
                self.say(f"  {r.label}: MB/s per run: {', '.join(f'{v:.1f}' for v in r.all_mb_s)}")
        for r in self.results:
            if r.side_growth is not None:
                self.say(
                    f"{r.side_label} (the S3 stand-in, a separate process) during the S3 upload: "
                    f"RSS +{r.side_growth:.1f} MiB, CPU {_opt(r.side_cpu, '{:.2f}')} cores. moto keeps the "
                    "parts, the assembled object and its self-copy in memory: that is moto, not CloudWindow."
                )
        by_label = {r.label: r for r in self.results}
        fs = by_label.get("CloudWindow, filesystem store")
        if fs is None:
            return True
        for base_label in (
            "baseline: file write + fsync (no HTTP)",
            "baseline: aiohttp multipart -> /dev/null",
            "baseline: aiohttp multipart -> sha256+file+fsync",
        ):
            base = by_label.get(base_label)
            if base is not None:
                self.say(f"filesystem store / {base_label[10:]}: {fs.mb_s / base.mb_s:.2f}x")
        if self.args.smoke:
            self.say("smoke run: targets not judged (the sizes are too small to mean anything)")
            return True
        speed_ok = fs.mb_s >= TARGET_MBPS
        rss_ok = fs.rss_growth is not None and fs.rss_growth <= TARGET_RSS_MIB
        self.say(
            f"target: filesystem throughput >= {TARGET_MBPS:g} MB/s (median): {fs.mb_s:.1f} MB/s "
            f"-> {'MET' if speed_ok else 'MISSED'}"
        )
        self.say(
            f"target: filesystem server RSS growth <= {TARGET_RSS_MIB:g} MiB (worst run): {fs.rss_growth:.1f} MiB "
            f"-> {'MET' if rss_ok else 'MISSED'}"
        )
        return speed_ok and rss_ok


def summarise_profile(path: Path, top: int = 15) -> str:
    """Per-thread share and the hottest frames (self time) of a ``py-spy --format raw`` file."""
    threads: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        kind = frame_thread(frames)
        threads[kind] = threads.get(kind, 0) + count
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
    if not total:
        return f"  profile {path}: no samples"
    lines = [f"  profile {path} ({total} on-CPU samples, all threads; % of samples):"]
    for name, count in sorted(threads.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {100 * count / total:5.1f}%  thread {name}")
    lines.append("    self time:")
    for frame, count in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def frame_thread(frames: list[str]) -> str:
    """The thread of a raw py-spy stack, numbers folded: ``MainThread`` (the event
    loop), ``asyncio_*`` (default executor: file I/O), ``s3_*`` (boto3 pool)..."""
    name = re.sub(r"^thread \(\d+\): ", "", frames[0])
    return re.sub(r"(asyncio|s3)_\d+$", r"\1_*", name)


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
    )


def _create_bucket(endpoint: str, bucket: str, key_id: str, key_secret: str) -> None:
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=key_secret,
        region_name="us-east-1",
    )
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()


def _deleter(
    http: aiohttp.ClientSession, documents_url: str, token: str
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """Deletes an uploaded document again (keeps disk and moto memory from piling up between runs)."""

    async def delete(answer: dict[str, Any]) -> None:
        url = f"{documents_url}/{answer['id']}"
        async with http.delete(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 204:
                raise BenchError(f"DELETE {url} failed: HTTP {resp.status} {await resp.text()}")

    return delete


def _empty_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        entry.unlink()


def _copy_into(db_file: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db_file, data_dir / "cloudwindow.db")


def _venv_bin() -> Path:
    """The folder with ``cloudwindow`` and ``moto_server``: this interpreter's, else ``.venv/bin``."""
    for folder in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        if (folder / "cloudwindow").exists():
            return folder
    raise BenchError("cannot find the `cloudwindow` command; run `make setup` first")


# -- the baseline server (a subprocess started by this script) --------------------------


def baseline_server(port: int, mode: str, out_dir: Path) -> None:
    """A bare aiohttp server: ``POST /upload`` reads the multipart part ``file`` like
    CloudWindow does (1 MiB ``read_chunk``), then drops it (``null``) or hashes,
    writes and fsyncs it, receiving the next batch while the previous one is
    written (``file``, the essential work of the filesystem store).  ``fadvise``
    is ``file`` plus ``posix_fadvise(DONTNEED)`` on every 8 MiB written, which
    starts the disk writeback early instead of leaving it all to the final
    ``fsync`` (a what-if for the store, ``--what-if``)."""

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader)
        size = 0
        if mode == "null":
            while chunk := await part.read_chunk(BLOCK):
                size += len(chunk)
            return web.json_response({"size": size, "sha256": None})
        loop = asyncio.get_running_loop()
        hasher = hashlib.sha256()
        fd = os.open(out_dir / f"{secrets.token_hex(8)}.part", os.O_WRONLY | os.O_CREAT, 0o600)

        flushed = written = 0

        def write(block: bytearray) -> None:
            nonlocal flushed, written
            hasher.update(block)
            view = memoryview(block)
            while view:
                n = os.write(fd, view)
                view = view[n:]
                written += n
            if mode == "fadvise" and written - flushed >= 8 * MiB:
                os.posix_fadvise(fd, flushed, written - flushed, os.POSIX_FADV_DONTNEED)
                flushed = written

        try:
            inflight: asyncio.Future[None] | None = None
            buffer = bytearray()
            while chunk := await part.read_chunk(BLOCK):
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= BLOCK:
                    if inflight is not None:
                        await inflight
                    inflight = loop.run_in_executor(None, write, buffer)
                    buffer = bytearray()
            if inflight is not None:
                await inflight
            await loop.run_in_executor(None, write, buffer)
            await loop.run_in_executor(None, os.fsync, fd)
        finally:
            os.close(fd)
        return web.json_response({"size": size, "sha256": hasher.hexdigest()})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.add_routes([web.post("/upload", upload), web.get("/healthz", healthz)])
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- command line -------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CloudWindow upload benchmark (filesystem and S3 stores, with baselines).",
        epilog="Sizes accept suffixes: KiB/MiB/GiB (binary) or KB/MB/GB (decimal).",
    )
    p.add_argument("--size", type=parse_size, default=None, help="filesystem upload size (default 1GiB)")
    p.add_argument("--s3-size", type=parse_size, default=None, help="S3 (moto) upload size (default 256MiB)")
    p.add_argument("--warmup", type=parse_size, default=None, help="warm-up upload size (default 16MiB)")
    p.add_argument("--runs", type=int, default=None, help="timed uploads per measurement; the median is reported (3)")
    p.add_argument("--skip-s3", action="store_true", help="do not run the S3 (moto) part")
    p.add_argument(
        "--what-if",
        action="store_true",
        help="also time the bare file server with early writeback (fadvise), a candidate store change",
    )
    p.add_argument("--skip-baselines", action="store_true", help="do not run the baselines")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run, ~20 s: checks the bench works (CI)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--timeout", type=float, default=600, help="abort after this many seconds (default 600)")
    p.add_argument("--work-dir", type=Path, help="parent of the temporary folder (default: system temp)")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="one extra, uncounted upload per CloudWindow server under py-spy; raw stacks go to DIR",
    )
    p.add_argument(
        "--server-cmd",
        type=Path,
        metavar="PATH",
        help="the `cloudwindow` command to benchmark (default: the one next to this Python)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    p.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    p.add_argument("--baseline-mode", choices=["null", "file", "fadvise"], default="null", help=argparse.SUPPRESS)
    p.add_argument("--baseline-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.size = args.size or 8 * MiB
        args.s3_size = args.s3_size or 12 * MiB  # > one 8 MiB part: exercises the multipart path
        args.warmup = args.warmup or MiB
        args.runs = args.runs or 1
    args.size = args.size or GiB
    args.s3_size = args.s3_size or 256 * MiB
    args.warmup = args.warmup or 16 * MiB  # > the S3 part size, so the multipart path is warm too
    args.runs = args.runs or 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def _watchdog(seconds: float) -> None:
    """Last resort if cancelling does not end the run: kill our children and exit."""

    def fire() -> None:
        print(f"\nABORTED: the benchmark is still running {seconds:.0f} s after the deadline", flush=True)
        for child in list(Child.registry):
            with contextlib.suppress(Exception):
                child.popen.kill()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_server is not None:
        baseline_server(args.baseline_server, args.baseline_mode, args.baseline_dir)
        return 0
    work = Path(tempfile.mkdtemp(prefix="cloudwindow-bench-", dir=args.work_dir))
    bench = Bench(args, work)
    _watchdog(args.timeout + 60)
    code = 0
    try:
        asyncio.run(asyncio.wait_for(bench.run(), args.timeout))
    except TimeoutError:
        print(
            f"\nABORTED: the benchmark did not finish within {args.timeout:.0f} s (--timeout); "
            f"it was at: {bench.stage}.  Logs: {work}",
            flush=True,
        )
        args.keep = True
        code = 3
    except BenchError as exc:
        print(f"\nFAILED at {bench.stage}: {exc}\nLogs: {work}", flush=True)
        args.keep = True
        code = 2
    except KeyboardInterrupt:
        print(f"\ninterrupted at {bench.stage}", flush=True)
        code = 130
    finally:
        for child in list(Child.registry):
            child.stop()
    if bench.results:
        met = bench.report()
        if code == 0 and args.strict and not met:
            code = 1
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
