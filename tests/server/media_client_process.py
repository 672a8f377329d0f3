"""A browser stand-in in its own process, driven by tests/server/test_media_sessions.py.

Usage (the venv's python, any working directory)::

    python tests/server/media_client_process.py --url http://127.0.0.1:PORT --token TOKEN \
        --session 7 --tag 9 --watch 1 [--min-frames 15] [--lifetime 30]

It connects over Socket.IO with the access token, joins the session (the
harness :class:`~tests.media_harness.Caller`: ICE gathering only inside
``gather_from(["127.0.0.1"])``, ``RTCConfiguration(iceServers=[])``),
publishes numbered video with ``--tag`` and decodes what it receives.
Protocol on stdout, one JSON object per line:

* ``{"event": "joined", "participant_id", "participants": [...]}`` once joined;
* ``{"event": "report", "received": {tag: [numbers]}, "sent", "errors", "violations", "events"}``
  after a ``report`` line on stdin (or stdin closing), once ``--min-frames`` frames of ``--watch``
  arrived or ``--wait`` seconds passed; then, after a ``leave`` line, it leaves the session and exits 0
  (on end of file it exits without leaving: the socket closes).

The same network guards as tests/conftest.py are installed: gathering outside
``gather_from``, aiortc's default STUN server and mDNS resolution are recorded
as ``violations`` (and answered with loopback / refused).  The process exits on
its own after ``--lifetime`` seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aioice.ice  # noqa: E402
from aiortc import rtcicetransport  # noqa: E402

from signalling.sfu import network  # noqa: E402
from tests.media_harness import Caller, until  # noqa: E402

VIOLATIONS: list[str] = []


def install_guards() -> None:
    """tests/conftest.py's ``loopback_only``, for this process."""

    def unscoped_gathering(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        VIOLATIONS.append("ICE gathering outside gather_from()")
        return ["127.0.0.1"]

    def no_default_stun(cls: Any) -> Any:
        VIOLATIONS.append("aiortc's default STUN server requested")
        raise AssertionError("aiortc's default public STUN server must never be used")

    async def no_mdns(subscriber: object) -> Any:
        VIOLATIONS.append("mDNS resolution")
        raise AssertionError("mDNS resolution must never happen")

    network._unscoped_host_addresses = unscoped_gathering
    setattr(rtcicetransport.RTCIceGatherer, "getDefaultIceServers", classmethod(no_default_stun))  # noqa: B010
    setattr(aioice.ice, "get_or_create_mdns_protocol", no_mdns)  # noqa: B010


def say(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    """One line from stdin ('' at end of file), without blocking the event loop (stdin is a pipe)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return (await reader.readline()).decode()


async def main(args: argparse.Namespace) -> int:
    if not args.url.startswith("http://127.0.0.1:"):
        raise SystemExit("this client only talks to 127.0.0.1")
    caller = Caller(args.url, args.token, args.tag)
    try:
        await caller.connect()
        ack = await caller.join(args.session)
        say(event="joined", participant_id=ack["participant_id"], participants=ack["participants"])
        await read_command()
        assert caller.media is not None
        media = caller.media
        try:
            await until(lambda: len(media.from_tag(args.watch)) >= args.min_frames, args.wait, "frames")
        except AssertionError:
            pass  # the report says how many arrived; the test decides
        say(
            event="report",
            participant_id=caller.participant_id,
            received={str(tag): numbers for tag, numbers in media._by_tag.items()},
            sent=media.camera.number if media.camera else 0,
            errors=[str(e) for e in caller.errors],
            violations=VIOLATIONS,
            events=sorted({name for name, _ in caller.events}),
        )
        if (await read_command()).strip() == "leave":
            await caller.sio.call("session.leave", {}, timeout=5)
    finally:
        await caller.close()
    return 0


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--session", type=int, required=True)
    parser.add_argument("--tag", type=int, required=True)
    parser.add_argument("--watch", type=int, required=True, help="the tag whose frames to wait for")
    parser.add_argument("--min-frames", type=int, default=15)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for --min-frames after 'report'")
    parser.add_argument("--lifetime", type=float, default=30.0, help="hard limit on this process's life, seconds")
    args = parser.parse_args()
    install_guards()

    async def bounded() -> int:
        try:
            return await asyncio.wait_for(main(args), args.lifetime)
        except TimeoutError:
            say(event="timeout", violations=VIOLATIONS)
            return 3

    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(run())
