"""One participant's peer connection to the SFU.

A :class:`MediaPeer` owns one ``RTCPeerConnection`` (max-bundle: one ICE/DTLS
transport for every m-section) made of *slots*:

- a **receive slot** is a server ``recvonly`` transceiver the participant
  publishes on, labelled ``audio``, ``camera`` or ``screen``.  Its receiver
  is adopted at creation (:func:`~signalling.sfu.passthrough.adopt_receiver`)
  so frames are forwarded, never decoded; while the participant sends on it
  the slot carries a :class:`Publication`.
- a **send slot** is a server ``sendonly`` transceiver forwarding one
  publication of another participant through a persistent
  :class:`~signalling.sfu.passthrough.RelayTrack`.  Its codec is pinned to
  the publication's codec, and the m-section's ``a=msid`` stream id is the
  publication's ``stream_id`` (``docs/protocol.md``).

Negotiation (the protocol's glare rule): the server is the only offerer.
At most one offer is outstanding per peer; a change requested meanwhile
only marks the peer *dirty*, and the next offer, made when the answer
arrives, reflects the state of the room at that moment.  Slots are changed
only while no offer is outstanding (in :meth:`MediaPeer._reconcile`, right
before ``createOffer``), so an answer always matches the transceivers that
were offered.  Slots are never removed: a slot no longer needed becomes
``inactive`` and is reused by the next track of the same kind (and, for
send slots, the same codec), so the number of m-sections is bounded by the
most tracks ever carried at once.  aiortc cannot stop a transceiver
through negotiation (``stop()`` does not produce a port-0 m-section) nor
restart a sender whose track ended, which is why slots are made inactive
and relays never end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from .errors import MediaPolicyError, MediaRoomError
from .network import (
    CandidateKey,
    DropReason,
    MediaNetworkConfig,
    candidate_key,
    classify_candidate,
    gather_from,
    screen_sdp,
)
from .network import rewrite_advertised as _rewrite_advertised
from .passthrough import (
    Clock,
    EncodedTrack,
    KeyframeRequester,
    PassthroughQueue,
    RelayTrack,
    adopt_receiver,
    bound_receive_queue,
    video_frame_buffer,
)
from .passthrough import adopt_sender as _adopt_sender

__all__ = [
    "LABEL_KIND",
    "MediaOffer",
    "MediaPeer",
    "PeerStats",
    "Publication",
    "TrackInfo",
    "TrackLabel",
    "TrackStats",
    "nominated_pair",
]

logger = logging.getLogger(__name__)

TrackLabel = Literal["audio", "camera", "screen"]
LABEL_KIND: Mapping[str, str] = {"audio": "audio", "camera": "video", "screen": "video"}
_DROPPED_REMEMBERED = 256
"""Dropped candidates remembered per peer, so repeats (BUNDLE, renegotiation) are counted once; past it every
drop is counted."""
PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")
"""Participant ids become part of ``a=msid`` stream ids (RFC 8830 token, at most 64 characters)."""


@dataclass(frozen=True)
class TrackInfo:
    """What subscribers learn about a published track (``track.published`` in the protocol).

    ``mid`` is the publisher's m-section; ``stream_id`` is the ``a=msid``
    stream id under which every subscriber receives the track.
    """

    participant_id: str
    mid: str
    kind: str
    label: TrackLabel
    stream_id: str
    codec: str


class Publication:
    """A live published track: its metadata, its frames and its keyframe path to the publisher."""

    def __init__(self, info: TrackInfo, codec: RTCRtpCodecParameters, requester: KeyframeRequester) -> None:
        self.info = info
        self.codec = codec
        self.requester = requester
        self.track = EncodedTrack(
            info.kind, request_keyframe=requester.request, request_keyframe_urgent=requester.request_urgent
        )

    @property
    def live(self) -> bool:
        return self.track.readyState == "live"

    def end(self) -> None:
        self.requester.close()
        self.track.stop()


@dataclass(frozen=True)
class MediaOffer:
    """An offer for one participant (``media.offer`` in the protocol).

    ``publish`` maps each m-section the participant should send on to its
    label (attach the microphone, camera or screen there); ``subscribe``
    maps each m-section the server sends on to the track it carries.
    """

    participant_id: str
    revision: int
    sdp: str
    publish: Mapping[str, TrackLabel]
    subscribe: Mapping[str, TrackInfo]


@dataclass
class AnswerOutcome:
    """What applying an answer changed: publications started/ended and, if dirty, the next offer."""

    started: list[Publication] = field(default_factory=list)
    ended: list[Publication] = field(default_factory=list)
    next_offer: MediaOffer | None = None


@dataclass(frozen=True)
class TrackStats:
    """Per-slot figures from aiortc's stats plus the forwarding counters.

    ``packets_*``/``bytes_sent``/``packets_lost``/``jitter``/``round_trip_time``
    come from RTCP as aiortc reports them (``None`` when it does not);
    ``bytes_received`` counts forwarded frame payload.
    """

    mid: str | None
    kind: str
    direction: str | None
    label: TrackLabel | None
    source: TrackInfo | None
    packets_sent: int | None
    bytes_sent: int | None
    packets_received: int | None
    bytes_received: int | None
    packets_lost: int | None
    jitter: float | None
    round_trip_time: float | None
    frames_forwarded: int
    frames_dropped: int


@dataclass(frozen=True)
class PeerStats:
    participant_id: str
    connection_state: str
    selected_pair: tuple[tuple[str, int], tuple[str, int]] | None
    tracks: tuple[TrackStats, ...]


def nominated_pair(pc: RTCPeerConnection) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The (local, remote) addresses of the ICE pair nominated on ``pc``'s bundle transport, if any."""
    transceivers = pc.getTransceivers()
    if not transceivers:
        return None
    connection = transceivers[0].receiver.transport.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        return None
    local = pair.local_candidate
    remote = pair.remote_candidate
    return (local.host, local.port), (remote.host, remote.port)


def _codec_name(mime_type: str) -> str:
    return mime_type.split("/", 1)[-1].lower()


def _capability_params(cap: RTCRtpCodecCapability) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType=cap.mimeType,
        clockRate=cap.clockRate,
        channels=cap.channels,
        payloadType=0,
        parameters=dict(cap.parameters),
    )


class RecvSlot:
    def __init__(self, transceiver: RTCRtpTransceiver, label: TrackLabel, passthrough: PassthroughQueue) -> None:
        self.transceiver = transceiver
        self.label: TrackLabel = label
        self.passthrough = passthrough
        self.wanted = True
        self.publication: Publication | None = None
        self.media_ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.mid_known: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def kind(self) -> str:
        return self.transceiver.kind

    def end_publication(self) -> Publication | None:
        publication, self.publication = self.publication, None
        self.passthrough.sink = None
        if publication is not None:
            publication.end()
        return publication


class SendSlot:
    def __init__(self, transceiver: RTCRtpTransceiver, relay: RelayTrack, codec: RTCRtpCodecParameters) -> None:
        self.transceiver = transceiver
        self.relay = relay
        self.codec = codec
        self.publication: Publication | None = None
        self.started = False
        self.fresh = False

    @property
    def kind(self) -> str:
        return self.transceiver.kind

    def carries(self, publication: Publication) -> bool:
        return self.kind == publication.info.kind and is_codec_compatible(self.codec, publication.codec)

    def assign(self, publication: Publication) -> None:
        self.publication = publication
        self.relay.attach(publication.track)
        self.transceiver.sender._stream_id = publication.info.stream_id
        self.fresh = True

    def release(self) -> None:
        self.publication = None
        self.relay.detach()
        self.fresh = False


class MediaPeer:
    """See the module docstring.  Not thread-safe; all methods run on the room's event loop.

    ``desired()`` returns the publications this peer should receive, in
    order; ``on_state(peer, state)`` reports ``connectionState`` changes,
    and ``failed`` when an offer stays unanswered for the configuration's
    ``answer_timeout``.
    ``failure`` is the policy code (``no_allowed_candidate``) when the peer
    gave itself up because none of the client's candidates may be used.
    Offer revisions come from ``revisions`` (the room shares one counter
    between successive connections of a participant, so an answer meant for
    a replaced connection can never match the new one's offer).
    Methods that may produce an offer return it; the caller delivers it.
    """

    def __init__(
        self,
        participant_id: str,
        config: MediaNetworkConfig,
        *,
        desired: Callable[[], Sequence[Publication]],
        on_state: Callable[[MediaPeer, str], None],
        keyframe_interval: float = 0.5,
        clock: Clock | None = None,
        revisions: Iterator[int] | None = None,
    ) -> None:
        if not PARTICIPANT_ID.match(participant_id):
            raise MediaRoomError("invalid_participant_id", "participant ids are 1-48 of [A-Za-z0-9_.-]")
        self.participant_id = participant_id
        self._config = config
        self._desired = desired
        self._on_state = on_state
        self._keyframe_interval = keyframe_interval
        self._clock = clock
        self.pc = RTCPeerConnection(config.rtc_configuration())
        self._lock = asyncio.Lock()
        self._recv: list[RecvSlot] = []
        self._send: list[SendSlot] = []
        self._outstanding: MediaOffer | None = None
        self._dirty = False
        self._revisions = revisions if revisions is not None else itertools.count(1)
        self._candidates: set[CandidateKey] = set()
        self._dropped: set[CandidateKey] = set()
        self._candidate_timer: asyncio.TimerHandle | None = None
        self.failure: str | None = None
        self._pli_tasks: set[asyncio.Task[None]] = set()
        self._answer_timer: asyncio.TimerHandle | None = None
        self.closing = False

        @self.pc.on("connectionstatechange")
        def _state_changed() -> None:
            self._on_state(self, self.pc.connectionState)

        # The first transceiver carries the bundle transport for the whole life of the peer.
        self._add_recv_slot("audio")
        self._add_recv_slot("camera")

    # --- state -------------------------------------------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    @property
    def outstanding(self) -> MediaOffer | None:
        return self._outstanding

    @property
    def publications(self) -> list[Publication]:
        return [s.publication for s in self._recv if s.publication is not None and s.publication.live]

    # --- negotiation -------------------------------------------------------------------------------------------------

    async def negotiate(self) -> MediaOffer | None:
        """Offer the current state now, or mark the peer dirty if an offer is outstanding."""
        async with self._lock:
            if self.closing or self.pc.signalingState == "closed":
                return None
            if self._outstanding is not None:
                self._dirty = True
                return None
            return await self._make_offer()

    async def apply_answer(self, sdp: str, revision: int | None = None) -> AnswerOutcome:
        """Apply the participant's answer to the outstanding offer.

        Policy (:func:`~signalling.sfu.network.screen_sdp`) and codec checks
        run before aiortc sees the SDP; candidates outside the policy are
        left out.  On any refusal nothing is applied and the offer stays
        outstanding, except ``no_allowed_candidate`` (the answer ends the
        client's candidates with ``a=end-of-candidates`` and none of them,
        nor any trickled before, is allowed): the peer then gives itself up.
        """
        async with self._lock:
            offer = self._outstanding
            if self.closing or offer is None:
                raise MediaRoomError("no_offer_outstanding", "there is no offer to answer")
            if revision is not None and revision != offer.revision:
                raise MediaRoomError("stale_answer", f"answer is for revision {revision}, expected {offer.revision}")
            known = set(self._candidates)
            screened = screen_sdp(sdp, self._config, known_candidates=known)
            self._count_dropped(screened.dropped)
            if screened.end_of_candidates and not known:
                raise self._give_up_no_candidate()
            clean = screened.sdp
            try:
                parsed = aiortc_sdp.SessionDescription.parse(clean)
            except (ValueError, IndexError, KeyError, AttributeError, StopIteration) as exc:
                raise MediaPolicyError("sdp_invalid", f"unparseable SDP: {exc}") from exc
            self._check_send_codecs(parsed)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=clean, type="answer"))
            except Exception as exc:
                raise MediaPolicyError("sdp_invalid", f"answer refused: {exc}") from exc
            self._candidates = known
            self._outstanding = None
            self._disarm_answer_timer()
            if not known and self._candidate_timer is None and self.failure is None:
                # No usable candidate yet: the client may trickle them; if none has come when the time an offer
                # may wait for its answer has passed, none will.
                self._candidate_timer = asyncio.get_running_loop().call_later(
                    self._config.answer_timeout, self._candidates_overdue
                )
            outcome = self._after_answer(parsed)
            if self._dirty and not self.closing:
                outcome.next_offer = await self._make_offer()
            return outcome

    async def add_candidate(
        self, candidate: str, sdp_mid: str | None = None, sdp_mline_index: int | None = None
    ) -> None:
        """Add a trickled remote candidate after the policy check; ``""`` signals end-of-candidates.

        A candidate outside the policy is dropped (counted, logged once per
        peer) and the call returns normally.  End-of-candidates when no
        allowed candidate has arrived raises ``no_allowed_candidate`` and the
        peer gives itself up.  With max-bundle every candidate belongs to the
        bundle transport, so ``sdp_mid``/``sdp_mline_index`` are accepted but
        not needed (aiortc would silently drop a candidate addressed to a
        bundled m-section).
        """
        async with self._lock:
            if self.closing:
                return
            primary = self.pc.getTransceivers()[0]
            if not candidate.strip():
                if not self._candidates:
                    raise self._give_up_no_candidate()
                await self.pc.addIceCandidate(None)
                return
            parsed, reason = classify_candidate(candidate, self._config)
            key = candidate_key(parsed)
            if reason is not None:
                self._count_dropped({key: reason})
                return
            if key not in self._candidates:
                if len(self._candidates) >= self._config.max_remote_candidates:
                    raise MediaPolicyError(
                        "too_many_candidates", f"more than {self._config.max_remote_candidates} remote candidates"
                    )
                self._candidates.add(key)
                self._disarm_candidate_timer()
            ice = RTCIceCandidate(
                component=parsed.component,
                foundation=parsed.foundation,
                ip=parsed.ip,
                port=parsed.port,
                priority=parsed.priority,
                protocol=parsed.protocol,
                type=parsed.type,
                relatedAddress=parsed.relatedAddress,
                relatedPort=parsed.relatedPort,
                tcpType=parsed.tcpType,
                sdpMid=primary.mid or sdp_mid,
                sdpMLineIndex=0,
            )
            await self.pc.addIceCandidate(ice)

    async def request_publish(self, label: TrackLabel) -> tuple[RecvSlot, MediaOffer | None]:
        """Make (or reuse) a receive slot for ``label``; returns it and the offer, if one was made now."""
        if label not in LABEL_KIND:
            raise MediaRoomError("invalid_label", f"unknown track label {label!r}")
        async with self._lock:
            if self.closing:
                raise MediaRoomError("unknown_participant", "the peer is closing")
            kind = LABEL_KIND[label]
            slot = next((s for s in self._recv if s.label == label), None)
            if slot is None:
                slot = next((s for s in self._recv if not s.wanted and s.kind == kind), None)
            if slot is None:
                slot = self._add_recv_slot(label)
            elif slot.wanted and slot.publication is not None:
                return slot, None  # already publishing
            slot.label = label
            slot.wanted = True
            if self._outstanding is not None:
                self._dirty = True
                return slot, None
            return slot, await self._make_offer()

    async def unpublish(self, mid: str) -> tuple[Publication | None, MediaOffer | None]:
        """Stop receiving on the participant's slot ``mid``; its publication (if live) ends at once."""
        async with self._lock:
            slot = next((s for s in self._recv if s.transceiver.mid == mid), None)
            if slot is None or self.closing:
                raise MediaRoomError("unknown_track", f"no published track at mid {mid!r}")
            slot.wanted = False
            ended = slot.end_publication()
            if self._outstanding is not None:
                self._dirty = True
                return ended, None
            return ended, await self._make_offer()

    async def wait_mid(self, slot: RecvSlot, limit: float) -> str:
        """The slot's mid, once an offer has assigned one (at most ``limit`` seconds)."""
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(slot.mid_known)
        except TimeoutError:
            raise MediaRoomError("negotiation_timeout", "the outstanding offer was not answered in time") from None
        except asyncio.CancelledError:
            if slot.mid_known.cancelled() and self.closing:
                raise MediaRoomError("unknown_participant", "the peer connection was closed") from None
            raise

    async def close(self) -> list[Publication]:
        """Close the peer connection; returns the publications that ended."""
        self.closing = True
        self._disarm_answer_timer()
        self._disarm_candidate_timer()
        ended = [p for p in (s.end_publication() for s in self._recv) if p is not None]
        for slot in self._send:
            slot.release()
        for recv_slot in self._recv:
            if not recv_slot.mid_known.done():
                recv_slot.mid_known.cancel()
        await self.pc.close()
        for task in list(self._pli_tasks):
            task.cancel()
        return ended

    def drop_publication(self, publication: Publication) -> None:
        """A publication this peer receives has ended: stop relaying it now (renegotiation follows)."""
        for slot in self._send:
            if slot.publication is publication:
                slot.release()

    # --- internals ---------------------------------------------------------------------------------------------------

    def _preferences(self, kind: str) -> list[RTCRtpCodecCapability]:
        capabilities = RTCRtpSender.getCapabilities(kind).codecs
        preferred: list[RTCRtpCodecCapability] = []
        for name in self._config.codecs_for(kind):
            preferred += [c for c in capabilities if _codec_name(c.mimeType) == name.lower()]
        preferred += [c for c in capabilities if _codec_name(c.mimeType) == "rtx"]
        return preferred

    def _add_recv_slot(self, label: TrackLabel) -> RecvSlot:
        transceiver = self.pc.addTransceiver(LABEL_KIND[label], direction="recvonly")
        transceiver.setCodecPreferences(self._preferences(transceiver.kind))
        bound_receive_queue(transceiver.receiver.transport.transport._connection)
        slot = RecvSlot(transceiver, label, adopt_receiver(transceiver.receiver))
        self._recv.append(slot)
        return slot

    def _add_send_slot(self, publication: Publication) -> SendSlot:
        kind = publication.info.kind
        relay = RelayTrack(kind, end_with_source=False, mime_type=publication.codec.mimeType)
        transceiver = self.pc.addTransceiver(relay, direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities(kind).codecs
        pinned = [c for c in capabilities if is_codec_compatible(_capability_params(c), publication.codec)][:1]
        if not pinned:
            raise MediaPolicyError("codec_unsupported", f"cannot forward {publication.codec.mimeType}")
        if kind == "video":
            pinned += [c for c in capabilities if _codec_name(c.mimeType) == "rtx"]
        transceiver.setCodecPreferences(pinned)
        bound_receive_queue(transceiver.sender.transport.transport._connection)
        _adopt_sender(transceiver.sender, relay.request_keyframe)
        slot = SendSlot(transceiver, relay, _capability_params(pinned[0]))
        self._send.append(slot)
        return slot

    def _reconcile(self) -> None:
        for recv in self._recv:
            recv.transceiver.direction = "recvonly" if recv.wanted else "inactive"
        desired = [p for p in self._desired() if p.live]
        for send in self._send:
            if send.publication is not None and send.publication not in desired:
                send.release()
        carried = {id(s.publication) for s in self._send if s.publication is not None}
        for publication in desired:
            if id(publication) in carried:
                continue
            slot = next((s for s in self._send if s.publication is None and s.carries(publication)), None)
            if slot is None:
                slot = self._add_send_slot(publication)
            slot.assign(publication)
        for send in self._send:
            send.transceiver.direction = "sendonly" if send.publication is not None else "inactive"

    async def _make_offer(self) -> MediaOffer:
        self._dirty = False
        self._reconcile()
        offer = await self.pc.createOffer()
        with gather_from(self._config.bind_addresses):
            await self.pc.setLocalDescription(offer)
        revision = next(self._revisions)
        publish: dict[str, TrackLabel] = {}
        for recv in self._recv:
            mid = recv.transceiver.mid
            assert mid is not None
            if not recv.mid_known.done():
                recv.mid_known.set_result(mid)
            if recv.wanted:
                publish[mid] = recv.label
        subscribe = {
            s.transceiver.mid: s.publication.info
            for s in self._send
            if s.publication is not None and s.transceiver.mid is not None
        }
        self._outstanding = MediaOffer(
            participant_id=self.participant_id,
            revision=revision,
            sdp=_rewrite_advertised(self.pc.localDescription.sdp, self._config),
            publish=publish,
            subscribe=subscribe,
        )
        self._disarm_answer_timer()
        self._answer_timer = asyncio.get_running_loop().call_later(
            self._config.answer_timeout, self._answer_overdue, revision
        )
        return self._outstanding

    def _disarm_answer_timer(self) -> None:
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None

    def _answer_overdue(self, revision: int) -> None:
        """The offer ``revision`` was not answered in ``answer_timeout``: give the connection up as failed.

        Without this a lost or refused answer would leave the participant
        without every later track for the rest of the session (changes only
        mark the peer dirty while an offer is outstanding); reported as the
        ``failed`` state, the room drops the peer and the client rejoins with
        a new connection, as after an ICE failure.
        """
        self._answer_timer = None
        offer = self._outstanding
        if self.closing or offer is None or offer.revision != revision:
            return
        logger.warning(
            "%s: offer %d not answered in %.0f s; the connection is given up",
            self.participant_id,
            revision,
            self._config.answer_timeout,
        )
        self._on_state(self, "failed")

    def _count_dropped(self, dropped: Mapping[CandidateKey, DropReason]) -> None:
        """Count candidates dropped for the first time on this peer; log the first drop of the peer only."""
        fresh = {key: reason for key, reason in dropped.items() if key not in self._dropped}
        if not fresh:
            return
        if not self._dropped:
            key, reason = next(iter(fresh.items()))
            logger.info(
                "%s: remote ICE candidates outside the media policy are dropped (first: %s %s:%d, reason %s)",
                self.participant_id,
                key[0],
                key[1],
                key[2],
                reason,
            )
        if len(self._dropped) < _DROPPED_REMEMBERED:  # a client trickling junk must not grow this without bound
            self._dropped.update(fresh)
        for reason in fresh.values():
            self._config.dropped.add(reason)

    def _give_up_no_candidate(self) -> MediaPolicyError:
        """The client has no candidate left that the policy allows: report the peer failed, with the reason."""
        self._disarm_candidate_timer()
        if self.failure is None:
            self.failure = "no_allowed_candidate"
            logger.warning(
                "%s: none of the client's %d ICE candidates is inside the allowed networks; the connection is given up",
                self.participant_id,
                len(self._dropped),
            )
            asyncio.get_running_loop().call_soon(self._on_state, self, "failed")
        return MediaPolicyError(
            "no_allowed_candidate", "none of the client's ICE candidates is inside the allowed networks"
        )

    def _candidates_overdue(self) -> None:
        self._candidate_timer = None
        if self.closing or self._candidates or self.failure is not None:
            return
        self._give_up_no_candidate()

    def _disarm_candidate_timer(self) -> None:
        if self._candidate_timer is not None:
            self._candidate_timer.cancel()
            self._candidate_timer = None

    def _check_send_codecs(self, answer: aiortc_sdp.SessionDescription) -> None:
        by_mid = {m.rtp.muxId: m for m in answer.media}
        for slot in self._send:
            media = by_mid.get(slot.transceiver.mid or "")
            if media is None or media.port == 0:
                continue
            if not any(is_codec_compatible(slot.codec, c) for c in media.rtp.codecs):
                raise MediaPolicyError(
                    "codec_unsupported", f"m-section {slot.transceiver.mid} must accept {slot.codec.mimeType}"
                )

    def _after_answer(self, answer: aiortc_sdp.SessionDescription) -> AnswerOutcome:
        outcome = AnswerOutcome()
        by_mid = {m.rtp.muxId: m for m in answer.media}
        for slot in self._recv:
            media = by_mid.get(slot.transceiver.mid or "")
            receiving = slot.wanted and slot.transceiver.currentDirection == "recvonly" and media is not None
            if slot.publication is not None and not receiving:
                ended = slot.end_publication()
                if ended is not None:
                    outcome.ended.append(ended)
            if media is None or not receiving:
                continue
            if media.ssrc:
                slot.media_ssrc = media.ssrc[0].ssrc
                slot.rtx_ssrc = media.ssrc[1].ssrc if len(media.ssrc) > 1 else None
            if slot.publication is None:
                codec = next(
                    (c for c in media.rtp.codecs if _codec_name(c.mimeType) not in ("rtx", "red", "ulpfec")), None
                )
                if codec is None:
                    continue
                slot.publication = self._publish(slot, codec)
                outcome.started.append(slot.publication)
        for send in self._send:
            if send.fresh and send.publication is not None and send.started:
                # A reused sender runs on while inactive, dropping what it reads (the keyframe too).
                # A new sender reads nothing before it starts, so its relay still holds the keyframe.
                send.relay.require_keyframe(urgent=True)
            send.fresh = False
            send.started = send.started or send.transceiver.currentDirection == "sendonly"
        return outcome

    def _publish(self, slot: RecvSlot, codec: RTCRtpCodecParameters) -> Publication:
        mid = slot.transceiver.mid
        assert mid is not None
        info = TrackInfo(
            participant_id=self.participant_id,
            mid=mid,
            kind=slot.kind,
            label=slot.label,
            stream_id=f"{self.participant_id}.{slot.label}",
            codec=codec.mimeType,
        )
        receiver = slot.transceiver.receiver

        def send_pli() -> None:
            ssrc = slot.media_ssrc or self._active_ssrc(receiver, slot.rtx_ssrc)
            if ssrc is None or self.closing:
                return
            task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
            self._pli_tasks.add(task)
            task.add_done_callback(self._pli_tasks.discard)

        requester = KeyframeRequester(send_pli, min_interval=self._keyframe_interval, clock=self._clock)
        publication = Publication(info, codec, requester)
        buffer = video_frame_buffer(receiver)
        if buffer is not None:
            # A packet lost for good, a ring overflow: through the same rate limit as the subscribers' requests.
            buffer.keyframe_request = requester.request
        slot.passthrough.sink = publication.track.push
        return publication

    @staticmethod
    def _active_ssrc(receiver: RTCRtpReceiver, rtx_ssrc: int | None) -> int | None:
        sources = [s for s in receiver.getSynchronizationSources() if s.source != rtx_ssrc]
        return max(sources, key=lambda s: s.timestamp).source if sources else None

    # --- stats -------------------------------------------------------------------------------------------------------

    async def stats(self) -> PeerStats:
        tracks: list[TrackStats] = []
        for recv in self._recv:
            report = await recv.transceiver.receiver.getStats()
            inbound = _first(report, "inbound-rtp")
            pub = recv.publication
            tracks.append(
                TrackStats(
                    mid=recv.transceiver.mid,
                    kind=recv.kind,
                    direction=recv.transceiver.currentDirection,
                    label=recv.label,
                    source=None,
                    packets_sent=None,
                    bytes_sent=None,
                    packets_received=_int(inbound, "packetsReceived"),
                    bytes_received=recv.passthrough.bytes,
                    packets_lost=_int(inbound, "packetsLost"),
                    jitter=_float(inbound, "jitter"),
                    round_trip_time=None,
                    frames_forwarded=recv.passthrough.frames,
                    frames_dropped=0 if pub is None else sum(r.frames_dropped for r in pub.track.relays),
                )
            )
        for send in self._send:
            report = await send.transceiver.sender.getStats()
            outbound = _first(report, "outbound-rtp")
            remote = _first(report, "remote-inbound-rtp")
            tracks.append(
                TrackStats(
                    mid=send.transceiver.mid,
                    kind=send.kind,
                    direction=send.transceiver.currentDirection,
                    label=None,
                    source=None if send.publication is None else send.publication.info,
                    packets_sent=_int(outbound, "packetsSent"),
                    bytes_sent=_int(outbound, "bytesSent"),
                    packets_received=None,
                    bytes_received=None,
                    packets_lost=_int(remote, "packetsLost"),
                    jitter=_float(remote, "jitter"),
                    round_trip_time=_float(remote, "roundTripTime"),
                    frames_forwarded=send.relay.frames_forwarded,
                    frames_dropped=send.relay.frames_dropped,
                )
            )
        return PeerStats(self.participant_id, self.connection_state, nominated_pair(self.pc), tuple(tracks))


def _first(report: Mapping[str, Any], kind: str) -> Any:
    return next((s for s in report.values() if getattr(s, "type", None) == kind), None)


def _int(stats: Any, name: str) -> int | None:
    value = getattr(stats, name, None)
    return None if value is None else int(value)


def _float(stats: Any, name: str) -> float | None:
    value = getattr(stats, name, None)
    return None if value is None else float(value)
