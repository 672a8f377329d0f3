"""Guards for every SFU test: loopback only, no public STUN, no mDNS, and the server never decodes.

- Gathering outside :func:`signalling.sfu.network.gather_from` would
  enumerate real interfaces: here it is answered with loopback only and
  recorded, and a test that did it fails.
- aiortc's default (Google) STUN server and aioice's mDNS resolver raise.
- aiortc's decoder thread is instrumented: a thread started for a
  :class:`~signalling.sfu.passthrough.PassthroughQueue` (the server's
  receivers) that asks for a decoder fails the test; client threads are
  counted so the instrumentation is known to work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from aiortc import rtcicetransport, rtcrtpreceiver
from sfu_harness import DecoderWatch

from signalling.sfu import network
from signalling.sfu.passthrough import PassthroughQueue


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bool, bool]]]:
    unscoped: list[tuple[bool, bool]] = []

    def unscoped_gathering(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        unscoped.append((use_ipv4, use_ipv6))
        return ["127.0.0.1"]

    def no_default_stun(cls: Any) -> Any:
        raise AssertionError("aiortc's default public STUN server must never be used")

    async def no_mdns(subscriber: object) -> Any:
        raise AssertionError("mDNS resolution must never happen in tests")

    monkeypatch.setattr(network, "_unscoped_host_addresses", unscoped_gathering)
    monkeypatch.setattr(rtcicetransport.RTCIceGatherer, "getDefaultIceServers", classmethod(no_default_stun))
    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", no_mdns)
    yield unscoped
    assert not unscoped, "ICE gathering happened outside gather_from()"


@pytest.fixture(autouse=True)
def decoder_watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecoderWatch]:
    watch = DecoderWatch()
    local = threading.local()
    worker = rtcrtpreceiver.decoder_worker
    get_decoder = getattr(rtcrtpreceiver, "get_decoder")  # noqa: B009 - not re-exported

    def watched_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
        local.server = isinstance(input_q, PassthroughQueue)
        worker(loop, input_q, output_q, decode_error)

    def watched_get_decoder(codec: Any) -> Any:
        if getattr(local, "server", False):
            watch.server_decoders.append(codec.mimeType)
        else:
            watch.client_decoders += 1
        return get_decoder(codec)

    monkeypatch.setattr(rtcrtpreceiver, "decoder_worker", watched_worker)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", watched_get_decoder)
    yield watch
    assert not watch.server_decoders, f"the server decoded {watch.server_decoders}"
