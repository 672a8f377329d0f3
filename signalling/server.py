"""The Socket.IO signalling server (docs/protocol.md is the contract).

Thin edges again: each event handler validates its payload, asks the
application (``signalling.application`` Protocols) whether the socket may do
it, changes the live session and the media room, and answers with an ack
``{ok: true, ...}`` or ``{ok: false, error: {code, message}}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import socketio
from aiohttp import web
from pydantic import BaseModel, ValidationError

from signalling import messages, speaker
from signalling.application import Authenticator, Identity, Refused, SessionDirectory, SessionInfo
from signalling.cluster import Cluster, ClusterError, LocalCluster
from signalling.media import RoomObserver, SessionMedia
from signalling.session import ChatLimiter, LiveSession, Participant, Waiter
from signalling.sfu.errors import MediaError
from signalling.sfu.network import MediaNetworkConfig
from signalling.turn import IceServerConfig, ice_servers_for

log = logging.getLogger(__name__)

Ack = dict[str, Any]


@dataclass
class SignallingConfig:
    max_participants: int = 8
    empty_session_timeout: float = 300.0
    chat_max_messages: int = 5
    chat_window: float = 5.0
    ice_servers: list[IceServerConfig] = field(default_factory=list)
    #: Origins (``scheme://host[:port]``) whose pages may connect.  Empty: only the page's own origin (the Host
    #: the request came to), so another site's page cannot open a socket with a user's token (RFC 6455 section
    #: 10.2).  A connection without an Origin header (not a browser) is not affected.
    allowed_origins: list[str] = field(default_factory=list)


def ok(**result: Any) -> Ack:
    return {"ok": True, **result}


def refuse(code: str, message: str) -> Ack:
    return {"ok": False, "error": {"code": code, "message": message}}


Handler = Callable[..., Awaitable[Ack]]


class SignallingServer:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        directory: SessionDirectory,
        config: SignallingConfig,
        client_manager: socketio.AsyncManager | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        media: MediaNetworkConfig | None = None,
        cluster: Cluster | None = None,
        room_observer: RoomObserver | None = None,
    ) -> None:
        self.auth = authenticator
        self.directory = directory
        self.config = config
        self.monotonic = monotonic
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=client_manager,
            # None: engine.io compares Origin with the request's own scheme://Host; [] would turn the check off.
            cors_allowed_origins=list(config.allowed_origins) or None,
            max_http_buffer_size=256 * 1024,
            logger=False,
            engineio_logger=False,
        )
        self.cluster: Cluster = cluster or LocalCluster()
        self.sessions: dict[int, LiveSession] = {}
        #: Sockets connected to another process whose events this process handles (it owns their session).
        self.remote_sockets: dict[str, _Socket] = {}
        #: sid → (identity, session_id | None, participant_id | None)
        self.sockets: dict[str, _Socket] = {}
        self.chat = ChatLimiter(config.chat_max_messages, config.chat_window)
        self.media: SessionMedia | None = None
        if media is not None:
            self.media = SessionMedia(
                media, self._emit_to, max_participants=config.max_participants, observer=room_observer
            )
        self._tasks: set[asyncio.Future[None]] = set()
        self._register()

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app)

    async def _emit_to(self, event: str, data: dict[str, Any], to: str) -> None:
        await self.sio.emit(event, data, to=to)

    # -- plumbing ---------------------------------------------------------

    def _register(self) -> None:
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for event, model, handler in self._events():
            self.sio.on(event, self._guard(event, model, handler))

    def _events(self) -> tuple[tuple[str, type[BaseModel], Handler], ...]:
        return (
            ("session.join", messages.Join, self._join),
            ("session.leave", messages.Leave, self._leave),
            ("chat.send", messages.ChatSend, self._chat),
            ("media.answer", messages.Answer, self._answer),
            ("media.candidate", messages.Candidate, self._candidate),
            ("media.publish", messages.Publish, self._publish),
            ("media.unpublish", messages.Unpublish, self._unpublish),
            ("session.admit", messages.Admit, self._admit),
            ("session.refuse", messages.RefuseWaiter, self._refuse_waiter),
            ("participant.mute", messages.Mute, self._mute),
            ("participant.remove", messages.Remove, self._remove_participant),
            ("audio.level", messages.AudioLevel, self._audio_level),
        )

    def _guard(self, event: str, model: type[BaseModel], handler: Handler) -> Callable[..., Awaitable[Ack]]:
        async def run(sid: str, data: Any = None) -> Ack:
            sock = self.sockets.get(sid)
            if sock is None:
                return refuse("auth_required", "connect with a token first")
            try:
                payload = model.model_validate(data if data is not None else {})
            except ValidationError as exc:
                errors = [{"loc": [str(x) for x in e["loc"]], "message": e["msg"]} for e in exc.errors()]
                return {**refuse("invalid_payload", f"{event}: payload is not valid"), "details": errors}
            try:
                return await self._route(event, sid, sock, payload, handler)
            except ClusterError as exc:
                log.warning("signalling %s: %s", event, exc)
                return refuse("session_unavailable", "the session's server is not reachable; try again")

        return run

    async def _route(self, event: str, sid: str, sock: _Socket, payload: BaseModel, handler: Handler) -> Ack:
        """Handle here if this process owns the session, else forward to the owner (``signalling.cluster``)."""
        here = self.cluster.node_id
        if isinstance(payload, messages.Join):
            if sock.session_id is not None and sock.session_id != payload.session_id and sock.node != here:
                await self._forward(sock.node, "session.leave", sid, sock, {})
                sock.session_id = sock.participant_id = sock.node = None
            target = await self.cluster.owner_of(payload.session_id)
        else:
            target = sock.node or here
        if target == here:
            ack = await self._run(event, handler, sid, sock, payload)
            if isinstance(payload, messages.Join) and ack.get("ok"):
                sock.node = here
            return ack
        ack = await self._forward(target, event, sid, sock, payload.model_dump())
        if isinstance(payload, messages.Join) and ack.get("ok"):
            sock.session_id, sock.participant_id, sock.node = payload.session_id, ack["participant_id"], target
        elif isinstance(payload, messages.Leave) and ack.get("ok"):
            sock.session_id = sock.participant_id = sock.node = None
        return ack

    async def _forward(self, node: str | None, event: str, sid: str, sock: _Socket, data: dict[str, Any]) -> Ack:
        assert node is not None
        message = {"kind": "event", "event": event, "sid": sid, "identity": asdict(sock.identity), "data": data}
        return await self.cluster.call(node, message)

    async def _run(self, event: str, handler: Handler, sid: str, sock: _Socket, payload: BaseModel) -> Ack:
        # One event at a time per socket, and a disconnect waits for the event in hand (no half-joined ghosts).
        async with sock.lock:
            return await self._run_locked(event, handler, sid, sock, payload)

    async def _run_locked(self, event: str, handler: Handler, sid: str, sock: _Socket, payload: BaseModel) -> Ack:
        try:
            return await handler(sid, sock, payload)
        except Refused as exc:
            return refuse(exc.code, exc.message)
        except MediaError as exc:
            return refuse(exc.code, exc.message)
        except Exception:
            log.exception("signalling handler %s failed", event)
            return refuse("internal_error", "internal error")

    async def _serve_forwarded(self, message: dict[str, Any]) -> Ack:
        """Run an event forwarded by another process: for a socket connected there, or a session to end."""
        if message["kind"] == "end":  # no socket behind it: a REST request on the other process ended the session
            await self._end_local(int(message["session_id"]), str(message["reason"]))
            return ok()
        sid = str(message["sid"])
        if message["kind"] == "disconnect":
            sock = self.remote_sockets.pop(sid, None)
            if sock is not None:
                async with sock.lock:
                    if sock.session_id is not None:
                        await self._unwait(sock.session_id, sid)
                        await self._remove(sock.session_id, sock.participant_id, reason="disconnected")
            return ok()
        identity = Identity(**{**message["identity"], "rooms": tuple(message["identity"].get("rooms", ()))})
        sock = self.remote_sockets.get(sid)
        if sock is None or sock.identity != identity:
            sock = self.remote_sockets[sid] = _Socket(identity)
        for event, model, handler in self._events():
            if event == message["event"]:
                payload = model.model_validate(message["data"])
                ack = await self._run(event, handler, sid, sock, payload)
                if isinstance(payload, messages.Leave) or (isinstance(payload, messages.Join) and not ack.get("ok")):
                    if sock.session_id is None:
                        self.remote_sockets.pop(sid, None)
                return ack
        return refuse("invalid_payload", "unknown event")

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise _refused("auth_required", "connect with auth = {token}")
        request = environ.get("aiohttp.request")
        addr = request.remote if request is not None else None
        try:
            identity = await self.auth.authenticate(token, addr)
        except Refused as exc:
            raise _refused(exc.code, exc.message) from None
        self.sockets[sid] = _Socket(identity)
        for room in identity.rooms:
            await self.sio.enter_room(sid, room)

    async def _on_disconnect(self, sid: str, *_args: Any) -> None:
        sock = self.sockets.pop(sid, None)
        if sock is None:
            return
        async with sock.lock:  # an event still in hand (a join) finishes first, then is undone here
            await self._disconnected(sid, sock)

    async def _disconnected(self, sid: str, sock: _Socket) -> None:
        if sock.session_id is None:
            return
        if sock.node in (None, self.cluster.node_id):
            await self._unwait(sock.session_id, sid)
            await self._remove(sock.session_id, sock.participant_id, reason="disconnected")
            return
        try:
            await self.cluster.call(sock.node, {"kind": "disconnect", "sid": sid})
        except ClusterError as exc:
            log.warning("could not tell the owner that %s disconnected: %s", sid, exc)

    # -- sessions -----------------------------------------------------------

    async def _join(self, sid: str, sock: _Socket, p: messages.Join) -> Ack:
        if sock.session_id is not None and sock.session_id != p.session_id:
            await self._unwait(sock.session_id, sid)
            await self._remove(sock.session_id, sock.participant_id, reason="switched")
        # Joining the same session again (after a failed peer connection) replaces the participant below.
        info = await self.directory.authorise_join(sock.identity, p.session_id)
        live = self.sessions.get(p.session_id)
        if live is None:
            live = self.sessions[p.session_id] = LiveSession(info)
        if sock.identity.key in live.banned:
            return refuse("participant_removed", "a moderator removed you from this session")
        if info.must_wait and sock.identity.key not in live.admitted:
            return await self._wait(live, sid, sock)
        return await self._enter(live, info, sid, sock)

    def _session_wire(self, live: LiveSession) -> dict[str, Any]:
        info = live.info
        return {
            "id": info.session_id,
            "case_id": info.case_id,
            "kind": info.kind,
            "host_user_id": info.host_user_id,
            "recording": self.media.recording(live) if self.media is not None else False,
        }

    async def _to_moderators(self, live: LiveSession, event: str, data: dict[str, Any]) -> None:
        for m in live.moderators():
            await self.sio.emit(event, data, to=m.sid)

    async def _wait(self, live: LiveSession, sid: str, sock: _Socket) -> Ack:
        """Put the socket in the waiting room; moderators are told and admit or refuse it."""
        async with live.lock:
            for old in [w for w in live.waiting.values() if w.identity.key == sock.identity.key or w.sid == sid]:
                live.waiting.pop(old.waiter_id, None)
            waiter = Waiter(waiter_id=uuid.uuid4().hex[:12], sid=sid, identity=sock.identity)
            live.waiting[waiter.waiter_id] = waiter
        sock.session_id, sock.participant_id = live.info.session_id, None
        await self._to_moderators(live, "waiting.joined", {"session_id": live.info.session_id, "waiter": waiter.wire()})
        return ok(waiting=True, waiter_id=waiter.waiter_id, participant_id=None, session=self._session_wire(live))

    async def _unwait(self, session_id: int, sid: str, reason: str = "left") -> Waiter | None:
        live = self.sessions.get(session_id)
        waiter = live.waiter_of(sid) if live is not None else None
        if live is None or waiter is None:
            return None
        live.waiting.pop(waiter.waiter_id, None)
        await self._to_moderators(
            live, "waiting.left", {"session_id": session_id, "waiter_id": waiter.waiter_id, "reason": reason}
        )
        return waiter

    async def _enter(self, live: LiveSession, info: SessionInfo, sid: str, sock: _Socket) -> Ack:
        """Make the socket a participant of the live session (after authorisation and, if needed, admission)."""
        p_session_id = live.info.session_id
        async with live.lock:
            old = live.by_identity_key(sock.identity.key)
            present = len(live.participants) - (1 if old else 0)
            if present >= self.config.max_participants:
                return refuse("session_full", f"at most {self.config.max_participants} participants")
            if live.empty_timer is not None:
                live.empty_timer.cancel()
                live.empty_timer = None
        if old is not None:
            # Rejoin replaces the old participant: no ghost stays behind.
            old_sock = self.sockets.get(old.sid) or self.remote_sockets.get(old.sid)
            if old_sock is not None and old.sid != sid:
                old_sock.session_id = old_sock.participant_id = None
                await self.sio.leave_room(old.sid, live.room)
            await self._remove(p_session_id, old.participant_id, reason="replaced")
        participant = Participant(
            participant_id=uuid.uuid4().hex[:12],
            sid=sid,
            identity=sock.identity,
            moderator=info.moderator,
            muted=sock.identity.key in live.muted,
        )
        live.participants[participant.participant_id] = participant
        sock.session_id, sock.participant_id = p_session_id, participant.participant_id
        await self.sio.enter_room(sid, live.room)
        await self.sio.emit("participant.joined", {"participant": participant.wire()}, room=live.room, skip_sid=sid)
        await self.directory.participant_joined(sock.identity, p_session_id, participant.participant_id)
        offer = None
        if self.media is not None:
            try:
                offer = await self.media.join(live, participant)
            except Exception:
                sock.session_id = sock.participant_id = None
                await self._remove(p_session_id, participant.participant_id, reason="media_refused")
                raise
        return ok(
            offer=offer,
            participant_id=participant.participant_id,
            session=self._session_wire(live),
            participants=[x.wire() for x in live.participants.values()],
            waiting=[w.wire() for w in live.waiting.values()] if participant.moderator else [],
            speaker=live.speaker,
            ice_servers=ice_servers_for(self.config.ice_servers, participant.participant_id, time.time()),
        )

    async def _leave(self, sid: str, sock: _Socket, _p: messages.Leave) -> Ack:
        if sock.session_id is None:
            return refuse("not_joined", "join a session first")
        session_id, pid = sock.session_id, sock.participant_id
        sock.session_id = sock.participant_id = sock.node = None
        await self._unwait(session_id, sid)
        await self._remove(session_id, pid, reason="left")
        return ok()

    async def _remove(self, session_id: int, participant_id: str | None, *, reason: str) -> None:
        live = self.sessions.get(session_id)
        if live is None or participant_id is None:
            return
        participant = live.participants.pop(participant_id, None)
        if participant is None:
            return
        await self.sio.leave_room(participant.sid, live.room)
        if self.media is not None:
            await self.media.leave(live, participant)
        await self.sio.emit("participant.left", {"participant_id": participant_id, "reason": reason}, room=live.room)
        if live.speaker == participant_id:
            await self._update_speaker(live)
        await self.directory.participant_left(participant.identity, session_id, participant_id)
        if not live.participants:
            self._arm_empty_timer(live)

    def _arm_empty_timer(self, live: LiveSession) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            live.empty_timer = None
            if not live.participants and self.sessions.get(live.info.session_id) is live:
                task = asyncio.ensure_future(self._end_empty(live.info.session_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        live.empty_timer = loop.call_later(self.config.empty_session_timeout, fire)

    async def _end_empty(self, session_id: int) -> None:
        try:
            await self.directory.session_emptied(session_id)
        except Exception:
            log.exception("could not end empty session %s", session_id)
        await self._end_local(session_id, "empty")

    async def notify(self, room: str, event: str, data: dict[str, Any]) -> None:
        """Send an application notice to a notification room (see ``Identity.rooms``), on every process."""
        await self.sio.emit(event, data, room=room)

    async def notify_session(self, session_id: int, event: str, data: dict[str, Any]) -> None:
        """Send an application event to every participant of a session (not its waiting room), on every process."""
        await self.sio.emit(event, data, room=LiveSession.room_of(session_id))

    async def is_live(self, session_id: int) -> bool:
        """Whether the session has a room on some process (here, or owned by another live one)."""
        if session_id in self.sessions:
            return True
        owner = await self.cluster.current_owner(session_id)
        return owner is not None and owner != self.cluster.node_id

    async def end_session(self, session_id: int, reason: str) -> None:
        """Tell everyone the session ended and drop their media, on whichever process owns it."""
        owner = await self.cluster.owner_of(session_id)
        if owner == self.cluster.node_id:
            await self._end_local(session_id, reason)
        else:
            await self.cluster.call(owner, {"kind": "end", "session_id": session_id, "reason": reason})

    async def _end_local(self, session_id: int, reason: str) -> None:
        await self.cluster.release(session_id)
        live = self.sessions.pop(session_id, None)
        if live is None:
            return
        if live.empty_timer is not None:
            live.empty_timer.cancel()
        await self.sio.emit("session.ended", {"session_id": session_id, "reason": reason}, room=live.room)
        for waiter in list(live.waiting.values()):
            await self.sio.emit("session.ended", {"session_id": session_id, "reason": reason}, to=waiter.sid)
            wsock = self.sockets.get(waiter.sid) or self.remote_sockets.pop(waiter.sid, None)
            if wsock is not None and wsock.session_id == session_id:
                wsock.session_id = wsock.participant_id = None
        live.waiting.clear()
        for participant in list(live.participants.values()):
            sock = self.sockets.get(participant.sid) or self.remote_sockets.pop(participant.sid, None)
            if sock is not None:
                sock.session_id = sock.participant_id = None
            await self.sio.leave_room(participant.sid, live.room)
        if self.media is not None:
            await self.media.close(live)
        live.participants.clear()

    def _current(self, sock: _Socket) -> tuple[LiveSession, Participant]:
        if sock.session_id is None or sock.participant_id is None:
            raise Refused("not_joined", "join a session first")
        live = self.sessions.get(sock.session_id)
        participant = live.participants.get(sock.participant_id) if live else None
        if live is None or participant is None:
            raise Refused("not_joined", "join a session first")
        return live, participant

    async def _joined(self, sock: _Socket) -> tuple[LiveSession, Participant]:
        """The socket's session and participant, re-checking that it may still be there.

        Authorisation holds on every event, not only on join: a logout, a
        revoked invite or an ended session removes the participant here.
        """
        live, participant = self._current(sock)
        try:
            await self.directory.authorise_join(sock.identity, live.info.session_id)
        except Refused:
            sock.session_id = sock.participant_id = sock.node = None
            await self._remove(live.info.session_id, participant.participant_id, reason="revoked")
            raise
        return live, participant

    # -- chat ---------------------------------------------------------------

    async def _chat(self, sid: str, sock: _Socket, p: messages.ChatSend) -> Ack:
        live, participant = await self._joined(sock)
        text = p.text.strip()
        if not text:
            return refuse("invalid_payload", "empty message")
        if not self.chat.allow(sock.identity.key, live.info.session_id, self.monotonic()):
            return refuse("rate_limited", "too many messages; slow down")
        stored = await self.directory.store_chat(sock.identity, live.info.session_id, text)
        message = {
            "id": stored.id,
            "session_id": live.info.session_id,
            "participant_id": participant.participant_id,
            "display_name": participant.identity.display_name,
            "text": text,
            "at": stored.at.isoformat(),
        }
        await self.sio.emit("chat.message", message, room=live.room)
        return ok(message=message)

    # -- moderation: waiting room, mute, remove; active speaker ---------------

    async def _moderator(self, sock: _Socket) -> tuple[LiveSession, Participant]:
        live, me = await self._joined(sock)
        if not me.moderator:
            raise Refused("not_moderator", "only the host, the case's clerk or an admin may do this")
        return live, me

    def _socket(self, sid: str) -> _Socket | None:
        return self.sockets.get(sid) or self.remote_sockets.get(sid)

    async def _admit(self, sid: str, sock: _Socket, p: messages.Admit) -> Ack:
        live, me = await self._moderator(sock)
        session_id = live.info.session_id
        waiter = live.waiting.get(p.waiter_id)
        wsock = self._socket(waiter.sid) if waiter is not None else None
        if waiter is None or wsock is None or wsock.session_id != session_id:
            if waiter is not None:
                live.waiting.pop(waiter.waiter_id, None)
            return refuse("waiter_not_found", "nobody with that id is waiting")
        present = len(live.participants) - (1 if live.by_identity_key(waiter.identity.key) else 0)
        if present >= self.config.max_participants:
            return refuse("session_full", f"at most {self.config.max_participants} participants")
        try:  # the invite may have been revoked while it waited
            info = await self.directory.authorise_join(waiter.identity, session_id)
        except Refused as exc:
            await self._unwait(session_id, waiter.sid, reason="revoked")
            wsock.session_id = wsock.participant_id = None
            await self.sio.emit("session.refused", {"session_id": session_id, "reason": "revoked"}, to=waiter.sid)
            return refuse(exc.code, exc.message)
        live.waiting.pop(waiter.waiter_id, None)
        live.admitted.add(waiter.identity.key)
        async with wsock.lock:
            try:
                entered = await self._enter(live, info, waiter.sid, wsock)
            except (Refused, MediaError) as exc:
                live.admitted.discard(waiter.identity.key)
                wsock.session_id = wsock.participant_id = None
                await self.sio.emit("session.refused", {"session_id": session_id, "reason": exc.code}, to=waiter.sid)
                return refuse(exc.code, exc.message)
        if not entered.get("ok"):
            live.admitted.discard(waiter.identity.key)
            return entered
        admitted = {k: v for k, v in entered.items() if k != "ok"}
        await self.sio.emit("session.admitted", admitted, to=waiter.sid)
        await self._to_moderators(
            live, "waiting.left", {"session_id": session_id, "waiter_id": waiter.waiter_id, "reason": "admitted"}
        )
        await self.directory.moderated(me.identity, waiter.identity, session_id, "admitted")
        return ok(participant_id=entered["participant_id"])

    async def _refuse_waiter(self, sid: str, sock: _Socket, p: messages.RefuseWaiter) -> Ack:
        live, me = await self._moderator(sock)
        session_id = live.info.session_id
        waiter = live.waiting.get(p.waiter_id)
        if waiter is None:
            return refuse("waiter_not_found", "nobody with that id is waiting")
        live.banned.add(waiter.identity.key)
        await self._unwait(session_id, waiter.sid, reason="refused")
        wsock = self._socket(waiter.sid)
        if wsock is not None and wsock.session_id == session_id:
            wsock.session_id = wsock.participant_id = None
        await self.sio.emit("session.refused", {"session_id": session_id, "reason": "refused"}, to=waiter.sid)
        await self.directory.moderated(me.identity, waiter.identity, session_id, "refused")
        return ok()

    async def _mute(self, sid: str, sock: _Socket, p: messages.Mute) -> Ack:
        live, me = await self._moderator(sock)
        target = live.participants.get(p.participant_id)
        if target is None:
            return refuse("participant_not_found", "no such participant in this session")
        target.muted = p.muted
        if p.muted:
            live.muted.add(target.identity.key)
        else:
            live.muted.discard(target.identity.key)
        if self.media is not None:
            self.media.set_muted(live, target)
        await self.sio.emit(
            "participant.muted",
            {
                "session_id": live.info.session_id,
                "participant_id": target.participant_id,
                "muted": p.muted,
                "by": me.participant_id,
            },
            room=live.room,
        )
        if p.muted and live.speaker == target.participant_id:
            await self._update_speaker(live)
        await self.directory.moderated(
            me.identity, target.identity, live.info.session_id, "muted" if p.muted else "unmuted"
        )
        return ok()

    async def _remove_participant(self, sid: str, sock: _Socket, p: messages.Remove) -> Ack:
        live, me = await self._moderator(sock)
        target = live.participants.get(p.participant_id)
        if target is None:
            return refuse("participant_not_found", "no such participant in this session")
        if target.participant_id == me.participant_id:
            return refuse("invalid_payload", "leave instead of removing yourself")
        session_id = live.info.session_id
        live.banned.add(target.identity.key)
        live.admitted.discard(target.identity.key)
        tsock = self._socket(target.sid)
        if tsock is not None and tsock.session_id == session_id:
            tsock.session_id = tsock.participant_id = None
        await self.sio.emit("session.removed", {"session_id": session_id, "reason": "removed"}, to=target.sid)
        await self._remove(session_id, target.participant_id, reason="removed")
        await self.directory.moderated(me.identity, target.identity, session_id, "removed")
        return ok()

    async def _audio_level(self, sid: str, sock: _Socket, p: messages.AudioLevel) -> Ack:
        # Not re-authorised on every report (several a second); every other event is.
        live, me = self._current(sock)
        now = self.monotonic()
        if now - me.level_at < speaker.MIN_INTERVAL:
            return ok()
        me.level, me.level_at = p.level, now
        await self._update_speaker(live)
        return ok()

    async def _update_speaker(self, live: LiveSession) -> None:
        chosen = speaker.pick(live, self.monotonic())
        if chosen != live.speaker:
            live.speaker = chosen
            await self.sio.emit(
                "speaker.active", {"session_id": live.info.session_id, "participant_id": chosen}, room=live.room
            )

    # -- media --------------------------------------------------------------

    async def _answer(self, sid: str, sock: _Socket, p: messages.Answer) -> Ack:
        live, participant = await self._joined(sock)
        await self._require_media().answer(live, participant, p.sdp, p.revision)
        return ok()

    async def _candidate(self, sid: str, sock: _Socket, p: messages.Candidate) -> Ack:
        live, participant = await self._joined(sock)
        await self._require_media().candidate(live, participant, p.candidate, p.sdpMid, p.sdpMLineIndex)
        return ok()

    async def _publish(self, sid: str, sock: _Socket, p: messages.Publish) -> Ack:
        live, participant = await self._joined(sock)
        media = self._require_media()
        mid = await media.publish(live, participant, p.label)
        return ok(mid=mid)

    async def _unpublish(self, sid: str, sock: _Socket, p: messages.Unpublish) -> Ack:
        live, participant = await self._joined(sock)
        await self._require_media().unpublish(live, participant, p.mid)
        return ok()

    def _require_media(self) -> SessionMedia:
        if self.media is None:
            raise Refused("media_unavailable", "this server has no media plane")
        return self.media

    async def start(self) -> None:
        await self.cluster.start(self._serve_forwarded)

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self._end_local(session_id, "server_shutdown")
        if self.media is not None:
            await self.media.close_all()
        await self.cluster.close()


def _refused(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A connect refusal whose ``data`` is ``{code, message}`` (the browser's ``err.data``)."""
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code, "message": message})


@dataclass
class _Socket:
    identity: Identity
    session_id: int | None = None
    participant_id: str | None = None
    #: The process that owns ``session_id`` (where this socket's events are handled).
    node: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
