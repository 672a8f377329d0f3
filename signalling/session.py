"""Live state of a session on this process: who is in it, their tracks, chat limits."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from signalling.application import Identity, SessionInfo


@dataclass
class TrackInfo:
    stream_id: str
    kind: str
    label: str
    mid: str

    def wire(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "kind": self.kind, "label": self.label, "mid": self.mid}


@dataclass
class Participant:
    participant_id: str
    sid: str
    identity: Identity
    tracks: dict[str, TrackInfo] = field(default_factory=dict)
    moderator: bool = False
    #: Muted by a moderator: the server does not forward this participant's audio.
    muted: bool = False
    #: Last reported microphone level (0..1) and when (monotonic seconds).
    level: float = 0.0
    level_at: float = 0.0

    def wire(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "user_id": self.identity.user_id,
            "display_name": self.identity.display_name,
            "role": self.identity.role,
            "moderator": self.moderator,
            "muted": self.muted,
            "tracks": [t.wire() for t in self.tracks.values()],
        }


@dataclass
class Waiter:
    """Someone in the session's waiting room (came by invite, not yet admitted)."""

    waiter_id: str
    sid: str
    identity: Identity

    def wire(self) -> dict[str, Any]:
        return {
            "waiter_id": self.waiter_id,
            "user_id": self.identity.user_id,
            "display_name": self.identity.display_name,
            "role": self.identity.role,
        }


@dataclass
class LiveSession:
    info: SessionInfo
    participants: dict[str, Participant] = field(default_factory=dict)
    #: Pending "end when still empty" timer.
    empty_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The waiting room, by waiter id.
    waiting: dict[str, Waiter] = field(default_factory=dict)
    #: Identity keys a moderator admitted: they rejoin (after a drop) without waiting again.
    admitted: set[str] = field(default_factory=set)
    #: Identity keys a moderator refused or removed: refused on join for the rest of the session.
    banned: set[str] = field(default_factory=set)
    #: Identity keys muted by a moderator (kept across a rejoin).
    muted: set[str] = field(default_factory=set)
    #: The active speaker's participant id.
    speaker: str | None = None

    def moderators(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.moderator]

    def waiter_of(self, sid: str) -> Waiter | None:
        for w in self.waiting.values():
            if w.sid == sid:
                return w
        return None

    @property
    def room(self) -> str:
        return self.room_of(self.info.session_id)

    @staticmethod
    def room_of(session_id: int) -> str:
        return f"session:{session_id}"

    def by_identity_key(self, key: str) -> Participant | None:
        for p in self.participants.values():
            if p.identity.key == key:
                return p
        return None


class ChatLimiter:
    """At most ``count`` messages per ``window`` seconds per person and session.

    Keyed by the person (``Identity.key``) and the session, not by the participant: a rejoin makes a new
    participant, and keying by it let anyone reset the limit by rejoining.
    """

    def __init__(self, count: int = 5, window: float = 5.0, max_keys: int = 10_000) -> None:
        self.count = count
        self.window = window
        self.max_keys = max_keys
        self._times: dict[tuple[str, int], deque[float]] = {}

    def allow(self, person: str, session_id: int, now: float) -> bool:
        if len(self._times) >= self.max_keys:
            self._prune(now)
        times = self._times.setdefault((person, session_id), deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.count:
            return False
        times.append(now)
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._times.items() if not t or t[-1] <= now - self.window]:
            del self._times[key]
