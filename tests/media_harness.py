"""Real aiortc client peers, synthetic media and a call driver for the SFU tests.

Everything runs in one process on 127.0.0.1: the clients gather inside
``gather_from(["127.0.0.1"])`` and use no ICE servers.  Video frames carry a
readable number: a grid of black/white blocks (8 x 4 = 32 bits: an 8-bit
source tag, a 16-bit frame number, an 8-bit check), big enough to survive
VP8/H.264 at any bitrate the encoders pick.  A frame whose check fails is
counted as unreadable, never as a number.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, TypeVar

import socketio
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from signalling.sfu import MediaNetworkConfig, MediaRoom, NegotiationNeeded, RoomEvent
from signalling.sfu.errors import MediaRoomError
from signalling.sfu.network import gather_from
from signalling.sfu.peer import MediaOffer

LOOPBACK = ("127.0.0.1",)
CONFIG = MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",))

COLS, ROWS = 8, 4
VIDEO_CLOCK = 90000

T = TypeVar("T")


class DecoderWatch:
    """Decoders created by aiortc's decoder threads: on the server's receivers (must stay empty), on clients."""

    def __init__(self) -> None:
        self.server_decoders: list[str] = []
        self.client_decoders = 0


# --- the frame-number pattern ----------------------------------------------------------------------------------------


def _check(tag: int, number: int) -> int:
    return (tag * 31 + number * 7 + (number >> 8) * 13 + 0x5A) & 0xFF


def _bits(tag: int, number: int) -> list[int]:
    word = (tag & 0xFF) << 24 | (number & 0xFFFF) << 8 | _check(tag, number)
    return [(word >> (31 - i)) & 1 for i in range(32)]


def draw(width: int, height: int, tag: int, number: int, *, textured: bool = False) -> VideoFrame:
    """The frame's number in luma blocks; ``textured``: random chroma too, so that frames need several RTP packets."""
    frame = VideoFrame(width, height, "yuv420p")
    bits = _bits(tag, number)
    luma = frame.planes[0]
    stride = luma.line_size
    block_w, block_h = width // COLS, height // ROWS
    rows = []
    for r in range(ROWS):
        line = b"".join((b"\xeb" if bits[r * COLS + c] else b"\x10") * block_w for c in range(COLS))
        line = line.ljust(stride, b"\x10")
        rows.append(line * block_h)
    data = b"".join(rows).ljust(luma.buffer_size, b"\x10")
    luma.update(data[: luma.buffer_size])
    for plane in frame.planes[1:]:
        plane.update(os.urandom(plane.buffer_size) if textured else b"\x80" * plane.buffer_size)
    return frame


def read(frame: VideoFrame) -> tuple[int, int] | None:
    """(tag, number) drawn by :func:`draw`, or ``None`` if the check fails."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    luma = frame.planes[0]
    data = bytes(luma)
    stride = luma.line_size
    block_w, block_h = frame.width // COLS, frame.height // ROWS
    word = 0
    for r in range(ROWS):
        for c in range(COLS):
            cx, cy = c * block_w + block_w // 2, r * block_h + block_h // 2
            total = 0
            for dy in (-2, 0, 2):
                base = (cy + dy) * stride + cx
                total += data[base - 2] + data[base] + data[base + 2]
            word = word << 1 | (1 if total > 9 * 128 else 0)
    tag, number, check = word >> 24, (word >> 8) & 0xFFFF, word & 0xFF
    return (tag, number) if check == _check(tag, number) else None


# --- synthetic sources -----------------------------------------------------------------------------------------------


class NumberedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, tag: int, width: int = 320, height: int = 240, fps: int = 15, *, textured: bool = False) -> None:
        super().__init__()
        self.tag, self.width, self.height, self.fps = tag, width, height, fps
        self.textured = textured
        self.number = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + self.number / self.fps
        if target > now:
            await asyncio.sleep(target - now)
        self.number += 1
        frame = draw(self.width, self.height, self.tag, self.number, textured=self.textured)
        frame.pts = self.number * (VIDEO_CLOCK // self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        return frame


class ToneAudioTrack(MediaStreamTrack):
    kind = "audio"
    SAMPLES = 960  # 20 ms at 48 kHz

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self._pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 48000))) for i in range(self.SAMPLES)
        )
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + self._count * 0.02
        if target > now:
            await asyncio.sleep(target - now)
        frame = AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.sample_rate = 48000
        frame.pts = self._count * self.SAMPLES
        frame.time_base = Fraction(1, 48000)
        self._count += 1
        return frame


def audio_level(frame: AudioFrame) -> int:
    """Peak absolute sample of an s16 frame."""
    samples = array("h", bytes(frame.planes[0])[: frame.samples * len(frame.layout.channels) * 2])
    return max(max(samples), -min(samples)) if samples else 0


# --- a client --------------------------------------------------------------------------------------------------------


@dataclass
class Received:
    """What one client decoded on one m-section."""

    video: list[tuple[int, int, float]] = field(default_factory=list)  # (tag, number, monotonic time)
    by_tag: dict[int, list[int]] = field(default_factory=dict)
    unreadable: int = 0
    audio_frames: int = 0
    audio_loud_frames: int = 0


class Client:
    """A browser stand-in: answers the server's offers, publishes synthetic media, decodes what it receives."""

    def __init__(
        self,
        participant_id: str,
        tag: int,
        *,
        size: tuple[int, int] = (320, 240),
        fps: int = 15,
        audio: bool = True,
        video: bool = True,
        textured: bool = False,
        gather: tuple[str, ...] = LOOPBACK,
    ) -> None:
        self.participant_id = participant_id
        self.tag = tag
        #: The addresses this client offers host candidates on (in this order).
        self.gather = gather
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.camera = NumberedVideoTrack(tag, *size, fps=fps, textured=textured) if video else None
        self.mic = ToneAudioTrack() if audio else None
        self.screen: NumberedVideoTrack | None = None
        self._size, self._fps = size, fps
        self.received: dict[str, Received] = {}
        self._by_tag: dict[int, list[int]] = {}
        self.offers: list[MediaOffer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("track", self._on_track)

    def start_screen(self) -> NumberedVideoTrack:
        self.screen = NumberedVideoTrack(self.tag + 100, *self._size, fps=self._fps)
        return self.screen

    async def answer(self, offer: MediaOffer) -> str:
        self.offers.append(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        tracks = {"audio": self.mic, "camera": self.camera, "screen": self.screen}
        for transceiver in self.pc.getTransceivers():
            label = offer.publish.get(transceiver.mid or "")
            if label is None:
                continue
            track = tracks[label]
            if track is not None and transceiver.sender.track is not track:
                transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly" if track is not None else "inactive"
        answer = await self.pc.createAnswer()
        with gather_from(self.gather):
            await self.pc.setLocalDescription(answer)
        return str(self.pc.localDescription.sdp)

    def transceiver(self, mid: str) -> RTCRtpTransceiver:
        return next(t for t in self.pc.getTransceivers() if t.mid == mid)

    def _on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        mid = transceiver.mid or "?"
        task = asyncio.ensure_future(self._consume(mid, track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        received = self.received.setdefault(mid, Received())
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                value = read(frame)
                if value is None:
                    received.unreadable += 1
                else:
                    received.video.append((*value, time.monotonic()))
                    received.by_tag.setdefault(value[0], []).append(value[1])
                    self._by_tag.setdefault(value[0], []).append(value[1])
            elif isinstance(frame, AudioFrame):
                received.audio_frames += 1
                if audio_level(frame) > 2000:
                    received.audio_loud_frames += 1

    def from_tag(self, tag: int) -> list[int]:
        """Frame numbers received from the source ``tag``, in arrival order, across all m-sections."""
        return self._by_tag.get(tag, [])

    def audio_on(self, mid: str) -> Received:
        return self.received.get(mid, Received())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# --- a call ----------------------------------------------------------------------------------------------------------


class Call:
    """A room plus clients; answers every ``NegotiationNeeded`` as a browser would."""

    def __init__(self, config: MediaNetworkConfig = CONFIG, **room_kwargs: object) -> None:
        self.events: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self.log: list[RoomEvent] = []
        self.room = MediaRoom("test-room", config, listener=self._listen, **room_kwargs)  # type: ignore[arg-type]
        self.clients: dict[str, Client] = {}
        self.errors: list[BaseException] = []
        self._pump = asyncio.ensure_future(self._run())

    def _listen(self, event: RoomEvent) -> None:
        self.log.append(event)
        self.events.put_nowait(event)

    async def _run(self) -> None:
        # Clients answer independently of each other (as separate browsers do), each its offers in order.
        chains: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, NegotiationNeeded):
                    previous = chains.get(event.participant_id)
                    chains[event.participant_id] = asyncio.ensure_future(self._answer(event, previous))
        finally:
            for task in chains.values():
                task.cancel()
            await asyncio.gather(*chains.values(), return_exceptions=True)

    async def _answer(self, event: NegotiationNeeded, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        client = self.clients.get(event.participant_id)
        if client is None or client.pc.signalingState == "closed":
            return
        try:
            sdp = await client.answer(event.offer)
            await self.room.answer(event.participant_id, sdp, event.offer.revision)
        except MediaRoomError as exc:
            if exc.code not in ("stale_answer", "unknown_participant", "no_offer_outstanding"):
                self.errors.append(exc)
        except Exception as exc:
            self.errors.append(exc)

    async def join(self, client: Client) -> MediaOffer:
        self.clients[client.participant_id] = client
        offer = await self.room.join(client.participant_id)
        sdp = await client.answer(offer)
        await self.room.answer(client.participant_id, sdp, offer.revision)
        return offer

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)
        await self.room.close()
        for client in self.clients.values():
            await client.close()
        if self.errors:
            raise self.errors[0]


async def until(predicate: Callable[[], bool], within: float, message: str = "condition") -> float:
    """Poll ``predicate`` every 20 ms; returns the seconds it took, fails the test after ``within`` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within}s waiting for {message}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def until_steady(value: Callable[[], T], quiet: float, within: float, message: str = "value") -> T:
    """Poll ``value()`` every 0.1 s until unchanged for ``quiet`` seconds; returns it, fails after ``within`` s."""
    start = last_change = time.monotonic()
    current = value()
    while time.monotonic() - last_change < quiet:
        if time.monotonic() - start > within:
            raise AssertionError(f"{message} still changing after {within}s")
        await asyncio.sleep(0.1)
        now = value()
        if now != current:
            current, last_change = now, time.monotonic()
    return current


def assert_numbers_sane(numbers: list[int], sent: int, minimum: int) -> None:
    """Strictly increasing, never more than the source produced, at least ``minimum`` of them."""
    assert len(numbers) >= minimum, f"only {len(numbers)} frames received (wanted {minimum})"
    assert all(b > a for a, b in itertools.pairwise(numbers)), "frame numbers not strictly increasing"
    assert numbers[-1] <= sent, f"received frame {numbers[-1]} but only {sent} were produced"


# --- a browser stand-in speaking the Socket.IO protocol (docs/protocol.md) --------------------------------------------


class Caller:
    """One browser stand-in: a socket, a peer connection, and the offers answered in order."""

    def __init__(self, base_url: str, token: str, tag: int) -> None:
        self.url = base_url
        self.token = token
        self.tag = tag
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.media: Client | None = None
        self.participant_id = ""
        self.errors: list[Any] = []
        self._chain: asyncio.Future[None] | None = None
        self._closing = False
        self.sio.on("*", self._record)
        self.sio.on("media.offer", self._on_offer)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def _on_offer(self, data: dict[str, Any]) -> None:
        self.events.append(("media.offer", data))
        previous = self._chain

        async def answer() -> None:
            # Each offer is answered even if answering the previous one failed: a broken chain would leave the server
            # waiting for an answer forever and every later track missing here, with nothing said about why.
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self._answer(data)
            except Exception as exc:  # recorded (the fixture fails the test on it) unless this caller is closing
                if not self._closing:
                    self.errors.append({"answering": data.get("revision"), "exception": repr(exc)})

        self._chain = asyncio.ensure_future(answer())

    async def _answer(self, offer: dict[str, Any]) -> None:
        assert self.media is not None
        if self.media.pc.signalingState == "closed":
            return  # an offer for a connection this client already gave up (it rejoins)
        sdp = await self.media.answer(SimpleNamespace(**offer))  # type: ignore[arg-type]
        ack = await self.sio.call("media.answer", {"sdp": sdp, "revision": offer["revision"]}, timeout=10)
        if not ack["ok"] and ack["error"]["code"] != "stale_answer":
            self.errors.append(ack)

    def unexpected_errors(self) -> list[Any]:
        """``errors`` without the refusals of answers that crossed this caller's removal or the session's end.

        An offer sent just before a moderator removes the participant (or the
        session ends) may be answered after it: the server then refuses the
        answer with ``unknown_participant``, which is the right outcome.
        """
        gone = any(e in ("session.removed", "session.ended") for e, _ in self.events)
        return [
            e
            for e in self.errors
            if not (gone and isinstance(e, dict) and e.get("error", {}).get("code") == "unknown_participant")
        ]

    async def connect(self) -> None:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=5)

    async def join(self, session_id: int) -> dict[str, Any]:
        if self.media is not None:
            await self.media.close()
        ack = await self.sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert ack["ok"], ack
        self.participant_id = ack["participant_id"]
        self.media = Client(self.participant_id, self.tag)
        await self._answer(ack["offer"])
        return dict(ack)

    async def close(self) -> None:
        # Stop new offers first, let an answer in hand finish, then close the peer connection.
        self._closing = True
        if self.sio.connected:
            await self.sio.disconnect()
        if self._chain is not None:
            await asyncio.gather(self._chain, return_exceptions=True)
        if self.media is not None:
            await self.media.close()
