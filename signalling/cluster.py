"""Several server processes: who owns a session's media, and how events reach the owner.

A session's media room (its aiortc peer connections) lives in exactly one
process, its **owner**.  Sockets are spread over processes by the load
balancer, so an event from a socket on another process is forwarded to the
owner, handled there by the same code, and the acknowledgement travels back.
Emits and room membership already cross processes through python-socketio's
Redis manager, so the owner talks to every participant directly.  The
browser's peer connection goes to the owner's media addresses, which the
offer carries.

:class:`LocalCluster` is the one-process default; :class:`RedisCluster`
keeps ownership in Redis keys that expire unless the owner refreshes them
(so a crashed owner's sessions can be taken over after ``ttl`` seconds) and
forwards requests over Redis pub/sub, one channel per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Message = dict[str, Any]
RequestHandler = Callable[[Message], Awaitable[Message]]


class ClusterError(Exception):
    """The owner of a session could not be reached."""


class Cluster(Protocol):
    node_id: str

    async def start(self, handler: RequestHandler) -> None:
        """Begin serving requests forwarded to this process."""
        ...

    async def owner_of(self, session_id: int) -> str:
        """The owning process of a session, claiming it for this one if nobody owns it."""
        ...

    async def release(self, session_id: int) -> None:
        """Give up ownership (the session ended here)."""
        ...

    async def current_owner(self, session_id: int) -> str | None:
        """The process owning the session now, without claiming it (None: nobody)."""
        ...

    async def call(self, node_id: str, message: Message) -> Message:
        """Run ``message`` on ``node_id`` and return its reply (:class:`ClusterError` on timeout)."""
        ...

    async def close(self) -> None: ...


class LocalCluster:
    """One process owns everything."""

    def __init__(self) -> None:
        self.node_id = "local"

    async def start(self, handler: RequestHandler) -> None:
        self._handler = handler

    async def owner_of(self, session_id: int) -> str:
        return self.node_id

    async def release(self, session_id: int) -> None:
        return None

    async def current_owner(self, session_id: int) -> str | None:
        return None  # one process: its rooms are the only ones (the signalling server looks there first)

    async def call(self, node_id: str, message: Message) -> Message:
        return await self._handler(message)

    async def close(self) -> None:
        return None


class RedisCluster:
    """Ownership keys and request/reply over Redis pub/sub."""

    def __init__(self, url: str, *, prefix: str = "cloudwindow", ttl: int = 15, timeout: float = 10.0) -> None:
        import redis.asyncio as aioredis

        self.node_id = uuid.uuid4().hex[:16]
        self.redis = aioredis.from_url(url, decode_responses=True)
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self._owned: set[int] = set()
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: RequestHandler | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def _key(self, session_id: int) -> str:
        return f"{self.prefix}:session:{session_id}:owner"

    def _channel(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    async def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self._channel(self.node_id))
        self._tasks = [asyncio.create_task(self._listen(pubsub)), asyncio.create_task(self._refresh())]

    async def owner_of(self, session_id: int) -> str:
        key = self._key(session_id)
        if await self.redis.set(key, self.node_id, nx=True, ex=self.ttl):
            self._owned.add(session_id)
            return self.node_id
        owner = await self.redis.get(key)
        if owner is None:  # expired between the two calls
            return await self.owner_of(session_id)
        if owner == self.node_id:
            self._owned.add(session_id)
        return str(owner)

    async def current_owner(self, session_id: int) -> str | None:
        owner = await self.redis.get(self._key(session_id))
        return str(owner) if owner is not None else None

    async def release(self, session_id: int) -> None:
        self._owned.discard(session_id)
        # Delete only if still ours (compare-and-delete in one step).
        script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
        await self.redis.eval(script, 1, self._key(session_id), self.node_id)

    async def call(self, node_id: str, message: Message) -> Message:
        if node_id == self.node_id:
            assert self._handler is not None
            return await self._handler(message)
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            payload = json.dumps({"id": request_id, "reply_to": self.node_id, "message": message})
            receivers = await self.redis.publish(self._channel(node_id), payload)
            if not receivers:
                raise ClusterError(f"process {node_id} is not listening")
            async with asyncio.timeout(self.timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                return await future
        except TimeoutError:
            raise ClusterError(f"process {node_id} did not answer in {self.timeout}s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _listen(self, pubsub: Any) -> None:
        async for raw in pubsub.listen():
            if raw.get("type") != "message":
                continue
            try:
                data = json.loads(raw["data"])
            except (TypeError, ValueError):
                continue
            if "reply" in data:
                future = self._pending.get(data["id"])
                if future is not None and not future.done():
                    future.set_result(data["reply"])
            elif "message" in data:
                task = asyncio.create_task(self._serve(data))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _serve(self, data: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            reply = await self._handler(data["message"])
        except Exception:
            log.exception("forwarded request failed")
            reply = {"ok": False, "error": {"code": "internal_error", "message": "internal error"}}
        await self.redis.publish(self._channel(data["reply_to"]), json.dumps({"id": data["id"], "reply": reply}))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            for session_id in list(self._owned):
                try:
                    await self.redis.set(self._key(session_id), self.node_id, ex=self.ttl, xx=True)
                except Exception:
                    log.exception("could not refresh ownership of session %s", session_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session_id in list(self._owned):
            await self.release(session_id)
        await self.redis.aclose()
