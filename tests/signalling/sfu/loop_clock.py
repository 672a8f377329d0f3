"""A fake of the loop clock the SFU's keyframe requester uses (``time()``, ``call_later()``), advanced by hand."""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None], list[bool]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        cancelled = [False]
        self.timers.append((self.now + delay, callback, cancelled))
        return FakeTimer(cancelled)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while due := sorted((t for t in self.timers if t[0] <= target), key=lambda t: t[0]):
            deadline, callback, cancelled = due[0]
            self.timers.remove(due[0])
            self.now = deadline
            if not cancelled[0]:
                callback()
        self.now = target


class FakeTimer:
    def __init__(self, cancelled: list[bool]) -> None:
        self._cancelled = cancelled

    def cancel(self) -> None:
        self._cancelled[0] = True
