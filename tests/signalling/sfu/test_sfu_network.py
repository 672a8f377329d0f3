"""ICE configuration, scoped host gathering and the remote SDP/candidate policy.

The dropped addresses (10.1.2.3, mDNS names, ...) only ever appear in SDP
text: every drop happens before aiortc or aioice could contact them.
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import RTCIceServer

from server.settings import MediaSettings
from signalling.sfu import (
    IceServer,
    MediaNetworkConfig,
    MediaPolicyError,
    check_candidate,
    filter_sdp,
    gather_from,
    network,
)
from signalling.sfu.network import CandidateKey, classify_candidate, rewrite_advertised, screen_sdp
from signalling.sfu.peer import nominated_pair
from signalling.sfu.room import PeerStateChanged
from tests.media_harness import CONFIG, LOOPBACK, Call, Client, until


def candidate(ip: str, port: int = 50000, foundation: str = "1") -> str:
    return f"a=candidate:{foundation} 1 udp 2130706431 {ip} {port} typ host"


def answer_sdp(
    candidates: list[str] = (),  # type: ignore[assignment]
    audio: tuple[str, ...] = ("opus/48000/2",),
    video: tuple[str, ...] = ("VP8/90000",),
    padding: int = 0,
    video_port: int = 9,
) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1"]
    for mid, (kind, codecs, port) in enumerate((("audio", audio, 9), ("video", video, video_port))):
        lines.append(f"m={kind} {port} UDP/TLS/RTP/SAVPF " + " ".join(str(96 + i) for i in range(len(codecs))))
        lines += ["c=IN IP4 127.0.0.1", f"a=mid:{mid}", "a=sendonly", "a=rtcp-mux"]
        lines += [f"a=rtpmap:{96 + i} {codec}" for i, codec in enumerate(codecs)]
        lines += list(candidates)  # BUNDLE: the same candidates in every m-section
        lines += ["a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv", "a=setup:active"]
    lines += [f"a=x-padding:{'x' * 1000}" for _ in range(padding)]
    return "\r\n".join(lines) + "\r\n"


def code_of(excinfo: pytest.ExceptionInfo[MediaPolicyError]) -> str:
    return excinfo.value.code


# --- configuration ---------------------------------------------------------------------------------------------------


def test_defaults_never_use_public_stun_and_allow_private_ranges_only() -> None:
    config = MediaNetworkConfig()
    assert list(config.allowed_networks) == MediaSettings().allowed_cidrs  # the library and the app agree
    assert config.rtc_configuration().iceServers == []  # aiortc would fall back to stun.l.google.com on None
    assert config.max_remote_candidates == 20 and config.max_sdp_bytes == 64 * 1024 and not config.allow_mdns
    for address in ("10.1.2.3", "172.31.0.1", "192.168.3.4", "100.64.0.1", "100.127.255.254", "fd00::1"):
        check_candidate(f"candidate:1 1 udp 1 {address} 5000 typ host", config)
    for address in ("127.0.0.1", "::1", "8.8.8.8", "169.254.1.1", "100.128.0.1", "fe80::1", "2001:db8::1"):
        with pytest.raises(MediaPolicyError) as excinfo:
            check_candidate(f"candidate:1 1 udp 1 {address} 5000 typ host", config)
        assert code_of(excinfo) == "candidate_not_allowed"


def test_ice_servers_and_validation() -> None:
    config = MediaNetworkConfig(ice_servers=(IceServer(("turn:turn.example.org:3478",), "user", "secret"),))
    assert config.rtc_configuration().iceServers == [
        RTCIceServer(urls=["turn:turn.example.org:3478"], username="user", credential="secret")
    ]
    with pytest.raises(ValueError):
        MediaNetworkConfig(allowed_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError):
        MediaNetworkConfig(bind_addresses=("eth0",))
    with pytest.raises(ValueError):
        MediaNetworkConfig(video_codecs=("AV1",))
    with pytest.raises(ValueError):
        MediaNetworkConfig(answer_timeout=0)


def test_advertised_addresses_replace_bind_addresses_in_local_sdp() -> None:
    config = MediaNetworkConfig(bind_addresses=("10.0.0.5",), advertised_addresses={"10.0.0.5": "172.20.1.9"})
    sdp = "c=IN IP4 10.0.0.5\r\na=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
    assert rewrite_advertised(sdp, config) == (
        "c=IN IP4 172.20.1.9\r\na=candidate:1 1 udp 2130706431 172.20.1.9 40000 typ host\r\n"
    )


# --- gathering -------------------------------------------------------------------------------------------------------


async def test_gathering_uses_exactly_the_scoped_addresses(loopback_only: list[tuple[bool, bool]]) -> None:
    assert aioice.ice.get_host_addresses is network._scoped_host_addresses
    network.install_host_address_hook()  # idempotent
    assert aioice.ice.get_host_addresses is network._scoped_host_addresses

    connection = aioice.ice.Connection(ice_controlling=True)
    with gather_from(LOOPBACK):
        await connection.gather_candidates()  # binds a socket; no packet is sent
    assert [(c.host, c.type) for c in connection.local_candidates] == [("127.0.0.1", "host")]
    await connection.close()
    assert not loopback_only  # aioice's own enumeration (which skips loopback) was not consulted

    outside = aioice.ice.Connection(ice_controlling=True)
    await outside.gather_candidates()
    await outside.close()
    assert loopback_only == [(True, True)]  # outside the scope: aioice's enumeration (stubbed to loopback here)
    loopback_only.clear()


# --- remote policy ---------------------------------------------------------------------------------------------------


def test_a_clean_answer_passes_and_is_normalised() -> None:
    sdp = answer_sdp([candidate("127.0.0.1")]).replace("\r\n", "\n")
    known: set[CandidateKey] = set()
    assert filter_sdp(sdp, CONFIG, known_candidates=known) == sdp.replace("\n", "\r\n")
    assert known == {("udp", "127.0.0.1", 50000, 1)}


def test_oversized_sdp() -> None:
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([candidate("127.0.0.1")], padding=70), CONFIG)
    assert code_of(excinfo) == "sdp_too_large"


def test_too_many_candidates_counts_distinct_allowed_addresses_across_sections_and_trickle() -> None:
    twenty = [candidate("127.0.0.1", 50000 + i, str(i)) for i in range(20)]
    outside = [candidate("10.9.9.9", 50000 + i, str(100 + i)) for i in range(5)]
    known: set[CandidateKey] = set()
    # 2 sections x 25 lines = 20 allowed candidates (the 5 dropped ones do not count)
    filter_sdp(answer_sdp(twenty + outside), CONFIG, known_candidates=known)
    assert len(known) == 20
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([candidate("127.0.0.1", 60000)]), CONFIG, known_candidates=known)
    assert code_of(excinfo) == "too_many_candidates"
    assert len(known) == 20  # nothing recorded from the refused SDP
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([*twenty, candidate("127.0.0.2")]), CONFIG)
    assert code_of(excinfo) == "too_many_candidates"


def test_candidates_outside_the_policy_are_dropped_from_the_sdp() -> None:
    kept = candidate("127.0.0.1")
    lines = [
        kept,
        candidate("10.1.2.3", foundation="2"),
        candidate("2001:db8::5", foundation="3"),
        candidate("cloudwindow.example.org", foundation="4"),
        candidate("2f7c9a1e-1111-4222-8333-944455556666.local", foundation="5"),
    ]
    known: set[CandidateKey] = set()
    screened = screen_sdp(answer_sdp(lines) + "a=end-of-candidates\r\n", CONFIG, known_candidates=known)
    assert screened.sdp == answer_sdp([kept]) + "a=end-of-candidates\r\n"
    assert screened.allowed == known == {("udp", "127.0.0.1", 50000, 1)}
    assert sorted(screened.dropped.values()) == ["address", "address", "hostname", "mdns"]
    assert screened.end_of_candidates
    assert not screen_sdp(answer_sdp(lines), CONFIG).end_of_candidates
    # Every candidate dropped: the SDP is still valid, with no candidate at all.
    only_outside = screen_sdp(answer_sdp(lines[1:]), CONFIG)
    assert not only_outside.allowed and "a=candidate" not in only_outside.sdp
    # The strict check keeps its codes (the SFU classifies instead of raising).
    with pytest.raises(MediaPolicyError) as excinfo:
        check_candidate("candidate:1 1 udp 1 cloudwindow.example.org 5000 typ host", CONFIG)
    assert code_of(excinfo) == "candidate_not_allowed"
    assert classify_candidate("candidate:1 1 udp 1 10.1.2.3 5000 typ host", CONFIG)[1] == "address"
    assert classify_candidate("candidate:1 1 udp 1 127.0.0.9 5000 typ host", CONFIG)[1] is None


def test_ipv6_networks() -> None:
    config = MediaNetworkConfig(allowed_networks=("fc00::/7", "2001:db8:1::/48", "10.0.0.0/8"))
    for address, reason in (
        ("fd12:3456::1", None),
        ("2001:db8:1::77", None),
        ("2001:db8:2::1", "address"),
        ("::1", "address"),
        ("fe80::1", "address"),
        ("::ffff:8.8.8.8", "address"),
    ):
        assert classify_candidate(f"candidate:1 1 udp 1 {address} 5000 typ host", config)[1] == reason, address


def test_mdns_candidates() -> None:
    line = candidate("2f7c9a1e-1111-4222-8333-944455556666.local")
    screened = screen_sdp(answer_sdp([line]), CONFIG)
    assert list(screened.dropped.values()) == ["mdns"] and not screened.allowed
    with pytest.raises(MediaPolicyError) as excinfo:
        check_candidate(line, CONFIG)
    assert code_of(excinfo) == "mdns_not_allowed"
    allowed = MediaNetworkConfig(allowed_networks=("127.0.0.0/8",), allow_mdns=True)
    assert screen_sdp(answer_sdp([line]), allowed).allowed == {("udp", line.split()[4], 50000, 1)}


def test_codec_unsupported() -> None:
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp(audio=("PCMU/8000",)), CONFIG)
    assert code_of(excinfo) == "codec_unsupported"
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp(video=("H264/90000",)), MediaNetworkConfig(video_codecs=("VP8",)))
    assert code_of(excinfo) == "codec_unsupported"
    assert filter_sdp(answer_sdp(video=("AV1/90000",), video_port=0), CONFIG)  # a rejected section is not checked


def test_malformed_input() -> None:
    for bad in (
        "candidate:1 1 udp",
        "candidate:1 1 udp 1 127.0.0.1 x typ host",
        "candidate:1 one udp 1 127.0.0.1 1 typ host",
    ):
        with pytest.raises(MediaPolicyError) as excinfo:
            check_candidate(bad, CONFIG)
        assert code_of(excinfo) == "sdp_invalid"
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp("hello", CONFIG)
    assert code_of(excinfo) == "sdp_invalid"


# --- the policy in the room (real peers) -----------------------------------------------------------------------------


async def test_room_drops_candidates_outside_the_policy_and_refuses_bad_answers() -> None:
    config = MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",))
    call = Call(config)
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        good = await alice.answer(offer)
        host_line = next(line for line in good.splitlines() if line.startswith("a=candidate:"))
        for sdp, code in (
            (good + "a=x-padding:" + "x" * 70_000 + "\r\n", "sdp_too_large"),
            (good.replace(host_line, "a=candidate:1 1 udp", 1), "sdp_invalid"),
        ):
            with pytest.raises(MediaPolicyError) as excinfo:
                await call.room.answer("alice", sdp, offer.revision)
            assert code_of(excinfo) == code
            assert call.room.peer("alice").outstanding == offer  # not applied
        assert config.dropped.snapshot() == {"address": 0, "mdns": 0, "hostname": 0}
        # One disallowed candidate next to the allowed one: dropped, and the answer is applied.
        extra = "\r\n".join([candidate("10.1.2.3", foundation="9"), candidate("gone.local", foundation="8")])
        await call.room.answer("alice", good.replace(host_line, host_line + "\r\n" + extra, 1), offer.revision)
        assert call.room.peer("alice").outstanding is None
        assert config.dropped.snapshot() == {"address": 1, "mdns": 1, "hostname": 0}

        # Trickled candidates outside the policy are ignored (counted once each); allowed ones are counted
        # together with those of the answer.
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 abc.local 4000 typ host", "0")
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 10.1.2.3 4000 typ host", "1", 1)
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 10.1.2.3 4000 typ host", "1", 1)
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 turn.example.org 4000 typ relay", "0")
        assert config.dropped.snapshot() == {"address": 2, "mdns": 2, "hostname": 1}
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "candidate:1 1 udp", "0")
        assert code_of(excinfo) == "sdp_invalid"
        for port in range(19):  # the answer already had one
            await call.room.add_candidate("alice", f"candidate:{port} 1 udp 1 127.0.0.1 {40000 + port} typ host", "0")
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "candidate:99 1 udp 1 127.0.0.1 39999 typ host", "0")
        assert code_of(excinfo) == "too_many_candidates"
        await call.room.add_candidate("alice", "candidate:0 1 udp 1 127.0.0.1 40000 typ host", "0")  # a repeat is fine
        await call.room.add_candidate("alice", "", "0")  # end-of-candidates
        await until(lambda: call.room.peer("alice").connection_state == "connected", 5, "connected")
        pair = nominated_pair(call.room.peer("alice").pc)
        assert pair is not None and pair[0][0] == pair[1][0] == "127.0.0.1"
    finally:
        await call.close()


def _without_candidates(sdp: str) -> str:
    """A trickle-ICE answer: no candidate yet, nor ``a=end-of-candidates`` (aiortc adds it once gathered)."""
    lines = sdp.splitlines()
    return "".join(x + "\r\n" for x in lines if not x.startswith("a=candidate:") and x != "a=end-of-candidates")


async def test_an_answer_whose_candidates_are_all_outside_the_policy_with_end_of_candidates_is_refused() -> None:
    call = Call(MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("10.0.0.0/8",)))
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        sdp = await alice.answer(offer)  # its only candidate is 127.0.0.1: outside 10/8
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.answer("alice", sdp + "a=end-of-candidates\r\n", offer.revision)
        assert code_of(excinfo) == "no_allowed_candidate"
        await until(lambda: "alice" not in call.room.participants, 5, "peer given up")
        assert PeerStateChanged("alice", "failed", "no_allowed_candidate") in call.log
    finally:
        await call.close()


async def test_trickle_refuses_only_at_end_of_candidates_when_none_is_allowed() -> None:
    call = Call(MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",)))
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        sdp = await alice.answer(offer)
        await call.room.answer("alice", _without_candidates(sdp), offer.revision)  # trickle ICE: none yet
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 10.1.2.3 4000 typ host", "0")
        assert "alice" in call.room.participants
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "", "0")
        assert code_of(excinfo) == "no_allowed_candidate"
        await until(lambda: "alice" not in call.room.participants, 5, "peer given up")
        assert PeerStateChanged("alice", "failed", "no_allowed_candidate") in call.log
    finally:
        await call.close()


async def test_trickled_allowed_candidate_after_an_empty_answer_connects() -> None:
    call = Call(MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",), answer_timeout=1))
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        sdp = await alice.answer(offer)
        await call.room.answer("alice", _without_candidates(sdp), offer.revision)
        host_line = next(line for line in sdp.splitlines() if line.startswith("a=candidate:"))
        await call.room.add_candidate("alice", "candidate:1 1 udp 1 10.1.2.3 4000 typ host", "0")
        await call.room.add_candidate("alice", host_line[2:], "0")
        await call.room.add_candidate("alice", "", "0")
        await until(lambda: call.room.peer("alice").connection_state == "connected", 5, "connected")
        await asyncio.sleep(1.2)  # past the candidate deadline: a peer with an allowed candidate is kept
        assert call.room.peer("alice").failure is None
    finally:
        await call.close()


async def test_no_candidate_ever_trickled_gives_the_peer_up_after_the_answer_timeout() -> None:
    call = Call(MediaNetworkConfig(bind_addresses=LOOPBACK, allowed_networks=("127.0.0.0/8",), answer_timeout=0.5))
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        sdp = await alice.answer(offer)
        await call.room.answer("alice", _without_candidates(sdp), offer.revision)
        await until(lambda: "alice" not in call.room.participants, 5, "peer given up")
        assert PeerStateChanged("alice", "failed", "no_allowed_candidate") in call.log
    finally:
        await call.close()


async def test_ipv6_loopback_end_to_end_with_an_ipv4_candidate_dropped() -> None:
    """The SFU gathers on ::1 only; the client offers 127.0.0.1 (outside policy) and ::1; they meet on ::1."""
    config = MediaNetworkConfig(bind_addresses=("::1",), allowed_networks=("::1/128",))
    call = Call(config)
    alice = Client("alice", 1, gather=("127.0.0.1", "::1"))
    bob = Client("bob", 2, gather=("::1",))
    try:
        offer = await call.join(alice)
        assert " ::1 " in offer.sdp and " 127.0.0.1 " not in offer.sdp
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 5 and len(alice.from_tag(2)) >= 5, 15, "video both ways")
        for pid in ("alice", "bob"):
            pair = nominated_pair(call.room.peer(pid).pc)
            assert pair is not None and pair[0][0] == pair[1][0] == "::1", pair
        assert config.dropped.snapshot()["address"] == 1  # alice's 127.0.0.1, once across renegotiations
    finally:
        await call.close()
