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

from dataclasses import dataclass, field
from typing import Iterable

from datadog_checks.base.utils.format import json

# 2: each bucket is [series indices, value rows] (1 was a list of [index, *values]); a state in another
# format is not read, and the check records a new baseline.
FORMAT_VERSION = 2


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
        data = json.decode(text)
        if data.get('v') != FORMAT_VERSION:
            raise ValueError(f'unknown ledger format {data.get("v")!r}')
        key_of = data['series'].__getitem__
        buckets = {}
        for start, (indices, values) in data['buckets'].items():
            if len(indices) != len(values):
                raise ValueError(f'bucket {start} has {len(indices)} series and {len(values)} value rows')
            buckets[int(start)] = dict(zip(map(key_of, indices), map(tuple, values)))
        return cls(data['shape'], int(data['horizon']), float(data['read_at']), buckets)


def shape_of(bucket_width: str, group_by: Iterable[str], fields: Iterable[str]) -> str:
    return f'{bucket_width}|{",".join(group_by)}|{",".join(fields)}'
