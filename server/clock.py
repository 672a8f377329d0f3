"""Injected time (DESIGN.md §5.6): code asks a :class:`Clock`, tests advance a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Protocol

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

#: The instants the API accepts from clients.  Wide enough for any real date
#: (birth dates are not instants), narrow enough that converting one to UTC,
#: adding a day or storing it can never overflow ``datetime``.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


def _in_utc(value: datetime) -> datetime:
    # The range check comes first, on the aware value: converting year 1 at +14:00 (or 9999-12-31 at -12:00)
    # to UTC is what used to overflow.  Comparing aware datetimes needs no conversion.
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()}")
    return value.astimezone(UTC)


def _iso_only(value: object) -> object:
    # pydantic would read a number (or a query string such as "0.5") as Unix time; the API documents ISO 8601
    # date-times only, so anything that is not a datetime or an ISO string is refused here.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value[:4].isdigit() and value[4:5] == "-":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be an ISO 8601 date and time with an offset")


UtcInstant = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_in_utc)]
"""A timezone-aware ISO 8601 instant from a client, range-checked and converted to UTC (any offset accepted)."""


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (rate limits, timeouts)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; used by tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)
        self._mono += seconds
