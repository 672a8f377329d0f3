"""What UDP GSO saves on the SFU's send path: one frame's SRTP-sized datagrams, one sendto each against one GSO sendmsg.

Sends the same frames (by default 3 full packets of 1,330 bytes and a last
of 600, a 1 Mbit/s 30 fps VP8 frame after SRTP) through
:func:`signalling.sfu.udpsend.send_datagrams` on an asyncio datagram
transport to a socket on 127.0.0.1, with GSO off and on, alternating, in
one process.  Prints microseconds per frame spent in the send call and the
ratio: the call is synchronous CPU work (on loopback it includes the
kernel's delivery to the receiving socket, charged to the sender as for the
SFU in ``bench/sfu_forward.py``), so its ``perf_counter`` time is its CPU
time; process time is not used because this kernel samples it per tick
(4 ms), too coarse for 100 µs calls with pauses between them.  Two ways: back to
back (hot caches) and with a pause between frames (``--gap`` ms, as frames
come at 30 fps), where a wake-up costs more on this VM.  Bounded by
``--frames`` and ``--rounds``; loopback only.

    .venv/bin/python bench/udp_gso.py [--frames 20000] [--rounds 2] [--gap-frames 300] [--gap 33]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from typing import Any

from signalling.sfu import udpsend


def drain(receiver: socket.socket) -> int:
    n = 0
    try:
        while True:
            receiver.recv(2048)
            n += 1
    except BlockingIOError:
        return n


async def run(transport: Any, receiver: socket.socket, frame: list[bytes], frames: int, gap: float) -> float:
    """µs per frame in the send call over ``frames`` frames; every datagram is checked to have arrived."""
    address = receiver.getsockname()
    got = 0
    cpu = 0.0
    for i in range(frames):
        start = time.perf_counter()
        udpsend.send_datagrams(transport, frame, address)
        cpu += time.perf_counter() - start
        if gap:
            await asyncio.sleep(gap)
            got += drain(receiver)
        elif i % 32 == 31:
            got += drain(receiver)
    got += drain(receiver)
    if got != frames * len(frame):
        raise SystemExit(f"lost datagrams on loopback: {got} of {frames * len(frame)}")
    return cpu / frames * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000, help="frames per back-to-back measurement")
    parser.add_argument("--gap-frames", type=int, default=450, help="frames per measurement with pauses")
    parser.add_argument("--gap", type=float, default=33.0, help="pause between frames, ms")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs of each measurement")
    parser.add_argument("--packets", type=int, default=4, help="datagrams per frame (the last one shorter)")
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    frame = [bytes(1330)] * (args.packets - 1) + [bytes(600)]
    print(f"UDP GSO on the SFU's send path: {args.packets}-datagram frames ({sum(map(len, frame))} bytes) to 127.0.0.1")
    try:
        for label, frames, gap in (
            ("back to back", args.frames, 0.0),
            (f"{args.gap:.0f} ms apart", args.gap_frames, args.gap / 1000),
        ):
            figures: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for gso in (False, True):
                    udpsend.set_gso(gso)
                    figures[gso].append(await run(transport, receiver, frame, frames, gap))
            if not udpsend.gso_enabled():
                print("  GSO was turned off by the kernel's answer: no comparison")
                return
            off, on = statistics.median(figures[False]), statistics.median(figures[True])
            print(
                f"  {label:>14}: one sendto per datagram {off:6.1f} µs/frame, one GSO sendmsg {on:6.1f} µs/frame, "
                f"ratio {off / on:.2f}x (median of {args.rounds} each)"
            )
        sends = udpsend.counts()
        print(f"  GSO sends {sends['gso_sends']}, datagrams in them {sends['gso_datagrams']}")
    finally:
        transport.close()
        receiver.close()


if __name__ == "__main__":
    asyncio.run(main())
