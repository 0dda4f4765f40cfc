"""Costs: daily buckets read like usage, from the first of the month, and the month-to-date totals.

A day's cost keeps changing for days, so the window reaches back `costs_revision_window_days`, and at
least to the first of the month, so that the month-to-date gauges are OpenAI's own figure for the month
rather than a sum of what the check happened to see. It also reaches back over the last 7 complete days, whose
average is the daily rate of the month-end projection (headroom.py): one page holds up to 180 daily buckets, so
that costs no request.
"""

from __future__ import annotations

from collections import defaultdict

from ..catalogue import MONTH_TO_DATE, PROJECT_MONTH_TO_DATE
from ..headroom import RATE_DAYS, rate_window
from .base import Outcome, Run
from .rows import aggregate, valid_values
from .usage import UsageSource, floor_to, month_start

MONTH_DIMS = ('currency',)
PROJECT_MONTH_DIMS = ('project_id', 'currency')


class CostsSource(UsageSource):
    def window_start(self, now: float, seconds: int) -> int:
        revised = floor_to(now - self.windows.costs_revision_days * 86400, seconds)
        return min(month_start(now), revised, rate_window(now)[0])

    def _layout(self) -> None:
        super()._layout()
        # Found by name: the group_by decides where the project sits in a key, and the currency is always last.
        self.amount_slot = [f.name for f in self.endpoint.flows].index('amount')
        self.currency_slot = self.dims.index('currency')
        self.project_slot = self.dims.index('project_id') if 'project_id' in self.dims else None

    def collect(self, run: Run) -> Outcome:
        self.month = month_start(run.now)
        self.rate_from, self.rate_to = rate_window(run.now)
        self.totals: dict[str, float] = defaultdict(float)
        self.project_totals: dict[tuple[str, str], float] = defaultdict(float)
        self.rate_totals: dict[str, float] = defaultdict(float)
        self.project_rate_totals: dict[tuple[str, str], float] = defaultdict(float)
        outcome = super().collect(run)
        if outcome.complete:
            # Only a complete read covers the whole month.
            for currency, total in self.totals.items():
                outcome.gauges.append((MONTH_TO_DATE.name, total, MONTH_DIMS, (currency,)))
            for (project_id, currency), total in self.project_totals.items():
                outcome.gauges.append((PROJECT_MONTH_TO_DATE.name, total, PROJECT_MONTH_DIMS, (project_id, currency)))
            # For the headroom of the same run (sources/limits.py): what the month-end projection starts from.
            outcome.derived['month_to_date'] = dict(self.totals)
            outcome.derived['daily_rate'] = {c: t / RATE_DAYS for c, t in self.rate_totals.items()}
            if self.project_slot is not None:
                outcome.derived['project_month_to_date'] = dict(self.project_totals)
                outcome.derived['project_daily_rate'] = {k: t / RATE_DAYS for k, t in self.project_rate_totals.items()}
        return outcome

    def _collect(self, run: Run) -> Outcome:
        # A refused group_by reads the window again: the month is summed from that reading alone.
        self.totals.clear()
        self.project_totals.clear()
        self.rate_totals.clear()
        self.project_rate_totals.clear()
        return super()._collect(run)

    def _diff_bucket(self, reading, start: int, results: list, now: float) -> None:
        if start < reading.base.horizon:
            # A day the saved state no longer compares (it left the re-read window before the window reached back
            # over the rate's 7 days, as after an upgrade): final for the ledger, so never submitted again, but
            # still a day of the daily rate.
            current, malformed = aggregate(results, self.key_of, self.read_flows)
            valid = {key: values for key, values in current.items() if valid_values(values)}
            reading.malformed += malformed + len(current) - len(valid)
            self._add(start, valid)
            return
        super()._diff_bucket(reading, start, results, now)

    def bucket_read(self, start: int, current: dict, submitted: dict, changed: dict, rejected: list, now: float):
        if start < self.month and start < self.rate_from:
            return
        for key in rejected:
            # The month's total counts what was last submitted for a rejected row, as the ledger does.
            if key in submitted:
                current[key] = submitted[key]
            else:
                del current[key]
        self._add(start, current)

    def _add(self, start: int, current: dict) -> None:
        """Add a day's costs to the month's totals and to the rate's, as far as the day belongs to them."""
        targets = []
        if start >= self.month:
            targets.append((self.totals, self.project_totals))
        if self.rate_from <= start < self.rate_to:
            targets.append((self.rate_totals, self.project_rate_totals))
        amount, currency_slot, project_slot = self.amount_slot, self.currency_slot, self.project_slot
        for totals, project_totals in targets:
            for key, values in current.items():
                value = values[amount]
                if value is None:
                    continue
                currency = key[currency_slot] or 'usd'
                totals[currency] += value
                if project_slot is not None:
                    project_totals[(key[project_slot], currency)] += value
