"""Media sessions with many parties, through the whole app (Socket.IO signalling + SFU + aiortc clients).

Participants of one case's session: the point's staff (host), the town
clerk, and outside parties brought in through invites (one single-use invite,
hence one access token, per guest).  Every participant publishes numbered
video (tests/media_harness.py), so each receiver proves it decodes every
other participant's frames, in order, and nothing invented.

Covered here: 3 and 8 parties (everyone receives everyone), a participant
in a separate OS process, refused joins (another unit, a revoked invite, an
invite for another case, a full session), presence after an abrupt
disconnect (no ghost, media of the others keeps flowing), and a session
ended by its host.  Two tests guard against ghosts and stale rights: a revoked
guest's media events are refused, and a socket dropping while its join is in
flight leaves nothing behind.  Media
tests run on SQLite only (the database plays no
part in the media path).

Every aiortc client gathers only on 127.0.0.1 and uses no ICE server (the
harness ``Client``; the conftest guards fail the test otherwise); the
separate process installs the same guards and reports any violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient

from server.app import SERVICES
from server.settings import Settings
from tests.conftest import Session
from tests.media_harness import Caller, Client, assert_numbers_sane, until
from tests.server.api.conftest import open_case

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
CLIENT_SCRIPT = Path(__file__).with_name("media_client_process.py")
ROOT = Path(__file__).resolve().parents[2]

#: Small video for the many-party tests: 128 x 96 still gives 16 x 24 pixel blocks for the frame numbers.
SMALL: dict[str, Any] = {"size": (128, 96), "fps": 8, "audio": False}


# --- settings: the participant limit is a per-test choice -------------------------------------------------------------


@pytest.fixture
def max_participants() -> int:
    """``signalling.max_participants`` for the test's app (parametrize this fixture to change it)."""
    return 8


@pytest.fixture
def settings(settings: Settings, max_participants: int) -> Settings:
    """The shared settings (tests/conftest.py), with this test's participant limit."""
    signalling = settings.signalling.model_copy(update={"max_participants": max_participants})
    return settings.model_copy(update={"signalling": signalling})


# --- participants -----------------------------------------------------------------------------------------------------


class SizedCaller(Caller):
    """The harness :class:`Caller`, its :class:`Client` built with the given size / fps / audio."""

    def __init__(self, base_url: str, token: str, tag: int, **client_kwargs: Any) -> None:
        super().__init__(base_url, token, tag)
        self.client_kwargs = client_kwargs

    async def join(self, session_id: int) -> dict[str, Any]:
        if self.media is not None:
            await self.media.close()
        ack = await self.sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert ack["ok"], ack
        self.participant_id = ack["participant_id"]
        self.media = Client(self.participant_id, self.tag, **self.client_kwargs)
        await self._answer(ack["offer"])
        return dict(ack)

    @property
    def video(self) -> Client:
        assert self.media is not None
        return self.media

    def sent(self) -> int:
        assert self.media is not None and self.media.camera is not None
        return self.media.camera.number


class Peer:
    """A Socket.IO-only participant: records every event, answers no offer (presence and refusal checks)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def connect(self) -> None:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data if data is not None else {}, timeout=10)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def received(who: Caller | Peer, event: str) -> list[Any]:
    return [data for name, data in who.events if name == event]


def abort_transport(sio: socketio.AsyncClient) -> None:
    """Kill the socket's TCP connection as a crashing browser would: no Socket.IO, Engine.IO or WebSocket close."""
    ws = sio.eio.ws
    assert ws is not None
    transport = ws._response.connection.transport
    assert transport is not None
    transport.abort()


class Party:
    """Makes participants for one app and closes them all at the end of the test."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.url = f"http://127.0.0.1:{client.server.port}"
        self.callers: list[Caller] = []
        self.peers: list[Peer] = []

    async def caller(self, token: str, tag: int, **client_kwargs: Any) -> SizedCaller:
        c = SizedCaller(self.url, token, tag, **client_kwargs)
        await c.connect()
        self.callers.append(c)
        return c

    async def peer(self, token: str) -> Peer:
        p = Peer(self.url, token)
        await p.connect()
        self.peers.append(p)
        return p

    async def close(self) -> None:
        # Sockets first, so no offer arrives for a peer connection being closed.
        for c in self.callers:
            with contextlib.suppress(Exception):
                if c.sio.connected:
                    await c.sio.disconnect()
        for c in self.callers:
            if c._chain is not None:
                await asyncio.gather(c._chain, return_exceptions=True)
            with contextlib.suppress(Exception):
                await c.close()
        for p in self.peers:
            with contextlib.suppress(Exception):
                await p.close()


@pytest.fixture
async def party(client: TestClient[Any, Any]) -> AsyncIterator[Party]:
    made = Party(client)
    yield made
    await made.close()
    for c in made.callers:
        assert not c.errors, c.errors


# --- the case, its session and its guests -----------------------------------------------------------------------------


async def open_session(host: Session, case_id: int | None = None) -> tuple[int, int]:
    """(case id, session id): a case opened by ``host`` (unless given) and its call, hosted by ``host``."""
    if case_id is None:
        case_id = int((await open_case(host))["id"])
    resp = await host.post(f"/api/v1/cases/{case_id}/sessions", json={"kind": "call"})
    assert resp.status == 201, await resp.text()
    return case_id, int((await resp.json())["id"])


async def invite(inviter: Session, case_id: int, name: str, role: str = "expert") -> tuple[int, str]:
    """(invite id, access token) of a new single-use invite, redeemed as the guest would."""
    resp = await inviter.post(f"/api/v1/cases/{case_id}/invites", json={"role": role, "display_name": name})
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    resp = await inviter.client.post(f"/api/v1/cases/{case_id}/invites/redeem", json={"token": made["token"]})
    assert resp.status == 200, await resp.text()
    redeemed = await resp.json()
    assert redeemed["role"] == role and redeemed["display_name"] == name
    return int(made["id"]), str(redeemed["access_token"])


def mids_by_publisher(caller: Caller) -> dict[tuple[str, str], str]:
    """(publisher participant id, label) → mid at ``caller``, from the latest offer it answered."""
    assert caller.media is not None and caller.media.offers
    # The harness answers the wire offer (a SimpleNamespace): ``subscribe`` is {mid: track as JSON}.
    subscribe: dict[str, Any] = caller.media.offers[-1].subscribe  # type: ignore[assignment]
    return {(t["participant_id"], t["label"]): mid for mid, t in subscribe.items()}


def assert_everyone_sees_everyone(callers: list[SizedCaller], minimum: int) -> None:
    for receiver, source in itertools.permutations(callers, 2):
        numbers = receiver.video.from_tag(source.tag)
        assert_numbers_sane(numbers, source.sent(), minimum)


def pairs_below(callers: list[SizedCaller], minimum: int) -> list[tuple[int, int, int]]:
    """(receiver tag, source tag, frames) of every pair still short of ``minimum`` frames."""
    return [
        (r.tag, s.tag, len(r.video.from_tag(s.tag)))
        for r, s in itertools.permutations(callers, 2)
        if len(r.video.from_tag(s.tag)) < minimum
    ]


async def wait_pairs(callers: list[SizedCaller], minimum: int, within: float) -> float:
    try:
        return await until(lambda: not pairs_below(callers, minimum), within, f"{minimum} frames on every pair")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; short pairs (receiver, source, frames): {pairs_below(callers, minimum)}"
        ) from None


# --- 1. everyone receives everyone ------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_three_parties_see_and_hear_each_other(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    _, expert_token = await invite(clerk, case_id, "林专家", role="expert")

    a = await party.caller(staff.token, tag=1)
    b = await party.caller(clerk.token, tag=2)
    c = await party.caller(expert_token, tag=3)
    acks = [await x.join(session_id) for x in (a, b, c)]
    callers = [a, b, c]

    # Presence: each join ack lists who is there, the expert as an invited party (no account).
    assert [len(ack["participants"]) for ack in acks] == [1, 2, 3]
    roles = {p["participant_id"]: (p["role"], p["user_id"]) for p in acks[2]["participants"]}
    assert roles[c.participant_id] == ("expert", None)
    assert roles[b.participant_id][0] == "clerk"
    assert [d["participant"]["participant_id"] for d in received(a, "participant.joined")] == [
        b.participant_id,
        c.participant_id,
    ]
    listed = (await (await clerk.get(f"/api/v1/cases/{case_id}/sessions")).json())["items"]
    assert all(ack["session"] == {**ack["session"], "id": session_id, "case_id": case_id} for ack in acks)
    assert {ack["session"]["host_user_id"] for ack in acks} == {listed[0]["host_user_id"]} != {None}

    await wait_pairs(callers, 15, 20)
    assert_everyone_sees_everyone(callers, 15)

    # Audio too: on each receiver, the m-section carrying each other participant's microphone gets loud frames.
    def hearing() -> list[tuple[int, int]]:
        missing = []
        for r, s in itertools.permutations(callers, 2):
            mid = mids_by_publisher(r).get((s.participant_id, "audio"))
            if mid is None or r.video.audio_on(mid).audio_loud_frames < 10:
                missing.append((r.tag, s.tag))
        return missing

    await until(lambda: not hearing(), 10, "everyone hears everyone")


@SQLITE_ONLY
async def test_eight_parties_everyone_receives_everyone(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    guests = [
        await invite(clerk, case_id, name, role)
        for name, role in (
            ("专家一", "expert"),
            ("专家二", "expert"),
            ("踏勘员", "inspector"),
            ("申请人家属", "guest"),
            ("村委会", "guest"),
            ("律师", "guest"),
        )
    ]
    tokens = [staff.token, clerk.token, *(token for _, token in guests)]
    callers = [await party.caller(token, tag=10 + i, **SMALL) for i, token in enumerate(tokens)]
    started = time.monotonic()
    for x in callers:
        await x.join(session_id)

    took = await wait_pairs(callers, 24, 45)
    assert_everyone_sees_everyone(callers, 24)

    # The default limit is 8: a ninth party is refused, and nobody hears of it.
    _, ninth_token = await invite(clerk, case_id, "第九位", role="guest")
    ninth = await party.peer(ninth_token)
    refused = await ninth.call("session.join", {"session_id": session_id})
    assert refused["ok"] is False and refused["error"]["code"] == "session_full", refused
    assert all(len(received(x, "participant.joined")) == 7 - i for i, x in enumerate(callers))
    print(f"8 parties: {len(callers) * 7} pairs at 24 frames after {took:.1f}s ({time.monotonic() - started:.1f}s)")


# --- 2. a participant in another process ------------------------------------------------------------------------------


class ClientProcess:
    """tests/server/media_client_process.py, run with this interpreter, talking JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, token: str, session_id: int, tag: int, watch: int) -> ClientProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT_SCRIPT),
            *("--url", url, "--token", token, "--session", str(session_id)),
            *("--tag", str(tag), "--watch", str(watch), "--min-frames", "15", "--lifetime", "30"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(proc)

    async def message(self, within: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        assert line, f"the client process ended (exit code {await self.proc.wait()})"
        return dict(json.loads(line))

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill()
        await asyncio.wait_for(self.proc.wait(), 10)


@SQLITE_ONLY
async def test_participant_in_another_process(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    _, guest_token = await invite(clerk, case_id, "远程专家", role="expert")
    a = await party.caller(staff.token, tag=1, size=(160, 120), fps=10, audio=False)
    await a.join(session_id)

    other = await ClientProcess.start(party.url, guest_token, session_id, tag=9, watch=1)
    try:
        joined = await other.message(20)
        assert joined["event"] == "joined", joined
        guest_id = joined["participant_id"]
        assert a.participant_id in [p["participant_id"] for p in joined["participants"]]

        # The in-process side decodes the other process's numbered frames ...
        await until(lambda: len(a.video.from_tag(9)) >= 15, 20, "frames from the other process")
        from_other = list(a.video.from_tag(9))
        # ... and the other process decodes ours.
        await other.send("report")
        report = await other.message(20)
        assert report["event"] == "report", report
        assert report["participant_id"] == guest_id
        assert report["violations"] == [] and report["errors"] == [], report
        assert_numbers_sane(report["received"].get("1", []), a.sent(), 15)
        assert_numbers_sane(from_other, report["sent"], 15)

        # The process dies without a goodbye: the session notices, no ghost stays, the survivor is told.
        other.kill()
        await until(lambda: bool(received(a, "participant.left")), 10, "participant.left after the process died")
        assert received(a, "participant.left") == [{"participant_id": guest_id, "reason": "disconnected"}]
        fresh = await party.peer(clerk.token)
        ack = await fresh.call("session.join", {"session_id": session_id})
        assert ack["ok"], ack
        assert sorted(p["participant_id"] for p in ack["participants"]) == sorted(
            [a.participant_id, ack["participant_id"]]
        )
    finally:
        await other.close()


# --- 3. refused joins -------------------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_joins_refused_for_outsiders_and_revoked_invites(as_user: Any, party: Party) -> None:
    staff, staff2, clerk = await as_user("staff"), await as_user("staff2"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    other_case = int((await open_case(staff))["id"])  # a second case of the same point
    a = await party.caller(staff.token, tag=1, **SMALL)
    await a.join(session_id)

    # Staff of another point (P02) may not see a P01 case: join_forbidden.
    outsider = await party.peer(staff2.token)
    ack = await outsider.call("session.join", {"session_id": session_id})
    assert ack["ok"] is False and ack["error"]["code"] == "join_forbidden", ack

    # A guest invited to another case may not join this case's session.
    _, elsewhere_token = await invite(clerk, other_case, "别案专家")
    elsewhere = await party.peer(elsewhere_token)
    ack = await elsewhere.call("session.join", {"session_id": session_id})
    assert ack["ok"] is False and ack["error"]["code"] == "join_forbidden", ack

    # A revoked invite: a guest connected before the revocation can no longer join or act; a new connection is refused.
    invite_id, revoked_token = await invite(clerk, case_id, "被撤销的访客", role="guest")
    early = await party.peer(revoked_token)
    joined = await party.peer(revoked_token)
    ack = await joined.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    resp = await clerk.delete(f"/api/v1/cases/{case_id}/invites/{invite_id}")
    assert resp.status == 204, await resp.text()
    ack = await early.call("session.join", {"session_id": session_id})
    assert ack["ok"] is False and ack["error"]["code"] == "session_revoked", ack
    # The first event after the revocation is refused and removes the guest from the session (the others are
    # told); later events find it no longer joined.
    ack = await joined.call("chat.send", {"text": "还在吗"})
    assert ack["ok"] is False and ack["error"]["code"] == "session_revoked", ack
    ack = await joined.call("media.publish", {"label": "screen"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_joined", ack
    assert [d["reason"] for d in received(a, "participant.left")] == ["revoked"]
    errors: list[Any] = []
    late = socketio.AsyncClient(reconnection=False)
    late.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect(party.url, auth={"token": revoked_token}, transports=["websocket"], wait_timeout=5)
    assert errors and errors[0]["data"]["code"] == "session_revoked", errors

    # Nobody refused ever appeared to the participant already in the session.
    guests = {d["participant"]["display_name"] for d in received(a, "participant.joined")}
    assert guests == {"被撤销的访客"}, guests
    assert not received(outsider, "participant.joined") and not received(elsewhere, "media.offer")


@SQLITE_ONLY
async def test_revoked_guest_media_events_are_refused(as_user: Any, party: Party) -> None:
    """docs/protocol.md: authorisation is checked on every event; a revoked guest's media events are refused too."""
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    invite_id, token = await invite(clerk, case_id, "被撤销的专家")
    guest = await party.peer(token)
    ack = await guest.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    resp = await clerk.delete(f"/api/v1/cases/{case_id}/invites/{invite_id}")
    assert resp.status == 204
    candidate = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"
    ack = await guest.call("media.candidate", {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0})
    # session_revoked as for chat.send; not_joined if the fix also removes the revoked guest from the session.
    assert ack["ok"] is False and ack["error"]["code"] in ("session_revoked", "not_joined"), ack


@SQLITE_ONLY
@pytest.mark.parametrize("max_participants", [3])
async def test_session_full_beyond_max_participants(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    (_, t1), (_, t2) = await invite(clerk, case_id, "专家甲"), await invite(clerk, case_id, "专家乙")
    a = await party.caller(staff.token, tag=1, **SMALL)
    b = await party.caller(clerk.token, tag=2, **SMALL)
    c = await party.caller(t1, tag=3, **SMALL)
    for x in (a, b, c):
        await x.join(session_id)

    fourth = await party.peer(t2)
    ack = await fourth.call("session.join", {"session_id": session_id})
    assert ack["ok"] is False and ack["error"]["code"] == "session_full", ack
    assert not received(fourth, "media.offer")

    # A member rejoining on a new socket (a reloaded page) is a replacement, not a fourth participant.
    reloaded = await party.peer(t1)
    ack = await reloaded.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    assert len(ack["participants"]) == 3 and c.participant_id not in {p["participant_id"] for p in ack["participants"]}
    ack = await fourth.call("session.join", {"session_id": session_id})
    assert ack["ok"] is False and ack["error"]["code"] == "session_full", ack

    # Once someone leaves, the fourth gets in; the others saw it join exactly once.
    assert (await reloaded.call("session.leave"))["ok"]
    ack = await fourth.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    assert {p["participant_id"] for p in ack["participants"]} == {
        a.participant_id,
        b.participant_id,
        ack["participant_id"],
    }
    joined = [d["participant"]["display_name"] for d in received(a, "participant.joined")]
    assert joined.count("专家乙") == 1
    await wait_pairs([a, b], 10, 15)  # the first two still see each other


# --- 4. presence after an abrupt disconnect ---------------------------------------------------------------------------


@SQLITE_ONLY
async def test_abrupt_disconnect_leaves_no_ghost(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    (_, t1), (_, t2) = await invite(clerk, case_id, "掉线的专家"), await invite(clerk, case_id, "后来的访客", "guest")
    a = await party.caller(staff.token, tag=1, **SMALL)
    b = await party.caller(clerk.token, tag=2, **SMALL)
    c = await party.caller(t1, tag=3, **SMALL)
    for x in (a, b, c):
        await x.join(session_id)
    await wait_pairs([a, b, c], 8, 20)
    streams = {d["stream_id"] for d in received(a, "track.published") if d["participant_id"] == c.participant_id}
    assert streams

    abort_transport(c.sio)  # no close frame, no Socket.IO disconnect: the browser crashed or the network dropped
    gone = {"participant_id": c.participant_id, "reason": "disconnected"}
    await until(lambda: gone in received(a, "participant.left") and gone in received(b, "participant.left"), 10, "left")
    await until(
        lambda: {d["stream_id"] for d in received(a, "track.unpublished")} >= streams, 10, "the lost tracks unpublished"
    )

    # A fresh join sees exactly the two who are still there.
    fresh = await party.peer(t2)
    ack = await fresh.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    present = {p["participant_id"] for p in ack["participants"]}
    assert present == {a.participant_id, b.participant_id, ack["participant_id"]}

    # The others' media keeps flowing, in order.
    before = len(a.video.from_tag(2)), len(b.video.from_tag(1))
    await until(
        lambda: len(a.video.from_tag(2)) >= before[0] + 16 and len(b.video.from_tag(1)) >= before[1] + 16,
        10,
        "media between the remaining participants",
    )
    assert_numbers_sane(a.video.from_tag(2), b.sent(), 24)
    assert_numbers_sane(b.video.from_tag(1), a.sent(), 24)
    assert c.media is not None
    await c.media.close()


@SQLITE_ONLY
@pytest.mark.parametrize("max_participants", [3])
@pytest.mark.parametrize("step", ["authorise_join", "participant_joined"])
async def test_disconnect_while_joining_leaves_no_ghost(
    as_user: Any, client: TestClient[Any, Any], party: Party, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A socket that drops while its join is still being processed must not stay in the session (nor its media room).

    The join is held at one application call (``step``) of the session directory until the server has handled the
    disconnect, then let go.  With three places, the two legitimate parties that come next must both get in.
    """
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    (_, doomed_token), (_, third_token) = (
        await invite(clerk, case_id, "半路掉线"),
        await invite(clerk, case_id, "第三位"),
    )
    a = await party.peer(staff.token)
    assert (await a.call("session.join", {"session_id": session_id}))["ok"]

    sig = client.app[SERVICES].signalling
    real = getattr(sig.directory, step)
    held, release, passed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def hold(identity: Any, *args: Any) -> Any:
        if identity.display_name == "半路掉线" and not release.is_set():
            held.set()
            await release.wait()
            try:
                return await real(identity, *args)
            finally:
                passed.set()
        return await real(identity, *args)

    monkeypatch.setattr(sig.directory, step, hold)
    doomed = await party.peer(doomed_token)
    server_sid = doomed.sio.get_sid()
    await doomed.sio.emit("session.join", {"session_id": session_id})  # the ack will never be read
    await asyncio.wait_for(held.wait(), 5)
    abort_transport(doomed.sio)
    await until(lambda: server_sid not in sig.sockets, 5, "the server handling the disconnect")
    release.set()
    await asyncio.wait_for(passed.wait(), 5)
    await asyncio.sleep(0.5)  # the rest of the join (media offer) completes

    # Whoever heard of the dropped participant also heard it leave.
    joined = {d["participant"]["participant_id"] for d in received(a, "participant.joined")}
    left = {d["participant_id"] for d in received(a, "participant.left")}
    assert joined <= left, (joined, left)

    # Three places, one taken: both newcomers get in, and nobody sees the dropped participant.
    second, third = await party.peer(clerk.token), await party.peer(third_token)
    ack = await second.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    assert [p["display_name"] for p in ack["participants"] if p["display_name"] == "半路掉线"] == [], ack
    ack = await third.call("session.join", {"session_id": session_id})
    assert ack["ok"], ack
    assert len(ack["participants"]) == 3, ack


# --- 5. the host ends the session -------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_host_ends_the_session_for_everyone(as_user: Any, party: Party) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await open_session(staff)
    _, expert_token = await invite(clerk, case_id, "会商专家")
    callers = [
        await party.caller(token, tag=i + 1, **SMALL)
        for i, token in enumerate((staff.token, clerk.token, expert_token))
    ]
    for x in callers:
        await x.join(session_id)
    await wait_pairs(callers, 8, 20)

    resp = await staff.post(f"/api/v1/sessions/{session_id}/end")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "ended"
    ended = {"session_id": session_id, "reason": "ended_by_host"}
    await until(lambda: all(received(x, "session.ended") == [ended] for x in callers), 10, "session.ended to everyone")

    # Every further session event is refused: the sockets are no longer in it.
    for x in callers:
        assert x.media is not None
        sdp = x.media.pc.localDescription.sdp
        candidate = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"
        for event, payload in (
            ("chat.send", {"text": "还在吗"}),
            ("media.answer", {"sdp": sdp, "revision": 1}),
            ("media.candidate", {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}),
            ("media.publish", {"label": "screen"}),
            ("media.unpublish", {"mid": "1"}),
            ("session.leave", {}),
        ):
            ack = await x.sio.call(event, payload, timeout=10)
            assert ack["ok"] is False and ack["error"]["code"] == "not_joined", (event, ack)
        ack = await x.sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "session_ended", ack

    # The server closed their peer connections: no media flows any more.
    await asyncio.sleep(1.0)
    counts = [[len(r.video.from_tag(s.tag)) for s in callers] for r in callers]
    await asyncio.sleep(1.0)
    assert [[len(r.video.from_tag(s.tag)) for s in callers] for r in callers] == counts
    assert not any(received(x, "participant.left") for x in callers)
