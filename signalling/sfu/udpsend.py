"""Several datagrams to one address in as few system calls as Linux allows: UDP GSO (generic segmentation offload).

A forwarded video frame is a run of SRTP packets of one size (the
packetiser fills every payload but the last) plus a shorter last one.  With
the ``UDP_SEGMENT`` control message (Linux 4.18, ``udp(7)``) one
``sendmsg`` hands the kernel the whole run and the segment size; the kernel
cuts it into the same datagrams the separate ``sendto`` calls would have
sent (on the wire nothing changes: the receiver sees ordinary datagrams).
It saves the system call, the route lookup and the socket accounting per
packet but one.

:func:`send_datagrams` writes on asyncio's selector datagram transport (the
one aioice's connections use) and keeps its ordering and buffering rules:

* only while the transport's write buffer is empty does it write on the
  socket itself; otherwise, and after any datagram the transport had to
  buffer, everything goes through ``transport.sendto`` in order;
* runs are cut at :data:`MAX_SEGMENTS` segments and :data:`MAX_BYTES` bytes
  (the kernel's limits); a run of one is sent with ``transport.sendto``;
* ``EAGAIN``: the rest goes through ``transport.sendto``, which buffers it;
* an error meaning that GSO is not available here (an old kernel, a device
  without checksum offload, a segment larger than the path MTU:
  :data:`UNSUPPORTED`) turns GSO off for the process, logged once; any other
  error hands the rest to ``transport.sendto``, which reports errors to the
  protocol as before.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Sequence
from struct import Struct
from typing import Any

__all__ = [
    "MAX_BYTES",
    "MAX_SEGMENTS",
    "UDP_SEGMENT",
    "UNSUPPORTED",
    "counts",
    "gso_enabled",
    "send_datagrams",
    "set_gso",
]

logger = logging.getLogger(__name__)

UDP_SEGMENT = 103
"""``linux/udp.h``: the ``SOL_UDP`` option / control message carrying the segment size."""
MAX_SEGMENTS = 64
"""``UDP_MAX_SEGMENTS``: most segments in one GSO send."""
MAX_BYTES = 65000
"""Most bytes in one GSO send (below IPv4's 65507-byte datagram limit)."""
UNSUPPORTED = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE})
"""``sendmsg`` errors that mean GSO cannot be used on this host or path."""

_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_SIZE = Struct("=H")
_SELECTOR_DATAGRAM_TRANSPORT: Any = vars(asyncio.selector_events).get("_SelectorDatagramTransport")
_enabled = hasattr(socket.socket, "sendmsg") and _SELECTOR_DATAGRAM_TRANSPORT is not None
_counts = {"gso_sends": 0, "gso_datagrams": 0}


def gso_enabled() -> bool:
    return _enabled


def set_gso(enabled: bool) -> None:
    """Turn GSO on or off for the process (the server sets it from ``media.udp_gso``; tests and benches)."""
    global _enabled
    _enabled = enabled and _SELECTOR_DATAGRAM_TRANSPORT is not None


def counts() -> dict[str, int]:
    """GSO sends made and the datagrams they carried, since start-up."""
    return dict(_counts)


def send_datagrams(transport: Any, datagrams: Sequence[bytes], address: Any) -> None:
    """Send ``datagrams`` to ``address`` in order on ``transport`` (see the module docstring)."""
    count = len(datagrams)
    sock = transport.__dict__.get("_sock") if _enabled and count > 1 else None
    if sock is None or type(transport) is not _SELECTOR_DATAGRAM_TRANSPORT or transport.get_write_buffer_size():
        for data in datagrams:
            transport.sendto(data, address)
        return
    sendto = transport.sendto
    start = 0
    while start < count:
        size = len(datagrams[start])
        end = start + 1
        total = size
        limit = min(count, start + MAX_SEGMENTS)
        while end < limit and len(datagrams[end]) == size and total + size <= MAX_BYTES:
            end += 1
            total += size
        if end < limit and len(datagrams[end]) < size and total + len(datagrams[end]) <= MAX_BYTES:
            end += 1  # a shorter last segment is allowed
        if end - start == 1:
            sendto(datagrams[start], address)
            start = end
            if transport.get_write_buffer_size():
                break  # buffered: the rest must queue behind it
            continue
        try:
            sock.sendmsg(datagrams[start:end], [(_SOL_UDP, UDP_SEGMENT, _SIZE.pack(size))], 0, address)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                _disable(exc)
            break
        _counts["gso_sends"] += 1
        _counts["gso_datagrams"] += end - start
        start = end
    for data in datagrams[start:]:
        sendto(data, address)


def _disable(exc: OSError) -> None:
    global _enabled
    if _enabled:
        _enabled = False
        logger.warning("UDP GSO is not available here (%s); the SFU sends one datagram per system call", exc)
