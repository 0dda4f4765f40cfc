"""The ledger: what the check already submitted for each (bucket, series) of one endpoint.

An Agent check cannot stamp a point in the past, and OpenAI keeps revising a bucket after it closes.
So each run re-reads a trailing window, and for every (bucket, series, field) submits only the
difference between what OpenAI now reports and what the ledger says was already submitted. Summed in
Datadog, those differences telescope to OpenAI's current figure: nothing is counted twice, and a
revision inside the window is never missed.

Invariant: for every bucket at or after `horizon`, the ledger holds exactly what was submitted for it
(a bucket or series absent from the ledger had nothing submitted). Buckets before `horizon` left the
re-read window and are final as far as the check is concerned.

A run never edits the ledger: it produces a `Change` (the cells it read that differ, the new horizon).
The ledger with that change applied is saved first; only then is the change applied in memory and are
the points handed to the aggregator. A failure before that leaves the ledger as it was: that run's
points are lost rather than ever submitted twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import is_not
from typing import Iterable

from datadog_checks.base.utils.format import json

# 3: the series table holds each key as a list of its dimension values. 2 joined them with a separator
# (\x1f), which a value could contain; a state of format 2 is still read. Other formats are not read, and
# the check records a new baseline.
FORMAT_VERSION = 3
LEGACY_SEPARATOR = '\x1f'
# The largest figure a cell may hold: beyond 2**53 a float no longer holds every integer, and no bucket
# of one series comes near it. A source refuses larger or negative figures as malformed, so a saved
# state never holds one: a state that does was damaged, and trusting it would submit a huge difference.
MAX_VALUE = float(2**53)
_NUMBER = (int, float)
_LIST = frozenset({list})
_INT = frozenset({int})
_STR = frozenset({str})
_not_none = partial(is_not, None)

# A series key: the value of each dimension ('' for a dimension OpenAI did not group by).
Key = tuple[str, ...]
# What was submitted for one series of one bucket, per flow field (None: never reported by OpenAI).
Values = tuple
Cells = dict[int, dict[Key, Values]]


@dataclass
class Change:
    """What one run read that differs from the ledger, and where the ledger stands after it."""

    horizon: int
    read_at: float
    cells: Cells = field(default_factory=dict)


@dataclass
class Ledger:
    # What the series keys and value slots mean: bucket width, group_by, field names. A ledger of
    # another shape cannot be compared with today's rows (its series keys mean something else).
    shape: str
    # Start of the oldest bucket still compared; everything earlier is final for the check.
    horizon: int
    # Clock time of the last run that read the endpoint to its newest bucket.
    read_at: float
    buckets: Cells = field(default_factory=dict)
    # One key object per series for every bucket, made of one string per distinct value: the rows of each page
    # bring their own copies, which would otherwise be kept once per bucket.
    _keys: dict[Key, Key] = field(default_factory=dict, repr=False, compare=False)
    _values: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self._reindex()

    def _reindex(self) -> None:
        """The shared keys and values of the buckets held: forgets those of pruned buckets."""
        self._keys, self._values = {}, {}
        intern = self._intern
        for start, cells in self.buckets.items():
            self.buckets[start] = {intern(key): values for key, values in cells.items()}

    def _intern(self, key: Key) -> Key:
        shared = self._keys.get(key)
        if shared is None:
            value = self._values.setdefault
            shared = self._keys[key] = tuple([value(v, v) for v in key])
        return shared

    def merged(self, change: Change) -> Cells:
        """The buckets as they are once `change` is applied, without applying it."""
        out = {}
        for start in sorted(set(self.buckets) | set(change.cells)):
            if start < change.horizon:
                continue
            old, new = self.buckets.get(start), change.cells.get(start)
            out[start] = {**old, **new} if old and new else dict(old or new)
        return out

    def apply(self, change: Change) -> None:
        """Take `change` in: call it only once the ledger with the change was saved."""
        intern = self._intern
        for start, cells in change.cells.items():
            bucket = self.buckets.setdefault(start, {})
            for key, values in cells.items():
                bucket[intern(key)] = values
        self.horizon = max(self.horizon, change.horizon)
        pruned = [s for s in self.buckets if s < self.horizon]
        for start in pruned:
            del self.buckets[start]
        if pruned:
            self._reindex()
        self.read_at = change.read_at

    def dumps(self, change: Change | None = None) -> tuple[str, int]:
        """The ledger with `change` applied, serialized, and its number of distinct series.

        Series keys repeat in every bucket: a table of them keeps the saved state small. Each bucket is
        then two columns, the table indices of its series and their values, which take one comprehension
        and one list() per bucket rather than a new list per cell: the state of a large organization is
        saved every run."""
        buckets = self.merged(change) if change is not None else self.buckets
        table: dict[Key, int] = {}
        index_of = table.setdefault
        columns = {}
        for start, series in buckets.items():
            columns[str(start)] = [[index_of(key, len(table)) for key in series], list(series.values())]
        document = {
            'v': FORMAT_VERSION,
            'shape': self.shape,
            'horizon': max(self.horizon, change.horizon) if change else self.horizon,
            'read_at': change.read_at if change else self.read_at,
            'series': list(table),
            'buckets': columns,
        }
        return json.encode(document), len(table)

    @classmethod
    def loads(cls, text: str) -> 'Ledger':
        """Read a saved state, checking all of it: a damaged state raises ValueError (the check records a
        new baseline) instead of failing every run later or submitting a difference from a wrong figure."""
        data = json.decode(text)
        if not isinstance(data, dict):
            raise ValueError('not a ledger')
        version = data.get('v')
        if version not in (2, FORMAT_VERSION):
            raise ValueError(f'unknown ledger format {repr(version)[:40]}')
        shape, horizon, read_at = data.get('shape'), data.get('horizon'), data.get('read_at')
        if not isinstance(shape, str):
            raise ValueError('no shape')
        if type(horizon) is not int or type(read_at) not in _NUMBER or not math.isfinite(read_at) or read_at < 0:
            raise ValueError('bad horizon or read time')
        dims, width = _dims_and_width(shape)
        keys = _series_keys(data.get('series'), version, dims)
        raw_buckets = data.get('buckets')
        if not isinstance(raw_buckets, dict):
            raise ValueError('no buckets')
        buckets = {}
        for start, columns in raw_buckets.items():
            cells = _bucket(start, columns, keys, width)
            if int(start) >= horizon:  # older buckets left the window before the state was saved
                buckets[int(start)] = cells
        return cls(shape, horizon, float(read_at), buckets)


def _dims_and_width(shape: str) -> tuple[int | None, int | None]:
    """How many dimensions a key has and how many fields a row holds, by the shape. One that does not
    parse matches no endpoint's shape, so its source starts afresh from such a ledger anyway."""
    if shape.count('|') != 2:
        return None, None
    _, dims, fields = shape.split('|')
    return (dims.count(',') + 1 if dims else 0), (fields.count(',') + 1 if fields else 0)


def _series_keys(series, version: int, dims: int | None) -> list[Key]:
    if not isinstance(series, list):
        raise ValueError('bad series keys')
    if version == 2:
        if not _STR.issuperset(map(type, series)):
            raise ValueError('bad series keys')
        # A key of no dimension was saved as ''.
        keys = [tuple(key.split(LEGACY_SEPARATOR)) if dims != 0 else () for key in series]
    else:
        if not _LIST.issuperset(map(type, series)) or not all(_STR.issuperset(map(type, k)) for k in series):
            raise ValueError('bad series keys')
        keys = list(map(tuple, series))
    if len(set(keys)) != len(keys) or (dims is not None and any(len(k) != dims for k in keys)):
        raise ValueError('bad series keys')
    return keys


def _bucket(start, columns, keys: list[Key], width: int | None) -> dict[Key, Values]:
    if not start.isdigit() or not isinstance(columns, list) or len(columns) != 2:
        raise ValueError('bad bucket')
    indices, values = columns
    if not isinstance(indices, list) or not isinstance(values, list):
        raise ValueError('bad bucket')
    if len(indices) != len(values):
        raise ValueError(f'bucket {start[:20]} has {len(indices)} series and {len(values)} value rows')
    if indices and (
        not _INT.issuperset(map(type, indices))
        or min(indices) < 0
        or max(indices) >= len(keys)
        or len(set(indices)) != len(indices)
    ):
        raise ValueError(f'bucket {start[:20]}: bad series index')
    if not _valid_rows(values, width):
        raise ValueError(f'bucket {start[:20]}: bad value row')
    return dict(zip(map(keys.__getitem__, indices), map(tuple, values)))


def _valid_rows(rows: list, width: int | None) -> bool:
    """Every row a list of `width` numbers or nulls, each from 0 to MAX_VALUE, checked a bucket at a time
    without a Python call per cell (a state holds hundreds of thousands of them)."""
    if not _LIST.issuperset(map(type, rows)):
        return False
    if width is not None and not {width}.issuperset(map(len, rows)):
        return False
    numbers = list(filter(_not_none, chain.from_iterable(rows)))
    if not numbers:
        return True
    try:
        # A string or a list raises; NaN and infinities carry through; an int beyond floats raises.
        total = math.fsum(numbers)
    except (TypeError, OverflowError, ValueError):
        return False
    return total == total and min(numbers) >= 0 and max(numbers) <= MAX_VALUE


def shape_of(bucket_width: str, group_by: Iterable[str], fields: Iterable[str]) -> str:
    return f'{bucket_width}|{",".join(group_by)}|{",".join(fields)}'
