"""A client worker process of the SFU benchmark: many aiortc participants in one event loop.

Started by ``bench/sfu_forward.py``; reads JSON-line commands on stdin and
answers on stdout (``{"id", "ok", ...}``).  Participants publish the
pre-encoded clip (:mod:`sfu_media`) and never decode what they receive
(their receivers are adopted with the SFU's own ``adopt_receiver``), except
in the relay baseline, where what arrives was re-encoded and is decoded to
read the frame number from the picture.

Targets (``init``'s ``mode``):

* ``sfu`` / ``relay``: the server process (``bench/sfu_server.py``) over its
  127.0.0.1 TCP control channel; the server is the only offerer.
* ``janus``: Janus VideoRoom over its HTTP API; publishers offer,
  subscribers answer Janus' offer, one peer connection per subscription.
  Janus' ICE (libnice) never gathers on a loopback *interface*, so this
  worker runs in a private network namespace made by the driver (``unshare
  --net``): ``--netns-setup`` brings ``lo`` up and puts 127.0.0.2/32 on a
  veth pair that exists only inside that namespace; Janus and every client
  gather on 127.0.0.2.  Nothing there can reach another host.
* ``direct``: two participants connected to each other without a server
  (the latency floor of the clients themselves).

Every peer connection uses ``RTCConfiguration(iceServers=[])`` and gathers
inside :func:`signalling.sfu.network.gather_from`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from sfu_janus import JanusError, JanusSession
from sfu_media import MAGIC, TRAILER, Clip, ClipAudioTrack, ClipVideoTrack, load_clip, now_ns, read_number

from signalling.sfu.network import gather_from
from signalling.sfu.passthrough import (
    EncodedFrame,
    EncodedTrack,
    RelayTrack,
    adopt_receiver,
    adopt_sender,
    lean_receiver,
)
from signalling.sfu.peer import nominated_pair

logger = logging.getLogger("sfu_client")
NETNS_ADDRESS = "127.0.0.2"


def rtc_configuration() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


# --- receive probes --------------------------------------------------------------------------------------------------


class StreamArrivals:
    """One received stream (keyed by the publisher's stream id, from the trailer)."""

    __slots__ = ("first_key_ns", "first_ns", "kind", "seqs")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.seqs: dict[int, tuple[int, int]] = {}  # seq -> (sent ns, arrived ns)
        self.first_ns: int | None = None  # end of the first frame
        self.first_key_ns: int | None = None  # end of the first keyframe (the first decodable frame)


class Probe:
    """Per receiver: reads the trailer of each frame's last RTP packet as it arrives (before the jitter buffer)."""

    def __init__(self, streams: dict[int, StreamArrivals]) -> None:
        self.streams = streams

    def attach(self, receiver: Any, kind: str) -> None:
        streams = self.streams
        key_timestamp: list[int | None] = [None]
        keyframe_seen = [kind != "video"]

        def observe(timestamp: int, payload: bytes) -> None:
            arrived = now_ns()
            if not keyframe_seen[0] and payload:
                with contextlib.suppress(ValueError, IndexError):
                    descriptor, rest = VpxPayloadDescriptor.parse(payload)
                    if descriptor.partition_start and descriptor.partition_id == 0 and rest and not rest[0] & 1:
                        key_timestamp[0] = timestamp
            if len(payload) >= TRAILER.size and payload[-TRAILER.size : -TRAILER.size + 4] == MAGIC:
                _, stream_id, seq, sent = TRAILER.unpack_from(payload, len(payload) - TRAILER.size)
                arrivals = streams.get(stream_id)
                if arrivals is None:
                    arrivals = streams[stream_id] = StreamArrivals(kind)
                if arrivals.first_ns is None:
                    arrivals.first_ns = arrived
                if not keyframe_seen[0] and timestamp == key_timestamp[0]:
                    keyframe_seen[0] = True
                if arrivals.first_key_ns is None and keyframe_seen[0]:
                    arrivals.first_key_ns = arrived
                if seq not in arrivals.seqs:
                    arrivals.seqs[seq] = (sent, arrived)

        lean = lean_receiver(receiver)
        if lean is not None:
            # An adopted receiver: its packets skip _handle_rtp_packet (signalling.sfu.receive), except any that
            # aiortc's loop had queued before the lean path took over, which the wrapper below still sees.
            lean.probe = observe
        original = receiver._handle_rtp_packet

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            observe(packet.timestamp, packet.payload)
            await original(packet, arrival_time_ms)

        setattr(receiver, "_handle_rtp_packet", handle_rtp_packet)  # noqa: B010 - per-instance probe


# --- publishing through the SFU's send path ---------------------------------------------------------------------------


class ForwardedPublication:
    """Sends a clip track through the SFU's own send path instead of aiortc's per-packet ``_run_rtp``.

    The clip track is paced as before (``recv()``); each frame goes into an
    ``EncodedTrack`` whose ``RelayTrack`` is the sender's track, so the
    sender gets an ``RtpForwarder`` (``adopt_sender``): one packetisation per
    frame, the RTP header from a precomputed layout, SRTP and ``sendto``.
    Reading starts when the sender starts (DTLS up), as aiortc's loop did.
    PLI/FIR still set aiortc's ``__force_keyframe``, which the clip track
    answers with an intra frame.
    """

    def __init__(self, track: ClipVideoTrack | ClipAudioTrack, tasks: set[asyncio.Task[None]]) -> None:
        self.track = track
        self.mime_type = "video/vp8" if track.kind == "video" else "audio/opus"
        self.source = EncodedTrack(track.kind)
        self.relay = RelayTrack(track.kind, end_with_source=False, mime_type=self.mime_type)
        self.relay.attach(self.source)
        self._tasks = tasks
        self._sender: Any = None

    def bind(self, sender: Any) -> None:
        self.track.sender = sender
        if sender.track is not self.relay:
            sender.replaceTrack(self.relay)
        if sender is self._sender:
            return
        self._sender = sender
        adopt_sender(sender, self.relay.request_keyframe)
        task = asyncio.ensure_future(self._pump(sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, sender: Any) -> None:
        await sender._RTCRtpSender__rtp_started.wait()
        sequence = 0
        while True:
            try:
                packet = await self.track.recv()
            except MediaStreamError:
                return
            data = bytes(packet)
            self.source.push(
                EncodedFrame(data, packet.pts, packet.time_base, packet.is_keyframe, self.mime_type, sequence)
            )
            sequence += 1


# --- a participant ---------------------------------------------------------------------------------------------------


class Participant:
    def __init__(self, worker: Worker, participant_id: str, room: str, spec: dict[str, Any]) -> None:
        self.worker = worker
        self.participant_id = participant_id
        self.room = room
        clip = worker.clip
        base = int(spec.get("stream_base", 0))
        self.video = ClipVideoTrack(clip, base + 1) if spec.get("video") else None
        self.audio = ClipAudioTrack(clip, base + 2) if spec.get("audio") else None
        self.pcs: list[RTCPeerConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.publications = {
            label: ForwardedPublication(track, self._tasks)
            for label, track in (("audio", self.audio), ("camera", self.video))
            if track is not None
        }
        self.streams: dict[int, StreamArrivals] = {}
        self.probe = Probe(self.streams)
        self.decoded: list[tuple[int, int]] = []  # relay baseline: (number in the picture, arrival ns)
        self.first_decoded_ns: int | None = None
        self.join_ns = 0
        self.connected_ns: int | None = None
        # The nominated ICE pair, read as the first peer connection comes up (a connection that ICE consent
        # freshness closes later under load has none left by the time of the report).
        self.pair: tuple[tuple[str, int], tuple[str, int]] | None = None
        self.feed: int | None = None  # Janus publisher id
        self._handles: list[int] = []
        self._chain: asyncio.Future[None] | None = None
        self._rtp_mark: dict[str, list[int]] = {}
        self.errors: list[str] = []

    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration())
        self.pcs.append(pc)

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState == "connected" and self.connected_ns is None and pc is self.pcs[0]:
                self.connected_ns = now_ns()
                self.pair = nominated_pair(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self.worker.decode:
                task = asyncio.ensure_future(self._consume(track))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        return pc

    def prepare_receivers(self, pc: RTCPeerConnection) -> None:
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if getattr(receiver, "_bench_probed", False):
                continue
            receiver._bench_probed = True
            if not self.worker.decode:
                adopt_receiver(receiver)
            self.probe.attach(receiver, transceiver.kind)

    def attach_track(self, transceiver: Any, label: str | None) -> bool:
        publication = self.publications.get(label or "")
        if publication is None:
            return False
        publication.bind(transceiver.sender)
        return True

    def add_senders(self, pc: RTCPeerConnection) -> None:
        """Client-offered negotiation (Janus, direct): one sendonly transceiver per published track."""
        for label in ("audio", "camera"):
            publication = self.publications.get(label)
            if publication is not None:
                publication.bind(pc.addTransceiver(publication.relay, direction="sendonly").sender)

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                arrived = now_ns()
                number = read_number(frame)
                if number is not None:
                    if self.first_decoded_ns is None:
                        self.first_decoded_ns = arrived
                    self.decoded.append((number, arrived))

    # --- server-offered negotiation (sfu / relay) --------------------------------------------------------------------

    async def answer_offer(self, offer: dict[str, Any]) -> str:
        pc = self.pcs[0] if self.pcs else self.new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        self.prepare_receivers(pc)
        for transceiver in pc.getTransceivers():
            label = offer["publish"].get(transceiver.mid or "")
            if label is not None:
                transceiver.direction = "sendonly" if self.attach_track(transceiver, label) else "inactive"
        answer = await pc.createAnswer()
        with gather_from((self.worker.gather,)):
            await pc.setLocalDescription(answer)
        return str(pc.localDescription.sdp)

    def renegotiate(self, offer: dict[str, Any]) -> None:
        previous = self._chain

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                sdp = await self.answer_offer(offer)
                await self.worker.link.request(
                    "answer", room=self.room, participant=self.participant_id, sdp=sdp, revision=offer["revision"]
                )
            except Exception as exc:
                self.errors.append(f"renegotiation: {exc!r}")

        self._chain = asyncio.ensure_future(run())

    async def join_server(self) -> dict[str, Any]:
        self.join_ns = now_ns()
        link = self.worker.link
        self.worker.by_name[(self.room, self.participant_id)] = self
        reply = await link.request("join", room=self.room, participant=self.participant_id)
        offer = reply["offer"]
        sdp = await self.answer_offer(offer)
        await link.request(
            "answer", room=self.room, participant=self.participant_id, sdp=sdp, revision=offer["revision"]
        )
        return {"join_ns": self.join_ns, "answered_ns": now_ns()}

    # --- Janus (client offers to publish, answers to subscribe) ------------------------------------------------------

    async def janus_publish(self, room: int) -> dict[str, Any]:
        self.join_ns = now_ns()
        janus = self.worker.janus
        handle = await janus.attach()
        self._handles.append(handle)
        pc = self.new_pc()
        self.add_senders(pc)
        offer = await pc.createOffer()
        with gather_from((self.worker.gather,)):
            await pc.setLocalDescription(offer)
        event = await janus.message(
            handle,
            {
                "request": "joinandconfigure",
                "ptype": "publisher",
                "room": room,
                "display": self.participant_id,
                "audio": self.audio is not None,
                "video": self.video is not None,
            },
            {"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
        )
        self.feed = int(event["plugindata"]["data"]["id"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=event["jsep"]["sdp"], type="answer"))
        return {"join_ns": self.join_ns, "feed": self.feed, "answered_ns": now_ns()}

    async def janus_subscribe(self, room: int, feed: int, limit: float = 10.0) -> dict[str, Any]:
        if not self.join_ns:
            self.join_ns = now_ns()
        janus = self.worker.janus
        handle = await janus.attach()
        self._handles.append(handle)
        deadline = time.monotonic() + limit
        while True:  # a feed becomes available once its publisher's PeerConnection is up
            try:
                event = await janus.message(
                    handle, {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
                )
                break
            except JanusError as exc:
                if "428" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        pc = self.new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=event["jsep"]["sdp"], type="offer"))
        self.prepare_receivers(pc)
        answer = await pc.createAnswer()
        with gather_from((self.worker.gather,)):
            await pc.setLocalDescription(answer)
        await janus.message(handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})
        return {"answered_ns": now_ns()}

    # --- direct (no server) ------------------------------------------------------------------------------------------

    async def direct_offer(self) -> dict[str, Any]:
        self.join_ns = now_ns()
        pc = self.new_pc()
        self.add_senders(pc)
        offer = await pc.createOffer()
        with gather_from((self.worker.gather,)):
            await pc.setLocalDescription(offer)
        return {"sdp": pc.localDescription.sdp, "join_ns": self.join_ns}

    async def direct_answer(self, sdp: str) -> dict[str, Any]:
        self.join_ns = now_ns()
        pc = self.new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self.prepare_receivers(pc)
        answer = await pc.createAnswer()
        with gather_from((self.worker.gather,)):
            await pc.setLocalDescription(answer)
        return {"sdp": pc.localDescription.sdp, "join_ns": self.join_ns}

    async def direct_finish(self, sdp: str) -> dict[str, Any]:
        await self.pcs[0].setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return {}

    # --- figures -----------------------------------------------------------------------------------------------------

    async def rtp_counts(self) -> dict[str, list[int]]:
        """Per kind: [packets received, packets lost] summed over this participant's inbound RTP streams."""
        counts: dict[str, list[int]] = {"audio": [0, 0], "video": [0, 0]}
        for pc in self.pcs:
            for transceiver in pc.getTransceivers():
                report = await transceiver.receiver.getStats()
                for stats in report.values():
                    if getattr(stats, "type", None) == "inbound-rtp":
                        counts[transceiver.kind][0] += int(stats.packetsReceived or 0)
                        counts[transceiver.kind][1] += int(stats.packetsLost or 0)
        return counts

    async def mark(self) -> None:
        self._rtp_mark = await self.rtp_counts()

    async def report(self, start_ns: int, end_ns: int, send_times: bool) -> dict[str, Any]:
        published = []
        for track in (self.video, self.audio):
            if track is None:
                continue
            log = track.log
            entry: dict[str, Any] = {
                "stream": log.stream_id,
                "kind": log.kind,
                "sent_window": log.count_between(start_ns, end_ns),
                "sent_total": len(log.times),
                "keyframes_on_request": log.keyframes_on_request,
            }
            if send_times:
                entry["send_times"] = [(seq, t) for seq, t in enumerate(log.times) if start_ns - 10**10 <= t < end_ns]
            published.append(entry)
        received = []
        for stream_id, arrivals in self.streams.items():
            window = [(s, a) for s, a in arrivals.seqs.values() if start_ns <= s < end_ns]
            received.append(
                {
                    "stream": stream_id,
                    "kind": arrivals.kind,
                    "first_ns": arrivals.first_ns,
                    "first_key_ns": arrivals.first_key_ns,
                    "recv_window": len(window),
                    "latency_ms": [round((a - s) / 1e6, 3) for s, a in window],
                }
            )
        now = await self.rtp_counts()
        mark = self._rtp_mark
        rtp = {kind: [now[kind][i] - mark.get(kind, [0, 0])[i] for i in (0, 1)] for kind in now}
        return {
            "participant": self.participant_id,
            "room": self.room,
            "join_ns": self.join_ns,
            "connected_ns": self.connected_ns,
            "pair": self.pair,
            "pair_at_report": nominated_pair(self.pcs[0]) if self.pcs else None,
            "states": [pc.connectionState for pc in self.pcs],
            "published": published,
            "received": received,
            "rtp": rtp,
            "decoded": [(n, a) for n, a in self.decoded if start_ns - 10**9 <= a < end_ns + 10**10],
            "first_decoded_ns": self.first_decoded_ns,
            "errors": self.errors,
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pc in self.pcs:
            with contextlib.suppress(Exception):
                await pc.close()


# --- the link to the server ------------------------------------------------------------------------------------------


class ServerLink:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "event" in message:
                participant = self.worker.by_name.get((message["room"], message["participant"]))
                if participant is not None:
                    participant.renegotiate(message["offer"])
                continue
            future = self._waiting.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self._writer is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._writer.write(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        async with asyncio.timeout(30):
            reply = await future
        if not reply.get("ok"):
            raise RuntimeError(f"server refused {op}: {reply.get('error')}")
        return reply

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


# --- the worker ------------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self) -> None:
        self.mode = ""
        self.gather = "127.0.0.1"
        self.decode = False
        self.clip: Clip
        self.participants: dict[str, Participant] = {}
        self.by_name: dict[tuple[str, str], Participant] = {}
        self.link = ServerLink(self)
        self.janus: JanusSession
        self._http: aiohttp.ClientSession | None = None

    def participant(self, command: dict[str, Any]) -> Participant:
        key = command["participant"]
        found = self.participants.get(key)
        if found is None:
            found = self.participants[key] = Participant(self, key, str(command.get("room", "")), command)
        return found

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "init":
            self.mode = command["mode"]
            self.gather = command.get("gather", "127.0.0.1")
            self.decode = bool(command.get("decode"))
            self.clip = load_clip(Path(command["clip"]))
            if self.mode in ("sfu", "relay"):
                await self.link.connect(int(command["port"]))
            elif self.mode == "janus":
                self._http = aiohttp.ClientSession()
                self.janus = JanusSession(command["janus_url"], self._http)
                await self._wait_janus(command["janus_url"])
                await self.janus.create()
            return {}
        if op == "janus_room":
            handle = await self.janus.attach()
            await self.janus.message(
                handle,
                {
                    "request": "create",
                    "room": int(command["room"]),
                    "publishers": int(command.get("publishers", 64)),
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "bitrate": 0,
                    "fir_freq": 0,
                    "notify_joining": False,
                },
            )
            await self.janus.detach(handle)
            return {}
        if op == "join":
            participant = self.participant(command)
            if self.mode == "janus":
                return await participant.janus_publish(int(command["room"]))
            return await participant.join_server()
        if op == "subscribe":
            return await self.participant(command).janus_subscribe(int(command["room"]), int(command["feed"]))
        if op == "direct_offer":
            return await self.participant(command).direct_offer()
        if op == "direct_answer":
            return await self.participant(command).direct_answer(command["sdp"])
        if op == "direct_finish":
            return await self.participant(command).direct_finish(command["sdp"])
        if op == "status":
            return {
                "participants": {
                    p.participant_id: {
                        "video_first": sum(
                            1 for s in p.streams.values() if s.kind == "video" and s.first_key_ns is not None
                        ),
                        "audio_first": sum(1 for s in p.streams.values() if s.kind == "audio" and s.first_ns),
                        "decoded": p.first_decoded_ns is not None,
                        "states": [pc.connectionState for pc in p.pcs],
                        "errors": p.errors,
                    }
                    for p in self.participants.values()
                }
            }
        if op == "mark":
            for participant in self.participants.values():
                await participant.mark()
            return {}
        if op == "report":
            return {
                "reports": [
                    await p.report(int(command["start_ns"]), int(command["end_ns"]), bool(command.get("send_times")))
                    for p in self.participants.values()
                ]
            }
        if op == "close":
            await self.close()
            return {}
        raise ValueError(f"unknown op {op!r}")

    async def _wait_janus(self, url: str, limit: float = 10.0) -> None:
        assert self._http is not None
        deadline = time.monotonic() + limit
        while True:
            try:
                async with self._http.get(url.rstrip("/") + "/info", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Janus did not answer at {url} within {limit:.0f} s")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for participant in self.participants.values():
            await participant.close()
        await self.link.close()
        if self.mode == "janus":
            with contextlib.suppress(Exception):
                await self.janus.destroy()
        if self._http is not None:
            await self._http.close()


def setup_netns() -> None:
    """Inside a fresh ``unshare --net`` namespace: lo up, 127.0.0.2/32 on a namespace-local veth pair."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    names = [line.split(":")[1].strip() for line in links]
    if names != ["lo"]:
        raise SystemExit(f"--netns-setup must run in a fresh network namespace (found {names}); refusing")
    for command in (
        "ip link set lo up",
        "ip link add cwb0 type veth peer name cwb1",
        f"ip addr add {NETNS_ADDRESS}/32 dev cwb0",
        "ip link set cwb1 up",
        "ip link set cwb0 up",
    ):
        subprocess.run(command.split(), check=True)


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    tasks: set[asyncio.Task[None]] = set()

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    async def run(command: dict[str, Any], handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        try:
            reply({"id": command["id"], "ok": True, **await handler(command)})
        except Exception as exc:
            logger.exception("command %s failed", command.get("op"))
            reply({"id": command["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    while line := await reader.readline():
        command = json.loads(line)
        task = asyncio.ensure_future(run(command, worker.handle))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if command["op"] == "close":
            await task
            return
    await worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--netns-setup", action="store_true", help="configure a fresh network namespace first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="client %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.netns_setup:
        setup_netns()
    asyncio.run(serve(Worker()))


if __name__ == "__main__":
    main()
