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

from redis.exceptions import RedisError

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

    async def ping(self) -> None:
        """Raise :class:`ClusterError` if this process cannot reach the others now (readiness)."""
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

    async def ping(self) -> None:
        return None

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
        self._listening = False
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
        self._listening = True
        self._tasks = [asyncio.create_task(self._listen_forever(pubsub)), asyncio.create_task(self._refresh())]

    async def owner_of(self, session_id: int) -> str:
        key = self._key(session_id)
        try:
            if await self.redis.set(key, self.node_id, nx=True, ex=self.ttl):
                self._owned.add(session_id)
                return self.node_id
            owner = await self.redis.get(key)
        except RedisError as exc:  # fail fast with a clear refusal, never an unretrieved error
            raise ClusterError(f"Redis is not reachable: {exc}") from None
        if owner is None:  # expired between the two calls
            return await self.owner_of(session_id)
        if owner == self.node_id:
            self._owned.add(session_id)
        return str(owner)

    async def ping(self) -> None:
        if not self._listening:
            raise ClusterError("not subscribed to this process's channel (Redis lost; reconnecting)")
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise ClusterError(f"Redis is not reachable: {exc}") from None

    async def current_owner(self, session_id: int) -> str | None:
        try:
            owner = await self.redis.get(self._key(session_id))
        except RedisError as exc:
            raise ClusterError(f"Redis is not reachable: {exc}") from None
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
            try:
                receivers = await self.redis.publish(self._channel(node_id), payload)
            except RedisError as exc:
                raise ClusterError(f"Redis is not reachable: {exc}") from None
            if not receivers:
                raise ClusterError(f"process {node_id} is not listening")
            async with asyncio.timeout(self.timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                return await future
        except TimeoutError:
            raise ClusterError(f"process {node_id} did not answer in {self.timeout}s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _listen_forever(self, pubsub: Any) -> None:
        """Serve this process's channel; when Redis goes away, resubscribe with backoff (0.2 s doubling to 2 s).

        A listener that ended with the connection left the process deaf for good (and its peers' calls timed
        out) until a restart: now it comes back by itself once Redis does.
        """
        delay = 0.2
        while True:
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub()
                    await pubsub.subscribe(self._channel(self.node_id))
                    log.warning("resubscribed to %s after losing Redis", self._channel(self.node_id))
                self._listening = True
                delay = 0.2
                await self._listen(pubsub)
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._listening:
                    log.warning("lost the Redis subscription (%s); reconnecting", exc)
                self._listening = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

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
        try:
            await self.redis.publish(self._channel(data["reply_to"]), json.dumps({"id": data["id"], "reply": reply}))
        except RedisError as exc:  # the caller times out with a clear ClusterError
            log.warning("could not send a forwarded request's reply: %s", exc)

    #: Keep the key if it is ours, recreate it if it is gone (Redis restarted empty), never take another's.
    _REASSERT = (
        "local v = redis.call('get', KEYS[1]) "
        "if v == false then redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
        "if v == ARGV[1] then redis.call('expire', KEYS[1], ARGV[2]) return 1 end "
        "return 0"
    )

    async def _refresh(self) -> None:
        """Every ttl/3: re-assert the sessions this process owns.

        ``SET … XX`` only extended a key that still existed, so after a Redis restart the owner never recreated
        its keys; a join elsewhere then claimed the session and the two processes split the room.
        """
        while True:
            await asyncio.sleep(self.ttl / 3)
            for session_id in list(self._owned):
                try:
                    kept = await self.redis.eval(self._REASSERT, 1, self._key(session_id), self.node_id, self.ttl)
                except RedisError as exc:
                    log.warning("could not refresh ownership of session %s: %s", session_id, exc)
                    continue
                if not kept:
                    log.warning("session %s is owned by another process now; this one lets it go", session_id)
                    self._owned.discard(session_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session_id in list(self._owned):
            await self.release(session_id)
        await self.redis.aclose()
