"""Costs: daily buckets read like usage, from the first of the month, and the month-to-date totals.

A day's cost keeps changing for days, so the window reaches back `costs_revision_window_days`, and at
least to the first of the month, so that the month-to-date gauges are OpenAI's own figure for the month
rather than a sum of what the check happened to see.
"""

from __future__ import annotations

from collections import defaultdict

from ..catalogue import MONTH_TO_DATE, PROJECT_MONTH_TO_DATE
from .base import Outcome, Run
from .usage import UsageSource, floor_to, month_start

MONTH_DIMS = ('currency',)
PROJECT_MONTH_DIMS = ('project_id', 'currency')


class CostsSource(UsageSource):
    def window_start(self, now: float, seconds: int) -> int:
        return min(month_start(now), floor_to(now - self.windows.costs_revision_days * 86400, seconds))

    def _layout(self) -> None:
        super()._layout()
        # Found by name: the group_by decides where the project sits in a key, and the currency is always last.
        self.amount_slot = [f.name for f in self.endpoint.flows].index('amount')
        self.currency_slot = self.dims.index('currency')
        self.project_slot = self.dims.index('project_id') if 'project_id' in self.dims else None

    def collect(self, run: Run) -> Outcome:
        self.month = month_start(run.now)
        self.totals: dict[str, float] = defaultdict(float)
        self.project_totals: dict[tuple[str, str], float] = defaultdict(float)
        outcome = super().collect(run)
        if outcome.complete:
            # Only a complete read covers the whole month.
            for currency, total in self.totals.items():
                outcome.gauges.append((MONTH_TO_DATE.name, total, MONTH_DIMS, (currency,)))
            for (project_id, currency), total in self.project_totals.items():
                outcome.gauges.append((PROJECT_MONTH_TO_DATE.name, total, PROJECT_MONTH_DIMS, (project_id, currency)))
        return outcome

    def _collect(self, run: Run) -> Outcome:
        # A refused group_by reads the window again: the month is summed from that reading alone.
        self.totals.clear()
        self.project_totals.clear()
        return super()._collect(run)

    def bucket_read(self, start: int, current: dict, submitted: dict, changed: dict, rejected: list, now: float):
        if start < self.month:
            return
        for key in rejected:
            # The month's total counts what was last submitted for a rejected row, as the ledger does.
            if key in submitted:
                current[key] = submitted[key]
            else:
                del current[key]
        amount, currency_slot, project_slot = self.amount_slot, self.currency_slot, self.project_slot
        for key, values in current.items():
            value = values[amount]
            if value is None:
                continue
            currency = key[currency_slot] or 'usd'
            self.totals[currency] += value
            if project_slot is not None:
                self.project_totals[(key[project_slot], currency)] += value
