"""The server process of the SFU benchmark: CloudWindow's MediaRoom, or aiortc's decode/re-encode relay.

Run by ``bench/sfu_forward.py`` (never on its own in normal use)::

    python bench/sfu_server.py --mode sfu|relay

It listens on a free 127.0.0.1 TCP port for the load driver's client
workers, prints ``READY <port>`` and serves JSON lines (one object per
line, both ways):

* requests ``{"id", "op": "join"|"answer"|"leave"|"stats", ...}`` get
  ``{"id", "ok": true, ...}`` or ``{"id", "ok": false, "error"}``;
* server offers made later (renegotiation) are pushed to the connection
  that joined the participant as ``{"event": "offer", "room",
  "participant", "offer"}``.

``--mode sfu`` hosts :class:`signalling.sfu.MediaRoom` exactly as
``signalling/media.py`` does (loopback-only :class:`MediaNetworkConfig`,
default keyframe interval).  ``--mode relay`` is the baseline: a plain
aiortc server that receives each published track (aiortc decodes it) and
hands it to every subscriber's sender through
``aiortc.contrib.media.MediaRelay`` (each sender re-encodes VP8).  The relay
baseline supports what the benchmark needs: publishers join before their
subscribers (no renegotiation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from signalling.sfu import MediaNetworkConfig, MediaRoom, NegotiationNeeded, RoomEvent
from signalling.sfu.jitter import VideoFrameBuffer
from signalling.sfu.network import gather_from
from signalling.sfu.passthrough import DroppingQueue, lean_receiver
from signalling.sfu.peer import MediaOffer, nominated_pair

LOOPBACK = ("127.0.0.1",)
CONFIG = MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",))
ROOM_SIZE = 64

Send = Callable[[dict[str, Any]], None]


def offer_dict(offer: MediaOffer) -> dict[str, Any]:
    return {
        "sdp": offer.sdp,
        "revision": offer.revision,
        "publish": dict(offer.publish),
        "subscribe": {mid: info.participant_id for mid, info in offer.subscribe.items()},
    }


# --- the baseline: aiortc decode / re-encode relay -------------------------------------------------------------------


class RelayRoom:
    """Publishers' tracks are decoded by aiortc and re-encoded by each subscriber's sender (MediaRelay)."""

    _revisions = itertools.count(1)

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.peers: dict[str, RTCPeerConnection] = {}
        self.tracks: dict[str, list[MediaStreamTrack]] = {}
        self._sinks: set[asyncio.Task[None]] = set()

    async def join(self, participant_id: str) -> dict[str, Any]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.peers[participant_id] = pc
        audio = pc.addTransceiver("audio", direction="recvonly")
        video = pc.addTransceiver("video", direction="recvonly")
        subscribe: dict[str, str] = {}
        sending = []
        for other, tracks in self.tracks.items():
            for track in tracks:
                sending.append((pc.addTransceiver(self.relay.subscribe(track, buffered=False), "sendonly"), other))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks.setdefault(participant_id, []).append(track)

        offer = await pc.createOffer()
        with gather_from(LOOPBACK):
            await pc.setLocalDescription(offer)
        for transceiver, other in sending:
            subscribe[str(transceiver.mid)] = other
        return {
            "sdp": pc.localDescription.sdp,
            "revision": next(self._revisions),
            "publish": {str(audio.mid): "audio", str(video.mid): "camera"},
            "subscribe": subscribe,
        }

    async def answer(self, participant_id: str, sdp: str) -> None:
        await self.peers[participant_id].setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def leave(self, participant_id: str) -> None:
        pc = self.peers.pop(participant_id, None)
        self.tracks.pop(participant_id, None)
        if pc is not None:
            await pc.close()

    async def close(self) -> None:
        for participant_id in list(self.peers):
            await self.leave(participant_id)


# --- the control channel ---------------------------------------------------------------------------------------------


class Server:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rooms: dict[str, MediaRoom] = {}
        self.relay_rooms: dict[str, RelayRoom] = {}
        self.owner: dict[tuple[str, str], Send] = {}

    def _listener(self, room_id: str) -> Callable[[RoomEvent], None]:
        def listen(event: RoomEvent) -> None:
            if isinstance(event, NegotiationNeeded):
                send = self.owner.get((room_id, event.participant_id))
                if send is not None:
                    send(
                        {
                            "event": "offer",
                            "room": room_id,
                            "participant": event.participant_id,
                            "offer": offer_dict(event.offer),
                        }
                    )

        return listen

    def _room(self, room_id: str) -> MediaRoom:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = MediaRoom(
                room_id, CONFIG, max_participants=ROOM_SIZE, listener=self._listener(room_id)
            )
        return room

    async def handle(self, request: dict[str, Any], send: Send) -> dict[str, Any]:
        op = request["op"]
        room_id, participant = request.get("room", ""), request.get("participant", "")
        if op == "join":
            self.owner[(room_id, participant)] = send
            if self.mode == "relay":
                return {"offer": await self.relay_rooms.setdefault(room_id, RelayRoom()).join(participant)}
            return {"offer": offer_dict(await self._room(room_id).join(participant))}
        if op == "answer":
            if self.mode == "relay":
                await self.relay_rooms[room_id].answer(participant, request["sdp"])
            else:
                await self._room(room_id).answer(participant, request["sdp"], request["revision"])
            return {}
        if op == "leave":
            if self.mode == "relay":
                await self.relay_rooms[room_id].leave(participant)
            else:
                await self._room(room_id).leave(participant)
            return {}
        if op == "stats":
            return await self.stats()
        raise ValueError(f"unknown op {op!r}")

    async def stats(self) -> dict[str, Any]:
        """Forwarding counters of the SFU (frames forwarded/dropped by the relays) and the pairs in use."""
        forwarded = dropped = peers = 0
        pairs: set[str] = set()
        # Where keyframe requests to the publishers come from, and where received packets were lost.
        keyframes = {"requested": 0, "sent": 0, "buffer_gave_up": 0, "buffer_reset": 0, "lean_plis": 0}
        nacks = ice_queue_dropped = rtp_received = rtp_lean = 0
        for room in self.rooms.values():
            for participant in room.participants:
                peer = room.peer(participant)
                peers += 1
                pair = nominated_pair(peer.pc)
                if pair is not None:
                    pairs.add(f"{pair[0][0]}-{pair[1][0]}")
                for publication in peer.publications:
                    keyframes["requested"] += publication.requester.requested
                    keyframes["sent"] += publication.requester.sent
                    for relay in publication.track.relays:
                        forwarded += relay.frames_forwarded
                        dropped += relay.frames_dropped
                for transceiver in peer.pc.getTransceivers():
                    receiver = transceiver.receiver
                    buffer = receiver.__dict__.get("_RTCRtpReceiver__jitter_buffer")
                    if isinstance(buffer, VideoFrameBuffer):
                        keyframes["buffer_gave_up"] += buffer.holes_skipped
                        keyframes["buffer_reset"] += buffer.resets
                    lean = lean_receiver(receiver)
                    if lean is not None:
                        keyframes["lean_plis"] += lean.plis
                        nacks += lean.nacks
                        rtp_lean += lean.packets
                    streams = receiver.__dict__.get("_RTCRtpReceiver__remote_streams", {})
                    rtp_received += sum(stream.packets_received for stream in streams.values())
                transceivers = peer.pc.getTransceivers()
                queue = transceivers[0].receiver.transport.transport._connection._queue if transceivers else None
                if isinstance(queue, DroppingQueue):
                    ice_queue_dropped += queue.dropped
        for relay_room in self.relay_rooms.values():
            for pc in relay_room.peers.values():
                peers += 1
                pair = nominated_pair(pc)
                if pair is not None:
                    pairs.add(f"{pair[0][0]}-{pair[1][0]}")
        return {
            "peers": peers,
            "frames_forwarded": forwarded,
            "frames_dropped": dropped,
            "pairs": sorted(pairs),
            "keyframes": keyframes,
            "nacks": nacks,
            "ice_queue_dropped": ice_queue_dropped,
            "rtp_received": rtp_received,
            "rtp_lean": rtp_lean,
        }

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[None]] = set()

        def send(message: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(json.dumps(message).encode() + b"\n")

        async def run(request: dict[str, Any]) -> None:
            try:
                reply = {"id": request["id"], "ok": True, **await self.handle(request, send)}
            except Exception as exc:
                reply = {"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            send(reply)

        try:
            while line := await reader.readline():
                task = asyncio.ensure_future(run(json.loads(line)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def close(self) -> None:
        for room in self.rooms.values():
            await room.close()
        for relay_room in self.relay_rooms.values():
            await relay_room.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("sfu", "relay"), required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="server %(levelname)s %(name)s: %(message)s")
    server = Server(args.mode)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, limit=1 << 20)
    port = listener.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    # The driver closes stdin to stop us (or dies, which closes it too).
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        if not stop.done():
            stop.set_result(None)

    watcher = asyncio.ensure_future(watch_stdin())
    try:
        await stop
    finally:
        watcher.cancel()
        listener.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await server.close()


if __name__ == "__main__":
    asyncio.run(main())
