"""The aiortc patch, keyframe detection, rate limiting and the bounded fan-out, without a network."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import aiortc
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from signalling.sfu import passthrough
from signalling.sfu.passthrough import (
    AIORTC_SUPPORTED,
    AiortcCompatibilityError,
    EncodedFrame,
    EncodedTrack,
    KeyframeRequester,
    PassthroughQueue,
    RelayTrack,
    adopt_receiver,
    check_aiortc,
    is_keyframe,
)
from tests.signalling.sfu.loop_clock import FakeClock

VIDEO = Fraction(1, 90000)


def frame(pts: int, key: bool = False, mime: str = "video/vp8", size: int = 20) -> EncodedFrame:
    time_base = VIDEO if mime.startswith("video/") else Fraction(1, 48000)
    return EncodedFrame(bytes(size), pts, time_base, key, mime)


# --- the patch -------------------------------------------------------------------------------------------------------


def test_patch_applies_to_installed_aiortc() -> None:
    assert AIORTC_SUPPORTED == ">=1.16,<1.17"
    assert passthrough._version_in(aiortc.__version__, AIORTC_SUPPORTED)
    check_aiortc()


async def test_adopted_receiver_forwards_instead_of_decoding() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        queue = adopt_receiver(receiver)
        assert receiver._RTCRtpReceiver__decoder_queue is queue  # type: ignore[attr-defined]
        got: list[EncodedFrame] = []
        queue.sink = got.append
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
        keyframe = b"\x10\x02\x00\x9d\x01\x2a" + bytes(10)
        queue.put((vp8, JitterFrame(keyframe, timestamp=3000)))
        queue.put((vp8, JitterFrame(b"\x31" + bytes(9), timestamp=6000)))
        assert [(f.pts, f.keyframe, f.mime_type, f.time_base) for f in got] == [
            (3000, True, "video/vp8", VIDEO),
            (6000, False, "video/vp8", VIDEO),
        ]
        assert queue.empty()  # frames never reach aiortc's decoder thread
        queue.put(None)  # the stop sentinel does
        assert queue.get_nowait() is None
        assert queue.frames == 2
    finally:
        await pc.close()


async def test_adopting_a_started_receiver_is_refused() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        receiver._RTCRtpReceiver__decoder_thread = object()  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            adopt_receiver(receiver)
        receiver._RTCRtpReceiver__decoder_thread = None  # type: ignore[attr-defined]
    finally:
        await pc.close()


def test_patch_refuses_changed_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpReceiver, "_send_rtcp_pli")
    with pytest.raises(AiortcCompatibilityError, match="_send_rtcp_pli"):
        check_aiortc()


def test_patch_refuses_other_aiortc_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(AiortcCompatibilityError, match="outside"):
        check_aiortc()


def test_a_sink_error_never_reaches_aiortc() -> None:
    queue = PassthroughQueue()

    def broken(frame: EncodedFrame) -> None:
        raise RuntimeError("bug")

    queue.sink = broken
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
    queue.put((opus, JitterFrame(b"\x01\x02", timestamp=960)))


# --- keyframes -------------------------------------------------------------------------------------------------------


def _encode(codec: str, count: int) -> list[bytes]:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height = 64, 48  # type: ignore[attr-defined]
    context.pix_fmt = "yuv420p"  # type: ignore[attr-defined]
    context.time_base = Fraction(1, 30)
    context.options = {"g": "100"} if codec == "libvpx" else {"g": "100", "tune": "zerolatency"}
    out: list[bytes] = []
    for i in range(count):
        image = av.VideoFrame(64, 48, "yuv420p")
        for plane in image.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        image.pts = i
        out += [bytes(p) for p in context.encode(image)]  # type: ignore[attr-defined]
    out += [bytes(p) for p in context.encode(None)]  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize(("codec", "mime"), [("libvpx", "video/VP8"), ("libx264", "video/H264")])
def test_keyframes_of_real_encoders_are_recognised(codec: str, mime: str) -> None:
    frames = _encode(codec, 5)
    assert len(frames) >= 3
    assert [is_keyframe(mime, f) for f in frames] == [True] + [False] * (len(frames) - 1)


def test_audio_is_always_a_keyframe() -> None:
    assert is_keyframe("audio/opus", b"\x00")
    assert not is_keyframe("video/vp8", b"")


def test_keyframe_requests_are_rate_limited_and_never_lost() -> None:
    clock = FakeClock()
    sent: list[float] = []
    requester = KeyframeRequester(lambda: sent.append(clock.now), min_interval=0.5, clock=clock)
    requester.request()
    for _ in range(10):
        clock.advance(0.01)
        requester.request()
    assert sent == [100.0]
    clock.advance(0.5)
    assert sent == [100.0, pytest.approx(100.5)]  # the burst became one trailing request at the end of the interval
    clock.advance(2)
    requester.request()
    assert sent[-1] == pytest.approx(102.6)
    requester.request()
    requester.close()
    clock.advance(1)
    assert len(sent) == 3 and requester.requested == 13


# --- fan-out ---------------------------------------------------------------------------------------------------------


async def test_video_relay_starts_at_a_keyframe_and_asks_for_one() -> None:
    requests: list[int] = []
    track = EncodedTrack("video", request_keyframe=lambda: requests.append(1))
    relay = track.subscribe()
    assert requests == [1]  # a new subscriber asks for a keyframe at once
    track.push(frame(3000))
    track.push(frame(6000))
    assert relay.frames_dropped == 2 and len(requests) == 3
    track.push(frame(9000, key=True))
    track.push(frame(12000))
    first, second = await relay.recv(), await relay.recv()
    assert first.is_keyframe and not second.is_keyframe
    assert (first.pts, second.pts) == (0, 3000)  # timestamps start at 0 for the subscriber
    assert first.time_base == VIDEO and bytes(first) == bytes(20)


async def test_slow_video_subscriber_is_reset_to_the_next_keyframe() -> None:
    requests: list[int] = []
    track = EncodedTrack("video", request_keyframe=lambda: requests.append(1))
    slow = RelayTrack("video", max_queue=5)
    fast = track.subscribe(max_queue=5)
    slow.attach(track)
    track.push(frame(0, key=True))
    for i in range(1, 5):
        track.push(frame(i * 3000))
        await fast.recv()
    await fast.recv()
    requests.clear()
    track.push(frame(5 * 3000))  # the slow one overflows: backlog dropped, waits for a keyframe
    assert requests == [1] and slow.frames_dropped == 6
    track.push(frame(6 * 3000))
    assert slow._queue == deque_of()
    track.push(frame(7 * 3000, key=True))
    packet = await slow.recv()
    assert packet.is_keyframe
    # The fast subscriber lost nothing.
    assert [(await fast.recv()).pts for _ in range(3)] == [15000, 18000, 21000]
    assert fast.frames_dropped == 0


def deque_of() -> object:
    from collections import deque

    return deque()


async def test_slow_audio_subscriber_drops_the_oldest() -> None:
    track = EncodedTrack("audio")
    relay = track.subscribe(max_queue=3)
    for i in range(5):
        track.push(frame(i * 960, mime="audio/opus"))
    assert relay.frames_dropped == 2
    assert [(await relay.recv()).pts for _ in range(3)] == [0, 960, 1920]  # rebased from 1920


async def test_reattached_relay_keeps_timestamps_monotonic_and_codec_pinned() -> None:
    first, second = EncodedTrack("video"), EncodedTrack("video")
    relay = RelayTrack("video", end_with_source=False, mime_type="video/VP8")
    relay.attach(first)
    first.push(frame(900_000, key=True))
    assert (await relay.recv()).pts == 0
    relay.attach(second)
    second.push(frame(5_000, key=True, mime="video/h264"))  # wrong codec for this sender: dropped
    second.push(frame(6_000, key=True))
    second.push(frame(9_000))
    assert [(await relay.recv()).pts for _ in range(2)] == [1800, 4800]
    first.push(frame(903_000))
    assert relay._queue == deque_of()  # detached from the first source


async def test_source_end_ends_taps_but_not_sender_relays() -> None:
    track = EncodedTrack("audio")
    tap = track.subscribe()
    persistent = RelayTrack("audio", end_with_source=False)
    persistent.attach(track)
    own = asyncio.ensure_future(track.recv())  # the track itself reads through a relay made on first use
    await asyncio.sleep(0)
    track.push(frame(0, mime="audio/opus"))
    assert (await own).pts == 0
    track.stop()
    assert (await tap.recv()).pts == 0  # queued frames drain first
    with pytest.raises(MediaStreamError):
        await tap.recv()
    assert tap.readyState == "ended"
    assert persistent.readyState == "live" and persistent.source is None
    waiting = asyncio.ensure_future(persistent.recv())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # waits for its next source instead of ending the sender
    persistent.stop()
    with pytest.raises(MediaStreamError):
        await waiting
