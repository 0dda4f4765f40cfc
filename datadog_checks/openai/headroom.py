"""Headroom: the rules that relate usage and costs to OpenAI's rate limits and spend limits, in one place.

Pure functions, so that the README's formulas and the tests have one thing to agree with.
"""

from __future__ import annotations

import calendar
import time
from typing import Collection

DAY = 86400
# The days whose costs give the daily rate of the projection: the last 7 complete UTC days.
RATE_DAYS = 7


def limit_model(usage_model: str, limit_models: Collection[str]) -> str | None:
    """The model of a project's rate limits that a usage row's model counts against, or None.

    Usage reports dated snapshots (`gpt-4o-2024-08-06`) and fine-tunes (`ft:gpt-4o-mini-2024-07-18:org::abc`);
    limits name models as OpenAI lists them (`gpt-4o`). The exact name first; else the longest limit model that the
    usage model starts with, followed by `-` (`gpt-4o-mini-2024-07-18` is `gpt-4o-mini`'s, not `gpt-4o`'s). A
    fine-tune without a limit of its own counts against its base model's, the name between `ft:` and the next `:`.
    """
    if usage_model in limit_models:
        return usage_model
    if usage_model.startswith('ft:'):
        base = usage_model[3:].split(':', 1)[0]
        if base:
            return limit_model(base, limit_models)
        return None
    best = None
    for name in limit_models:
        if name and usage_model.startswith(name + '-') and (best is None or len(name) > len(best)):
            best = name
    return best


def next_month_start(now: float) -> int:
    tm = time.gmtime(now)
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def days_remaining(now: float) -> float:
    """Days from now to the end of the UTC month, the rest of today included (a fraction)."""
    return (next_month_start(now) - now) / DAY


def rate_window(now: float) -> tuple[int, int]:
    """[start, end) of the last RATE_DAYS complete UTC days: today, still growing, is not one of them."""
    today = int(now // DAY * DAY)
    return today - RATE_DAYS * DAY, today


def projected_month_end(month_to_date: float, daily_rate: float, now: float) -> float:
    """Month-to-date cost plus the daily rate times the days left in the UTC month."""
    return month_to_date + daily_rate * days_remaining(now)


def days_left(threshold: float, month_to_date: float, daily_rate: float) -> float | None:
    """Days until the threshold is reached at the daily rate: 0 when already reached, None when the rate is 0."""
    if month_to_date >= threshold:
        return 0.0
    if daily_rate <= 0:
        return None
    return (threshold - month_to_date) / daily_rate
