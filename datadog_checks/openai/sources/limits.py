"""Limits: OpenAI's rate limits and hard spend limits, and how close the month's cost comes to the spend limits.

Limits change rarely, so they are read at the names refresh (hourly by default), one project at a time in the
projects' order: a refresh that runs out of its share of the time budget goes on at the next run from where it
stopped. What was read is kept in memory only (a restarted check reads the limits again at its first run, with the
names) and what is known is submitted at every run, compared with the month-to-date cost of the costs source of the
same run (which runs before this one). Nothing here touches the ledger: these are gauges, read whole each time.

The per-minute utilization of the rate limits is read by sources/utilization.py, from the tables kept here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalogue import (
    PROJECT_PROJECTED_MONTH_END,
    PROJECTED_MONTH_END,
    RATE_LIMIT_FIELDS,
    SPEND_LIMIT_DAYS_LEFT,
    SPEND_LIMIT_PROJECTED_UTILIZATION,
    SPEND_LIMIT_THRESHOLD,
    SPEND_LIMIT_UTILIZATION,
)
from ..client import ApiError, AuthError, BadResponse, OpenAIClient, RequestRefused, TransientError, project_path
from ..headroom import days_left, projected_month_end
from ..ledger import MAX_VALUE
from ..scrub import MAX_DETAIL, cap
from .base import Outcome, Run, Source
from .names import NameSource

# Rate limits per page: OpenAI's default, and a project lists one per model it may use.
LIST_LIMIT = 100
# The share of what is left of the run's time budget a refresh may take; the rest of it waits for the next run.
BUDGET_SHARE = 0.5
ORGANIZATION_SPEND_PATH = '/organization/spend_limit'
LIMITS_HELP = (
    'An organization owner can give the admin key read access to the organization\'s limits at '
    'https://platform.openai.com/settings/organization/admin-keys, or set collect_headroom: false. Usage and costs '
    'collection is not affected.'
)

SPEND_DIMS = ('scope', 'currency', 'enforcement')
PROJECT_SPEND_DIMS = ('scope', 'project_id', 'currency', 'enforcement')
MONTH_DIMS = ('currency',)
PROJECT_MONTH_DIMS = ('project_id', 'currency')

# What a refresh reads, one request each (a rate limit listing may take more than one page).
SPEND = 'spend'
RATE = 'rate'
# What LimitsSource._read returns for a 404: no such limit, or no such project.
MISSING = object()


@dataclass(frozen=True)
class SpendLimit:
    threshold: float  # in currency units (OpenAI answers cents)
    currency: str  # lowercase, as the costs endpoint writes it
    enforcement: str


def _count(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_VALUE


class LimitsSource(Source):
    name = 'limits'

    def __init__(self, names: NameSource, log):
        self.names = names
        self.log = log
        # project id -> the limit's model (as OpenAI lists it) -> limit field -> value.
        self.rate_limits: dict[str, dict[str, dict[str, float]]] = {}
        # None for the organization's limit, else the project's id.
        self.spend_limits: dict[str | None, SpendLimit] = {}
        # What the refresh under way has left to read: (SPEND or RATE, project id or None for the organization).
        self._pending: list[tuple[str, str | None]] = []
        # The names refresh the pending list was made from.
        self._listing_seen: float | None = None
        self._started = False

    # -- a run ---------------------------------------------------------------------------------

    def collect(self, run: Run) -> Outcome:
        outcome = Outcome(self.name, complete=True)
        if not self._started or self.names.refreshed_at != self._listing_seen:
            self._start_refresh()
        if self._pending:
            problems = self.refresh(run.client.within(BUDGET_SHARE))
            outcome.warnings.extend(problems)
            outcome.complete = not problems
        outcome.gauges = self.points(run)
        return outcome

    def _start_refresh(self) -> None:
        self._started = True
        self._listing_seen = self.names.refreshed_at
        active = [
            str(p['id'])
            for p in self.names.projects
            if p.get('status') != 'archived' and isinstance(p.get('id'), str) and p['id']
        ]
        # Limits of projects archived or deleted since are no longer submitted.
        keep = set(active)
        self.rate_limits = {p: table for p, table in self.rate_limits.items() if p in keep}
        self.spend_limits = {p: limit for p, limit in self.spend_limits.items() if p is None or p in keep}
        self._pending = [(SPEND, None)]
        for project_id in active:
            self._pending += [(RATE, project_id), (SPEND, project_id)]

    def refresh(self, client: OpenAIClient) -> list[str]:
        """Read what is pending until done or out of time; return a message for each problem (known limits stay)."""
        problems: list[str] = []
        while self._pending:
            kind, project_id = self._pending[0]
            try:
                if kind == RATE:
                    self._read_rate_limits(client, project_id, problems)
                else:
                    self._read_spend_limit(client, project_id, problems)
            except TransientError as e:
                problems.append(
                    f'Limits: {e.message} The {len(self._pending)} limit reads left of this refresh are done at the '
                    f'next run; the limits known so far stay.'
                )
                return problems
            except ApiError as e:
                problems.append(f'{self._what(kind, project_id)} not refreshed: {e.message} The last one read stays.')
            # A denied kind removed itself and everything of its kind from the list.
            if self._pending and self._pending[0] == (kind, project_id):
                self._pending.pop(0)
        return problems

    @staticmethod
    def _what(kind: str, project_id: str | None) -> str:
        if project_id is None:
            return 'The organization\'s spend limit'
        what = 'Rate limits' if kind == RATE else 'Spend limit'
        return f'{what} of project {cap(project_id, MAX_DETAIL)}'

    def _denied(self, kind: str, error: AuthError, problems: list[str]) -> None:
        self._pending = [item for item in self._pending if item[0] != kind]
        what = 'rate limits' if kind == RATE else 'spend limits'
        self.log.debug('Limits: %s refused: %s', what, error.message)
        problems.append(
            f'Limits: OpenAI refused the admin key with {error.status} on the {what}: the key lacks the permission to '
            f'read the organization\'s limits, so no {what} are submitted. {LIMITS_HELP}'
        )

    def _read(self, kind: str, read, problems: list[str]):
        """What `read` returns; None when the key may not read the limits (a 403, noted in `problems`), MISSING for
        a 404 (no such limit, or no such project)."""
        try:
            return read()
        except AuthError as e:
            if e.status != 403:
                raise
            self._denied(kind, e, problems)
            return None
        except RequestRefused as e:
            if e.status != 404:
                raise
            return MISSING

    def _read_rate_limits(self, client: OpenAIClient, project_id: str, problems: list[str]) -> None:
        path = project_path(project_id, 'rate_limits')
        if path is None:
            problems.append(f'{self._what(RATE, project_id)} not refreshed: not an id.')
            return
        items = self._read(RATE, lambda: list(client.iter_list(path, [('limit', LIST_LIMIT)], 'rate_limits')), problems)
        if items is None:
            return
        if items is MISSING:
            self.rate_limits.pop(project_id, None)  # the project is gone
            return
        table: dict[str, dict[str, float]] = {}
        malformed = 0
        for item in items:
            model = item.get('model') if isinstance(item, dict) else None
            if not isinstance(model, str) or not model:
                malformed += 1
                continue
            fields = {}
            for f in RATE_LIMIT_FIELDS:
                value = item.get(f.name)
                if value is None:
                    continue  # only present for the models it concerns
                if not _count(value):
                    malformed += 1
                    continue
                fields[f.name] = value
            table[model] = fields
        self.rate_limits[project_id] = table
        if malformed:
            problems.append(f'{self._what(RATE, project_id)}: {malformed} malformed entries or fields were skipped.')

    def _read_spend_limit(self, client: OpenAIClient, project_id: str | None, problems: list[str]) -> None:
        path = ORGANIZATION_SPEND_PATH if project_id is None else project_path(project_id, 'spend_limit')
        if path is None:
            problems.append(f'{self._what(SPEND, project_id)} not refreshed: not an id.')
            return
        body = self._read(SPEND, lambda: client.get_json(path, [], 'spend_limit'), problems)
        if body is None:
            return
        if body is MISSING:
            # No hard spend limit configured (or no such project): no threshold, rather than a threshold of 0.
            self.spend_limits.pop(project_id, None)
            return
        limit = self._spend_limit(body, path)
        if limit is None:
            self.spend_limits.pop(project_id, None)
        else:
            self.spend_limits[project_id] = limit

    @staticmethod
    def _spend_limit(body: dict, path: str) -> SpendLimit | None:
        amount = body.get('threshold_amount')
        if amount is None:
            return None  # an empty answer: no limit configured
        if not _count(amount):
            raise BadResponse(f'OpenAI sent a spend limit without a usable threshold_amount for {path}.', 200)
        currency = body.get('currency')
        enforcement = body.get('enforcement')
        status = enforcement.get('status') if isinstance(enforcement, dict) else None
        return SpendLimit(
            # OpenAI gives the threshold in cents.
            amount / 100,
            currency.lower() if isinstance(currency, str) and currency else 'usd',
            status if isinstance(status, str) and status else 'unknown',
        )

    # -- what is submitted every run ---------------------------------------------------------------

    def points(self, run: Run) -> list:
        """The spend limits, the month-end projections and the spend limits' utilization, from the costs of the run.

        Without a complete costs read this run (costs off or failed), only the thresholds: a utilization or a
        projection from a partial month would be wrong, not late."""
        costs = run.outcomes.get('costs')
        derived = costs.facts if costs is not None and costs.complete else {}
        gauges = []
        month, rate = derived.get('month_to_date'), derived.get('daily_rate') or {}
        project_month, project_rate = derived.get('project_month_to_date'), derived.get('project_daily_rate') or {}
        if month is not None:
            for currency in month.keys() | rate.keys():
                projected = projected_month_end(month.get(currency, 0.0), rate.get(currency, 0.0), run.now)
                gauges.append((PROJECTED_MONTH_END.name, projected, MONTH_DIMS, (currency,)))
        if project_month is not None:
            for key in project_month.keys() | project_rate.keys():
                projected = projected_month_end(project_month.get(key, 0.0), project_rate.get(key, 0.0), run.now)
                gauges.append((PROJECT_PROJECTED_MONTH_END.name, projected, PROJECT_MONTH_DIMS, key))
        for project_id, limit in self.spend_limits.items():
            if project_id is None:
                dims, key = SPEND_DIMS, ('organization', limit.currency, limit.enforcement)
                totals, rates, cost_key = month, rate, limit.currency
            else:
                dims, key = PROJECT_SPEND_DIMS, ('project', project_id, limit.currency, limit.enforcement)
                totals, rates, cost_key = project_month, project_rate, (project_id, limit.currency)
            gauges.append((SPEND_LIMIT_THRESHOLD.name, limit.threshold, dims, key))
            if totals is None:
                continue
            spent, daily = totals.get(cost_key, 0.0), rates.get(cost_key, 0.0)
            if limit.threshold > 0:
                gauges.append((SPEND_LIMIT_UTILIZATION.name, spent / limit.threshold, dims, key))
                projected = projected_month_end(spent, daily, run.now)
                gauges.append((SPEND_LIMIT_PROJECTED_UTILIZATION.name, projected / limit.threshold, dims, key))
            left = days_left(limit.threshold, spent, daily)
            if left is not None:
                gauges.append((SPEND_LIMIT_DAYS_LEFT.name, left, dims, key))
        return gauges
