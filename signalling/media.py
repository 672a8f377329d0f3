"""Glue between live sessions and the SFU: one ``MediaRoom`` per session, its events relayed to sockets.

The media plane (``signalling.sfu``) knows nothing of sockets; this module
turns its events into the protocol's ``media.offer``, ``track.published``
and ``track.unpublished`` messages, in the order the room produced them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from signalling.application import SessionInfo
from signalling.session import LiveSession, Participant, TrackInfo
from signalling.sfu.network import MediaNetworkConfig
from signalling.sfu.peer import MediaOffer, Publication
from signalling.sfu.peer import TrackInfo as MediaTrack
from signalling.sfu.room import (
    MediaRoom,
    NegotiationNeeded,
    PeerStateChanged,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)

log = logging.getLogger(__name__)

#: ``emit(event, data, to_sid_or_room)``
Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]


def offer_wire(offer: MediaOffer) -> dict[str, Any]:
    """``Offer`` on the wire; ``participant_id`` names the join it is for (a client ignores any other's)."""
    return {
        "participant_id": offer.participant_id,
        "sdp": offer.sdp,
        "revision": offer.revision,
        "publish": dict(offer.publish),
        "subscribe": {mid: track_wire(t) for mid, t in offer.subscribe.items()},
    }


def track_wire(t: MediaTrack) -> dict[str, Any]:
    return {
        "participant_id": t.participant_id,
        "stream_id": t.stream_id,
        "kind": t.kind,
        "label": t.label,
        "mid": t.mid,
    }


class _RoomPump:
    """Delivers one room's events in order (the room's listener must not block)."""

    def __init__(self, live: LiveSession, room: MediaRoom, emit: Emit) -> None:
        self.live = live
        self.room = room
        self.emit = emit
        self.queue: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._deliver(event)
            except Exception:
                log.exception("could not relay media event %r", event)

    async def _deliver(self, event: RoomEvent) -> None:
        live = self.live
        if isinstance(event, NegotiationNeeded):
            p = live.participants.get(event.participant_id)
            if p is not None:
                await self.emit("media.offer", offer_wire(event.offer), p.sid)
        elif isinstance(event, TrackPublished):
            t = event.track
            p = live.participants.get(t.participant_id)
            if p is not None:
                p.tracks[t.stream_id] = TrackInfo(t.stream_id, t.kind, t.label, t.mid)
            await self.emit("track.published", track_wire(event.track), live.room)
        elif isinstance(event, TrackUnpublished):
            t = event.track
            p = live.participants.get(t.participant_id)
            if p is not None:
                p.tracks.pop(t.stream_id, None)
            await self.emit(
                "track.unpublished", {"participant_id": t.participant_id, "stream_id": t.stream_id}, live.room
            )
        elif isinstance(event, PeerStateChanged):
            p = live.participants.get(event.participant_id)
            if p is not None and event.state in ("failed", "closed"):
                state: dict[str, Any] = {"state": event.state, "participant_id": p.participant_id}
                if event.reason is not None:
                    state["reason"] = event.reason
                await self.emit("media.state", state, p.sid)

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class RoomObserver(Protocol):
    """Told when a session's media room opens and closes; the application records sessions through it."""

    def room_opened(self, info: SessionInfo, room: MediaRoom) -> bool:
        """Return whether this session is being recorded (participants are told)."""
        ...

    async def room_closed(self, info: SessionInfo) -> None: ...


class SessionMedia:
    """The media side of every live session on this process."""

    def __init__(
        self,
        config: MediaNetworkConfig,
        emit: Emit,
        *,
        max_participants: int = 8,
        observer: RoomObserver | None = None,
    ) -> None:
        self.config = config
        self.emit = emit
        self.max_participants = max_participants
        self.observer = observer
        self._rooms: dict[int, tuple[MediaRoom, _RoomPump]] = {}
        self._recorded: dict[int, bool] = {}
        self._infos: dict[int, SessionInfo] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def _room(self, live: LiveSession) -> MediaRoom:
        entry = self._rooms.get(live.info.session_id)
        if entry is None:
            queue_holder: list[_RoomPump] = []
            room = MediaRoom(
                f"session-{live.info.session_id}",
                self.config,
                max_participants=self.max_participants,
                listener=lambda e: queue_holder[0].queue.put_nowait(e),
            )
            pump = _RoomPump(live, room, self.emit)
            queue_holder.append(pump)
            # Applied before a new publication is forwarded to anyone: a muted participant stays muted across
            # renegotiation and rejoin.
            room.add_tap(lambda publication: self._apply_mute(live, publication))
            entry = self._rooms[live.info.session_id] = (room, pump)
            self._infos[live.info.session_id] = live.info
            recorded = False
            if self.observer is not None:
                try:
                    recorded = self.observer.room_opened(live.info, room)
                except Exception:
                    log.exception("session %s: the room observer failed", live.info.session_id)
            self._recorded[live.info.session_id] = recorded
            if recorded:
                state = {"session_id": live.info.session_id, "recording": True}
                task = asyncio.ensure_future(self.emit("recording.state", state, live.room))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return entry[0]

    def recording(self, live: LiveSession) -> bool:
        """Whether the session's media is being recorded (known once its room exists)."""
        return self._recorded.get(live.info.session_id, False)

    def room_of(self, live: LiveSession) -> MediaRoom | None:
        entry = self._rooms.get(live.info.session_id)
        return entry[0] if entry else None

    async def join(self, live: LiveSession, participant: Participant) -> dict[str, Any]:
        offer = await self._room(live).join(participant.participant_id)
        return offer_wire(offer)

    async def answer(self, live: LiveSession, participant: Participant, sdp: str, revision: int) -> None:
        await self._room(live).answer(participant.participant_id, sdp, revision=revision)

    async def candidate(
        self, live: LiveSession, participant: Participant, candidate: str, mid: str | None, index: int | None
    ) -> None:
        await self._room(live).add_candidate(participant.participant_id, candidate, mid, index)

    async def publish(self, live: LiveSession, participant: Participant, label: str) -> str:
        return await self._room(live).request_publish(participant.participant_id, label="screen")

    async def unpublish(self, live: LiveSession, participant: Participant, mid: str) -> None:
        await self._room(live).unpublish(participant.participant_id, mid)

    @staticmethod
    def _apply_mute(live: LiveSession, publication: Publication) -> None:
        if publication.info.kind != "audio":
            return
        p = live.participants.get(publication.info.participant_id)
        publication.track.forwarding = not (p is not None and p.muted)

    def set_muted(self, live: LiveSession, participant: Participant) -> None:
        """Stop (or resume) forwarding ``participant``'s audio to everyone, as ``participant.muted`` says."""
        room = self.room_of(live)
        if room is None or participant.participant_id not in room.participants:
            return
        for publication in room.peer(participant.participant_id).publications:
            self._apply_mute(live, publication)

    async def leave(self, live: LiveSession, participant: Participant) -> None:
        room = self.room_of(live)
        if room is not None and participant.participant_id in room.participants:
            await room.leave(participant.participant_id)

    async def close(self, live: LiveSession) -> None:
        await self._close(live.info.session_id)

    async def close_all(self) -> None:
        for session_id in list(self._rooms):
            await self._close(session_id)

    async def _close(self, session_id: int) -> None:
        entry = self._rooms.pop(session_id, None)
        self._recorded.pop(session_id, None)
        info = self._infos.pop(session_id, None)
        if entry is None:
            return
        room, pump = entry
        await room.close()
        await pump.stop()
        if self.observer is not None and info is not None:
            try:
                await self.observer.room_closed(info)
            except Exception:
                log.exception("session %s: the room observer failed on close", session_id)
