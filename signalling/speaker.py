"""The active speaker of a session, from the levels the participants' browsers report.

Why client-reported levels and not the RTP audio-level header extension
(RFC 6464): the SFU forwards encoded frames and reads no RTP header
extensions, and every browser already measures its own microphone
(``RTCRtpSender.getStats()`` ``media-source.audioLevel``, or a Web Audio
analyser).  A client sends ``audio.level {level}`` (0..1, linear) a few
times a second while it publishes audio; the server picks the speaker.

The rule: among participants not muted by a moderator whose last report
is fresh (``STALE`` seconds) and at least ``THRESHOLD``, the loudest.  The
current speaker keeps the floor while it still speaks unless another is
``SWITCH_RATIO`` times louder, so two people talking at once do not make
the highlight flicker.  Nobody above the threshold: no speaker.
"""

from __future__ import annotations

from signalling.session import LiveSession

THRESHOLD = 0.05
STALE = 1.5
SWITCH_RATIO = 1.5
#: Reports closer together than this from one participant are ignored (about 5 per second at most).
MIN_INTERVAL = 0.2


def _speaking(level: float, at: float, now: float) -> float:
    return level if now - at <= STALE and level >= THRESHOLD else 0.0


def pick(live: LiveSession, now: float) -> str | None:
    """The participant id that should be highlighted now."""
    candidates = {pid: _speaking(p.level, p.level_at, now) for pid, p in live.participants.items() if not p.muted}
    loudest = max(candidates, key=lambda pid: candidates[pid], default=None)
    if loudest is None or candidates[loudest] <= 0.0:
        return None
    current = live.speaker
    if current is not None and candidates.get(current, 0.0) > 0.0:
        if candidates[loudest] < candidates[current] * SWITCH_RATIO:
            return current
    return loudest
