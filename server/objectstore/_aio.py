"""Small helpers for running blocking work off the event loop safely.

The stores hand blocking calls (file I/O, boto3) to threads.  A thread cannot
be interrupted, so when the awaiting task is cancelled the work keeps running;
cleanup code must wait for it to finish before it closes the file descriptor
or aborts the upload the work is using.  These helpers make that explicit:
:func:`submit` starts the work, awaiting ``asyncio.shield(fut)`` waits for it
without letting a cancellation mark it done early, and :func:`settle` waits for
it during cleanup without raising.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def submit(executor: Executor | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
    """Start ``fn(*args, **kwargs)`` in ``executor`` (``None``: the loop's default)."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


async def run(executor: Executor | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` in ``executor`` and return its result.

    If the caller is cancelled, it is cancelled at once, but the work itself
    still runs to completion in its thread (its outcome is discarded).
    """
    return await asyncio.shield(submit(executor, fn, *args, **kwargs))


async def run_or_release(
    executor: Executor | None,
    release: Callable[[T], object],
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Like :func:`run`, for work that acquires a resource (e.g. opens a file).

    If the caller is cancelled, ``release`` is applied to the result once the
    work finishes, so the resource does not leak.
    """
    fut = submit(executor, fn, *args, **kwargs)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:

        def _release(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                release(done.result())

        fut.add_done_callback(_release)
        raise


async def settle(fut: asyncio.Future[Any] | None) -> None:
    """Wait until ``fut`` is done, ignoring its outcome (and marking it retrieved)."""
    if fut is None:
        return
    if not fut.done():
        await asyncio.wait([fut])
    if not fut.cancelled():
        fut.exception()


class Background:
    """Keeps cleanup tasks alive until they finish, even if their caller is cancelled."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    async def run_to_completion(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task and wait for it.

        Cancelling the caller does not cancel the task: it finishes in the
        background (held here so it is not garbage-collected).
        """
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for all pending cleanup tasks (used by ``close``)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
