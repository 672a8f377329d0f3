"""Prometheus metrics, on a registry per application (tests build many apps).

Media figures per session come from :func:`signalling.metrics.media_snapshot`
(aiortc's stats are read with ``await``, so the ``/metrics`` handler calls
:meth:`Metrics.refresh_media` before rendering) and are exposed by
:class:`MediaCollector`, a custom collector: it yields exactly the sessions
of the latest snapshot, so the label sets of an ended session disappear
with it instead of accumulating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from signalling.metrics import PeerFigures, SessionFigures, dropped_candidates, media_snapshot

if TYPE_CHECKING:
    from signalling.server import SignallingServer

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cloudwindow_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cloudwindow_http_request_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "cloudwindow_document_upload_bytes_total", "Bytes of stored documents", registry=self.registry
        )
        self.recording_uploads = Counter(
            "cloudwindow_recording_segments_uploaded_total",
            "Recording segments (and finished manifests) uploaded and verified",
            registry=self.registry,
        )
        self.recording_upload_failures = Counter(
            "cloudwindow_recording_upload_failures_total", "Failed recording uploads (retried)", registry=self.registry
        )
        self.recording_pending = Gauge(
            "cloudwindow_recording_segments_pending", "Closed segments not yet uploaded", registry=self.registry
        )
        self.recording_spool_bytes = Gauge(
            "cloudwindow_recording_spool_bytes", "Bytes in the local recording spool", registry=self.registry
        )
        self.recording_space_alert = Gauge(
            "cloudwindow_recording_space_alert",
            "1 while the recording spool is over its bound or its disk is short of free space",
            registry=self.registry,
        )
        self.media = MediaCollector()
        self.registry.register(self.media)
        self._media_lock = asyncio.Lock()

    async def refresh_media(self, signalling: SignallingServer) -> None:
        """Read the live sessions' media figures now (call before rendering the registry).

        Refreshes run one at a time, so concurrent scrapes cannot apply an
        older snapshot after a newer one (which would look like a counter
        reset).  A failure is logged and leaves the previous figures.
        """
        async with self._media_lock:
            self.media.dropped = dropped_candidates(signalling)
            try:
                snapshot = await media_snapshot(signalling)
            except Exception:
                log.exception("could not read the media figures")
                return
            self.media.update(snapshot)


@dataclass
class _ByteTotals:
    """Monotonic byte totals of one session, though its peer connections come and go.

    A peer's counters start at zero with its connection; when a peer leaves
    (or its counters go down: a new connection under the same id) its last
    figures move into ``retired``.  Bytes a peer moved after the last
    refresh before it left are not counted.
    """

    retired_in: int = 0
    retired_out: int = 0
    last: dict[str, PeerFigures] = field(default_factory=dict)

    def fold(self, peers: Iterable[PeerFigures]) -> None:
        current = {p.participant_id: p for p in peers}
        for pid, old in self.last.items():
            new = current.get(pid)
            if new is None or new.bytes_in < old.bytes_in:
                self.retired_in += old.bytes_in
            if new is None or new.bytes_out < old.bytes_out:
                self.retired_out += old.bytes_out
        self.last = current

    @property
    def bytes_in(self) -> int:
        return self.retired_in + sum(p.bytes_in for p in self.last.values())

    @property
    def bytes_out(self) -> int:
        return self.retired_out + sum(p.bytes_out for p in self.last.values())


class MediaCollector:
    """The media metrics of the latest snapshot (``docs/operations.md`` lists them).

    ``direction`` is seen from the server: ``in`` is what the SFU received
    from participants, ``out`` what it sent them.
    """

    def __init__(self) -> None:
        self._sessions: list[SessionFigures] = []
        self._bytes: dict[int, _ByteTotals] = {}
        #: Remote ICE candidates dropped by the media policy, by reason (monotonic; set on each refresh).
        self.dropped: dict[str, int] = {}

    def update(self, sessions: list[SessionFigures]) -> None:
        """Take a new snapshot; sessions absent from it are forgotten (their labels go)."""
        totals: dict[int, _ByteTotals] = {}
        for s in sessions:
            acc = totals[s.session_id] = self._bytes.get(s.session_id) or _ByteTotals()
            if s.peers is not None:  # stats unreadable this time: keep the totals as they were
                acc.fold(s.peers)
        self._sessions, self._bytes = list(sessions), totals

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        sessions = self._sessions
        yield GaugeMetricFamily("cloudwindow_sessions_live", "Sessions live on this process", value=len(sessions))
        yield GaugeMetricFamily(
            "cloudwindow_media_peers",
            "WebRTC peer connections to the SFU on this process",
            value=sum(s.media_peers for s in sessions),
        )
        participants = GaugeMetricFamily(
            "cloudwindow_session_participants", "Participants joined to the session", labels=["session_id"]
        )
        tracks = GaugeMetricFamily(
            "cloudwindow_session_tracks",
            "Tracks published in the session by kind (audio, video) and label (audio, camera, screen)",
            labels=["session_id", "kind", "label"],
        )
        transferred = CounterMetricFamily(
            "cloudwindow_session_bytes",
            "Media payload bytes the SFU received (in) or sent (out) in the session; bitrate = 8 * rate()",
            labels=["session_id", "direction"],
        )
        lost = GaugeMetricFamily(
            "cloudwindow_session_packets_lost",
            "RTP packets lost on the session's current connections, towards the SFU (in) or from it (out)",
            labels=["session_id", "direction"],
        )
        rtt = GaugeMetricFamily(
            "cloudwindow_session_rtt_seconds",
            "Worst participant's round-trip time from RTCP receiver reports (SFU-to-participant legs)",
            labels=["session_id"],
        )
        for s in sessions:
            sid = str(s.session_id)
            participants.add_metric([sid], s.participants)
            for (kind, label), count in sorted(s.tracks.items()):
                tracks.add_metric([sid, kind, label], count)
            acc = self._bytes.get(s.session_id)
            if acc is not None:
                transferred.add_metric([sid, "in"], acc.bytes_in)
                transferred.add_metric([sid, "out"], acc.bytes_out)
            if s.peers is not None:
                lost.add_metric([sid, "in"], s.packets_lost_in)
                lost.add_metric([sid, "out"], s.packets_lost_out)
            if s.rtt is not None:
                rtt.add_metric([sid], s.rtt)
        yield from (participants, tracks, transferred, lost, rtt)
        dropped = CounterMetricFamily(
            "cloudwindow_ice_candidates_dropped",
            "Remote ICE candidates dropped by the media policy: address (outside media.allowed_cidrs), "
            "mdns (.local name, media.allow_mdns off), hostname",
            labels=["reason"],
        )
        for reason, count in sorted(self.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
