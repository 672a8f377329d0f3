"""UDP GSO sends on a real asyncio datagram transport over loopback: the receiver sees the same datagrams in order."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signalling.sfu import udpsend
from signalling.sfu.udpsend import MAX_SEGMENTS, counts, gso_enabled, send_datagrams, set_gso

SO_NO_CHECK = 11  # asm-generic/socket.h: a socket without UDP checksums cannot use GSO (the kernel says EINVAL)


@pytest.fixture
async def link() -> AsyncIterator[tuple[Any, socket.socket]]:
    """(an asyncio datagram transport on 127.0.0.1, a plain receiving socket on 127.0.0.1)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.settimeout(2)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    was = gso_enabled()
    set_gso(True)
    try:
        yield transport, receiver
    finally:
        set_gso(was)
        transport.close()
        receiver.close()


def received(receiver: socket.socket, n: int) -> list[bytes]:
    return [receiver.recv(70000) for _ in range(n)]


def frame(sizes: list[int], tag: int = 0) -> list[bytes]:
    """Datagrams of the given sizes, each with its index and ``tag`` in its first bytes so order shows."""
    return [bytes([tag, i]) + bytes([i]) * (size - 2) for i, size in enumerate(sizes)]


async def test_a_frame_goes_out_in_one_gso_send_and_arrives_as_the_same_datagrams(link: Any) -> None:
    transport, receiver = link
    address = receiver.getsockname()
    before = counts()
    datagrams = frame([1322] * 5 + [700])
    send_datagrams(transport, datagrams, address)
    assert received(receiver, 6) == datagrams
    after = counts()
    assert after["gso_sends"] - before["gso_sends"] == 1
    assert after["gso_datagrams"] - before["gso_datagrams"] == 6


async def test_runs_are_cut_at_size_changes_and_at_the_kernel_limits(link: Any) -> None:
    transport, receiver = link
    address = receiver.getsockname()
    before = counts()
    # 100 alone (the next one is larger), then 200, 200, 50 in one send; then 70 of 300: 64 + 6.
    mixed = frame([100, 200, 200, 50], tag=1)
    many = frame([300] * 70, tag=2)
    send_datagrams(transport, mixed, address)
    send_datagrams(transport, many, address)
    # 20 of 4000 bytes: MAX_BYTES cuts the run at 16.
    large = frame([4000] * 20, tag=3)
    send_datagrams(transport, large, address)
    assert received(receiver, len(mixed) + len(many) + len(large)) == mixed + many + large
    assert counts()["gso_sends"] - before["gso_sends"] == 1 + 2 + 2
    assert MAX_SEGMENTS == 64


async def test_without_gso_or_with_a_buffered_transport_every_datagram_goes_through_sendto(
    link: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, receiver = link
    address = receiver.getsockname()
    sent: list[bytes] = []
    real = transport.sendto
    monkeypatch.setattr(transport, "sendto", lambda data, addr: (sent.append(data), real(data, addr)))
    before = counts()
    set_gso(False)
    send_datagrams(transport, frame([500] * 3, tag=4), address)
    set_gso(True)
    monkeypatch.setattr(transport, "get_write_buffer_size", lambda: 1)  # earlier datagrams wait in the transport
    send_datagrams(transport, frame([500] * 3, tag=5), address)
    assert len(sent) == 6 and counts() == before
    assert received(receiver, 6) == frame([500] * 3, tag=4) + frame([500] * 3, tag=5)


async def test_gso_refused_by_the_kernel_turns_it_off_and_nothing_is_lost(link: Any) -> None:
    transport, receiver = link
    address = receiver.getsockname()
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    datagrams = frame([800] * 4, tag=6)
    send_datagrams(transport, datagrams, address)
    assert not gso_enabled()
    assert received(receiver, 4) == datagrams
    assert udpsend.UNSUPPORTED >= {22}  # EINVAL
