"""ICE configuration of the media plane and the policy applied to remote SDP.

Gathering (which local addresses the SFU offers)
    aioice 0.13 gathers host candidates in ``Connection.gather_candidates()``
    by calling the module-level ``aioice.ice.get_host_addresses(use_ipv4,
    use_ipv6)``, which enumerates every interface (``ifaddr``) and *skips*
    ``127.0.0.1``/``::1``.  A server must instead offer exactly the addresses
    the operator configured (one NIC of the e-government network, not the
    docker bridge), and tests must offer only loopback.  So this module
    replaces that one module attribute, once, at import, with a function that
    reads a :class:`contextvars.ContextVar`: inside :func:`gather_from` the
    gathering uses exactly the given addresses; outside it behaves as aioice
    does.  The SFU wraps each of its ``setLocalDescription`` calls (where
    aiortc gathers) in ``gather_from(config.bind_addresses)``; aiortc test
    clients do the same with ``["127.0.0.1"]``.  Context variables follow
    asyncio tasks, so concurrent peers with different lists do not interfere.

STUN/TURN
    aiortc falls back to Google's public STUN server when
    ``RTCConfiguration.iceServers`` is ``None``; government networks are
    often cut off from the internet and tests must never leave loopback, so
    :meth:`MediaNetworkConfig.rtc_configuration` always passes an explicit
    (by default empty) list.  aiortc uses at most one STUN and one TURN URL.

Remote policy (applied before anything reaches aiortc/aioice)
    Every remote description goes through :func:`filter_sdp` and every
    trickled candidate through :func:`check_candidate`.  Candidates are the
    addresses the SFU will send STUN connectivity checks to (RFC 8445
    section 7.2), so an unchecked candidate turns the server into a UDP
    prober of arbitrary hosts: only addresses inside ``allowed_networks`` are
    used, mDNS names (draft-ietf-mmusic-mdns-ice-candidates) are not used
    unless enabled (resolving them multicasts on the server's LAN), nor are
    other host names, and the number of distinct remote candidates per peer
    is bounded.

    A candidate outside the policy is *dropped*, not refused: a browser
    offers every address it has (a global IPv6 address on mobile data,
    127.0.0.1 with ``--allow-loopback-in-peer-connection``, a VPN adapter),
    and ICE only needs one pair that works (RFC 8445 section 2).  The drop
    is counted by :class:`DroppedCandidates` under a :data:`DropReason`.
    Whether *no* allowed candidate remains is the peer's decision
    (:mod:`signalling.sfu.peer`): only it knows when the client has
    finished gathering.  Malformed input and the limits still raise
    :class:`~signalling.sfu.errors.MediaPolicyError` with a stable code.
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import aioice.ice
from aioice.mdns import is_mdns_hostname
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from .errors import MediaPolicyError

__all__ = [
    "DEFAULT_ALLOWED_NETWORKS",
    "CandidateKey",
    "DropReason",
    "DroppedCandidates",
    "IceServer",
    "MediaNetworkConfig",
    "MediaPolicyError",
    "candidate_key",
    "check_candidate",
    "classify_candidate",
    "filter_sdp",
    "gather_from",
    "install_host_address_hook",
    "rewrite_advertised",
    "screen_sdp",
]

DEFAULT_ALLOWED_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)
"""Private ranges (RFC 1918), shared address space (RFC 6598, used inside
e-government extranets and by carriers' private APNs) and unique local IPv6
(RFC 4193): the same default as ``media.allowed_cidrs``.  Loopback,
link-local and public ranges are *not* allowed unless configured: a client
naming ``127.0.0.1`` would make the server probe its own local UDP services."""

CandidateKey = tuple[str, str, int, int]
"""(transport, address, port, component): one remote transport address."""

DropReason = Literal["address", "mdns", "hostname"]
"""Why a remote candidate was dropped: an IP address outside ``allowed_networks``,
an mDNS ``.local`` name while ``allow_mdns`` is off, any other host name."""

DROP_REASONS: tuple[DropReason, ...] = ("address", "mdns", "hostname")


class DroppedCandidates:
    """How many distinct remote candidates were dropped, by :data:`DropReason` (monotonic, for ``/metrics``).

    One instance lives on a :class:`MediaNetworkConfig` (one per
    application), shared by every peer using that configuration.
    """

    def __init__(self) -> None:
        self._counts: Counter[DropReason] = Counter({reason: 0 for reason in DROP_REASONS})

    def add(self, reason: DropReason, count: int = 1) -> None:
        self._counts[reason] += count

    def snapshot(self) -> dict[DropReason, int]:
        return dict(self._counts)


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server the SFU itself uses (RFC 7064/7065 URLs)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class MediaNetworkConfig:
    """Where the SFU listens and what it accepts from clients.

    ``bind_addresses``: the only local addresses gathered as host candidates
    (empty: aioice's interface enumeration).  ``advertised_addresses`` maps a
    bind address to the address written into offers (1:1 NAT).
    ``allowed_networks``: CIDRs remote candidates must fall in.
    ``audio_codecs``/``video_codecs``: codec names offered to publishers, in
    order of preference; an answer without any of them is refused with
    ``codec_unsupported``.  Media is forwarded, so a subscriber always
    receives the codec its publisher sends.  ``answer_timeout``: seconds an
    offer may stay unanswered before the participant's peer connection is
    given up as failed (the client is told to rejoin, see ``docs/protocol.md``).
    ``dropped`` counts the remote candidates dropped under this policy.
    """

    bind_addresses: tuple[str, ...] = ()
    advertised_addresses: Mapping[str, str] = field(default_factory=dict, hash=False)
    ice_servers: tuple[IceServer, ...] = ()
    allowed_networks: tuple[str, ...] = DEFAULT_ALLOWED_NETWORKS
    max_remote_candidates: int = 20
    allow_mdns: bool = False
    max_sdp_bytes: int = 64 * 1024
    audio_codecs: tuple[str, ...] = ("opus",)
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    answer_timeout: float = 30.0
    dropped: DroppedCandidates = field(default_factory=DroppedCandidates, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        for address in (*self.bind_addresses, *self.advertised_addresses, *self.advertised_addresses.values()):
            ipaddress.ip_address(address)  # raises ValueError
        for network in self.allowed_networks:
            ipaddress.ip_network(network, strict=False)
        if self.max_remote_candidates < 1 or self.max_sdp_bytes < 1:
            raise ValueError("max_remote_candidates and max_sdp_bytes must be positive")
        if not self.answer_timeout > 0:
            raise ValueError("answer_timeout must be positive")
        supported = {"audio": {"opus", "pcmu", "pcma", "g722"}, "video": {"vp8", "h264"}}
        for kind, names in (("audio", self.audio_codecs), ("video", self.video_codecs)):
            if not names or not {n.lower() for n in names} <= supported[kind]:
                raise ValueError(f"{kind}_codecs must be a non-empty subset of {sorted(supported[kind])}")

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether a remote candidate address lies inside ``allowed_networks``."""
        return any(address in ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)

    def codecs_for(self, kind: str) -> tuple[str, ...]:
        return self.audio_codecs if kind == "audio" else self.video_codecs

    def rtc_configuration(self) -> RTCConfiguration:
        """aiortc configuration: explicit ICE servers (never aiortc's public default), max-bundle."""
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in self.ice_servers
        ]
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


# --- host-candidate gathering ----------------------------------------------------------------------------------------

AIOICE_TESTED = "0.13"
"""aioice version the gathering hook was written against (it relies on
``Connection.gather_candidates`` calling the module-level
``get_host_addresses``; :func:`install_host_address_hook` checks that)."""

_gather_scope: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "cloudwindow_sfu_gather_scope", default=None
)
_unscoped_host_addresses = aioice.ice.get_host_addresses
"""aioice's own enumeration, used outside :func:`gather_from`."""


def _scoped_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    scoped = _gather_scope.get()
    if scoped is None:
        return list(_unscoped_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    wanted = {4: use_ipv4, 6: use_ipv6}
    return [a for a in scoped if wanted[ipaddress.ip_address(a).version]]


def install_host_address_hook() -> None:
    """Route aioice's host-address enumeration through :func:`gather_from` (idempotent)."""
    if aioice.ice.get_host_addresses is _scoped_host_addresses:
        return
    names = aioice.ice.Connection.gather_candidates.__code__.co_names
    if "get_host_addresses" not in names:
        raise ImportError(
            f"aioice {getattr(aioice, '__version__', '?')} no longer gathers host candidates through "
            f"aioice.ice.get_host_addresses (hook written for {AIOICE_TESTED}); update signalling/sfu/network.py"
        )
    aioice.ice.get_host_addresses = _scoped_host_addresses


@contextmanager
def gather_from(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block (and tasks started in it), ICE gathers host candidates on exactly ``addresses``.

    An empty sequence leaves aioice's own enumeration in force.
    """
    if not addresses:
        yield
        return
    for address in addresses:
        ipaddress.ip_address(address)
    token = _gather_scope.set(tuple(addresses))
    try:
        yield
    finally:
        _gather_scope.reset(token)


install_host_address_hook()


# --- remote policy ---------------------------------------------------------------------------------------------------


def candidate_key(candidate: RTCIceCandidate) -> CandidateKey:
    return (candidate.protocol.lower(), candidate.ip, candidate.port, candidate.component)


def _parse_candidate(text: str) -> RTCIceCandidate:
    line = text.strip()
    if line.startswith("a="):
        line = line[2:]
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    bits = line.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise MediaPolicyError("sdp_invalid", f"malformed ICE candidate {text[:80]!r}")
    try:
        return candidate_from_sdp(line)
    except (ValueError, IndexError) as exc:
        raise MediaPolicyError("sdp_invalid", f"malformed ICE candidate {text[:80]!r}") from exc


def classify_candidate(
    candidate: str | RTCIceCandidate, config: MediaNetworkConfig
) -> tuple[RTCIceCandidate, DropReason | None]:
    """Parse one remote candidate and say whether the policy drops it (``None``: it may be used).

    Raises ``sdp_invalid`` for a malformed line; nothing else raises.
    """
    parsed = _parse_candidate(candidate) if isinstance(candidate, str) else candidate
    host = parsed.ip
    if is_mdns_hostname(host):
        return parsed, None if config.allow_mdns else "mdns"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return parsed, "hostname"
    return parsed, None if config.allows(address) else "address"


def check_candidate(candidate: str | RTCIceCandidate, config: MediaNetworkConfig) -> RTCIceCandidate:
    """Validate one remote candidate strictly; returns it parsed.

    Raises ``mdns_not_allowed`` for ``.local`` names (unless allowed),
    ``candidate_not_allowed`` for any other name or an address outside
    ``allowed_networks``, ``sdp_invalid`` for a malformed line.  The SFU
    itself drops such candidates instead (:func:`classify_candidate`).
    """
    parsed, reason = classify_candidate(candidate, config)
    if reason == "mdns":
        raise MediaPolicyError("mdns_not_allowed", f"mDNS candidate {parsed.ip!r} refused")
    if reason == "hostname":
        raise MediaPolicyError("candidate_not_allowed", f"candidate host {parsed.ip!r} is not an IP address")
    if reason == "address":
        raise MediaPolicyError(
            "candidate_not_allowed", f"candidate address {parsed.ip} is outside the allowed networks"
        )
    return parsed


@dataclass
class ScreenedSdp:
    """A remote description after the policy: what may reach aiortc, and what was taken out.

    ``sdp``: the description without the dropped ``a=candidate`` lines (CRLF
    line endings).  ``allowed``: distinct candidates it still carries.
    ``dropped``: distinct dropped candidates with their reason.
    ``end_of_candidates``: it carries ``a=end-of-candidates`` (RFC 8840
    section 8.2), so the client has no further candidate to trickle.
    """

    sdp: str
    allowed: set[CandidateKey] = field(default_factory=set)
    dropped: dict[CandidateKey, DropReason] = field(default_factory=dict)
    end_of_candidates: bool = False


def screen_sdp(
    sdp: str, config: MediaNetworkConfig, *, known_candidates: set[CandidateKey] | None = None
) -> ScreenedSdp:
    """Apply the policy to a remote description.

    Each ``a=candidate`` line is classified with :func:`classify_candidate`;
    a dropped one is left out of the returned SDP.  Distinct *allowed*
    candidates (BUNDLE repeats the same ones in every m-section) are counted
    together with ``known_candidates`` (the peer's earlier ones); more than
    ``max_remote_candidates`` raises ``too_many_candidates`` (dropped ones
    do not count: they cost nothing but parsing, which ``max_sdp_bytes``
    bounds).  On success the new keys are added to ``known_candidates``.
    Each audio/video m-section that is not rejected (port 0, RFC 3264
    section 6) must list a configured codec (``codec_unsupported``).
    Nothing is recorded on error.
    """
    size = len(sdp.encode("utf-8"))
    if size > config.max_sdp_bytes:
        raise MediaPolicyError("sdp_too_large", f"SDP of {size} bytes exceeds {config.max_sdp_bytes}")
    lines = [line.rstrip("\r") for line in sdp.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise MediaPolicyError("sdp_invalid", "SDP must start with v=0")

    seen: set[CandidateKey] = set(known_candidates or ())
    result = ScreenedSdp(sdp="")
    kept: list[str] = []
    section: tuple[str, int] | None = None
    codecs: set[str] = set()

    def close_section() -> None:
        if section is None:
            return
        kind, port = section
        if kind in ("audio", "video") and port != 0:
            allowed = {name.lower() for name in config.codecs_for(kind)}
            if not codecs & allowed:
                raise MediaPolicyError("codec_unsupported", f"{kind} section offers none of {sorted(allowed)}")

    for line in lines:
        if line.startswith("m="):
            close_section()
            parts = line[2:].split()
            if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                raise MediaPolicyError("sdp_invalid", f"malformed media line {line[:80]!r}")
            section = (parts[0], int(parts[1].split("/")[0]))
            codecs = set()
        elif line.startswith("a=rtpmap:"):
            try:
                codecs.add(line.split(None, 1)[1].split("/")[0].lower())
            except IndexError:
                raise MediaPolicyError("sdp_invalid", f"malformed rtpmap {line[:80]!r}") from None
        elif line == "a=end-of-candidates":
            result.end_of_candidates = True
        elif line.startswith("a=candidate:"):
            parsed, reason = classify_candidate(line, config)
            key = candidate_key(parsed)
            if reason is not None:
                result.dropped[key] = reason
                continue
            result.allowed.add(key)
            if key not in seen:
                seen.add(key)
                if len(seen) > config.max_remote_candidates:
                    raise MediaPolicyError(
                        "too_many_candidates", f"more than {config.max_remote_candidates} remote candidates"
                    )
        kept.append(line)
    close_section()
    if known_candidates is not None:
        known_candidates |= seen
    result.sdp = "\r\n".join(kept) + "\r\n"
    return result


def filter_sdp(sdp: str, config: MediaNetworkConfig, *, known_candidates: set[CandidateKey] | None = None) -> str:
    """:func:`screen_sdp`'s description: the remote SDP with the candidates outside the policy left out."""
    return screen_sdp(sdp, config, known_candidates=known_candidates).sdp


def rewrite_advertised(sdp: str, config: MediaNetworkConfig) -> str:
    """Replace bind addresses by their advertised addresses in a local description (1:1 NAT)."""
    mapping = config.advertised_addresses
    if not mapping:
        return sdp
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            bits = line.split(" ")
            if len(bits) > 4 and bits[4] in mapping:
                bits[4] = mapping[bits[4]]
            line = " ".join(bits)
        elif line.startswith("c=IN IP"):
            bits = line.split(" ")
            if len(bits) == 3 and bits[2] in mapping:
                bits[2] = mapping[bits[2]]
                bits[1] = f"IP{ipaddress.ip_address(bits[2]).version}"
            line = " ".join(bits)
        out.append(line)
    return "\r\n".join(out)
