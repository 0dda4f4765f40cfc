"""One endpoint, one run: read the window, compare it with the ledger, return what to submit.

The window always ends with the bucket in progress (fresh data is wanted) and starts at the oldest
bucket that may still change: the re-read window, stretched back to where the previous complete read
stopped after an outage (up to `max_catch_up_hours`), and for costs back to the first of the month so
the month-to-date figure is OpenAI's own.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .catalogue import BUCKET_SECONDS, COSTS, Endpoint
from .client import ApiError, BadResponse, OpenAIClient
from .ledger import MAX_VALUE, Ledger, shape_of

# Series keys join the dimension values with a separator that cannot appear in an id or a name.
SEP = '\x1f'
NULL = ''


@dataclass
class Window:
    read_start: int
    # Where the ledger's horizon moves once the whole window has been read.
    horizon: int
    baseline: bool
    # Usage between these two times could not be caught up (outage longer than max_catch_up_hours).
    lost: tuple[int, int] | None = None


@dataclass
class EndpointResult:
    endpoint: Endpoint
    dims: tuple[str, ...]
    ledger: Ledger
    window: Window
    # (metric name, value, series key)
    counts: list = field(default_factory=list)
    gauges: list = field(default_factory=list)
    # currency -> total, and (currency, project_id) -> total, over the current month's buckets.
    month_totals: dict = field(default_factory=dict)
    project_month_totals: dict = field(default_factory=dict)
    complete: bool = False
    error: ApiError | None = None
    rows: int = 0
    malformed: int = 0
    newest_bucket: int | None = None


def floor_to(t: float, seconds: int) -> int:
    return int(t // seconds * seconds)


def month_start(t: float) -> int:
    tm = time.gmtime(t)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def plan_window(endpoint: Endpoint, width: str, settings, ledger: Ledger | None, now: float) -> Window:
    seconds = BUCKET_SECONDS[width]
    if endpoint.kind == COSTS:
        window_start = min(month_start(now), floor_to(now - settings.costs_revision_window_days * 86400, seconds))
    else:
        window_start = floor_to(now - settings.revision_window_hours * 3600, seconds)
    if ledger is None:
        return Window(window_start, window_start, baseline=True)
    floor = min(window_start, floor_to(now - settings.max_catch_up_hours * 3600, seconds))
    read_start = min(ledger.horizon, window_start)
    lost = None
    if read_start < floor:
        lost = (read_start, floor)
        read_start = floor
    return Window(read_start, window_start, baseline=False, lost=lost)


def _encode(value: Any) -> str:
    if value is None:
        return NULL
    if value is True:
        return 'true'
    if value is False:
        return 'false'
    return str(value)


def _number(value: Any) -> float | int | None:
    """A numeric field, tolerant of strings (costs' amount.value); None when absent or unusable."""
    if value is None or value is True or value is False:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _dig(row: dict, path: tuple[str, ...]) -> Any:
    value = row
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    return value


def _field_value(row: dict, f) -> float | int | None:
    if f.path:
        return _number(_dig(row, f.path))
    for key in f.keys:
        value = row.get(key)
        if value is not None:
            return _number(value)
    return None


# The types a field's value usually has: taken as they are, without a call per field. Anything else
# (a string amount, a boolean, a nested object) goes through _number.
_PLAIN = frozenset({int, float, type(None)})


def values_reader(fields) -> Callable[[dict], tuple]:
    """row -> (value of each field,). This runs for every row of every page: the common case (plain
    keys, numbers or nulls) costs a few C-level calls, the rest falls back to the careful path.

    Tuples, not lists: the ledger keeps one per (bucket, series), and the garbage collector stops
    tracking a tuple of numbers, where it would walk every list at each full collection."""
    keys = tuple(f.name for f in fields)
    special = tuple((i, f) for i, f in enumerate(fields) if f.path or f.aliases)
    plain = _PLAIN.issuperset

    def read(row: dict) -> tuple:
        values = tuple(map(row.get, keys))
        if special:
            fixed = list(values)
            for i, f in special:
                fixed[i] = _field_value(row, f)
            values = tuple(fixed)
        if plain(map(type, values)):
            return values
        return tuple(map(_number, values))

    return read


def valid_values(values: tuple) -> bool:
    """Every value reported is a finite number from 0 to MAX_VALUE (NaN fails every comparison).

    OpenAI's figures are counts and amounts: a negative, infinite or NaN one (`"NaN"`, `1e999`) is a
    malformed row, never a metric, and never saved."""
    for v in values:
        if v is not None and not 0 <= v <= MAX_VALUE:
            return False
    return True


def key_reader(group_by: tuple[str, ...], fixed_dims) -> Callable[[dict], str]:
    """row -> series key: the dimension values joined with SEP, a null dimension as NULL."""
    paths = tuple(path for _, path in fixed_dims)
    join = SEP.join

    def key(row: dict) -> str:
        parts = [v if v.__class__ is str else _encode(v) for v in map(row.get, group_by)]
        for path in paths:
            parts.append(_encode(_dig(row, path)))
        return join(parts)

    return key


class EndpointCollector:
    def __init__(self, endpoint: Endpoint, width: str, group_by: tuple[str, ...], settings):
        self.endpoint = endpoint
        self.width = width
        self.group_by = group_by
        self.settings = settings
        self.fixed_dims = endpoint.fixed_dims
        self.dims = group_by + tuple(name for name, _ in self.fixed_dims)
        self.flows = endpoint.flows
        self.levels = endpoint.levels
        self.flow_names = [endpoint.metric_name(f) for f in self.flows]
        self.level_names = [endpoint.metric_name(f) for f in self.levels]
        self.shape = shape_of(width, self.dims, [f.name for f in self.flows])
        self.month_dim = self.dims.index('project_id') if 'project_id' in self.dims else None
        self.currency_dim = self.dims.index('currency') if 'currency' in self.dims else None
        self.key_of = key_reader(group_by, self.fixed_dims)
        # A series key has exactly this many separators; a value holding one would shift the others.
        self.separators = max(len(self.dims) - 1, 0)
        self.read_flows = values_reader(self.flows)
        self.read_levels = values_reader(self.levels)

    def params(self, start: int) -> list[tuple[str, Any]]:
        # No end_time: the last bucket is then the one in progress, which is the freshest data.
        params = [
            ('start_time', start),
            ('bucket_width', self.width),
            ('limit', self.endpoint.max_limit[self.width]),
        ]
        params.extend(('group_by', dim) for dim in self.group_by)
        return params

    # -- reading rows --------------------------------------------------------------------------

    def _aggregate(self, results: list, read_values) -> tuple[dict[str, tuple], int]:
        """Rows of one bucket by series key; rows sharing a key (should not happen) are added up."""
        current: dict[str, tuple] = {}
        malformed = 0
        key_of = self.key_of
        separators = self.separators
        for row in results:
            if row.__class__ is not dict:
                malformed += 1
                continue
            values = read_values(row)
            key = key_of(row)
            if key.count(SEP) != separators:
                malformed += 1  # a dimension value with the separator in it: its dimensions cannot be told apart
                continue
            seen = current.get(key)
            if seen is None:
                current[key] = values
            else:
                current[key] = tuple(a if b is None else b if a is None else a + b for a, b in zip(seen, values))
        return current, malformed

    # -- one run -------------------------------------------------------------------------------

    def run(self, client: OpenAIClient, ledger: Ledger | None, now: float) -> EndpointResult:
        if ledger is not None and ledger.shape != self.shape:
            ledger = None
        window = plan_window(self.endpoint, self.width, self.settings, ledger, now)
        if ledger is None:
            ledger = Ledger(self.shape, window.read_start, now)
        elif window.read_start > ledger.horizon:
            # Buckets the outage pushed out of reach are dropped: they can no longer be compared.
            ledger.prune(window.read_start)
        result = EndpointResult(self.endpoint, self.dims, ledger, window)
        this_month = month_start(now)
        levels_seen: dict[str, tuple[int, tuple]] = {}
        try:
            for buckets in client.iter_buckets_pages(
                self.endpoint.path, self.params(window.read_start), self.endpoint.name
            ):
                for bucket in buckets:
                    if not isinstance(bucket, dict) or not isinstance(bucket.get('results'), list):
                        raise BadResponse(
                            f'OpenAI sent a malformed bucket for {self.endpoint.path}; the page was not used.',
                            200,
                            self.endpoint.name,
                        )
                    start = bucket.get('start_time')
                    if not isinstance(start, int) or start < window.read_start:
                        result.malformed += 1
                        continue
                    results = bucket['results']
                    result.rows += len(results)
                    if results:
                        result.newest_bucket = (
                            start if result.newest_bucket is None else max(result.newest_bucket, start)
                        )
                    if self.flows:
                        self._diff_bucket(result, start, results, window.baseline, start >= this_month)
                    if self.levels and results:
                        current, malformed = self._aggregate(results, self.read_levels)
                        if not self.flows:
                            result.malformed += malformed  # otherwise _diff_bucket counted the same rows
                        for key, values in current.items():
                            if not valid_values(values):
                                result.malformed += 1
                                continue
                            if key not in levels_seen or levels_seen[key][0] <= start:
                                levels_seen[key] = (start, values)
            result.complete = True
        except ApiError as e:
            result.error = e
        for key, (_, values) in levels_seen.items():
            for name, v in zip(self.level_names, values):
                if v is not None:
                    result.gauges.append((name, v, key))
        if result.complete:
            ledger.prune(window.horizon)
            ledger.read_at = now
        return result

    def _diff_bucket(self, result: EndpointResult, start: int, results: list, baseline: bool, in_month: bool) -> None:
        current, malformed = self._aggregate(results, self.read_flows)
        result.malformed += malformed
        submitted = result.ledger.buckets.setdefault(start, {})
        counts = result.counts
        names = self.flow_names
        rejected = []
        for key, values in current.items():
            old = submitted.get(key)
            if old == values:
                continue  # most of the window has not changed since the previous run
            # Only new and changed rows are checked: unchanged ones equal what the ledger holds, checked before.
            if not valid_values(values):
                result.malformed += 1
                rejected.append(key)
                continue
            if old is None:
                submitted[key] = values
                if not baseline:
                    for name, v in zip(names, values):
                        if v:
                            counts.append((name, v, key))
                continue
            now_submitted = list(old)
            for i, v in enumerate(values):
                if v is None:
                    # Not reported this time: what was submitted stands.
                    continue
                before = old[i]
                delta = v if before is None else v - before
                if delta:
                    now_submitted[i] = v
                    if not baseline:
                        counts.append((names[i], delta, key))
            submitted[key] = tuple(now_submitted)
        for key in rejected:
            # The month's total counts what was last submitted for a rejected row, as the ledger does.
            old = submitted.get(key)
            if old is None:
                del current[key]
            else:
                current[key] = old
        if in_month and self.currency_dim is not None:
            self._add_month(result, current)

    def _add_month(self, result: EndpointResult, current: dict[str, tuple]) -> None:
        for key, values in current.items():
            amount = values[0]
            if amount is None:
                continue
            parts = key.split(SEP)
            currency = parts[self.currency_dim] or 'usd'
            result.month_totals[currency] = result.month_totals.get(currency, 0.0) + amount
            if self.month_dim is not None:
                pk = (currency, parts[self.month_dim])
                result.project_month_totals[pk] = result.project_month_totals.get(pk, 0.0) + amount
