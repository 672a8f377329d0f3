"""The media plane: aiortc peers forwarding encoded media between participants (no Socket.IO here).

Design note
-----------

*Forwarding.*  Each participant has one ``RTCPeerConnection`` to the server
(:mod:`.peer`), all m-sections bundled on one ICE/DTLS transport.  What a
participant publishes arrives at a server receiver whose jitter buffer and
depacketiser run as in stock aiortc; the complete encoded frames (VP8 or
H.264 frames, Opus packets) are then handed on instead of decoded
(:mod:`.passthrough`): an ``EncodedTrack`` per published track fans out to a
bounded ``RelayTrack`` per subscriber, whose ``recv()`` returns ``av.Packet``
so the subscriber's ``RTCRtpSender`` only repacketises (``encoder.pack``).
Nothing is decoded or re-encoded on the server; a slow subscriber loses
frames (video resumes at the next keyframe) without slowing anyone else.
PLI/FIR from a subscriber, a new subscriber, or one recovering from
overflow make the server send a PLI to the publisher, at most one per
0.5 s per published track.  Codecs: Opus and VP8, H.264
(packetization-mode 1) when both ends offer it; each subscriber's sender is
pinned to its publisher's codec.

*Negotiation.*  The server is the only offerer (:mod:`.room` states the
rule).  One offer outstanding per peer; later changes fold into the next
offer.  Tracks that go away leave an ``inactive`` m-section that the next
track of the same kind reuses.

*Network policy.*  :mod:`.network` decides which local addresses are
gathered (exactly the configured ones, loopback included), never uses a
public STUN server unless configured, and checks every remote description
and candidate (size, candidate count, address ranges, mDNS, codecs) before
aiortc sees it.

*What is patched in aiortc/aioice, and why.*  aiortc 1.16 always decodes
received media and offers no hook between jitter buffer and decoder, so
:func:`.passthrough.adopt_receiver` swaps one receiver's private
``__decoder_queue`` for a queue that forwards instead (the decoder thread
then only sees the stop sentinel).  aiortc routes RTCP feedback by media
SSRC and so drops FIR (media SSRC 0), and does not tell the track about
PLI; :func:`.passthrough.adopt_sender` wraps one sender's
``_handle_rtcp_packet`` and its transport router's ``route_rtcp``.  The
subscriber-side ``a=msid`` stream id is set through ``sender._stream_id``.
All of this is per instance (client peers in the same process are not
affected) and checked at import against :data:`.passthrough.AIORTC_SUPPORTED`.
In aioice, the module function ``aioice.ice.get_host_addresses`` (which
skips loopback) is replaced once by a context-scoped version
(:func:`.network.gather_from`).
"""

from .errors import MediaError, MediaPolicyError, MediaRoomError
from .network import IceServer, MediaNetworkConfig, check_candidate, filter_sdp, gather_from
from .passthrough import AIORTC_SUPPORTED, EncodedFrame, EncodedTrack, RelayTrack
from .peer import MediaOffer, MediaPeer, PeerStats, Publication, TrackInfo, TrackLabel, TrackStats
from .room import MediaRoom, NegotiationNeeded, PeerStateChanged, RoomEvent, TrackPublished, TrackUnpublished

__all__ = [
    "AIORTC_SUPPORTED",
    "EncodedFrame",
    "EncodedTrack",
    "IceServer",
    "MediaError",
    "MediaNetworkConfig",
    "MediaOffer",
    "MediaPeer",
    "MediaPolicyError",
    "MediaRoom",
    "MediaRoomError",
    "NegotiationNeeded",
    "PeerStateChanged",
    "PeerStats",
    "Publication",
    "RelayTrack",
    "RoomEvent",
    "TrackInfo",
    "TrackLabel",
    "TrackPublished",
    "TrackStats",
    "TrackUnpublished",
    "check_candidate",
    "filter_sdp",
    "gather_from",
]
