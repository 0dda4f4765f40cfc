"""Costs: daily buckets read like usage, from the first of the month, and the month-to-date totals.

A day's cost keeps changing for days, so the ledger reaches back `costs_revision_window_days`, and at
least to the first of the month, so that the month-to-date gauges are OpenAI's own figure for the month
rather than a sum of what the check happened to see. It also reaches back over the last 7 complete days, whose
average is the daily rate of the month-end projection (headroom.py): one page holds up to 180 daily buckets, so
that costs no request.

A large organization's bill is hundreds of thousands of rows a month, and the days before the re-read window
seldom change: every run reads the re-read window, and the whole window (from the first of the month) only when
the last whole reading is FULL_READ_SECONDS old. Between, the older days' part of the month-to-date, of the daily
rate and of the bill is the one of their last reading, and a revision of such a day is counted (exactly once, the
ledger holds the day) at the next whole reading.

With group_by line_item, OpenAI also reports the billed `quantity` and its `quantity_unit`: the quantity is a
flow like the amount (same ledger, same exactly-once), tagged as the amount plus `quantity_unit`. What the run read
of each day (amount and quantity per line item, amount per project) goes to the estimate of spend as a `Bill`.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import repeat

from ..catalogue import MONTH_TO_DATE, PROJECT_MONTH_TO_DATE
from ..headroom import RATE_DAYS, rate_window
from ..ledger import Key, Ledger, shape_of
from ..tags import LookedUp
from .base import Outcome, Run
from .rows import all_text, valid_values
from .usage import UsageSource, Window, floor_to, month_start

# How often a run reads the days before the costs re-read window again (see the module's docstring).
FULL_READ_SECONDS = 3600

MONTH_DIMS = ('currency',)
PROJECT_MONTH_DIMS = ('project_id', 'currency')
# The ledger's fields before quantity was collected (version 0.1): such a state is migrated, see _load.
LEGACY_FIELDS = ('amount',)


@dataclass
class Day:
    """What one day of costs adds to the month-to-date, the daily rate and the bill, as last read."""

    # currency -> amount, and (project_id, currency) -> amount, the way the ledger counts them (a rejected row as
    # last submitted)
    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    projects: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    # The bill's view of the day (rejected rows left out): see Bill.
    lines: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    bill_projects: dict[tuple[str, str], float] = field(default_factory=dict)

    def settled(self, strings: dict[str, str]) -> Day:
        """The same figures keyed by strings of the check's own, made once the pages are freed. A kept day keyed by
        the strings of the page it was read from would keep that page's memory from the system between runs (a few
        strings per pool hold the whole pool); `strings` maps each string to its copy."""

        def own(s):
            copy = strings.get(s)
            if copy is None:
                copy = strings[s] = ''.join(s) if s.__class__ is str else s
            return copy

        def keyed(cells: dict) -> dict:
            return {tuple(map(own, key)) if key.__class__ is tuple else own(key): v for key, v in cells.items()}

        return Day(
            keyed(self.totals),
            keyed(self.projects),
            {key: list(v) for key, v in keyed(self.lines).items()},
            keyed(self.bill_projects),
        )


@dataclass
class Bill:
    """The costs of each day of the window, as OpenAI reports them now (today's included, incomplete): read this
    run, or for the days before the re-read window at the last whole reading (see FULL_READ_SECONDS)."""

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
        return min(month_start(now), self._revised(now), rate_window(now)[0])

    def _revised(self, now: float) -> int:
        return floor_to(now - self.windows.costs_revision_days * 86400, 86400)

    def plan(self, ledger: Ledger | None, now: float) -> Window:
        window = super().plan(ledger, now)
        self.full_read = ledger is None or self._full_read_due(now)
        if not self.full_read:
            # The ledger keeps its horizon (Window.horizon): the days before are compared at the next whole reading.
            window.read_start = max(window.read_start, self._revised(now))
        return window

    def _full_read_due(self, now: float) -> bool:
        if self.kept_at is None or now - self.kept_at >= FULL_READ_SECONDS:
            return True
        # A day that left the re-read window while its runs failed has no reading to take its figures from.
        start, end = self.window_start(now, 86400), self._revised(now)
        return any(day not in self.kept for day in range(start, end, 86400))

    def _layout(self) -> None:
        super()._layout()
        # Days kept from the last readings (see FULL_READ_SECONDS), and when the window was last read whole; a new
        # layout (a refused group_by) reads it whole again.
        self.kept: dict[int, Day] = {}
        self.kept_at: float | None = None
        # Between runs, the kept days as pack() holds them (None: in memory).
        self._kept_block: bytes | None = None
        self.full_read = True
        self._pending: tuple[dict[int, Day], float | None] | None = None
        # Found by name: the group_by decides where the project sits in a key, and the currency is always last.
        names = [f.name for f in self.endpoint.flows]
        self.amount_slot = names.index('amount')
        self.quantity_slot = names.index('quantity')
        self.currency_slot = self.dims.index('currency')
        self.project_slot = self.dims.index('project_id') if 'project_id' in self.dims else None
        self.line_item_slot = self.dims.index('line_item') if 'line_item' in self.dims else None
        # The unit is not part of a series key (a line item has one unit; keeping it out keeps the ledger's keys and
        # the amount's tags as they were): it is noted per key as the rows are read.
        read_key = self.key_of
        # Looked up at each row: each run notes its units in a dict of its own (collect), which its points keep.
        self.units: dict[Key, str] = {}

        def key_of(row: dict) -> Key:
            key = read_key(row)
            unit = row.get('quantity_unit')
            if unit.__class__ is str:
                self.units[key] = unit
            return key

        self.key_of = key_of
        read_part = self.read_part
        if read_part is not None:

            def read_part_noting_units(rows: list) -> dict | None:
                part = read_part(rows)
                if part is not None:
                    # One row a key, in order (part_reader): each key's unit, where the row gives one.
                    units = list(map(dict.get, rows, repeat('quantity_unit')))
                    if all_text(units):
                        self.units.update(zip(part, units))
                    else:
                        self.units.update((key, unit) for key, unit in zip(part, units) if unit.__class__ is str)
                return part

            self.read_part = read_part_noting_units

    def collect(self, run: Run) -> Outcome:
        self.month = month_start(run.now)
        self.rate_from, self.rate_to = rate_window(run.now)
        self.units = {}
        self.read: dict[int, Day] = {}
        outcome = super().collect(run)
        # This run's days over the kept ones (those the window still holds), kept once the state is saved (apply).
        start = self.window_start(run.now, 86400)
        days = {day: sums for day, sums in self.kept.items() if day >= start}
        strings: dict[str, str] = {}
        days.update((day, sums.settled(strings)) for day, sums in self.read.items())
        self.read.clear()
        self._pending = (days, run.now if self.full_read else self.kept_at) if outcome.complete else None
        if not outcome.complete and outcome.change is not None:
            # The days of a run cut short are not kept (a day is kept with its whole window), so a day compared then
            # must be compared again: see kept_from_then.
            outcome.change[1].digests.clear()
        outcome.facts['bill'] = Bill(
            {day: sums.lines for day, sums in days.items()},
            {day: sums.bill_projects for day, sums in days.items()},
            by_line_item=self.line_item_slot is not None,
            by_project=self.project_slot is not None,
            complete=outcome.complete,
        )
        # The units, like the days read, hold strings of the pages: kept by this run's points only (points_dims).
        self.units = {}
        if outcome.complete:
            # Only a complete read covers the whole month.
            self._report(outcome, days)
        return outcome

    def _report(self, outcome: Outcome, days: dict[int, Day]) -> None:
        totals: dict[str, float] = defaultdict(float)
        project_totals: dict[tuple[str, str], float] = defaultdict(float)
        rate_totals: dict[str, float] = defaultdict(float)
        project_rate_totals: dict[tuple[str, str], float] = defaultdict(float)
        for day, sums in days.items():
            targets = []
            if day >= self.month:
                targets.append((totals, project_totals))
            if self.rate_from <= day < self.rate_to:
                targets.append((rate_totals, project_rate_totals))
            for to, project_to in targets:
                for currency, amount in sums.totals.items():
                    to[currency] += amount
                for key, amount in sums.projects.items():
                    project_to[key] += amount
        for currency, total in totals.items():
            outcome.gauges.append((MONTH_TO_DATE.name, total, MONTH_DIMS, (currency,)))
        for (project_id, currency), total in project_totals.items():
            outcome.gauges.append((PROJECT_MONTH_TO_DATE.name, total, PROJECT_MONTH_DIMS, (project_id, currency)))
        # For the headroom of the same run (sources/limits.py): what the month-end projection starts from.
        outcome.facts['month_to_date'] = dict(totals)
        outcome.facts['daily_rate'] = {c: t / RATE_DAYS for c, t in rate_totals.items()}
        if self.project_slot is not None:
            outcome.facts['project_month_to_date'] = dict(project_totals)
            outcome.facts['project_daily_rate'] = {k: t / RATE_DAYS for k, t in project_rate_totals.items()}

    def _collect(self, run: Run) -> Outcome:
        # A refused group_by reads the window again: the month is summed from that reading alone.
        self.read.clear()
        return super()._collect(run)

    def points_dims(self) -> tuple:
        # The quantity's points carry the amount's key: their unit, noted per key as the rows are read, is looked up as
        # their tags are made. Appended to each key per point, it cost a tuple and a Python call a point.
        dims = [self.dims] * len(self.flow_names)
        dims[self.quantity_slot] = LookedUp(self.dims, 'quantity_unit', self.units.get)
        return tuple(dims)

    def _diff_bucket(self, reading, start: int, rows, now: float) -> None:
        if start < reading.base.horizon:
            # A day the saved state no longer compares (it left the re-read window before the window reached back
            # over the rate's 7 days, as after an upgrade): final for the ledger, so never submitted again, but
            # still a day of the daily rate.
            current = rows.tally.flows
            valid = {key: values for key, values in current.items() if valid_values(values)}
            reading.malformed += rows.tally.malformed + len(current) - len(valid)
            self._add(self._day(start), valid)
            return
        super()._diff_bucket(reading, start, rows, now)

    def _day(self, start: int) -> Day:
        day = self.read.get(start)
        if day is None:
            day = self.read[start] = Day()
        return day

    def kept_from_then(self, start: int) -> bool:
        # A day's digest is recorded only by a complete run (collect), which keeps its figures with it: a day of the
        # same rows adds what the kept day adds, to the month and to the bill.
        return start in self.kept

    def bucket_read(self, start: int, current: dict, submitted: dict, changed: dict, rejected: list, now: float):
        """A day's rows added to its bill and, in the month or the rate's days, to its totals: in one pass (a large
        organization's day is some 50,000 rows, each read for both)."""
        day = self._day(start)
        totals = day.totals if start >= self.month or start >= self.rate_from else None
        lines, unit_of = day.lines, self.units.get
        amount, quantity = self.amount_slot, self.quantity_slot
        currency_slot, project_slot, item_slot = self.currency_slot, self.project_slot, self.line_item_slot
        # A rejected row is left out of the bill (filtered only when there is one: a lookup a row otherwise).
        bad = set(rejected)
        rows = current.items() if not bad else [(k, v) for k, v in current.items() if k not in bad]
        # The day's sums by project, made once for the bill and the month's totals: the same additions in the same
        # order, not made twice a row.
        projects: dict[tuple[str, str], float] = {}
        for key, values in rows:
            value = values[amount]
            if value is None:
                continue
            currency = key[currency_slot] or 'usd'
            if project_slot is not None:
                project = (key[project_slot], currency)
                projects[project] = projects.get(project, 0.0) + value
            if totals is not None:
                totals[currency] += value
            if item_slot is not None and key[item_slot]:
                item = (key[item_slot], unit_of(key, ''), currency)
                line = lines.get(item)
                if line is None:
                    line = lines[item] = [0.0, 0.0]
                line[0] += value
                line[1] += values[quantity] or 0
        for project, value in projects.items():
            day.bill_projects[project] = day.bill_projects.get(project, 0.0) + value
            if totals is not None:
                day.projects[project] += value
        if totals is not None:
            # The month's totals count what was last submitted for a rejected row, as the ledger does.
            self._add(day, {key: submitted[key] for key in rejected if key in submitted})

    def _add(self, day: Day, current: dict) -> None:
        """Add a day's costs to its totals, by currency and by project."""
        amount, currency_slot, project_slot = self.amount_slot, self.currency_slot, self.project_slot
        totals, project_totals = day.totals, day.projects
        for key, values in current.items():
            value = values[amount]
            if value is None:
                continue
            currency = key[currency_slot] or 'usd'
            totals[currency] += value
            if project_slot is not None:
                project_totals[(key[project_slot], currency)] += value

    def apply(self, outcome: Outcome) -> None:
        super().apply(outcome)
        if self._pending is not None:
            self.kept, self.kept_at = self._pending
            self._pending = None

    def forget(self) -> None:
        super().forget()
        self.kept, self.kept_at, self._pending, self._kept_block = {}, None, None, None

    def pack(self) -> None:
        # The kept days are read from the same pages as the ledger's keys: as scattered.
        if self._kept_block is None:
            self._kept_block, self.kept = pickle.dumps(self.kept, pickle.HIGHEST_PROTOCOL), {}
        super().pack()

    def _unpacked(self) -> None:
        if self._kept_block is not None:
            block, self._kept_block = self._kept_block, None
            self.kept = pickle.loads(block)
        super()._unpacked()

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
