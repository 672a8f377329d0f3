"""Media figures of the live sessions on this process, as plain data for the application's metrics.

No Prometheus here (``server.metrics`` turns a snapshot into metric
families).  A snapshot reads each session's media room once: the published
tracks and :meth:`~signalling.sfu.room.MediaRoom.stats` (aiortc's
``getStats`` plus the forwarding counters), summed per participant.

What the figures mean, and what aiortc 1.16 does not provide:

- *bytes in* is the encoded payload the SFU received on a participant's
  published tracks (the frames it forwards; RTP/SRTP headers, RTCP, STUN and
  DTLS not counted): aiortc's ``inbound-rtp`` stats carry no
  ``bytesReceived``.  *bytes out* is the RTP payload octets the SFU sent to
  the participant (the sender's octet count, RFC 3550 section 6.4.1).
- *packets lost in* is the SFU's own cumulative count for what the
  participant sends (expected - received, RFC 3550 appendix A.3); *packets
  lost out* is what the participant reports in its receiver reports about
  what the SFU sends it (RFC 3550 section 6.4.1).  Both may be negative per
  RFC 3550 (duplicates); a snapshot clamps each stream at zero.
- *rtt* exists only on the SFU-to-participant legs, from the participant's
  receiver reports (LSR/DLSR, RFC 3550 section 6.4.1), and only once a report
  answered the latest sender report; aiortc computes no round-trip time for
  what the SFU receives (that would need RFC 3611 XR RRTR/DLRR).  A
  participant who subscribes to nothing has none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from signalling.sfu.peer import LABEL_KIND, PeerStats

if TYPE_CHECKING:
    from signalling.server import SignallingServer

__all__ = ["PeerFigures", "SessionFigures", "dropped_candidates", "media_snapshot", "peer_figures"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerFigures:
    """One participant's media connection, cumulative since it was made (the module docstring says what counts)."""

    participant_id: str
    bytes_in: int
    bytes_out: int
    packets_lost_in: int
    packets_lost_out: int
    #: Seconds: mean of aiortc's latest estimates over the streams the SFU sends the participant; ``None`` if none.
    rtt: float | None


@dataclass(frozen=True)
class SessionFigures:
    session_id: int
    #: Participants joined over Socket.IO (a participant whose peer connection failed still counts until it leaves).
    participants: int
    #: Published tracks by ``(kind, label)``, e.g. ``("video", "screen")``.
    tracks: Mapping[tuple[str, str], int]
    #: Peer connections in the session's media room (0 without a media plane).
    media_peers: int
    #: Figures of those peer connections; ``None`` if their stats could not be read this time.
    peers: tuple[PeerFigures, ...] | None

    @property
    def packets_lost_in(self) -> int:
        return sum(p.packets_lost_in for p in self.peers or ())

    @property
    def packets_lost_out(self) -> int:
        return sum(p.packets_lost_out for p in self.peers or ())

    @property
    def rtt(self) -> float | None:
        """The worst participant's round-trip time (seconds), ``None`` when no participant has an estimate."""
        values = [p.rtt for p in self.peers or () if p.rtt is not None]
        return max(values) if values else None


def peer_figures(stats: PeerStats) -> PeerFigures:
    """Sum one peer's per-slot stats (receive slots have ``label``; send slots have none)."""
    bytes_in = bytes_out = lost_in = lost_out = 0
    rtts: list[float] = []
    for t in stats.tracks:
        if t.label is not None:  # a receive slot: what the participant publishes
            bytes_in += t.bytes_received or 0
            lost_in += max(t.packets_lost or 0, 0)
        else:  # a send slot: what the participant receives
            bytes_out += t.bytes_sent or 0
            lost_out += max(t.packets_lost or 0, 0)
            if t.round_trip_time is not None:
                rtts.append(t.round_trip_time)
    return PeerFigures(
        participant_id=stats.participant_id,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        packets_lost_in=lost_in,
        packets_lost_out=lost_out,
        rtt=sum(rtts) / len(rtts) if rtts else None,
    )


async def media_snapshot(server: SignallingServer) -> list[SessionFigures]:
    """Figures for every session live on this process, in session id order.

    Every ``(kind, label)`` the SFU knows appears in ``tracks``, with 0 when
    none is published.  A room whose stats cannot be read (it is closing
    under us) gets ``peers=None`` rather than failing the whole snapshot.
    """
    figures: list[SessionFigures] = []
    for session_id, live in sorted(server.sessions.items()):
        room = server.media.room_of(live) if server.media is not None else None
        tracks = Counter({(kind, label): 0 for label, kind in LABEL_KIND.items()})
        peers: tuple[PeerFigures, ...] | None = ()
        media_peers = 0
        if room is not None:
            media_peers = len(room.participants)
            tracks.update((t.kind, t.label) for t in room.tracks)
            try:
                peers = tuple(peer_figures(s) for s in await room.stats())
            except Exception:
                peers = None
                log.warning("could not read media stats of session %s", session_id, exc_info=True)
        if server.sessions.get(session_id) is not live:
            continue  # ended (or replaced) while the stats were read: it must not reappear
        figures.append(SessionFigures(session_id, len(live.participants), dict(tracks), media_peers, peers))
    return figures


def dropped_candidates(server: SignallingServer) -> dict[str, int]:
    """Remote ICE candidates the media policy dropped on this process, by reason (``address``, ``mdns``,
    ``hostname``: :data:`signalling.sfu.network.DropReason`); empty without a media plane."""
    if server.media is None:
        return {}
    return {str(reason): count for reason, count in server.media.config.dropped.snapshot().items()}
