"""ICE configuration, scoped host gathering and the remote SDP/candidate policy.

The refused addresses (10.1.2.3, mDNS names, ...) only ever appear in SDP
text: every refusal happens before aiortc or aioice could contact them.
"""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCIceServer

from signalling.sfu import (
    IceServer,
    MediaNetworkConfig,
    MediaPolicyError,
    check_candidate,
    filter_sdp,
    gather_from,
    network,
)
from signalling.sfu.network import CandidateKey, rewrite_advertised
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
    assert config.rtc_configuration().iceServers == []  # aiortc would fall back to stun.l.google.com on None
    assert config.max_remote_candidates == 20 and config.max_sdp_bytes == 64 * 1024 and not config.allow_mdns
    check_candidate("candidate:1 1 udp 1 10.1.2.3 5000 typ host", config)
    check_candidate("candidate:1 1 udp 1 192.168.3.4 5000 typ host", config)
    for address in ("127.0.0.1", "8.8.8.8", "169.254.1.1", "100.64.0.1"):
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


def test_too_many_candidates_counts_distinct_addresses_across_sections_and_trickle() -> None:
    twenty = [candidate("127.0.0.1", 50000 + i, str(i)) for i in range(20)]
    known: set[CandidateKey] = set()
    filter_sdp(answer_sdp(twenty), CONFIG, known_candidates=known)  # 2 sections x 20 lines = 20 candidates
    assert len(known) == 20
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([candidate("127.0.0.1", 60000)]), CONFIG, known_candidates=known)
    assert code_of(excinfo) == "too_many_candidates"
    assert len(known) == 20  # nothing recorded from the refused SDP
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([*twenty, candidate("127.0.0.2")]), CONFIG)
    assert code_of(excinfo) == "too_many_candidates"


def test_candidate_outside_allowed_networks() -> None:
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([candidate("127.0.0.1"), candidate("10.1.2.3", foundation="2")]), CONFIG)
    assert code_of(excinfo) == "candidate_not_allowed"
    with pytest.raises(MediaPolicyError) as excinfo:
        check_candidate("candidate:1 1 udp 1 cloudwindow.example.org 5000 typ host", CONFIG)
    assert code_of(excinfo) == "candidate_not_allowed"


def test_mdns_candidates() -> None:
    line = candidate("2f7c9a1e-1111-4222-8333-944455556666.local")
    with pytest.raises(MediaPolicyError) as excinfo:
        filter_sdp(answer_sdp([line]), CONFIG)
    assert code_of(excinfo) == "mdns_not_allowed"
    allowed = MediaNetworkConfig(allowed_networks=("127.0.0.0/8",), allow_mdns=True)
    assert filter_sdp(answer_sdp([line]), allowed)


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


async def test_room_refuses_bad_answers_and_candidates_without_applying_them() -> None:
    call = Call()
    alice = Client("alice", 1, audio=False)
    try:
        offer = await call.room.join("alice")
        call.clients["alice"] = alice
        good = await alice.answer(offer)
        host_line = next(line for line in good.splitlines() if line.startswith("a=candidate:"))
        tampered = good.replace(host_line, host_line + "\r\n" + candidate("10.1.2.3", foundation="9"), 1)
        for sdp, code in (
            (tampered, "candidate_not_allowed"),
            (good.replace(host_line, candidate("nothere.local"), 1), "mdns_not_allowed"),
            (good + "a=x-padding:" + "x" * 70_000 + "\r\n", "sdp_too_large"),
        ):
            with pytest.raises(MediaPolicyError) as excinfo:
                await call.room.answer("alice", sdp, offer.revision)
            assert code_of(excinfo) == code
            assert call.room.peer("alice").outstanding == offer  # not applied
        await call.room.answer("alice", good, offer.revision)
        assert call.room.peer("alice").outstanding is None

        # Trickled candidates: same checks, counted together with those of the answer.
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "candidate:1 1 udp 1 abc.local 4000 typ host", "0")
        assert code_of(excinfo) == "mdns_not_allowed"
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "candidate:1 1 udp 1 10.1.2.3 4000 typ host", "1", 1)
        assert code_of(excinfo) == "candidate_not_allowed"
        for port in range(19):  # the answer already had one
            await call.room.add_candidate("alice", f"candidate:{port} 1 udp 1 127.0.0.1 {40000 + port} typ host", "0")
        with pytest.raises(MediaPolicyError) as excinfo:
            await call.room.add_candidate("alice", "candidate:99 1 udp 1 127.0.0.1 39999 typ host", "0")
        assert code_of(excinfo) == "too_many_candidates"
        await call.room.add_candidate("alice", "candidate:0 1 udp 1 127.0.0.1 40000 typ host", "0")  # a repeat is fine
        await call.room.add_candidate("alice", "", "0")  # end-of-candidates
        await until(lambda: call.room.peer("alice").connection_state == "connected", 5, "connected")
    finally:
        await call.close()
