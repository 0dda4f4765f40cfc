"""A usage endpoint: read its window of buckets, compare it with the ledger, return what to submit.

The window always ends with the bucket in progress (fresh data is wanted) and starts at the oldest
bucket that may still change: the re-read window, stretched back to where the previous complete read
stopped after an outage (up to `max_catch_up_hours`). A page's rows are added up by series as they are decoded, a
part of a bucket at a time (sources/pages.py); a bucket whose rows are those it was last compared with is not
compared again, nor decoded (Ledger.digests).
"""

from __future__ import annotations

import calendar
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from ..catalogue import BUCKET_SECONDS, Endpoint
from ..client import ApiError, BadResponse, PageDecoder, RequestRefused, TooLarge
from ..ledger import ABSENT, UNREPORTED, BucketView, Change, Key, LazyCells, Ledger, Values, holds_unreported, shape_of
from .base import Outcome, Run, Source, StateStore
from .pages import Known, Read, decode_page
from .rows import Tally, digest, key_reader, part_reader, valid_values, values_reader

# The most result rows the check asks for in one page, when it knows how many a bucket holds. A row is some 600
# bytes of JSON, held while the page is read (its rows are decoded a part at a time, sources/pages.py), so a page
# of this many rows costs the Agent some 30 MB at its peak; decoded whole (a page of another layout), about 1 KB a
# row more. See UsageSource.queries and the README's Benchmark section.
MAX_PAGE_ROWS = 50_000


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


class Points(Sequence):
    """The counts of one run, as compact as the ledger: a metric's number, a value and the series key (the
    ledger's own object) per point, instead of a tuple and a number object each (some 100 bytes, and as many
    objects for the garbage collector to walk: a large organization's run has hundreds of thousands). It reads
    as the list of (metric, value, dims, key) tuples it stands for; `dims` is the same for every metric, or one per
    metric (`per_metric`: costs' quantity has a dimension of its own, see tags.LookedUp)."""

    def __init__(self, names: tuple[str, ...], dims: tuple[str, ...], per_metric: tuple | None = None):
        self.names = names
        self.dims = dims
        self.per_metric = per_metric
        self.metric = bytearray() if len(names) < 256 else array('H')
        self.values = array('d')
        self.keys: list[Key] = []

    def appenders(self) -> tuple[Callable, Callable, Callable]:
        """What adds a point: the appends of its metric's number, its value and its key, called by the comparison
        itself (a method call per point was some 0.15 s of a large organization's run)."""
        return self.metric.append, self.values.append, self.keys.append

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        metric = self.metric[i]
        dims = self.dims if self.per_metric is None else self.per_metric[metric]
        return (self.names[metric], self.values[i], dims, self.keys[i])

    def __iter__(self):
        names, metric = self.names, self.metric
        dims = repeat(self.dims) if self.per_metric is None else map(self.per_metric.__getitem__, metric)
        return zip(map(names.__getitem__, metric), self.values, dims, self.keys)


@dataclass
class Reading:
    """What one run accumulates while it reads the pages of its window."""

    window: Window
    base: Ledger
    change: Change
    counts: Points | None = None
    # Level fields (vector store bytes): the newest bucket's values, by series.
    levels: dict[Key, tuple[int, Values]] = field(default_factory=dict)
    rows: int = 0
    malformed: int = 0
    # Which bucket each run of counts came from (Outcome.spans).
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    # The most rows one bucket held: how the next run sizes its pages (UsageSource.queries).
    widest: int = 0
    # The buckets read so far, by start.
    starts: set[int] = field(default_factory=set)


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
        # Rows in the largest bucket of the last run (None: no run yet), and the most rows a page may hold.
        self.rows_per_bucket: int | None = None
        self.max_page_rows = MAX_PAGE_ROWS
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
        # Parts of a source of flows only are read whole where they can be (rows.part_reader).
        self.read_part = (
            part_reader(self.group_by, self.endpoint.fixed_dims, self.endpoint.flows, self.key_of, self.read_flows)
            if self.flow_names and not self.level_names
            else None
        )

    @property
    def read_at(self) -> float | None:
        """When the endpoint was last read in full, as far as the saved state goes."""
        return self.ledger.read_at if self.ledger is not None else None

    # -- a run ---------------------------------------------------------------------------------

    def collect(self, run: Run) -> Outcome:
        self.unpack()
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
        # The buckets an outage pushed out of reach are dropped: they can no longer be compared. (A window may also
        # start after its horizon: costs between whole readings, see sources/costs.py.)
        horizon = max(base.horizon, min(window.read_start, window.horizon))
        reading = Reading(window, base, Change(horizon, base.read_at, base))
        reading.counts = Points(self.flow_names, self.dims, self.points_dims())
        outcome = Outcome(self.name)
        try:
            for params in self.queries(window, run.now, ledger, lambda: reading.widest):
                for page in run.client.iter_buckets_pages(
                    self.endpoint.path, params, self.name, decode=self._decoder(reading)
                ):
                    self._read_page(reading, page, run.now)
                    del page
            outcome.complete = True
        except ApiError as e:
            outcome.error = e
        if reading.widest:
            self.rows_per_bucket = reading.widest
        if isinstance(outcome.error, TooLarge) and (self.rows_per_bucket or 0) <= self.max_page_rows:
            # A page too large to read, of a size nobody knew (a baseline, a catch-up): one bucket a page next.
            self.rows_per_bucket = self.max_page_rows + 1
            self.notes.append(f'{self.name}: the next run reads one bucket a page, to keep each response smaller.')
        return self._conclude(reading, outcome, run.now)

    def _read_page(self, reading: Reading, page: list, now: float) -> None:
        # A page the client lets go of bucket by bucket (client.Page): each bucket's rows are freed once compared,
        # before the next bucket's are read. Read here, not in the caller's loop, whose variable would hold the
        # page's last bucket (and through a Known, the page's whole text) while the next page is received.
        drain = getattr(page, 'drain', None)
        for bucket in drain() if drain is not None else page:
            self._read_bucket(reading, bucket, now)

    def plan(self, ledger: Ledger | None, now: float) -> Window:
        seconds = BUCKET_SECONDS[self.width]
        window_start = self.window_start(now, seconds)
        if ledger is None:
            return Window(window_start, window_start, baseline=True)
        floor = min(window_start, floor_to(now - self.windows.catch_up_hours * 3600, seconds))
        read_start = min(ledger.horizon, window_start)
        lost = None
        # Within max_catch_up_hours of the last complete read, nothing was away long enough to be lost (a bucket that
        # left the window since was read by that run).
        if read_start < floor and now - ledger.read_at > self.windows.catch_up_hours * 3600:
            lost = (read_start, floor)
            read_start = floor
        return Window(read_start, window_start, baseline=False, lost=lost)

    def window_start(self, now: float, seconds: int) -> int:
        return floor_to(now - self.windows.revision_hours * 3600, seconds)

    def params(self, window: Window, end: int | None = None, limit: int | None = None) -> list[tuple[str, Any]]:
        # No end_time by default: the last bucket is then the one in progress, which is the freshest data.
        params = [('start_time', window.read_start if end is None or limit is None else end - limit * self.seconds)]
        if end is not None:
            params.append(('end_time', end))
        params.append(('bucket_width', self.width))
        params.append(('limit', limit or self.endpoint.max_limit[self.width]))
        params.extend(('group_by', dim) for dim in self.group_by)
        return params

    @property
    def seconds(self) -> int:
        return BUCKET_SECONDS[self.width]

    def queries(
        self, window: Window, now: float, ledger: Ledger | None, seen: Callable[[], int] | None = None
    ) -> Iterator[list[tuple[str, Any]]]:
        """The queries that read the window: one (its pages of the API's largest limit), unless a page of the
        window would hold more than MAX_PAGE_ROWS rows, by the rows per bucket seen last run (or in the saved
        state after a restart). Then the window is read in consecutive spans of as many buckets as keep a page
        under that bound (at least one), each ending where the next starts (end_time is exclusive), the last one
        open-ended to include the bucket in progress. A baseline with no state knows no size: its first bucket is
        read alone, and `seen` (the most rows of a bucket read so far) sizes the rest (one request more, at a
        baseline only; a month of a large organization's costs in one page would take the Agent gigabytes)."""
        seconds = self.seconds
        largest = self.endpoint.max_limit[self.width]
        per_bucket = self.rows_per_bucket
        if per_bucket is None and ledger is not None:
            per_bucket = max(map(len, ledger.buckets.values()), default=0)
        start = window.read_start
        last = floor_to(now, seconds)
        if per_bucket is None and seen is not None and start < last:
            yield self.params(window, start + seconds, 1)
            start += seconds
            per_bucket = seen()
        window = Window(start, window.horizon, window.baseline)
        buckets = max(1, -(-(last + seconds - start) // seconds))
        if not per_bucket or per_bucket * min(buckets, largest) <= self.max_page_rows:
            yield self.params(window)
            return
        span = max(1, min(largest, self.max_page_rows // per_bucket))
        while start + span * seconds <= last:
            yield self.params(window, start + span * seconds, span)
            start += span * seconds
        yield self.params(Window(start, window.horizon, window.baseline), None, span)

    def _read_bucket(self, reading: Reading, bucket: Any, now: float) -> None:
        results = bucket.get('results') if isinstance(bucket, dict) else None
        if not isinstance(results, (list, Read, Known)):
            raise BadResponse(
                f'OpenAI sent a malformed bucket for {self.endpoint.path}; the page was not used.', 200, self.name
            )
        start = bucket.get('start_time')
        if not isinstance(start, int) or start < reading.window.read_start:
            reading.malformed += 1
            return
        if start in reading.starts:
            # A bucket served twice in one run (a page served again, an end_time ignored) is read once: compared
            # again with the same ledger, its increase would be counted twice. What it gained since the first
            # answer is counted by the next run.
            return
        reading.starts.add(start)
        fingerprint = digest(results) if isinstance(results, list) else results.digest
        if self._settled(reading, start, fingerprint):
            return
        if isinstance(results, list):
            tally = self.tally()
            tally.add(results)
            rows = Read(tally, fingerprint)
        else:
            rows = results.read(self.tally) if isinstance(results, Known) else results
        del results
        reading.rows += rows.rows
        reading.widest = max(reading.widest, rows.rows)
        if self.flow_names:
            self._diff_bucket(reading, start, rows, now)
        if self.level_names:
            if not self.flow_names:
                reading.malformed += rows.tally.malformed  # otherwise _diff_bucket counted the same rows
            for key, values in rows.tally.levels.items():
                if not valid_values(values):
                    reading.malformed += 1
                elif key not in reading.levels or reading.levels[key][0] <= start:
                    reading.levels[key] = (start, values)

    def tally(self) -> Tally:
        """What a bucket's rows are added up into as they are decoded."""
        return Tally(
            self.key_of,
            self.read_flows if self.flow_names else None,
            self.read_levels if self.level_names else None,
            self.read_part,
        )

    def _settled(self, reading: Reading, start: int, fingerprint) -> bool:
        """Whether the bucket's rows are those it was last compared with: then they change nothing (most of a window
        has settled), and count as many rows and malformed ones as they did then."""
        if not self.flow_names or fingerprint is None or start < reading.base.horizon:
            return False
        known = reading.base.digests.get(start)
        if known is None or known[0] != fingerprint or not self.kept_from_then(start):
            return False
        reading.malformed += known[1]
        reading.rows += known[2]
        reading.widest = max(reading.widest, known[2])
        return True

    def _decoder(self, reading: Reading) -> PageDecoder:
        """How a page of this source is decoded: its buckets' rows added up as they are decoded, a part at a time,
        and not decoded at all when their text is that of rows compared before (sources/pages.py)."""
        known = [d for d, *_ in reading.base.digests.values() if isinstance(d, tuple)] if self.flow_names else []
        return lambda text, loads: decode_page(text, loads, self.tally, known)

    def _diff_bucket(self, reading: Reading, start: int, rows: Read, now: float) -> None:
        if start < reading.base.horizon:
            # The window reaches further back than when the state was saved (revision_window_hours raised): the
            # ledger no longer holds what was submitted for this bucket, which is final for it. Compared with
            # nothing, it would be submitted again at every run until the window passed the horizon.
            return
        base, change = reading.base, reading.change
        current, malformed = rows.tally.flows, rows.tally.malformed
        first = len(reading.counts) if reading.counts is not None else 0
        rejected = self._diff(start, current, reading)
        if reading.counts is not None and len(reading.counts) > first:
            reading.spans.append((start, first, len(reading.counts)))
        reading.malformed += malformed + len(rejected)
        if rows.digest is not None:
            change.digests[start] = (rows.digest, malformed + len(rejected), rows.rows)
        submitted = BucketView(base, start) if start in base.buckets else {}
        changed = LazyCells(lambda: change.bucket(start, base.width, base.key_of(change)))
        self.bucket_read(start, current, submitted, changed, rejected, now)

    def _diff(self, start: int, current: dict, reading: Reading) -> list:
        """Record in the run's change the cells that differ from what was submitted, and return the keys of rows
        refused as malformed; the increases go to the run's counts (a baseline records them without submitting). A
        point carries the ledger's own key object, not the row's, so that the page's strings are freed with the page."""
        base, change = reading.base, reading.change
        index_of, keys, row = base.index.get, base.keys, base.row
        column = base.column(start)
        known = 0 if column is None else len(column)
        # A row equal to the ledger's only through a figure of -1 (UNREPORTED) is malformed: where the bucket holds
        # none, no row equal to it has one.
        unreported = known and holds_unreported(column)
        stride = base.stride
        indices, slots, rejected = [], [], []
        # A baseline records the increases without submitting them.
        out = None if reading.window.baseline else reading.counts.appenders()
        add_metric, add_value, add_key = out if out is not None else (None, None, None)
        for key, values in current.items():
            g = index_of(key)
            if g is None:
                old = None
            else:
                at = g * stride
                if at < known and column[at] != ABSENT:
                    # Compared as Python numbers, exactly (an integer beyond 2**53 is not the double it rounds to).
                    before = tuple(column[at : at + stride])
                    if before == values:
                        if not unreported or UNREPORTED not in values:
                            continue  # most of the window has not changed since the previous run
                    elif None not in values and UNREPORTED not in before and valid_values(values):
                        # Changed, every figure a number now and before: the row stands submitted, each change a point.
                        key = keys[g]
                        if out is not None:
                            for i, v in enumerate(values):
                                delta = v - before[i]
                                if delta:
                                    add_metric(i)
                                    add_value(delta)
                                    add_key(key)
                        indices.append(g)
                        slots.extend(values)
                        continue
                old = row(start, g)
                if old == values:
                    continue
                key = keys[g]
            # Only new and changed rows are checked: unchanged ones equal what the ledger holds, checked before.
            if not valid_values(values):
                rejected.append(key)
                continue
            if g is None:
                g = change.index_of_new(key)
                key = change.new_keys[g - change.first_new]  # the first row's key, for every bucket of the run
            indices.append(g)
            slots.extend(self._submitted(values, old, key, out))
        change.add(start, indices, slots)
        return rejected

    @staticmethod
    def _submitted(values: Values, old: Values | None, key: Key, out: tuple | None) -> Values:
        """What stands submitted for a new or changed row once its increases are added to the run's counts by `out`
        (Points.appenders; None: not submitted), as ledger slots."""
        if out is not None:
            add_metric, add_value, add_key = out
        if old is None:
            new = values
            if out is not None:
                for i, v in enumerate(values):
                    if v:
                        add_metric(i)
                        add_value(v)
                        add_key(key)
        else:
            new = list(old)
            for i, v in enumerate(values):
                if v is None:
                    continue  # not reported this time: what was submitted stands
                before = old[i]
                delta = v if before is None else v - before
                if delta:
                    new[i] = v
                    if out is not None:
                        add_metric(i)
                        add_value(delta)
                        add_key(key)
        if None in new:
            return [UNREPORTED if v is None else v for v in new]
        return new

    def points_dims(self) -> tuple | None:
        """The dimensions of each flow's points, when they are not all `dims` (Points)."""
        return None

    def kept_from_then(self, start: int) -> bool:
        """Whether what a subclass derives from a bucket (bucket_read) is kept from when its rows were compared."""
        return True

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

    def pack(self) -> None:
        if self.ledger is not None:
            self.ledger.pack()

    def unpack(self) -> None:
        """What pack() held, in memory again before a run reads anything. A source that cannot take it back reads its
        saved state again, which holds the same: the state is saved before a run's change is applied in memory."""
        try:
            self._unpacked()
        except Exception as e:
            self.forget()
            self.log.warning(
                '%s: could not take back what it keeps in memory between runs (%s); read its saved state again '
                '(nothing is lost or counted twice).',
                self.name,
                e,
            )

    def _unpacked(self) -> None:
        if self.ledger is not None and self.ledger.packed:
            self.ledger.unpack()

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
