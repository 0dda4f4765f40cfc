"""Utilization: how close each project's per-minute usage comes to its rate limits, for one usage endpoint.

One request per run: the trailing window of 1-minute buckets (`utilization_window_minutes`), grouped by project and
model. Per (project, limit model, limit), the peak over the window of the per-minute sum of what the limit counts
(catalogue.PER_MINUTE_LIMITS), divided by the limit. The models of usage rows are matched to the limits' models by
headroom.limit_model; the usage of several snapshots of one limit model adds up in the same minute.

Stateless: gauges read whole each run, no ledger, nothing saved. The limits of the (project, model) pairs that had
usage in the window are submitted here too: a project may list a hundred models, and each limit of each is a custom
metric, so the models nobody uses cost nothing.
"""

from __future__ import annotations

from ..catalogue import PER_MINUTE_LIMITS, RATE_LIMIT_FIELDS_BY_NAME, RATE_LIMIT_UTILIZATION, Endpoint
from ..client import ApiError, BadResponse
from ..headroom import limit_model
from .base import Outcome, Run, Source
from .limits import LimitsSource
from .rows import valid_values, values_reader
from .usage import floor_to

WIDTH = '1m'
MAX_BUCKETS = 1440
# The share of what is left of the run's time budget one endpoint's read may take.
BUDGET_SHARE = 0.25
UTILIZATION_DIMS = ('project_id', 'model', 'limit')
LIMIT_DIMS = ('project_id', 'model')


class UtilizationSource(Source):
    def __init__(self, endpoint: Endpoint, limits: LimitsSource, minutes: int, log):
        self.endpoint = endpoint
        self.name = f'{endpoint.name}_per_minute'
        self.limits = limits
        self.minutes = minutes
        self.log = log
        self.measures = PER_MINUTE_LIMITS[endpoint.name]
        names = sorted({name for _, fields in self.measures for name in fields})
        self.read_values = values_reader(f for f in endpoint.fields if f.name in names)
        read = [f.name for f in endpoint.fields if f.name in names]
        # For each measure, where its fields sit in the values read.
        self.slots = tuple(tuple(read.index(name) for name in fields) for _, fields in self.measures)
        # Usage models without a matching limit model, logged once each.
        self._unmatched: set[str] = set()

    def collect(self, run: Run) -> Outcome:
        outcome = Outcome(self.name, complete=True)
        if not self.limits.rate_limits:
            return outcome  # no limits known (yet): nothing to compare with, no request
        start = floor_to(run.now, 60) - self.minutes * 60
        params = [
            ('start_time', start),
            ('bucket_width', WIDTH),
            ('limit', min(MAX_BUCKETS, self.minutes + 1)),
            ('group_by', 'project_id'),
            ('group_by', 'model'),
        ]
        peaks: dict[tuple[str, str, int], float] = {}
        matches: dict[tuple[str, str], str | None] = {}
        client = run.client.within(BUDGET_SHARE)
        try:
            for buckets in client.iter_buckets_pages(self.endpoint.path, params, self.name):
                for bucket in buckets:
                    self._read_bucket(bucket, peaks, matches, outcome)
        except ApiError as e:
            outcome.complete = False
            outcome.error = e
            outcome.warnings.append(
                f'{self.name}: {e.message} No rate limit utilization for {self.endpoint.name} this run; the usage '
                f'collection is not affected.'
            )
            return outcome
        if outcome.malformed:
            outcome.warnings.append(f'{self.name}: {outcome.malformed} malformed rows or buckets were skipped.')
        outcome.gauges = self._points(peaks)
        return outcome

    def _read_bucket(self, bucket, peaks: dict, matches: dict, outcome: Outcome) -> None:
        if not isinstance(bucket, dict) or not isinstance(bucket.get('results'), list):
            raise BadResponse(
                f'OpenAI sent a malformed bucket for {self.endpoint.path}; the page was not used.', 200, self.name
            )
        sums: dict[tuple[str, str], list[float]] = {}
        tables = self.limits.rate_limits
        for row in bucket['results']:
            outcome.rows += 1
            if not isinstance(row, dict):
                outcome.malformed += 1
                continue
            project_id, model = row.get('project_id'), row.get('model')
            if not isinstance(project_id, str) or not isinstance(model, str) or not project_id or not model:
                continue  # not grouped (null): usage of no project's limit
            table = tables.get(project_id)
            if table is None:
                continue
            pair = (project_id, model)
            if pair not in matches:
                matches[pair] = limit_model(model, table)
                if matches[pair] is None and model not in self._unmatched:
                    self._unmatched.add(model)
                    self.log.debug('%s: no rate limit matches model %s; no utilization for it', self.name, model)
            matched = matches[pair]
            if matched is None:
                continue
            values = self.read_values(row)
            if not valid_values(values):
                outcome.malformed += 1
                continue
            acc = sums.get((project_id, matched))
            if acc is None:
                acc = sums[(project_id, matched)] = [0.0] * len(self.slots)
            for i, slots in enumerate(self.slots):
                acc[i] += sum(values[j] or 0 for j in slots)
        for (project_id, matched), acc in sums.items():
            for i, value in enumerate(acc):
                key = (project_id, matched, i)
                if value > peaks.get(key, -1.0):
                    peaks[key] = value

    def _points(self, peaks: dict) -> list:
        gauges = []
        used = {}
        tables = self.limits.rate_limits
        for (project_id, matched, i), peak in peaks.items():
            limits = tables[project_id][matched]
            used[(project_id, matched)] = limits
            field = self.measures[i][0]
            limit = limits.get(field)
            if limit:  # absent or 0: the model has no such limit
                gauges.append(
                    (RATE_LIMIT_UTILIZATION.name, peak / limit, UTILIZATION_DIMS, (project_id, matched, field))
                )
        for key, limits in used.items():
            for field, value in limits.items():
                gauges.append((RATE_LIMIT_FIELDS_BY_NAME[field].metric, value, LIMIT_DIMS, key))
        return gauges
