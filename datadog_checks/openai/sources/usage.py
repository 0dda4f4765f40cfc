"""A usage endpoint: read its window of buckets, compare it with the ledger, return what to submit.

The window always ends with the bucket in progress (fresh data is wanted) and starts at the oldest
bucket that may still change: the re-read window, stretched back to where the previous complete read
stopped after an outage (up to `max_catch_up_hours`).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import Any

from ..catalogue import BUCKET_SECONDS, Endpoint
from ..client import ApiError, BadResponse, RequestRefused
from ..ledger import Change, Key, Ledger, Values, shape_of
from .base import Outcome, Point, Run, Source, StateStore
from .rows import aggregate, key_reader, valid_values, values_reader


def floor_to(t: float, seconds: int) -> int:
    return int(t // seconds * seconds)


def month_start(t: float) -> int:
    tm = time.gmtime(t)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def iso(t: float) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f'{minutes // 60}h{minutes % 60:02d}m'


@dataclass(frozen=True)
class Windows:
    """How far back a run reads, from the configuration."""

    revision_hours: int
    catch_up_hours: int
    costs_revision_days: int


@dataclass
class Window:
    read_start: int
    # Where the ledger's horizon moves once the whole window has been read.
    horizon: int
    baseline: bool
    # Usage between these two times could not be caught up (outage longer than max_catch_up_hours).
    lost: tuple[int, int] | None = None


@dataclass
class Reading:
    """What one run accumulates while it reads the pages of its window."""

    window: Window
    base: Ledger
    change: Change
    counts: list[Point] = field(default_factory=list)
    # Level fields (vector store bytes): the newest bucket's values, by series.
    levels: dict[Key, tuple[int, Values]] = field(default_factory=dict)
    rows: int = 0
    malformed: int = 0
    # Which bucket each run of counts came from (Outcome.spans).
    spans: list[tuple[int, int, int]] = field(default_factory=list)


class UsageSource(Source):
    def __init__(
        self,
        endpoint: Endpoint,
        width: str,
        group_by: tuple[str, ...],
        windows: Windows,
        state: StateStore,
        log,
        stale_after: float | None = None,
    ):
        self.endpoint = endpoint
        self.name = endpoint.name
        self.width = width
        self.configured_group_by = group_by
        # group_by values the live API refused (see catalogue.refused_group_by): dropped for the life of
        # the check, which then collects without them.
        self.refused: tuple[str, ...] = ()
        self.windows = windows
        self.state = state
        self.log = log
        # A cluster check's state older than this is not caught up from (see _stale).
        self.stale_after = stale_after
        self.state_key = f'ledger_{self.name}'
        self.flow_names = tuple(endpoint.metric_name(f) for f in endpoint.flows)
        self.level_names = tuple(endpoint.metric_name(f) for f in endpoint.levels)
        self.read_flows = values_reader(endpoint.flows)
        self.read_levels = values_reader(endpoint.levels)
        # The ledger as last saved; None until loaded, or when there is none.
        self.ledger: Ledger | None = None
        self._loaded = False
        # Warnings for the next outcome, from loading the state.
        self.notes: list[str] = []
        self._layout()

    def _layout(self) -> None:
        self.group_by = tuple(d for d in self.configured_group_by if d not in self.refused)
        self.dims = self.group_by + tuple(name for name, _ in self.endpoint.fixed_dims)
        self.shape = shape_of(self.width, self.dims, [f.name for f in self.endpoint.flows])
        self.key_of = key_reader(self.group_by, self.endpoint.fixed_dims)

    @property
    def read_at(self) -> float | None:
        """When the endpoint was last read in full, as far as the saved state goes."""
        return self.ledger.read_at if self.ledger is not None else None

    # -- a run ---------------------------------------------------------------------------------

    def collect(self, run: Run) -> Outcome:
        outcome = self._collect(run)
        refused = [d for d in self.endpoint.refused_group_by if d in self.group_by]
        if isinstance(outcome.error, RequestRefused) and refused:
            self.refused += tuple(refused)
            self._layout()
            self.notes.append(
                f'OpenAI refused group_by {", ".join(refused)} for {self.name} ({outcome.error.message}). '
                f'Collecting {self.name} without it; remove it from group_by.{self.name}.'
            )
            outcome = self._collect(run)
        # What loading the state or a refused group_by had to say comes first.
        outcome.warnings[:0] = self.notes
        self.notes = []
        return outcome

    def _collect(self, run: Run) -> Outcome:
        ledger = self._ledger(run.now)
        window = self.plan(ledger, run.now)
        base = ledger if ledger is not None else Ledger(self.shape, window.read_start, run.now)
        # The buckets an outage pushed out of reach are dropped: they can no longer be compared.
        reading = Reading(window, base, Change(max(base.horizon, window.read_start), base.read_at))
        outcome = Outcome(self.name)
        try:
            for buckets in run.client.iter_buckets_pages(self.endpoint.path, self.params(window), self.name):
                for bucket in buckets:
                    self._read_bucket(reading, bucket, run.now)
            outcome.complete = True
        except ApiError as e:
            outcome.error = e
        return self._conclude(reading, outcome, run.now)

    def plan(self, ledger: Ledger | None, now: float) -> Window:
        seconds = BUCKET_SECONDS[self.width]
        window_start = self.window_start(now, seconds)
        if ledger is None:
            return Window(window_start, window_start, baseline=True)
        floor = min(window_start, floor_to(now - self.windows.catch_up_hours * 3600, seconds))
        read_start = min(ledger.horizon, window_start)
        lost = None
        if read_start < floor:
            lost = (read_start, floor)
            read_start = floor
        return Window(read_start, window_start, baseline=False, lost=lost)

    def window_start(self, now: float, seconds: int) -> int:
        return floor_to(now - self.windows.revision_hours * 3600, seconds)

    def params(self, window: Window) -> list[tuple[str, Any]]:
        # No end_time: the last bucket is then the one in progress, which is the freshest data.
        params = [
            ('start_time', window.read_start),
            ('bucket_width', self.width),
            ('limit', self.endpoint.max_limit[self.width]),
        ]
        params.extend(('group_by', dim) for dim in self.group_by)
        return params

    def _read_bucket(self, reading: Reading, bucket: Any, now: float) -> None:
        if not isinstance(bucket, dict) or not isinstance(bucket.get('results'), list):
            raise BadResponse(
                f'OpenAI sent a malformed bucket for {self.endpoint.path}; the page was not used.', 200, self.name
            )
        start = bucket.get('start_time')
        if not isinstance(start, int) or start < reading.window.read_start:
            reading.malformed += 1
            return
        results = bucket['results']
        reading.rows += len(results)
        if self.flow_names:
            self._diff_bucket(reading, start, results, now)
        if self.level_names and results:
            current, malformed = aggregate(results, self.key_of, self.read_levels)
            if not self.flow_names:
                reading.malformed += malformed  # otherwise _diff_bucket counted the same rows
            for key, values in current.items():
                if not valid_values(values):
                    reading.malformed += 1
                elif key not in reading.levels or reading.levels[key][0] <= start:
                    reading.levels[key] = (start, values)

    def _diff_bucket(self, reading: Reading, start: int, results: list, now: float) -> None:
        if start < reading.base.horizon:
            # The window reaches further back than when the state was saved (revision_window_hours raised): the
            # ledger no longer holds what was submitted for this bucket, which is final for it. Compared with
            # nothing, it would be submitted again at every run until the window passed the horizon.
            return
        current, malformed = aggregate(results, self.key_of, self.read_flows)
        reading.malformed += malformed
        submitted = reading.base.buckets.get(start) or {}
        first = len(reading.counts)
        changed, rejected = self._diff(current, submitted, reading.window.baseline, reading.counts)
        if len(reading.counts) > first:
            reading.spans.append((start, first, len(reading.counts)))
        reading.malformed += len(rejected)
        if changed:
            reading.change.cells[start] = changed
        self.bucket_read(start, current, submitted, changed, rejected, now)

    def _diff(self, current: dict, submitted: dict, baseline: bool, counts: list) -> tuple[dict, list]:
        """The cells that differ from what was submitted, and the keys of rows refused as malformed; the
        increases go to `counts` (a baseline records them without submitting them)."""
        names, dims = self.flow_names, self.dims
        changed = {}
        rejected = []
        for key, values in current.items():
            old = submitted.get(key)
            if old == values:
                continue  # most of the window has not changed since the previous run
            # Only new and changed rows are checked: unchanged ones equal what the ledger holds, checked before.
            if not valid_values(values):
                rejected.append(key)
                continue
            if old is None:
                changed[key] = values
                if not baseline:
                    for name, v in zip(names, values):
                        if v:
                            counts.append((name, v, dims, key))
                continue
            now_submitted = list(old)
            for i, v in enumerate(values):
                if v is None:
                    continue  # not reported this time: what was submitted stands
                before = old[i]
                delta = v if before is None else v - before
                if delta:
                    now_submitted[i] = v
                    if not baseline:
                        counts.append((names[i], delta, dims, key))
            changed[key] = tuple(now_submitted)
        return changed, rejected

    def bucket_read(self, start: int, current: dict, submitted: dict, changed: dict, rejected: list, now: float):
        """A hook for what a subclass derives from each bucket once it is compared (costs: the month's total)."""

    def _conclude(self, reading: Reading, outcome: Outcome, now: float) -> Outcome:
        window = reading.window
        outcome.rows = reading.rows
        outcome.malformed = reading.malformed
        outcome.baseline = window.baseline
        if outcome.error is not None:
            outcome.warnings.append(f'{self.name}: {outcome.error.message}')
        if window.lost:
            outcome.warnings.append(
                f'{self.name}: usage from {iso(window.lost[0])} to {iso(window.lost[1])} was not collected: the '
                f'check was away longer than max_catch_up_hours ({self.windows.catch_up_hours}). Raise it to '
                f'catch up further after an outage.'
            )
        if reading.malformed:
            outcome.warnings.append(f'{self.name}: {reading.malformed} malformed rows or buckets were skipped.')
        for key, (_, values) in reading.levels.items():
            outcome.gauges.extend(
                (name, v, self.dims, key) for name, v in zip(self.level_names, values) if v is not None
            )
        if window.baseline and not outcome.complete:
            # Half a baseline would make the next run submit the unread buckets' past usage: nothing is saved.
            return outcome
        if outcome.complete:
            reading.change.horizon = max(reading.change.horizon, window.horizon)
            reading.change.read_at = now
            if window.baseline:
                self.log.info(
                    '%s: no saved state for this account; recorded a baseline of the last %s buckets, so usage from '
                    'before now is not submitted. From the next run on, every increase is.',
                    self.name,
                    len(reading.change.cells),
                )
        outcome.counts = reading.counts
        outcome.spans = reading.spans
        outcome.change = (reading.base, reading.change)
        return outcome

    # -- state ---------------------------------------------------------------------------------

    def save(self, outcome: Outcome) -> int | None:
        base, change = outcome.change
        text, series = base.dumps(change)
        self.state.write(self.state_key, text)
        # The ledger tracks flows only: an endpoint of levels (vector store bytes) has its series in the gauges.
        outcome.series = series if self.flow_names else len({key for *_, key in outcome.gauges})
        return len(text)

    def apply(self, outcome: Outcome) -> None:
        base, change = outcome.change
        base.apply(change)
        self.ledger = base

    def forget(self) -> None:
        self.ledger = None
        self._loaded = False

    def _ledger(self, now: float) -> Ledger | None:
        """The ledger to compare with: the one in memory, else the saved one (read once), if it fits."""
        if not self._loaded:
            self._loaded = True
            self.ledger = self._load(now)
        ledger = self.ledger
        return ledger if ledger is not None and ledger.shape == self.shape else None

    def _load(self, now: float) -> Ledger | None:
        text = self.state.read(self.state_key)
        if not text:
            return None
        try:
            ledger = Ledger.loads(text)
        except Exception as e:
            self.notes.append(f'{self.name}: the saved state is unreadable ({e}); recording a new baseline.')
            return None
        if self.stale_after is not None and now - ledger.read_at > self.stale_after:
            # A cluster check that finds an old state of its own has most likely been on another runner
            # meanwhile, which submitted that period already: catching up would count it twice.
            self.notes.append(
                f'{self.name}: this cluster check\'s saved state is {duration(now - ledger.read_at)} old; another '
                f'runner probably collected the period since, so a new baseline is recorded instead of catching up '
                f'(nothing is counted twice; usage not collected by the other runner in that period is not counted).'
            )
            return None
        return ledger
