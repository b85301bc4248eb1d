"""Working-day arithmetic (crm.clock): holidays, 调休 make-up workdays, and the exact inverse the sweep uses."""

from __future__ import annotations

import random
from datetime import date, timedelta

from crm import clock
from crm.recycle.calendar import HOLIDAYS_2026, clean_entries, parse_holiday_text
from tests.recycle_support import sh

CAL = {d: w for d, w, _n in HOLIDAYS_2026}
DAY = timedelta(days=1)
TZ = "Asia/Shanghai"


def test_golden_week_is_skipped_and_the_make_up_saturday_counts():
    # Wed 2026-09-30 15:00 + 1 working day: Oct 1–7 are 国庆 holidays, Thu Oct 8 is the next working day.
    assert clock.add_working(sh(2026, 9, 30, 15, 0), DAY, CAL, TZ) == sh(2026, 10, 8, 15, 0)
    # Fri Oct 9 15:00 + 1 working day = Sat Oct 10 15:00, a 调休 workday.
    assert clock.add_working(sh(2026, 10, 9, 15, 0), DAY, CAL, TZ) == sh(2026, 10, 10, 15, 0)
    # Sunday Sep 20 is a make-up workday too: Sat Sep 19 10:00 + 1 working day = Mon Sep 21 00:00.
    assert clock.add_working(sh(2026, 9, 19, 10, 0), DAY, CAL, TZ) == sh(2026, 9, 21, 0, 0)


def test_seven_working_days_across_golden_week():
    # Tue Sep 29 10:00 + 7 working days: Sep 30 (1), Oct 8 (2), 9 (3), Sat 10 调休 (4), 12 (5), 13 (6),
    # 14 (7) → Wed Oct 14 10:00.
    assert clock.add_working(sh(2026, 9, 29, 10, 0), 7 * DAY, CAL, TZ) == sh(2026, 10, 14, 10, 0)
    # Without the 调休 Saturday it would be Oct 15.
    without = {d: w for d, w in CAL.items() if d != date(2026, 10, 10)}
    assert clock.add_working(sh(2026, 9, 29, 10, 0), 7 * DAY, without, TZ) == sh(2026, 10, 15, 10, 0)


def test_cutoff_is_the_exact_inverse_of_the_due_time():
    rng = random.Random(5)
    start = sh(2026, 1, 1)
    for _ in range(400):
        anchor = start + timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
        length = timedelta(hours=rng.choice([1, 24, 48, 72, 7 * 24, 10 * 24, 30 * 24]))
        due = clock.add_working(anchor, length, CAL, TZ)
        for now in (due, due - timedelta(microseconds=1), due + timedelta(minutes=rng.randrange(1, 5000))):
            cutoff = clock.subtract_working(now, length, CAL, TZ)
            assert (due <= now) == (anchor <= cutoff), (anchor, length, now)
        assert clock.working_time_between(anchor, due, CAL, TZ) == length


def test_holiday_file_with_a_bad_date_is_refused_with_its_line_number():
    text = "2026-10-01,休,国庆节\n2026-13-01,休,坏日期\n2026-10-10,班,调休"
    try:
        parse_holiday_text(text)
    except ValueError as exc:
        assert "第 2 行" in str(exc) and "2026-13-01" in str(exc)
    else:
        raise AssertionError("a bad date must be refused")


def test_a_weekday_cannot_be_a_make_up_workday_and_duplicates_are_refused():
    for entries in (
        [{"date": "2026-10-08", "is_workday": True}],
        [{"date": "2026-10-01"}, {"date": "2026-10-01"}],
    ):
        try:
            clean_entries(entries)
        except ValueError:
            continue
        raise AssertionError(entries)
