"""Per-session media metrics on ``/metrics``: a real two-party call, then the session ends and its labels go.

Also the collector's bookkeeping on its own: byte counters stay monotonic
while peer connections come and go, and ended sessions leave no label sets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import MediaCollector
from signalling.metrics import PeerFigures, SessionFigures, peer_figures
from signalling.sfu.peer import PeerStats, TrackStats
from tests.media_harness import until
from tests.server.api.conftest import open_case

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, session_id: int) -> list[tuple[str, frozenset[tuple[str, str]]]]:
    return [key for key in samples if ("session_id", str(session_id)) in key[1]]


async def scrape(client: Any) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return parse(await resp.text())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_two_party_call_figures_then_labels_gone_after_end(as_user: Any, client: Any, callers: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    resp = await staff.post(f"/api/v1/cases/{cid}/sessions", json={"kind": "call"})
    session_id = int((await resp.json())["id"])
    sid = str(session_id)

    before = await scrape(client)
    assert value(before, "cloudwindow_sessions_live") == 0
    assert labelled(before, session_id) == []

    a = await callers(client, staff, tag=1)
    b = await callers(client, clerk, tag=2)
    await a.join(session_id)
    await b.join(session_id)
    assert a.media and b.media
    await until(lambda: len(b.media.from_tag(1)) >= 10 and len(a.media.from_tag(2)) >= 10, 15, "video both ways")

    first = await scrape(client)
    assert value(first, "cloudwindow_sessions_live") == 1
    assert value(first, "cloudwindow_media_peers") == 2
    assert value(first, "cloudwindow_session_participants", session_id=sid) == 2
    assert value(first, "cloudwindow_session_tracks", session_id=sid, kind="audio", label="audio") == 2
    assert value(first, "cloudwindow_session_tracks", session_id=sid, kind="video", label="camera") == 2
    assert value(first, "cloudwindow_session_tracks", session_id=sid, kind="video", label="screen") == 0
    in1 = value(first, "cloudwindow_session_bytes_total", session_id=sid, direction="in")
    out1 = value(first, "cloudwindow_session_bytes_total", session_id=sid, direction="out")
    assert in1 is not None and in1 > 0
    assert out1 is not None and out1 > 0
    for direction in ("in", "out"):
        lost = value(first, "cloudwindow_session_packets_lost", session_id=sid, direction=direction)
        assert lost is not None and lost >= 0

    # Media keeps flowing: both counters grow between scrapes.  RTT needs a receiver report answering the
    # latest sender report (RTCP every 0.5-1.5 s), so it may take a few scrapes to appear.
    await asyncio.sleep(0.5)
    second = await scrape(client)
    in2 = value(second, "cloudwindow_session_bytes_total", session_id=sid, direction="in")
    out2 = value(second, "cloudwindow_session_bytes_total", session_id=sid, direction="out")
    assert in2 is not None and in2 > in1
    assert out2 is not None and out2 > out1
    rtt: list[float | None] = [value(second, "cloudwindow_session_rtt_seconds", session_id=sid)]
    for _ in range(50):
        if rtt[-1] is not None:
            break
        await asyncio.sleep(0.2)
        rtt.append(value(await scrape(client), "cloudwindow_session_rtt_seconds", session_id=sid))
    assert rtt[-1] is not None and 0 <= rtt[-1] < 1.0, rtt

    resp = await staff.post(f"/api/v1/sessions/{session_id}/end")
    assert resp.status == 200, await resp.text()
    after = await scrape(client)
    assert labelled(after, session_id) == []
    assert value(after, "cloudwindow_sessions_live") == 0
    assert value(after, "cloudwindow_media_peers") == 0


def _peer(pid: str, bytes_in: int, bytes_out: int) -> PeerFigures:
    return PeerFigures(pid, bytes_in, bytes_out, packets_lost_in=0, packets_lost_out=0, rtt=None)


def _session(session_id: int, *peers: PeerFigures, readable: bool = True) -> SessionFigures:
    return SessionFigures(
        session_id,
        participants=len(peers),
        tracks={("audio", "audio"): len(peers)},
        media_peers=len(peers),
        peers=tuple(peers) if readable else None,
    )


def _bytes(collector: MediaCollector, session_id: int) -> tuple[float | None, float | None]:
    registry = CollectorRegistry()
    registry.register(collector)
    samples = parse(generate_latest(registry).decode())
    sid = str(session_id)
    return (
        value(samples, "cloudwindow_session_bytes_total", session_id=sid, direction="in"),
        value(samples, "cloudwindow_session_bytes_total", session_id=sid, direction="out"),
    )


def test_byte_counters_stay_monotonic_while_peers_come_and_go() -> None:
    c = MediaCollector()
    c.update([_session(7, _peer("a", 100, 10), _peer("b", 200, 20))])
    assert _bytes(c, 7) == (300, 30)
    # b leaves: what it moved stays counted.
    c.update([_session(7, _peer("a", 150, 15))])
    assert _bytes(c, 7) == (350, 35)
    # a reconnects under the same id: its counters restart from zero, the total does not go down.
    c.update([_session(7, _peer("a", 5, 1))])
    assert _bytes(c, 7) == (355, 36)
    # Stats unreadable once: the totals stay as they were, and no packets-lost figure is made up.
    c.update([_session(7, _peer("a", 0, 0), readable=False)])
    assert _bytes(c, 7) == (355, 36)
    c.update([_session(7, _peer("a", 9, 2))])
    assert _bytes(c, 7) == (359, 37)
    # The session ends: its label sets go, and a later session with the same id starts from zero.
    c.update([])
    assert _bytes(c, 7) == (None, None)
    c.update([_session(7, _peer("c", 1, 1))])
    assert _bytes(c, 7) == (1, 1)


def test_peer_figures_split_directions_and_clamp_negative_loss() -> None:
    def track(label: str | None, **kw: Any) -> TrackStats:
        figures: dict[str, Any] = {
            "packets_sent": None,
            "bytes_sent": None,
            "packets_received": None,
            "bytes_received": None,
            "packets_lost": None,
            "jitter": None,
            "round_trip_time": None,
        }
        figures.update(kw)
        return TrackStats(
            mid="0",
            kind="audio",
            direction="recvonly" if label else "sendonly",
            label=label,  # type: ignore[arg-type]
            source=None,
            frames_forwarded=0,
            frames_dropped=0,
            **figures,
        )

    stats = PeerStats(
        "p",
        "connected",
        None,
        (
            track("audio", bytes_received=1000, packets_lost=-2),  # duplicates make RFC 3550 loss negative
            track("camera", bytes_received=5000, packets_lost=3),
            track(None, bytes_sent=700, packets_lost=1, round_trip_time=0.010),
            track(None, bytes_sent=300, packets_lost=None, round_trip_time=0.030),
            track(None, bytes_sent=None),  # never started
        ),
    )
    f = peer_figures(stats)
    assert (f.bytes_in, f.bytes_out, f.packets_lost_in, f.packets_lost_out) == (6000, 1000, 3, 1)
    assert f.rtt == pytest.approx(0.020)
