"""Janus (Debian package ``janus``) as the SFU baseline: a loopback-only instance and a small HTTP API client.

:func:`write_config` generates a configuration folder that loads only the
VideoRoom plugin and the HTTP transport (bound to 127.0.0.1, admin API
off, no websockets/MQTT/RabbitMQ/nanomsg/Unix-socket transports, no event
handlers, no loggers), gathers ICE candidates only on 127.0.0.1
(``ice_enforce_list``), has no STUN/TURN server and drops mDNS candidates.
:class:`JanusSession` is one Janus API session over HTTP long-polling
(``create``/``attach``/``message``/``keepalive``; events come from
``GET /janus/<session>?maxev=N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

JANUS_BIN = "janus"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGINS = ("audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip", "streaming", "textroom")
PLUGINS += ("videocall", "voicemail")
TRANSPORTS = ("mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets")
EVENTS = ("gelfevh", "mqttevh", "nanomsgevh", "rabbitmqevh", "sampleevh", "wsevh")


def janus_available() -> str | None:
    """The janus executable, or None when the Debian package is not installed."""
    path = shutil.which(JANUS_BIN)
    if path is None or not (LIB / "plugins" / "libjanus_videoroom.so").exists():
        return None
    return path


def write_config(folder: Path, http_port: int, rtp_ports: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)

    def disabled(names: tuple[str, ...]) -> str:
        return ",".join(f"libjanus_{n}.so" for n in names)

    (folder / "janus.jcfg").write_text(
        f"""general: {{
\tconfigs_folder = "{folder}"
\tplugins_folder = "{LIB / "plugins"}"
\ttransports_folder = "{LIB / "transports"}"
\tevents_folder = "{LIB / "events"}"
\tloggers_folder = "{LIB / "loggers"}"
\tdebug_level = 3
\tinterface = "127.0.0.1"
\tsession_timeout = 120
\thide_dependencies = true
\tprotected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var"]
}}
certificates: {{
}}
media: {{
\trtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"
}}
nat: {{
\tnice_debug = false
\tice_enforce_list = "127.0.0.2"
\tignore_mdns = true
}}
plugins: {{
\tdisable = "{disabled(PLUGINS)}"
}}
transports: {{
\tdisable = "{disabled(TRANSPORTS)}"
}}
loggers: {{
\tdisable = "libjanus_jsonlog.so"
}}
events: {{
\tbroadcast = false
\tdisable = "{disabled(EVENTS)}"
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
\tjson = "compact"
\tbase_path = "/janus"
\thttp = true
\tport = {http_port}
\tip = "127.0.0.1"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return folder


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus API session; ``message`` waits for the plugin's event (with its JSEP) when one is due."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base = base_url.rstrip("/")
        self.http = http
        self.session_id: int | None = None
        self._tx = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.errors: list[str] = []

    def _transaction(self) -> str:
        return f"t{next(self._tx)}-{secrets.token_hex(3)}"

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.base + path, json=body, timeout=aiohttp.ClientTimeout(total=15)) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
        if data.get("janus") == "error":
            raise JanusError(str(data.get("error")))
        return data

    async def create(self) -> None:
        data = await self._post("", {"janus": "create", "transaction": self._transaction()})
        self.session_id = int(data["data"]["id"])
        self._poller = asyncio.ensure_future(self._poll())
        self._keepalive = asyncio.ensure_future(self._keepalives())

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        data = await self._post(
            f"/{self.session_id}", {"janus": "attach", "plugin": plugin, "transaction": self._transaction()}
        )
        return int(data["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None, *, wait: float = 20.0
    ) -> dict[str, Any]:
        """Send a plugin message; returns the synchronous result or, after an ``ack``, the matching event."""
        transaction = self._transaction()
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        try:
            data = await self._post(f"/{self.session_id}/{handle}", request)
            if data.get("janus") != "ack":
                self._check_plugin(data)
                return data
            async with asyncio.timeout(wait):
                event = await future
            self._check_plugin(event)
            return event
        finally:
            self._waiting.pop(transaction, None)

    @staticmethod
    def _check_plugin(data: dict[str, Any]) -> None:
        plugin = data.get("plugindata", {}).get("data", {})
        if "error" in plugin:
            raise JanusError(f"{plugin.get('error_code')}: {plugin['error']}")

    async def detach(self, handle: int) -> None:
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session_id}/{handle}", {"janus": "detach", "transaction": self._transaction()})

    async def _poll(self) -> None:
        url = f"{self.base}/{self.session_id}?maxev=20"
        while True:
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=40)) as resp:
                    data = await resp.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed long poll is retried
                self.errors.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            for event in data if isinstance(data, list) else [data]:
                transaction = event.get("transaction")
                future = self._waiting.get(transaction) if transaction else None
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)
                elif self.on_event is not None:
                    self.on_event(event)

    async def _keepalives(self) -> None:
        while True:
            await asyncio.sleep(15)
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "keepalive", "transaction": self._transaction()})

    async def destroy(self) -> None:
        for task in (self._poller, self._keepalive):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.session_id is not None:
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "destroy", "transaction": self._transaction()})
