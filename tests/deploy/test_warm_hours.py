"""Warm hours: which moment gives which `min_containers`, across zones, weekdays and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from modal_backend.deploy.warm_hours import (
    ScheduleError,
    WarmSchedule,
    apply_warm_hours,
    parse_days,
)

LONDON = WarmSchedule.parse(days="mon-fri", hours="08:00-20:00", zone="Europe/London", warm=1)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 1, 14, 7, 59), 0),  # Wednesday, GMT: 07:59 local
        (utc(2026, 1, 14, 8, 0), 1),  # opens at 08:00 sharp
        (utc(2026, 1, 14, 19, 59), 1),
        (utc(2026, 1, 14, 20, 0), 0),  # the end is exclusive
        (utc(2026, 1, 17, 12, 0), 0),  # Saturday
        (utc(2026, 1, 18, 12, 0), 0),  # Sunday
    ],
)
def test_inside_and_outside_the_window(now: datetime, expected: int) -> None:
    assert LONDON.min_containers_at(now) == expected


def test_daylight_saving_moves_the_window_with_the_wall_clock() -> None:
    """The same UTC instant is 07:30 in London in winter and 08:30 in summer."""
    assert LONDON.min_containers_at(utc(2026, 3, 27, 7, 30)) == 0  # Friday, still GMT
    assert LONDON.min_containers_at(utc(2026, 3, 30, 7, 30)) == 1  # Monday, BST since Sunday
    assert LONDON.min_containers_at(utc(2026, 10, 23, 19, 30)) == 0  # Friday, 20:30 BST
    assert LONDON.min_containers_at(utc(2026, 10, 26, 19, 30)) == 1  # Monday, 19:30 GMT


def test_zones_with_different_dst_dates_disagree_for_those_weeks() -> None:
    """The US moved its clocks on 8 March 2026, Europe on 29 March: between the two, 12:30 UTC
    is 08:30 in New York (warm there) but 12:30 in London."""
    new_york = WarmSchedule.parse(
        days="mon-fri", hours="08:00-09:00", zone="America/New_York", warm=2
    )
    london = WarmSchedule.parse(days="mon-fri", hours="08:00-09:00", zone="Europe/London")
    monday = utc(2026, 3, 16, 12, 30)
    assert new_york.min_containers_at(monday) == 2
    assert london.min_containers_at(monday) == 0
    assert (
        new_york.min_containers_at(utc(2026, 3, 6, 12, 30)) == 0
    )  # before the US change: 07:30 EST


def test_zone_east_of_utc_crosses_the_date_line_of_its_weekday() -> None:
    """Monday 08:00 in Tokyo is still Sunday in UTC."""
    tokyo = WarmSchedule.parse(days="mon-fri", hours="08:00-18:00", zone="Asia/Tokyo")
    assert tokyo.min_containers_at(utc(2026, 1, 11, 23, 30)) == 1  # Sunday 23:30 UTC
    assert tokyo.min_containers_at(utc(2026, 1, 16, 23, 30)) == 0  # Friday UTC, Saturday there


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    night = WarmSchedule.parse(days="fri", hours="22:00-06:00", zone="UTC", warm=1)
    assert night.min_containers_at(utc(2026, 1, 16, 21, 59)) == 0  # Friday
    assert night.min_containers_at(utc(2026, 1, 16, 23, 0)) == 1  # Friday night
    assert night.min_containers_at(utc(2026, 1, 17, 5, 59)) == 1  # Saturday morning
    assert night.min_containers_at(utc(2026, 1, 17, 6, 0)) == 0
    assert night.min_containers_at(utc(2026, 1, 17, 23, 0)) == 0  # Saturday night: not listed
    assert night.min_containers_at(utc(2026, 1, 16, 3, 0)) == 0  # Friday early: Thursday's


def test_overnight_window_across_the_autumn_change_keeps_both_repeated_hours() -> None:
    """On 25 October 2026 London's 01:00-02:00 happens twice; both are inside 22:00-06:00."""
    night = WarmSchedule.parse(days="sat", hours="22:00-06:00", zone="Europe/London")
    first = utc(2026, 10, 25, 0, 30)  # 01:30 BST
    second = utc(2026, 10, 25, 1, 30)  # 01:30 GMT
    london = ZoneInfo("Europe/London")
    assert first.astimezone(london).hour == second.astimezone(london).hour == 1
    assert night.min_containers_at(first) == night.min_containers_at(second) == 1
    assert night.min_containers_at(utc(2026, 10, 25, 6, 0)) == 0  # 06:00 GMT


def test_lead_time_warms_up_before_the_window_opens() -> None:
    before = utc(2026, 1, 14, 7, 50)
    assert LONDON.min_containers_at(before) == 0
    assert LONDON.min_containers_at(before, lead=timedelta(minutes=15)) == 1
    after = utc(2026, 1, 14, 20, 5)
    assert LONDON.min_containers_at(after, lead=timedelta(minutes=15)) == 0


def test_always_and_zero_warm() -> None:
    always = WarmSchedule.parse(days="daily", hours="always", zone="UTC", warm=3)
    assert {always.min_containers_at(utc(2026, 1, d, h)) for d in (10, 11) for h in (0, 23)} == {3}
    assert LONDON.with_warm(0).min_containers_at(utc(2026, 1, 14, 12)) == 0
    full_day = WarmSchedule.parse(days="sat,sun", hours="00:00-24:00", zone="UTC")
    assert full_day.min_containers_at(utc(2026, 1, 17, 23, 59)) == 1


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        LONDON.min_containers_at(datetime(2026, 1, 14, 12))


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("Mon,Wed-Fri", {0, 2, 3, 4}),
        ("daily", set(range(7))),
        ("tuesday", {1}),
    ],
)
def test_weekday_lists(text: str, days: set[int]) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": "mon-fry"}, "unknown weekday 'fry'"),
        ({"days": ","}, "no warm days"),
        ({"hours": "8-20"}, "must look like '08:00'"),
        ({"hours": "08:00"}, "must look like '08:00-20:00'"),
        ({"hours": "08:00-25:00"}, "not a time of day"),
        ({"hours": "09:00-09:00"}, "not when it starts"),
        ({"zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"warm": -1}, "cannot be negative"),
    ],
)
def test_bad_settings_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"days": "mon-fri", "hours": "08:00-20:00", "zone": "UTC"}
    with pytest.raises(ScheduleError, match=message):
        WarmSchedule.parse(**{**settings, **kwargs})  # type: ignore[arg-type]


def test_apply_sets_every_target_and_reports_the_first_failure() -> None:
    schedules = {"model": LONDON.with_warm(2), "baseline": LONDON, "ui": LONDON}
    calls: list[tuple[str, int]] = []

    def set_min(name: str, count: int) -> None:
        calls.append((name, count))
        if name == "baseline":
            raise RuntimeError("not deployed")

    with pytest.raises(RuntimeError, match="not deployed"):
        apply_warm_hours(schedules, utc(2026, 1, 14, 12), set_min)
    assert calls == [("model", 2), ("baseline", 1), ("ui", 1)]

    calls.clear()
    applied = apply_warm_hours(
        {"model": LONDON.with_warm(2)}, utc(2026, 1, 14, 22), lambda n, c: calls.append((n, c))
    )
    assert applied == {"model": 0} and calls == [("model", 0)]
    assert LONDON.describe() == "mon,tue,wed,thu,fri 08:00-20:00 Europe/London: 1 warm"
