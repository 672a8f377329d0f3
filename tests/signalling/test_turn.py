"""TURN REST credentials: shape, expiry, and acceptance by a real coturn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from signalling.turn import IceServerConfig, ice_servers_for, turn_credentials
from tests.conftest import unavailable

SECRET = "static-auth-secret-for-tests"


def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = turn_credentials(SECRET, "p1", now=1_700_000_000, ttl=600)
    assert username == "1700000600:p1"
    expected = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    assert password == expected


def test_ice_server_list_per_participant() -> None:
    configs = [
        IceServerConfig(urls=["turn:127.0.0.1:3478"], auth_secret=SECRET, ttl=60),
        IceServerConfig(urls=["stun:127.0.0.1:3478"]),
        IceServerConfig(urls=["turn:127.0.0.1:3479"], username="u", credential="c"),
    ]
    servers = ice_servers_for(configs, "abc", now=1000)
    assert servers[0]["username"] == "1060:abc" and servers[0]["credential"]
    assert servers[1] == {"urls": ["stun:127.0.0.1:3478"]}
    assert servers[2] == {"urls": ["turn:127.0.0.1:3479"], "username": "u", "credential": "c"}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_answering(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until coturn answers a STUN Binding request on its port (bounded: 20 s); a fixed sleep lost to a slow start."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while True:
            assert proc.poll() is None, log.read_text() if log.exists() else "turnserver exited"
            probe.sendto(bytes(request), ("127.0.0.1", port))
            try:
                probe.recvfrom(2048)
                return
            except (TimeoutError, ConnectionRefusedError):
                pass
            assert time.monotonic() < deadline, "coturn did not answer within 20 s"


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[str, int]]:
    binary = shutil.which("turnserver")
    if binary is None:
        unavailable("coturn's turnserver is not installed (apt-get install coturn)")
    assert binary is not None
    port = _free_udp_port()
    # A relay port range of its own: two runs (or another coturn) on one machine must not share one.
    relay_base = random.randrange(50000, 60000, 50)
    log = tmp_path / "turn.log"
    proc = subprocess.Popen(
        [
            binary,
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={relay_base}",
            f"--max-port={relay_base + 40}",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=cloudwindow",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            "--no-stun-backward-compatibility",
            f"--log-file={log}",
            "--simple-log",
            f"--pidfile={tmp_path / 'turn.pid'}",
            f"--userdb={tmp_path / 'turndb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_answering(proc, port, log)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_coturn_accepts_fresh_and_refuses_expired_credentials(coturn: tuple[str, int]) -> None:
    username, password = turn_credentials(SECRET, "participant-1", time.time(), 600)
    transport, _ = await asyncio.wait_for(
        create_turn_endpoint(asyncio.DatagramProtocol, coturn, username, password), timeout=10
    )
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
    finally:
        transport.close()

    stale_user, stale_password = turn_credentials(SECRET, "participant-1", time.time() - 7200, 600)
    with pytest.raises(stun.TransactionFailed):
        await asyncio.wait_for(
            create_turn_endpoint(asyncio.DatagramProtocol, coturn, stale_user, stale_password), timeout=10
        )
    with pytest.raises(stun.TransactionFailed):
        await asyncio.wait_for(
            create_turn_endpoint(asyncio.DatagramProtocol, coturn, username, "forged" + password), timeout=10
        )
