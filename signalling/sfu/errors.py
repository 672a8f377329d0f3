"""Errors the media plane raises, each with a stable ``code``.

The codes are part of the wire contract (``docs/protocol.md``): the Socket.IO
layer copies ``code`` and ``message`` into the acknowledgement of the event
that failed, so they never change meaning once released.
"""

from __future__ import annotations

from typing import Literal

PolicyCode = Literal[
    "sdp_too_large",
    "sdp_invalid",
    "too_many_candidates",
    "candidate_not_allowed",
    "mdns_not_allowed",
    "codec_unsupported",
    "no_allowed_candidate",
]
"""Refusals of remote SDP or candidates (:mod:`signalling.sfu.network`); ``no_allowed_candidate``
(:mod:`signalling.sfu.peer`): the client finished gathering and none of its candidates is allowed."""

RoomCode = Literal[
    "room_full",
    "room_closed",
    "unknown_participant",
    "invalid_participant_id",
    "no_offer_outstanding",
    "stale_answer",
    "unknown_track",
    "invalid_label",
    "negotiation_timeout",
]
"""Refusals of room operations (:mod:`signalling.sfu.room`)."""


class MediaError(Exception):
    """Base of media-plane refusals: ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class MediaPolicyError(MediaError):
    """Remote SDP or an ICE candidate broke the media policy; nothing was applied."""

    code: PolicyCode

    def __init__(self, code: PolicyCode, message: str) -> None:
        super().__init__(code, message)


class MediaRoomError(MediaError):
    """A room operation was refused; the room's state is unchanged."""

    code: RoomCode

    def __init__(self, code: RoomCode, message: str) -> None:
        super().__init__(code, message)
