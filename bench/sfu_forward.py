"""SFU forwarding benchmark: CloudWindow's MediaRoom against aiortc's decode/re-encode relay and Janus VideoRoom.

Everything runs on this machine, on loopback only, and stops by itself:

* the server under test runs in its own process (``bench/sfu_server.py``:
  :class:`signalling.sfu.MediaRoom`, as ``signalling/media.py`` hosts it), so
  its CPU (``psutil`` ``cpu_times`` delta over a steady window) and its RSS
  are measured apart from the clients;
* the clients are aiortc peers in ``--workers`` other processes
  (``bench/sfu_client.py``): publishers loop a pre-encoded 640x480 VP8 clip
  (~1 Mbit/s, 30 fps) and Opus, subscribers never decode (see
  ``bench/sfu_media.py``); every frame carries its publisher's stream id,
  sequence number and ``CLOCK_MONOTONIC`` send time, read from the last RTP
  packet of the frame as it arrives;
* baselines measured in the same run under the same load: aiortc's relay
  (``sfu_server.py --mode relay``: aiortc decodes each publisher, and
  ``MediaRelay`` feeds every subscriber's sender, which re-encodes VP8), Janus
  VideoRoom (Debian package ``janus``, started here with a generated config,
  HTTP API on 127.0.0.1 inside a private network namespace, see
  ``sfu_client.py``) and a direct client-to-client call (no server: the
  clients' own latency floor, subtracted to give the *added* latency).

Scenarios: 1 publisher x N subscribers (video) for ``--subscribers`` and M
concurrent 1:1 audio+video sessions for ``--sessions``.  Printed per
scenario: server CPU in cores and per forwarded video stream, server RSS per
participant, frame loss (frames sent in the window that never arrived) and
RTP packet loss (subscribers' inbound RTP statistics), one-way latency
p50/p95 (video; audio for sessions), join -> first decodable frame p50/p95,
and CPU of the client workers and of the whole machine.  A summary compares
with the targets of the issue.

Run: ``.venv/bin/python bench/sfu_forward.py`` (full, ~20 min) or ``--quick``
(~1 min, for CI); ``--help`` for all flags.  Method and figures:
``docs/benchmarks.md`` ("SFU forwarding").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import sfu_janus  # noqa: E402
from sfu_media import CLIP_FRAMES, FPS, load_clip, now_ns  # noqa: E402

MiB = 1024 * 1024
PY = sys.executable

TARGET_CORE_PER_STREAM = 0.006
TARGET_RELAY_FACTOR = 20.0
TARGET_JANUS_RATIO = 1.5
TARGET_SESSIONS = 50
TARGET_LOSS = 0.01
TARGET_FIRST_FRAME_MS = 150.0
TARGET_RSS_MIB = 15.0

STAGE = ["starting"]
SPAWNED: list[asyncio.subprocess.Process] = []


def log(message: str) -> None:
    print(message, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- processes -------------------------------------------------------------------------------------------------------


class Worker:
    """A client worker process (``sfu_client.py``) driven over JSON lines on its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self._waiting.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError(f"worker {self.name} exited"))

    async def request(self, op: str, wait: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.proc.stdin.write(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(wait):
            reply = await future
        if not reply.get("ok"):
            raise RuntimeError(f"worker {self.name}: {op} failed: {reply.get('error')}")
        return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.request("close", wait=15)
        await stop_process(self.proc)
        self._reader.cancel()


async def spawn(*argv: str, stdin: bool = True, log_path: Path | None = None) -> asyncio.subprocess.Process:
    stderr = log_path.open("ab") if log_path else subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if stdin else stderr,
        stderr=stderr,
        cwd=str(ROOT),
        limit=1 << 26,
    )
    SPAWNED.append(proc)
    return proc


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is not None:
        return
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
            return
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def kill_spawned() -> None:
    """Last resort (timeout/abort): kill the processes this run started, by pid."""
    for proc in SPAWNED:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


class CpuMeter:
    """CPU seconds of some processes and of the whole machine over a window."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.procs = {name: [psutil.Process(p) for p in group] for name, group in pids.items()}
        self._start: dict[str, float] = {}
        self._machine: Any = None
        self._t0 = 0.0

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, group in self.procs.items():
            total = 0.0
            for proc in group:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            out[name] = total
        return out

    def start(self) -> None:
        self._start = self._cpu()
        self._machine = psutil.cpu_times()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Cores (CPU seconds per second) per group, plus ``machine`` (all CPUs busy) and ``steal``."""
        end, machine = self._cpu(), psutil.cpu_times()
        elapsed = time.monotonic() - self._t0
        cores = {name: (end[name] - self._start[name]) / elapsed for name in end}
        busy0 = sum(self._machine) - self._machine.idle - self._machine.iowait
        busy1 = sum(machine) - machine.idle - machine.iowait
        cores["machine"] = (busy1 - busy0) / elapsed
        cores["steal"] = (machine.steal - self._machine.steal) / elapsed
        cores["seconds"] = elapsed
        return cores


# --- one scenario ----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    target: str  # sfu | relay | janus | direct
    scenario: str  # 1xN | sessions
    size: int  # N subscribers or M sessions
    participants: int = 0
    video_streams: int = 0  # forwarded video streams (subscriptions)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_idle: int = 0
    rss_loaded: int = 0
    video_loss: float | None = None
    audio_loss: float | None = None
    rtp_loss: float | None = None
    latency: list[float] = field(default_factory=list)
    audio_latency: list[float] = field(default_factory=list)
    first_frame: list[float] = field(default_factory=list)
    connected: list[float] = field(default_factory=list)  # join -> ICE+DTLS connected (subscribers)
    missing_first: int = 0
    pairs: Counter[str] = field(default_factory=Counter)  # nominated pairs, read as each client connected
    no_pair: int = 0  # reports without a nominated pair (never connected)
    closed_early: int = 0  # clients whose connection was no longer "connected" when the report was read
    server_stats: dict[str, Any] = field(default_factory=dict)
    keyframes_on_request: int = 0
    errors: list[str] = field(default_factory=list)
    profile: str | None = None

    @property
    def label(self) -> str:
        name = {"sfu": "CloudWindow SFU", "relay": "aiortc relay", "janus": "Janus VideoRoom", "direct": "direct"}
        what = f"1 pub x {self.size} sub" if self.scenario == "1xN" else f"{self.size} x 1:1 A/V"
        return f"{name[self.target]}: {what}"

    @property
    def server_cores(self) -> float | None:
        return self.cpu.get("server")

    @property
    def per_stream(self) -> float | None:
        if self.server_cores is None or not self.video_streams:
            return None
        return self.server_cores / self.video_streams

    @property
    def rss_per_participant(self) -> float | None:
        if not self.participants or not self.rss_loaded:
            return None
        return (self.rss_loaded - self.rss_idle) / self.participants / MiB


class Scenario:
    """Starts the server (or Janus) and the workers, joins everyone, measures one steady window, tears down."""

    def __init__(self, args: argparse.Namespace, work: Path, target: str, scenario: str, size: int) -> None:
        self.args = args
        self.work = work
        self.target = target
        self.scenario = scenario
        self.size = size
        self.result = Result(target, scenario, size)
        self.workers: list[Worker] = []
        self.server: asyncio.subprocess.Process | None = None
        self.server_pid: int | None = None
        self.port = 0
        self.netns_address = "127.0.0.2"

    @property
    def tag(self) -> str:
        return f"{self.target}-{self.scenario}-{self.size}"

    async def run(self) -> Result:
        STAGE[0] = f"{self.tag}: start"
        try:
            await self._start()
            await self._join()
            await self._measure()
        except Exception as exc:
            self.result.errors.append(f"{type(exc).__name__}: {exc}")
            log(f"  !! {self.tag}: {type(exc).__name__}: {exc}")
        finally:
            STAGE[0] = f"{self.tag}: teardown"
            await self._stop()
        return self.result

    # --- processes ---

    async def _start(self) -> None:
        args, logs = self.args, self.work / f"{self.tag}.log"
        client = [PY, str(BENCH / "sfu_client.py")]
        mode = self.target if self.target != "direct" else "direct"
        init: dict[str, Any] = {"mode": mode, "clip": str(self.work / "clip.pkl"), "decode": self.target == "relay"}
        if self.target in ("sfu", "relay"):
            self.server = await spawn(PY, str(BENCH / "sfu_server.py"), "--mode", self.target, log_path=logs)
            assert self.server.stdout is not None
            async with asyncio.timeout(30):
                line = (await self.server.stdout.readline()).decode().split()
            if not line or line[0] != "READY":
                raise RuntimeError(f"server did not start (see {logs})")
            self.port = int(line[1])
            self.server_pid = self.server.pid
            init["port"] = self.port
        if self.target == "janus":
            first = await spawn("unshare", "--net", "--", *client, "--netns-setup", log_path=logs)
            self.workers.append(Worker(first, "w0"))
            netns = f"--net=/proc/{first.pid}/ns/net"
            await self.workers[0].request("status", wait=20)  # the namespace is configured
            folder = sfu_janus.write_config(self.work / f"janus-{self.tag}", 8088, (20000, 40000))
            janus = await spawn(
                "nsenter", netns, "--", args.janus_bin, "-F", str(folder), "-o", stdin=False, log_path=logs
            )
            self.server, self.server_pid = janus, janus.pid
            for index in range(1, args.workers):
                proc = await spawn("nsenter", netns, "--", *client, log_path=logs)
                self.workers.append(Worker(proc, f"w{index}"))
            init.update(janus_url="http://127.0.0.1:8088/janus", gather=self.netns_address)
        else:
            for index in range(args.workers):
                self.workers.append(Worker(await spawn(*client, log_path=logs), f"w{index}"))
        await asyncio.gather(*(w.request("init", wait=60, **init) for w in self.workers))
        if self.server_pid is not None:
            await asyncio.sleep(0.5)
            self.result.rss_idle = psutil.Process(self.server_pid).memory_info().rss

    async def _stop(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)
        if self.server is not None:
            await stop_process(self.server)

    def worker_for(self, index: int) -> Worker:
        return self.workers[index % len(self.workers)]

    # --- joining ---

    async def _join(self) -> None:
        STAGE[0] = f"{self.tag}: joining"
        args = self.args
        self.expect: dict[str, tuple[Worker, int, int]] = {}  # participant -> (worker, video streams, audio streams)
        self.publisher_join: dict[str, int] = {}
        if self.target == "direct":
            pub, sub = self.worker_for(0), self.worker_for(1)
            offer = await pub.request("direct_offer", participant="pub", room="d", video=True, stream_base=0)
            answer = await sub.request("direct_answer", participant="sub", room="d", sdp=offer["sdp"])
            await pub.request("direct_finish", participant="pub", sdp=answer["sdp"])
            self.expect["sub"] = (sub, 1, 0)
            self.result.participants = 2
            self.result.video_streams = 1
        elif self.scenario == "1xN":
            await self._join_one_to_n(args)
        else:
            await self._join_sessions(args)
        STAGE[0] = f"{self.tag}: waiting for first frames"
        await self._wait_first_frames(args.first_frame_timeout)

    async def _join_one_to_n(self, args: argparse.Namespace) -> None:
        n = self.size
        self.result.participants = n + 1
        self.result.video_streams = n
        publisher = self.worker_for(0)
        feed = None
        if self.target == "janus":
            await publisher.request("janus_room", room=1000, publishers=4)
            reply = await publisher.request("join", participant="pub", room=1000, video=True, stream_base=0)
            feed = reply["feed"]
        else:
            await publisher.request("join", participant="pub", room="r1", video=True, stream_base=0)

        async def subscriber(index: int) -> None:
            await asyncio.sleep(index * args.join_interval)
            worker = self.worker_for(index + 1)
            name = f"sub{index}"
            self.expect[name] = (worker, 1, 0)
            if self.target == "janus":
                await worker.request("subscribe", participant=name, room=1000, feed=feed)
            else:
                await worker.request("join", participant=name, room="r1")

        await asyncio.gather(*(subscriber(i) for i in range(n)))

    async def _join_sessions(self, args: argparse.Namespace) -> None:
        m = self.size
        self.result.participants = 2 * m
        self.result.video_streams = 2 * m

        async def session(index: int) -> None:
            await asyncio.sleep(index * args.join_interval)
            room = 2000 + index
            a, b = f"s{index}a", f"s{index}b"
            wa, wb = self.worker_for(index), self.worker_for(index + 1)
            self.expect[a] = (wa, 1, 1)
            self.expect[b] = (wb, 1, 1)
            common = {"video": True, "audio": True}
            if self.target == "janus":
                await wa.request("janus_room", room=room, publishers=2)
                ra = await wa.request("join", participant=a, room=room, stream_base=10 * index, **common)
                rb = await wb.request("join", participant=b, room=room, stream_base=10 * index + 5, **common)
                await asyncio.gather(
                    wa.request("subscribe", participant=a, room=room, feed=rb["feed"]),
                    wb.request("subscribe", participant=b, room=room, feed=ra["feed"]),
                )
            else:
                await wa.request("join", participant=a, room=f"s{index}", stream_base=10 * index, **common)
                await wb.request("join", participant=b, room=f"s{index}", stream_base=10 * index + 5, **common)

        await asyncio.gather(*(session(i) for i in range(m)))

    async def _wait_first_frames(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while True:
            missing = 0
            for worker in self.workers:
                status = (await worker.request("status"))["participants"]
                for name, state in status.items():
                    if name not in self.expect:
                        continue
                    _, videos, audios = self.expect[name]
                    got_video = state["decoded"] if self.target == "relay" else state["video_first"] >= videos
                    if not got_video or state["audio_first"] < audios:
                        missing += 1
            if not missing or time.monotonic() > deadline:
                if missing:
                    self.result.errors.append(f"{missing} participants without media after {limit:.0f} s")
                return
            await asyncio.sleep(0.1)

    # --- the measurement window ---

    async def _measure(self) -> None:
        args = self.args
        STAGE[0] = f"{self.tag}: warm-up"
        await asyncio.sleep(args.warmup)
        groups = {"workers": [w.pid for w in self.workers]}
        if self.server_pid is not None:
            groups["server"] = [self.server_pid]
        meter = CpuMeter(groups)
        await asyncio.gather(*(w.request("mark") for w in self.workers))
        STAGE[0] = f"{self.tag}: measuring"
        start_ns = now_ns()
        meter.start()
        await asyncio.sleep(args.duration)
        self.result.cpu = meter.stop()
        end_ns = now_ns()
        if self.server_pid is not None:
            self.result.rss_loaded = psutil.Process(self.server_pid).memory_info().rss
        if args.profile and self.target == "sfu" and self._profile_this():
            STAGE[0] = f"{self.tag}: profiling"
            self.result.profile = await profile(self.server_pid, args.profile, self.tag, args.profile_seconds)
        await asyncio.sleep(args.grace)
        STAGE[0] = f"{self.tag}: collecting"
        if self.target == "sfu":
            self.result.server_stats = await server_stats(self.port)
        reports = []
        for worker in self.workers:
            reply = await worker.request(
                "report", wait=120, start_ns=start_ns, end_ns=end_ns, send_times=self.target == "relay"
            )
            reports += reply["reports"]
        if args.keep:
            dump = {"start_ns": start_ns, "end_ns": end_ns, "reports": reports}
            await asyncio.to_thread((self.work / f"{self.tag}.reports.json").write_text, json.dumps(dump))
        self._evaluate(reports, start_ns, end_ns)

    def _profile_this(self) -> bool:
        sizes = self.args.subscribers if self.scenario == "1xN" else self.args.sessions
        return self.size == max(sizes)

    def _evaluate(self, reports: list[dict[str, Any]], start_ns: int, end_ns: int) -> None:
        r = self.result
        published: dict[int, dict[str, Any]] = {}
        joins: dict[int, int] = {}
        for report in reports:
            r.errors += [f"{report['participant']}: {e}" for e in report["errors"]]
            for entry in report["published"]:
                published[entry["stream"]] = entry
                joins[entry["stream"]] = report["join_ns"]
                r.keyframes_on_request += entry["keyframes_on_request"]
            pair = report["pair"]
            if pair is not None:
                r.pairs[f"{pair[0][0]}->{pair[1][0]}"] += 1
            else:
                r.no_pair += 1
            if any(state != "connected" for state in report["states"]):
                r.closed_early += 1
        sent = {"video": 0, "audio": 0}
        got = {"video": 0, "audio": 0}
        rtp_received = rtp_lost = 0
        for report in reports:
            name = report["participant"]
            if name not in self.expect:
                continue
            if report["connected_ns"] is not None and report["join_ns"]:
                r.connected.append((report["connected_ns"] - report["join_ns"]) / 1e6)
            rtp_received += report["rtp"]["video"][0]
            rtp_lost += report["rtp"]["video"][1]
            if self.target == "relay":
                self._evaluate_decoded(report, published, joins, sent, got, start_ns, end_ns)
                continue
            streams = {e["stream"]: e for e in report["received"]}
            for stream_id, pub in published.items():
                if stream_id in streams or self._should_receive(name, stream_id):
                    entry = streams.get(stream_id)
                    sent[pub["kind"]] += pub["sent_window"]
                    if entry is None:
                        if pub["kind"] == "video":
                            r.missing_first += 1
                        continue
                    got[pub["kind"]] += entry["recv_window"]
                    (r.latency if pub["kind"] == "video" else r.audio_latency).extend(entry["latency_ms"])
                    if pub["kind"] == "video":
                        if entry["first_key_ns"] is None:
                            r.missing_first += 1
                        else:
                            since = max(report["join_ns"], joins[stream_id])
                            r.first_frame.append((entry["first_key_ns"] - since) / 1e6)
        r.video_loss = 1 - got["video"] / sent["video"] if sent["video"] else None
        r.audio_loss = 1 - got["audio"] / sent["audio"] if sent["audio"] else None
        total = rtp_received + rtp_lost
        r.rtp_loss = rtp_lost / total if total else None

    def _should_receive(self, participant: str, stream_id: int) -> bool:
        if self.scenario == "1xN":
            return participant.startswith("sub")
        index = int(participant[1:-1])
        other = 10 * index + (0 if participant.endswith("b") else 5)
        return stream_id in (other + 1, other + 2)

    def _evaluate_decoded(
        self,
        report: dict[str, Any],
        published: dict[int, dict[str, Any]],
        joins: dict[int, int],
        sent: dict[str, int],
        got: dict[str, int],
        start_ns: int,
        end_ns: int,
    ) -> None:
        """Relay baseline: match the number drawn in each decoded picture to the publisher's send times."""
        r = self.result
        pub = published[1]
        by_index: dict[int, list[tuple[int, int]]] = {}
        for seq, t in pub["send_times"]:
            by_index.setdefault(seq % CLIP_FRAMES, []).append((t, seq))
        matched: set[int] = set()
        for number, arrived in report["decoded"]:
            candidates = [(t, s) for t, s in by_index.get(number, []) if t <= arrived]
            if not candidates:
                continue
            t, seq = max(candidates)
            if arrived - t > CLIP_FRAMES / FPS * 1e9 / 2 or not start_ns <= t < end_ns or seq in matched:
                continue
            matched.add(seq)
            r.latency.append((arrived - t) / 1e6)
        sent["video"] += pub["sent_window"]
        got["video"] += len(matched)
        if report["first_decoded_ns"] is None:
            r.missing_first += 1
        else:
            r.first_frame.append((report["first_decoded_ns"] - max(report["join_ns"], joins[1])) / 1e6)


async def server_stats(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    try:
        writer.write(json.dumps({"id": 1, "op": "stats"}).encode() + b"\n")
        async with asyncio.timeout(20):
            line = await reader.readline()
        return dict(json.loads(line))
    finally:
        writer.close()


# --- profiling -------------------------------------------------------------------------------------------------------


def _py_spy(folder: Path) -> str | None:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return spy


async def profile(pid: int | None, folder: Path, tag: str, seconds: float) -> str | None:
    """py-spy record of the server (raw collapsed stacks in ``folder``); returns a summary."""
    spy = _py_spy(folder)
    if pid is None or spy is None:
        return "py-spy not found (.venv/bin/pip install py-spy)"
    out = folder / f"{tag}.txt"
    proc = await spawn(
        spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--nonblocking",
        "--format", "raw", "--output", str(out), stdin=False, log_path=folder / f"{tag}.py-spy.log",
    )  # fmt: skip
    async with asyncio.timeout(seconds + 30):
        await proc.wait()
    if not await asyncio.to_thread(out.exists):
        return f"py-spy wrote nothing (see {folder / f'{tag}.py-spy.log'})"
    return summarize_profile(out)


def summarize_profile(path: Path, top: int = 14) -> str:
    """Self time per line and inclusive time per function ("func (file)") from py-spy's raw collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for function in {f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames}:
            inclusive[function] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples (on-CPU, all threads); self time by line:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    ours = [(f, c) for f, c in inclusive.most_common() if any(k in f for k in ("signalling/", "aiortc/", "aioice/"))]
    lines.append("inclusive time by function (signalling/aiortc/aioice):")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in ours[:top]]
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def print_results(results: list[Result], floor: Result | None) -> None:
    floor50 = pct(floor.latency, 50) if floor else None
    floor95 = pct(floor.latency, 95) if floor else None
    log("")
    header = (
        f"{'scenario':<36} {'srv cores':>9} {'core/vstream':>12} {'RSS/part':>9} {'v loss':>7} {'rtp loss':>8} "
        f"{'a loss':>7} {'lat p50/p95 ms':>15} {'added p50/p95':>14} {'a lat p50/p95':>14} {'join->1st p50/p95':>18} "
        f"{'clients':>7} {'machine':>7}"
    )
    log(header)
    log("-" * len(header))
    for r in results:
        p50, p95 = pct(r.latency, 50), pct(r.latency, 95)
        added = "–"
        if p50 is not None and floor50 is not None and p95 is not None and floor95 is not None and r.target != "direct":
            added = f"{p50 - floor50:.1f}/{p95 - floor95:.1f}"
        audio = "–" if not r.audio_latency else f"{pct(r.audio_latency, 50):.1f}/{pct(r.audio_latency, 95):.1f}"
        first = "–" if not r.first_frame else f"{pct(r.first_frame, 50):.0f}/{pct(r.first_frame, 95):.0f}"
        lat = "–" if p50 is None or p95 is None else f"{p50:.1f}/{p95:.1f}"
        log(
            f"{r.label:<36} {fmt(r.server_cores, '.3f'):>9} {fmt(r.per_stream, '.4f'):>12} "
            f"{fmt(r.rss_per_participant, '.2f', 'M'):>9} {fmt(pct_of(r.video_loss), '.2f', '%'):>7} "
            f"{fmt(pct_of(r.rtp_loss), '.2f', '%'):>8} {fmt(pct_of(r.audio_loss), '.2f', '%'):>7} {lat:>15} "
            f"{added:>14} {audio:>14} {first:>18} {fmt(r.cpu.get('workers'), '.2f'):>7} "
            f"{fmt(r.cpu.get('machine'), '.2f'):>7}"
        )
    log("")
    for r in results:
        notes = []
        if r.missing_first:
            notes.append(f"{r.missing_first} subscriptions without a first frame")
        if r.server_stats:
            notes.append(
                f"SFU relays: {r.server_stats.get('frames_forwarded')} frames forwarded, "
                f"{r.server_stats.get('frames_dropped')} dropped"
            )
            keyframes = r.server_stats.get("keyframes")
            if keyframes:
                notes.append(
                    "SFU keyframe requests: {sent} of {requested} by the subscribers' relays (rate-limited), "
                    "{buffer_gave_up} for a packet lost for good, {buffer_reset} on a ring overflow/reset "
                    "({lean_plis} of these two on the lean path)".format(**keyframes)
                )
                notes.append(
                    f"SFU receive: {r.server_stats.get('nacks')} NACKs sent (lean path), "
                    f"{r.server_stats.get('ice_queue_dropped')} datagrams dropped by full ICE queues, "
                    f"{r.server_stats.get('rtp_lean')} of {r.server_stats.get('rtp_received')} RTP packets "
                    "on the lean path"
                )
        if r.connected:
            notes.append(f"join->connected p50/p95 {pct(r.connected, 50):.0f}/{pct(r.connected, 95):.0f} ms")
        if r.keyframes_on_request:
            notes.append(f"{r.keyframes_on_request} keyframes sent on PLI/FIR")
        if r.cpu.get("steal", 0) > 0.05:
            notes.append(f"steal {r.cpu['steal']:.2f} cores")
        notes.append("pairs " + ", ".join(f"{k} x{v}" for k, v in sorted(r.pairs.items())))
        if r.no_pair:
            notes.append(f"{r.no_pair} clients without a nominated pair")
        if r.closed_early:
            notes.append(f"{r.closed_early} clients no longer connected when their report was read")
        notes += r.errors[:5]
        log(f"  {r.label}: " + "; ".join(notes))


def pct_of(value: float | None) -> float | None:
    return None if value is None else 100 * value


def check_pairs(results: list[Result]) -> list[str]:
    """Every nominated pair must be loopback (127.0.0.0/8), and every client that connected must show its pair.

    Each client reads its pair when its connection comes up (``sfu_client.Participant.pair``), not at the report:
    aioice closes a connection whose ICE consent (RFC 7675) expired, which clears the pair.
    """
    problems = []
    for r in results:
        if r.errors and not r.pairs:
            continue
        hosts = {h for key in r.pairs for h in key.split("->")}
        if not r.pairs:
            problems.append(f"{r.label}: no nominated ICE pair seen")
        elif r.no_pair:
            problems.append(f"{r.label}: {r.no_pair} clients without a nominated ICE pair")
        elif any(not h.startswith("127.") for h in hosts):
            problems.append(f"{r.label}: non-loopback ICE pair {sorted(r.pairs)}")
    return problems


def judge(results: list[Result], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows."""
    rows: list[tuple[str, str, str]] = []

    def find(target: str, scenario: str, size: int) -> Result | None:
        return next(
            (r for r in results if (r.target, r.scenario, r.size) == (target, scenario, size) and not r.errors), None
        )

    one_to_n = [r for r in results if r.target == "sfu" and r.scenario == "1xN" and r.per_stream is not None]
    if one_to_n:
        biggest = max(one_to_n, key=lambda r: r.size)
        value = biggest.per_stream or 0
        rows.append(
            (
                f"≤ {TARGET_CORE_PER_STREAM} core per forwarded video stream",
                f"{value:.4f} at 1x{biggest.size} ("
                + ", ".join(f"N={r.size}: {r.per_stream:.4f}" for r in one_to_n)
                + ")",
                verdict(value <= TARGET_CORE_PER_STREAM),
            )
        )
    ratios = []
    for relay in (r for r in results if r.target == "relay" and r.per_stream):
        sfu = find("sfu", "1xN", relay.size)
        if sfu and sfu.per_stream:
            ratios.append((relay.size, relay.per_stream / sfu.per_stream))
    if ratios:
        worst = min(x for _, x in ratios)
        rows.append(
            (
                f"≥ {TARGET_RELAY_FACTOR:.0f}x below the aiortc relay (per stream)",
                ", ".join(f"N={n}: {x:.1f}x" for n, x in ratios),
                verdict(worst >= TARGET_RELAY_FACTOR),
            )
        )
    janus_ratios = []
    for janus in (r for r in results if r.target == "janus" and r.per_stream):
        sfu = find("sfu", janus.scenario, janus.size)
        if sfu and sfu.per_stream:
            janus_ratios.append((janus, sfu.per_stream / janus.per_stream))
    if janus_ratios:
        goal = [x for j, x in janus_ratios if j.scenario == "1xN" and j.size == max(args.subscribers)]
        rows.append(
            (
                f"ratio to Janus reported (goal ≤ {TARGET_JANUS_RATIO}x)",
                ", ".join(f"{'N' if j.scenario == '1xN' else 'M'}={j.size}: {x:.1f}x" for j, x in janus_ratios),
                verdict(bool(goal) and goal[0] <= TARGET_JANUS_RATIO, "goal met", "goal not met"),
            )
        )
    sessions = [r for r in results if r.target == "sfu" and r.scenario == "sessions"]
    if sessions:
        ok = [
            r
            for r in sessions
            if not r.errors and not r.missing_first and max(r.video_loss or 0, r.audio_loss or 0) < TARGET_LOSS
        ]
        best = max((r.size for r in ok), default=0)
        rows.append(
            (
                f"≥ {TARGET_SESSIONS} concurrent 1:1 A/V sessions, < {100 * TARGET_LOSS:.0f}% loss",
                ", ".join(
                    f"M={r.size}: video {fmt(pct_of(r.video_loss), '.2f', '%')} audio "
                    f"{fmt(pct_of(r.audio_loss), '.2f', '%')}"
                    for r in sessions
                ),
                verdict(best >= TARGET_SESSIONS, f"met ({best})", f"not met (largest passing: {best})"),
            )
        )
        clean = [r for r in ok if r.server_cores and r.cpu.get("machine", 2) < 0.9 * (psutil.cpu_count() or 2)]
        if clean:
            ref = max(clean, key=lambda r: r.size)
            per_session = (ref.server_cores or 0) / ref.size
            rows.append(
                (
                    "  extrapolated: sessions if the SFU had every core",
                    f"{per_session:.3f} cores per 1:1 A/V session at M={ref.size} (machine not saturated) -> "
                    f"~{(psutil.cpu_count() or 2) / per_session:.0f} sessions on {psutil.cpu_count()} cores",
                    "(estimate)",
                )
            )
    firsts = [(r, pct(r.first_frame, 95)) for r in results if r.target == "sfu" and r.first_frame]
    if firsts:
        worst = max(v or 0 for _, v in firsts)
        rows.append(
            (
                f"join → first frame p95 ≤ {TARGET_FIRST_FRAME_MS:.0f} ms",
                ", ".join(f"{short(r)}: {v:.0f}" for r, v in firsts),
                verdict(worst <= TARGET_FIRST_FRAME_MS),
            )
        )
    rss = [r for r in results if r.target == "sfu" and r.rss_per_participant is not None]
    if rss:
        judged = [r for r in rss if r.participants >= 8] or rss
        worst_rss = max(r.rss_per_participant or 0 for r in judged)
        rows.append(
            (
                f"RSS ≤ {TARGET_RSS_MIB:.0f} MiB per participant",
                ", ".join(f"{short(r)}: {r.rss_per_participant:.2f}" for r in rss),
                verdict(worst_rss <= TARGET_RSS_MIB),
            )
        )
    return rows


def short(r: Result) -> str:
    return f"1x{r.size}" if r.scenario == "1xN" else f"{r.size}s"


def verdict(ok: bool, yes: str = "met", no: str = "NOT met") -> str:
    return yes if ok else no


def parse_sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=parse_sizes, help="N list for 1xN (default 1,2,4,8,16,32)")
    parser.add_argument("--sessions", type=parse_sizes, help="M list of 1:1 A/V sessions (default 2,4,10,25,50)")
    parser.add_argument("--relay-subscribers", type=parse_sizes, help="N list for the relay baseline (default 1,2,4)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds between the last first frame and the window")
    parser.add_argument("--grace", type=float, default=1.0, help="seconds after the window for frames in flight")
    parser.add_argument("--join-interval", type=float, default=0.2, help="seconds between joins (subscribers/sessions)")
    parser.add_argument("--first-frame-timeout", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2, help="client worker processes")
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--skip-janus", action="store_true")
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--skip-sessions", action="store_true")
    parser.add_argument("--quick", "--smoke", action="store_true", help="seconds-long, small N (CI)")
    parser.add_argument("--profile", type=Path, help="py-spy record the SFU server (largest scenarios) into DIR")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="abort the whole run after this many seconds")
    parser.add_argument("--janus-bin", default=sfu_janus.janus_available() or "janus")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, raw reports)")
    args = parser.parse_args()
    full = {"subscribers": [1, 2, 4, 8, 16, 32], "sessions": [2, 4, 10, 25, 50], "relay_subscribers": [1, 2, 4]}
    quick = {"subscribers": [1, 4], "sessions": [2], "relay_subscribers": [1]}
    for name, default in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.quick:
        args.duration, args.warmup, args.grace, args.first_frame_timeout = 4.0, 1.0, 0.5, 15.0
        args.profile_seconds = min(args.profile_seconds, 3.0)
    return args


def wakeup_probe(gap: float = 0.033, bursts: int = 60) -> tuple[float, float]:
    """µs per SRTP protect + unprotect of a 1,100-byte RTP packet: back to back, and in bursts of 4 after ``gap`` idle.

    The SFU wakes up once per frame (about every 33 ms at 30 fps) and does a
    few packets' work; on a shared VM the caches are cold by then, so the
    same work costs several times more than in a tight loop.  This measures
    that factor on the machine the figures come from (about 2 s).
    """
    import struct

    import pylibsrtp

    key = os.urandom(30)
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    body = os.urandom(1100)
    sequence = itertools.count()

    def one() -> None:
        rx.unprotect(tx.protect(struct.pack("!BBHII", 0x80, 96, next(sequence) & 0xFFFF, 0, 1) + body))

    for _ in range(200):
        one()
    count = 2000
    start = time.perf_counter_ns()
    for _ in range(count):
        one()
    hot = (time.perf_counter_ns() - start) / count / 1000
    total = 0
    for _ in range(bursts):
        time.sleep(gap)
        start = time.perf_counter_ns()
        for _ in range(4):
            one()
        total += time.perf_counter_ns() - start
    return hot, total / (4 * bursts) / 1000


async def run(args: argparse.Namespace, work: Path) -> int:
    log(f"SFU forwarding benchmark; work folder {work}")
    log(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, load {os.getloadavg()}")
    hot, after_idle = await asyncio.to_thread(wakeup_probe)
    log(
        f"machine wake-up cost: SRTP protect+unprotect of a 1,100-byte packet {hot:.1f} µs back to back, "
        f"{after_idle:.1f} µs in bursts of 4 after 33 ms idle ({after_idle / hot:.1f}×)"
    )
    STAGE[0] = "encoding the clip"
    clip = await asyncio.to_thread(load_clip, work / "clip.pkl")
    log(f"clip: {CLIP_FRAMES} frames 640x480 VP8, {clip.video_bitrate / 1e6:.2f} Mbit/s at {FPS} fps, Opus 20 ms")
    janus = None if args.skip_janus else sfu_janus.janus_available()
    if not args.skip_janus and janus is None:
        log("Janus: not installed (apt-get install janus); the Janus baseline is skipped")
    plan: list[tuple[str, str, int]] = []
    if not args.skip_direct:
        plan.append(("direct", "1xN", 1))
    for n in args.subscribers:
        plan.append(("sfu", "1xN", n))
        if not args.skip_relay and n in args.relay_subscribers:
            plan.append(("relay", "1xN", n))
        if janus:
            plan.append(("janus", "1xN", n))
    if not args.skip_sessions:
        for m in args.sessions:
            plan.append(("sfu", "sessions", m))
            if janus:
                plan.append(("janus", "sessions", m))
    results: list[Result] = []
    for target, scenario, size in plan:
        began = time.monotonic()
        result = await Scenario(args, work, target, scenario, size).run()
        results.append(result)
        lat = pct(result.latency, 50)
        log(
            f"  {result.label:<36} {time.monotonic() - began:5.1f} s  server {fmt(result.server_cores, '.3f')} cores, "
            f"clients {fmt(result.cpu.get('workers'), '.2f')}, machine {fmt(result.cpu.get('machine'), '.2f')}, "
            f"video loss {fmt(pct_of(result.video_loss), '.2f', '%')}, latency p50 {fmt(lat, '.1f', ' ms')}"
            + (f"  ERRORS: {result.errors[:2]}" if result.errors else "")
        )
    floor = next((r for r in results if r.target == "direct"), None)
    print_results(results, floor)
    for r in results:
        if r.profile:
            log(f"\npy-spy profile of the SFU server, {r.label} (raw stacks in {args.profile}):\n{r.profile}")
    problems = check_pairs(results)
    for problem in problems:
        log(f"ICE: {problem}")
    log("\nTargets" + (" (--quick: indicative only)" if args.quick else "") + ":")
    rows = judge(results, args)
    width = max((len(t) for t, _, _ in rows), default=10)
    for target, measured, outcome in rows:
        log(f"  {target:<{width}}  {outcome:<14} {measured}")
    if janus is None and not args.skip_janus:
        log("  Janus ratio: not measured (Janus not installed)")
    failed = any(r.errors for r in results) or problems
    missed = any(v.startswith("NOT") or v == "goal not met" or v.startswith("not met") for _, _, v in rows)
    if failed:
        return 2
    return 1 if args.strict and missed else 0


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="cw-sfu-bench-"))

    async def guarded() -> int:
        try:
            async with asyncio.timeout(args.timeout):
                return await run(args, work)
        except TimeoutError:
            log(f"\nABORTED: the run exceeded --timeout {args.timeout:.0f} s during stage '{STAGE[0]}'")
            kill_spawned()
            return 3
        finally:
            kill_spawned()

    try:
        code = asyncio.run(guarded())
    except KeyboardInterrupt:
        kill_spawned()
        code = 130
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
