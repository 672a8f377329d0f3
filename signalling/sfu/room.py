"""A media room: the SFU side of one session (会话).  Media only; no Socket.IO here.

The whole API::

    room = MediaRoom("case-12-session-3", config, max_participants=8, listener=None)
    offer = await room.join(participant_id)              # MediaOffer; offer.sdp is the SDP offer
    await room.answer(participant_id, answer_sdp, revision=offer.revision)
    await room.add_candidate(participant_id, candidate, sdp_mid, sdp_mline_index)  # "" = end-of-candidates
    mid = await room.request_publish(participant_id, label="screen")  # offer follows as NegotiationNeeded
    await room.unpublish(participant_id, mid)
    await room.leave(participant_id)                     # closes the pc, unpublishes, renegotiates the others
    await room.stats()                                   # list[PeerStats] for metrics
    await room.close()
    room.participants, room.tracks, room.peer(participant_id)

Events leave the room as dataclasses, given to ``listener(event)`` or, with
no listener, put on ``room.events`` (an ``asyncio.Queue``):
:class:`NegotiationNeeded` (send ``media.offer``), :class:`TrackPublished`,
:class:`TrackUnpublished`, :class:`PeerStateChanged`.  ``join`` returns its
offer directly; every later offer comes as ``NegotiationNeeded``.

Negotiation rule (the protocol's glare rule): **the server is the only
offerer.**  On join the server creates the participant's peer connection
with ``recvonly`` transceivers for its microphone (``audio``) and camera
(``camera``) and a ``sendonly`` transceiver for every track already
published by the others, and returns the offer; the client answers,
attaching its microphone and camera to the m-sections named in
``offer.publish``.  Every later change (another participant publishes or
unpublishes, this one starts or stops screen sharing, someone leaves) is a
renegotiation started by the server.  At most one offer is outstanding per
participant; changes arriving meanwhile are folded into the next offer, sent
as soon as the answer arrives.  Answers carry the offer's ``revision``; a
stale one is refused (revisions increase across the whole room, so an
answer can never be taken for another connection's).  Removed tracks leave their m-section ``inactive`` and
it is reused for the next track of the same kind.

Refusals raise :class:`~signalling.sfu.errors.MediaRoomError` or
:class:`~signalling.sfu.errors.MediaPolicyError` (stable ``code``) and
change nothing.  A peer connection that fails or is closed by the client
leaves the room by itself (aiortc has no ICE restart: the client rejoins).
``join`` for a participant already present closes the old connection
first; the new one replaces it and the others receive its new tracks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import MediaRoomError
from .network import MediaNetworkConfig
from .passthrough import Clock
from .peer import MediaOffer, MediaPeer, PeerStats, Publication, TrackInfo, TrackLabel

__all__ = [
    "MediaRoom",
    "NegotiationNeeded",
    "PeerStateChanged",
    "RoomEvent",
    "TrackPublished",
    "TrackUnpublished",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NegotiationNeeded:
    """The server made a new offer for ``participant_id``: relay it as ``media.offer``."""

    participant_id: str
    offer: MediaOffer

    @property
    def offer_sdp(self) -> str:
        return self.offer.sdp


@dataclass(frozen=True)
class TrackPublished:
    track: TrackInfo


@dataclass(frozen=True)
class TrackUnpublished:
    track: TrackInfo


@dataclass(frozen=True)
class PeerStateChanged:
    """``state`` is aiortc's ``connectionState``; ``"closed"`` is also sent when a participant leaves.

    ``reason``: for ``"failed"``, the policy code when the peer gave itself up
    (``no_allowed_candidate``: rejoining cannot help), else ``None``.
    """

    participant_id: str
    state: str
    reason: str | None = None


RoomEvent = NegotiationNeeded | TrackPublished | TrackUnpublished | PeerStateChanged


class MediaRoom:
    """See the module docstring.  All methods must run on one event loop."""

    def __init__(
        self,
        room_id: str,
        config: MediaNetworkConfig,
        max_participants: int = 8,
        *,
        listener: Callable[[RoomEvent], None] | None = None,
        keyframe_interval: float = 0.5,
        publish_timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if max_participants < 1:
            raise ValueError("max_participants must be at least 1")
        self.room_id = room_id
        self.config = config
        self.max_participants = max_participants
        self.events: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self._listener = listener
        self._keyframe_interval = keyframe_interval
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._peers: dict[str, MediaPeer] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._revisions = itertools.count(1)
        self._closed = False
        self._taps: list[Callable[[Publication], None]] = []

    # --- queries -----------------------------------------------------------------------------------------------------

    @property
    def participants(self) -> list[str]:
        return list(self._peers)

    @property
    def tracks(self) -> list[TrackInfo]:
        return [p.info for peer in self._peers.values() for p in peer.publications]

    def peer(self, participant_id: str) -> MediaPeer:
        peer = self._peers.get(participant_id)
        if peer is None:
            raise MediaRoomError("unknown_participant", f"{participant_id!r} is not in room {self.room_id}")
        return peer

    async def stats(self) -> list[PeerStats]:
        return [await peer.stats() for peer in list(self._peers.values())]

    # --- operations --------------------------------------------------------------------------------------------------

    async def join(self, participant_id: str) -> MediaOffer:
        """Create the participant's peer connection and return the first offer (replacing an old connection)."""
        if self._closed:
            raise MediaRoomError("room_closed", f"room {self.room_id} is closed")
        replaced = False
        async with self._lock:
            if participant_id in self._peers:
                await self._remove(participant_id)
                replaced = True
            elif len(self._peers) >= self.max_participants:
                raise MediaRoomError("room_full", f"room {self.room_id} has {self.max_participants} participants")
            peer = MediaPeer(
                participant_id,
                self.config,
                desired=lambda: self._publications_for(participant_id),
                on_state=self._peer_state,
                keyframe_interval=self._keyframe_interval,
                clock=self._clock,
                revisions=self._revisions,
            )
            self._peers[participant_id] = peer
            try:
                offer = await peer.negotiate()
                assert offer is not None
            except BaseException:
                self._peers.pop(participant_id, None)
                await peer.close()
                raise
        if replaced:
            await self._renegotiate(exclude=participant_id)
        return offer

    async def answer(self, participant_id: str, answer_sdp: str, revision: int | None = None) -> None:
        """Apply the participant's answer (checked by :func:`~signalling.sfu.network.filter_sdp` first)."""
        outcome = await self.peer(participant_id).apply_answer(answer_sdp, revision)
        for publication in outcome.ended:
            self._ended(publication)
        for publication in outcome.started:
            for tap in tuple(self._taps):
                self._tap(tap, publication)
            self._emit(TrackPublished(publication.info))
        if outcome.next_offer is not None:
            self._emit(NegotiationNeeded(participant_id, outcome.next_offer))
        if outcome.started or outcome.ended:
            await self._renegotiate(exclude=participant_id)

    async def add_candidate(
        self, participant_id: str, candidate: str, sdp_mid: str | None = None, sdp_mline_index: int | None = None
    ) -> None:
        """Add a trickled client candidate after :func:`~signalling.sfu.network.check_candidate`."""
        await self.peer(participant_id).add_candidate(candidate, sdp_mid, sdp_mline_index)

    async def request_publish(self, participant_id: str, label: TrackLabel = "screen") -> str:
        """Open (or reopen) a ``recvonly`` m-section for ``label``; returns its mid once it has been offered."""
        peer = self.peer(participant_id)
        slot, offer = await peer.request_publish(label)
        if offer is not None:
            self._emit(NegotiationNeeded(participant_id, offer))
        return await peer.wait_mid(slot, self._publish_timeout)

    async def unpublish(self, participant_id: str, mid: str) -> None:
        """Stop forwarding the participant's track at ``mid`` now; renegotiates everyone concerned."""
        publication, offer = await self.peer(participant_id).unpublish(mid)
        if publication is not None:
            self._ended(publication)
        if offer is not None:
            self._emit(NegotiationNeeded(participant_id, offer))
        if publication is not None:
            await self._renegotiate(exclude=participant_id)

    async def leave(self, participant_id: str) -> None:
        async with self._lock:
            self.peer(participant_id)
            await self._remove(participant_id)
        await self._renegotiate(exclude=None)

    async def close(self) -> None:
        """Close every peer connection; the room refuses joins afterwards."""
        self._closed = True
        async with self._lock:
            for participant_id in list(self._peers):
                await self._remove(participant_id)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- internals ---------------------------------------------------------------------------------------------------

    def add_tap(self, tap: Callable[[Publication], None]) -> None:
        """Call ``tap(publication)`` for every live publication now and every one started later.

        The general hook for consumers of the encoded media besides the
        subscribers (a recorder): ``publication.track.add_sink`` gives its
        frames, ``publication.info`` says whose track it is, ``publication.codec``
        its codec, and the track's ``ended`` event its end.
        """
        self._taps.append(tap)
        for peer in tuple(self._peers.values()):
            for publication in peer.publications:
                if publication.live:
                    self._tap(tap, publication)

    def _tap(self, tap: Callable[[Publication], None], publication: Publication) -> None:
        try:
            tap(publication)
        except Exception:
            logger.exception("room %s: a publication tap failed", self.room_id)

    def _emit(self, event: RoomEvent) -> None:
        if self._listener is None:
            self.events.put_nowait(event)
            return
        try:
            self._listener(event)
        except Exception:
            logger.exception("room %s: event listener failed on %r", self.room_id, event)

    def _publications_for(self, participant_id: str) -> list[Publication]:
        return [
            publication
            for other, peer in self._peers.items()
            if other != participant_id
            for publication in peer.publications
        ]

    def _ended(self, publication: Publication) -> None:
        for peer in self._peers.values():
            peer.drop_publication(publication)
        self._emit(TrackUnpublished(publication.info))

    async def _remove(self, participant_id: str) -> None:
        peer = self._peers.pop(participant_id)
        ended = await peer.close()
        for publication in ended:
            self._ended(publication)
        self._emit(PeerStateChanged(participant_id, "closed"))

    async def _renegotiate(self, exclude: str | None) -> None:
        for participant_id, peer in list(self._peers.items()):
            if participant_id == exclude:
                continue
            try:
                offer = await peer.negotiate()
            except Exception:
                logger.exception("room %s: renegotiating %s failed", self.room_id, participant_id)
                continue
            if offer is not None:
                self._emit(NegotiationNeeded(participant_id, offer))

    def _peer_state(self, peer: MediaPeer, state: str) -> None:
        if self._peers.get(peer.participant_id) is not peer or peer.closing:
            return
        self._emit(PeerStateChanged(peer.participant_id, state, peer.failure if state == "failed" else None))
        if state in ("failed", "closed"):
            task = asyncio.ensure_future(self._drop(peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drop(self, peer: MediaPeer) -> None:
        async with self._lock:
            if self._peers.get(peer.participant_id) is not peer:
                return
            await self._remove(peer.participant_id)
        await self._renegotiate(exclude=None)
