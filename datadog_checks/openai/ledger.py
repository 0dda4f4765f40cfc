"""The ledger: what the check already submitted for each (bucket, series) of one endpoint.

An Agent check cannot stamp a point in the past, and OpenAI keeps revising a bucket after it closes.
So each run re-reads a trailing window, and for every (bucket, series, field) submits only the
difference between what OpenAI now reports and what the ledger says was already submitted. Summed in
Datadog, those differences telescope to OpenAI's current figure: nothing is counted twice, and a
revision inside the window is never missed.

Invariant: for every bucket at or after `horizon`, the ledger holds exactly what was submitted for it
(a bucket or series absent from the ledger had nothing submitted). Buckets before `horizon` left the
re-read window and are final as far as the check is concerned. The ledger is updated in the same step
as the submission it describes, and it is saved before those points are handed to the aggregator, so
a failure in between loses that run's points rather than duplicating them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import is_not
from typing import Iterable

from datadog_checks.base.utils.format import json

# 2: each bucket is [series indices, value rows] (1 was a list of [index, *values]); a state in another
# format is not read, and the check records a new baseline.
FORMAT_VERSION = 2
# The largest figure a cell may hold: beyond 2**53 a float no longer holds every integer, and no bucket
# of one series comes near it. The collector refuses larger or negative figures as malformed, so a saved
# state never holds one: a state that does was damaged, and trusting it would submit a huge difference.
MAX_VALUE = float(2**53)
_SEPARATOR = '\x1f'
_NUMBER = (int, float)
_LIST = frozenset({list})
_INT = frozenset({int})
_STR = frozenset({str})
_not_none = partial(is_not, None)


@dataclass
class Ledger:
    # What the series keys and value slots mean: bucket width, group_by, field names. A ledger of
    # another shape cannot be compared with today's rows (its series keys mean something else).
    shape: str
    # Start of the oldest bucket still compared; everything earlier is final for the check.
    horizon: int
    # Clock time of the last run that read the endpoint to its newest bucket.
    read_at: float
    # bucket start -> series key -> submitted value per flow field (None: never reported by OpenAI).
    buckets: dict[int, dict[str, tuple]] = field(default_factory=dict)
    # Distinct series across the tracked buckets, counted when the ledger is saved.
    distinct_series: int = field(default=0, compare=False)

    def prune(self, horizon: int) -> None:
        """Forget the buckets that left the re-read window."""
        self.horizon = max(self.horizon, horizon)
        for start in [s for s in self.buckets if s < self.horizon]:
            del self.buckets[start]

    def dumps(self) -> str:
        # Series keys repeat in every bucket: a table of them keeps the saved state small. Each bucket
        # is then two columns, the table indices of its series and their values, which take one
        # comprehension and one list() per bucket rather than a new list per cell: the state of a large
        # organization is saved every run.
        table: dict[str, int] = {}
        index_of = table.setdefault
        buckets = {}
        for start, series in self.buckets.items():
            buckets[str(start)] = [[index_of(key, len(table)) for key in series], list(series.values())]
        self.distinct_series = len(table)
        return json.encode(
            {
                'v': FORMAT_VERSION,
                'shape': self.shape,
                'horizon': self.horizon,
                'read_at': self.read_at,
                'series': list(table),
                'buckets': buckets,
            }
        )

    @classmethod
    def loads(cls, text: str) -> 'Ledger':
        """Read a saved state, checking all of it: a damaged state raises ValueError (the check records a
        new baseline) instead of failing every run later or submitting a difference from a wrong figure."""
        data = json.decode(text)
        if not isinstance(data, dict):
            raise ValueError('not a ledger')
        if data.get('v') != FORMAT_VERSION:
            raise ValueError(f'unknown ledger format {repr(data.get("v"))[:40]}')
        shape, horizon, read_at = data.get('shape'), data.get('horizon'), data.get('read_at')
        if not isinstance(shape, str):
            raise ValueError('no shape')
        if type(horizon) is not int or type(read_at) not in _NUMBER or not math.isfinite(read_at) or read_at < 0:
            raise ValueError('bad horizon or read time')
        # The shape says how many dimensions a key joins and how many fields a row holds. One that does not
        # parse matches no endpoint's shape, so the collector starts afresh from such a ledger anyway.
        separators = width = None
        if shape.count('|') == 2:
            _, dims, fields = shape.split('|')
            separators = dims.count(',')
            width = fields.count(',') + 1 if fields else 0
        series = data.get('series')
        if (
            not isinstance(series, list)
            or not _STR.issuperset(map(type, series))
            or len(set(series)) != len(series)
            or (separators is not None and any(key.count(_SEPARATOR) != separators for key in series))
        ):
            raise ValueError('bad series keys')
        raw_buckets = data.get('buckets')
        if not isinstance(raw_buckets, dict):
            raise ValueError('no buckets')
        n_series = len(series)
        key_of = series.__getitem__
        buckets = {}
        for start, columns in raw_buckets.items():
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
                or max(indices) >= n_series
                or len(set(indices)) != len(indices)
            ):
                raise ValueError(f'bucket {start[:20]}: bad series index')
            if not _valid_rows(values, width):
                raise ValueError(f'bucket {start[:20]}: bad value row')
            rows = map(tuple, values)
            if int(start) >= horizon:  # older buckets left the window before the state was saved
                buckets[int(start)] = dict(zip(map(key_of, indices), rows))
        return cls(shape, horizon, float(read_at), buckets)


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
