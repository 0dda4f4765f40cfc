"""Costs: daily buckets read like usage, from the first of the month, and the month-to-date totals.

A day's cost keeps changing for days, so the window reaches back `costs_revision_window_days`, and at
least to the first of the month, so that the month-to-date gauges are OpenAI's own figure for the month
rather than a sum of what the check happened to see. It also reaches back over the last 7 complete days, whose
average is the daily rate of the month-end projection (headroom.py): one page holds up to 180 daily buckets, so
that costs no request.

With group_by line_item, OpenAI also reports the billed `quantity` and its `quantity_unit`: the quantity is a
flow like the amount (same ledger, same exactly-once), tagged as the amount plus `quantity_unit`. What the run read
of each day (amount and quantity per line item, amount per project) goes to the estimate of spend as a `Bill`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..catalogue import MONTH_TO_DATE, PROJECT_MONTH_TO_DATE
from ..headroom import RATE_DAYS, rate_window
from ..ledger import Key, Ledger, shape_of
from .base import Outcome, Run
from .rows import aggregate, valid_values
from .usage import UsageSource, floor_to, month_start

MONTH_DIMS = ('currency',)
PROJECT_MONTH_DIMS = ('project_id', 'currency')
# The ledger's fields before quantity was collected (version 0.1): such a state is migrated, see _load.
LEGACY_FIELDS = ('amount',)


@dataclass
class Bill:
    """The costs of each day the run read, as OpenAI reports them now (today's included, incomplete)."""

    # day start -> (line_item, quantity_unit, currency) -> [amount, quantity]
    lines: dict[int, dict[tuple[str, str, str], list[float]]] = field(default_factory=dict)
    # day start -> (project_id, currency) -> amount
    projects: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    # The group_by gave the line items / the projects (otherwise the matching table stays empty).
    by_line_item: bool = False
    by_project: bool = False
    # The whole window was read: only then does the bill say which line items it holds.
    complete: bool = False


class CostsSource(UsageSource):
    def window_start(self, now: float, seconds: int) -> int:
        revised = floor_to(now - self.windows.costs_revision_days * 86400, seconds)
        return min(month_start(now), revised, rate_window(now)[0])

    def _layout(self) -> None:
        super()._layout()
        # Found by name: the group_by decides where the project sits in a key, and the currency is always last.
        names = [f.name for f in self.endpoint.flows]
        self.amount_slot = names.index('amount')
        self.quantity_slot = names.index('quantity')
        self.quantity_name = self.flow_names[self.quantity_slot]
        self.currency_slot = self.dims.index('currency')
        self.project_slot = self.dims.index('project_id') if 'project_id' in self.dims else None
        self.line_item_slot = self.dims.index('line_item') if 'line_item' in self.dims else None
        self.quantity_dims = self.dims + ('quantity_unit',)
        # The unit is not part of a series key (a line item has one unit; keeping it out keeps the ledger's keys and
        # the amount's tags as they were): it is noted per key as the rows are read.
        read_key = self.key_of
        self.units: dict[Key, str] = {}
        units = self.units

        def key_of(row: dict) -> Key:
            key = read_key(row)
            unit = row.get('quantity_unit')
            if unit.__class__ is str:
                units[key] = unit
            return key

        self.key_of = key_of

    def collect(self, run: Run) -> Outcome:
        self.month = month_start(run.now)
        self.rate_from, self.rate_to = rate_window(run.now)
        self.totals: dict[str, float] = defaultdict(float)
        self.project_totals: dict[tuple[str, str], float] = defaultdict(float)
        self.bill = Bill(by_line_item=self.line_item_slot is not None, by_project=self.project_slot is not None)
        self.units.clear()
        self.rate_totals: dict[str, float] = defaultdict(float)
        self.project_rate_totals: dict[tuple[str, str], float] = defaultdict(float)
        outcome = super().collect(run)
        self.bill.complete = outcome.complete
        outcome.facts['bill'] = self.bill
        name, dims, units = self.quantity_name, self.quantity_dims, self.units
        # A list of its own (the run's compact points are read-only): the quantity's points carry one more tag.
        outcome.counts = [
            (metric, value, dims, key + (units.get(key, ''),)) if metric == name else (metric, value, point_dims, key)
            for metric, value, point_dims, key in outcome.counts
        ]
        if outcome.complete:
            # Only a complete read covers the whole month.
            for currency, total in self.totals.items():
                outcome.gauges.append((MONTH_TO_DATE.name, total, MONTH_DIMS, (currency,)))
            for (project_id, currency), total in self.project_totals.items():
                outcome.gauges.append((PROJECT_MONTH_TO_DATE.name, total, PROJECT_MONTH_DIMS, (project_id, currency)))
            # For the headroom of the same run (sources/limits.py): what the month-end projection starts from.
            outcome.facts['month_to_date'] = dict(self.totals)
            outcome.facts['daily_rate'] = {c: t / RATE_DAYS for c, t in self.rate_totals.items()}
            if self.project_slot is not None:
                outcome.facts['project_month_to_date'] = dict(self.project_totals)
                outcome.facts['project_daily_rate'] = {k: t / RATE_DAYS for k, t in self.project_rate_totals.items()}
        return outcome

    def _collect(self, run: Run) -> Outcome:
        # A refused group_by reads the window again: the month is summed from that reading alone.
        self.totals.clear()
        self.project_totals.clear()
        self.bill.lines.clear()
        self.bill.projects.clear()
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
        self._note_bill(start, current, rejected)
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

    def _note_bill(self, start: int, current: dict, rejected: list) -> None:
        day = floor_to(start, 86400)
        bad = set(rejected)
        lines = self.bill.lines.setdefault(day, {})
        projects = self.bill.projects.setdefault(day, {})
        amount, quantity = self.amount_slot, self.quantity_slot
        currency_slot, project_slot, item_slot = self.currency_slot, self.project_slot, self.line_item_slot
        for key, values in current.items():
            value = values[amount]
            if key in bad or value is None:
                continue
            currency = key[currency_slot] or 'usd'
            if project_slot is not None:
                projects[(key[project_slot], currency)] = projects.get((key[project_slot], currency), 0.0) + value
            if item_slot is not None and key[item_slot]:
                line = lines.setdefault((key[item_slot], self.units.get(key, ''), currency), [0.0, 0.0])
                line[0] += value
                line[1] += values[quantity] or 0

    def _load(self, now: float) -> Ledger | None:
        ledger = super()._load(now)
        legacy = shape_of(self.width, self.dims, LEGACY_FIELDS)
        if ledger is not None and ledger.shape == legacy:
            # A state saved before quantity was collected: the amounts submitted stand (nothing lost, nothing
            # counted twice), and the quantity of each bucket still in the window, never submitted, is submitted
            # once, as any field first reported late.
            widened = {
                start: {key: values + (None,) for key, values in cells.items()}
                for start, cells in ledger.buckets.items()
            }
            ledger = Ledger(self.shape, ledger.horizon, ledger.read_at, widened)
            self.log.info(
                '%s: the saved state predates the billed quantities; kept its amounts, the quantities of the '
                'last %s days are submitted once now.',
                self.name,
                len(ledger.buckets),
            )
        return ledger
