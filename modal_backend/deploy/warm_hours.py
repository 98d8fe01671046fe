"""Warm hours: how many containers to keep warm at a given moment.

A warm GPU container costs its hourly rate whether or not anyone is writing, and reviewers work in
office hours, so the deployment keeps containers warm only inside a weekly window. The window is
wall-clock time in an IANA time zone: 08:00 stays 08:00 across daylight-saving changes. A window
whose end is earlier than its start runs past midnight and belongs to the day it starts on.

This module is pure (no Modal); the deployment's scheduled function feeds it the clock and hands
the result to Modal's autoscaler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


class ScheduleError(ValueError):
    """A warm-hours setting that cannot be read; the message names the setting and the fix."""


@dataclass(frozen=True)
class WarmSchedule:
    """Keep `warm` containers during `start`-`end` local time on `days` (0 is Monday)."""

    days: frozenset[int]
    start_minute: int
    end_minute: int
    zone: ZoneInfo
    warm: int = 1

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise ScheduleError("warm days must be a non-empty set of weekdays 0 (Mon) to 6 (Sun)")
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise ScheduleError("the warm window must start between 00:00 and 23:59")
        if not 0 < self.end_minute <= MINUTES_PER_DAY or self.end_minute == self.start_minute:
            raise ScheduleError(
                "the warm window must end between 00:01 and 24:00, and not when it starts"
            )
        if self.warm < 0:
            raise ScheduleError("the number of warm containers cannot be negative")

    @classmethod
    def parse(cls, *, days: str, hours: str, zone: str, warm: int = 1) -> WarmSchedule:
        """From settings like `days="mon-fri"`, `hours="08:00-20:00"`, `zone="Europe/London"`.

        `hours="always"` means all day, every listed day."""
        try:
            tz = ZoneInfo(zone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(
                f"unknown time zone {zone!r}: use an IANA name such as 'Europe/London' or 'UTC'"
            ) from None
        if hours.strip().lower() == "always":
            start, end = 0, MINUTES_PER_DAY
        else:
            start_text, sep, end_text = hours.partition("-")
            if not sep:
                raise ScheduleError(f"warm hours {hours!r} must look like '08:00-20:00'")
            start, end = _minute_of_day(start_text), _minute_of_day(end_text)
        return cls(days=parse_days(days), start_minute=start, end_minute=end, zone=tz, warm=warm)

    def with_warm(self, warm: int) -> WarmSchedule:
        """The same window for another function with its own warm count."""
        return replace(self, warm=warm)

    def is_active(self, now: datetime) -> bool:
        if now.tzinfo is None:
            raise ValueError("pass a timezone-aware time (naive times are ambiguous across zones)")
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        if self.start_minute < self.end_minute:
            return weekday in self.days and self.start_minute <= minute < self.end_minute
        if minute >= self.start_minute:  # the evening part of a window that runs past midnight
            return weekday in self.days
        return minute < self.end_minute and (weekday - 1) % 7 in self.days

    def min_containers_at(self, now: datetime, *, lead: timedelta = timedelta(0)) -> int:
        """`warm` inside the window, else 0. With `lead`, warm-up starts that much early, so a
        container has booted by the time the window opens."""
        active = self.is_active(now) or self.is_active(now + lead)
        return self.warm if active else 0

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[day] for day in sorted(self.days))
        return (
            f"{days} {_clock(self.start_minute)}-{_clock(self.end_minute)} {self.zone.key}: "
            f"{self.warm} warm"
        )


def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `sat,sun`, `fri-mon` (wrapping), `mon,wed-fri`, or `daily`."""
    text = text.strip().lower()
    if text in ("daily", "all", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        first, _, last = part.partition("-")
        start, end = _day(first), _day(last or first)
        span = (end - start) % 7
        days.update((start + offset) % 7 for offset in range(span + 1))
    if not days:
        raise ScheduleError(f"no warm days in {text!r}: use e.g. 'mon-fri', 'sat,sun' or 'daily'")
    return frozenset(days)


def _day(name: str) -> int:
    key = name.strip()[:3]
    if key not in DAY_NAMES:
        raise ScheduleError(f"unknown weekday {name.strip()!r}: use {', '.join(DAY_NAMES)}")
    return DAY_NAMES.index(key)


def _minute_of_day(text: str) -> int:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ScheduleError(f"time {text.strip()!r} must look like '08:00'")
    hour, minute = int(match[1]), int(match[2])
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise ScheduleError(f"time {text.strip()!r} is not a time of day (00:00 to 24:00)")
    return hour * 60 + minute


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


SetMinContainers = Callable[[str, int], None]


def apply_warm_hours(
    schedules: Mapping[str, WarmSchedule],
    now: datetime,
    set_min_containers: SetMinContainers,
    *,
    lead: timedelta = timedelta(0),
) -> dict[str, int]:
    """Set each function's `min_containers` for `now`; returns what was set.

    Every target is tried even if one fails (a function not deployed yet, an API hiccup), so a
    failure costs one target one period, not the whole schedule; the first error is raised after.
    Setting the same value again is harmless, so the scheduled function can run often.
    """
    applied: dict[str, int] = {}
    failure: Exception | None = None
    for name, schedule in schedules.items():
        count = schedule.min_containers_at(now, lead=lead)
        try:
            set_min_containers(name, count)
        except Exception as exc:
            logger.error("could not set min_containers=%d on %s: %s", count, name, exc)
            failure = failure or exc
            continue
        applied[name] = count
        logger.info("min_containers=%d on %s (%s)", count, name, schedule.describe())
    if failure is not None:
        raise failure
    return applied
