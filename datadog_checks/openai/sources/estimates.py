"""Estimated spend: the usage increases the run submitted, priced with the unit prices of the bill.

The costs endpoint has daily buckets that fill in for hours; usage arrives within minutes. This source runs
after the usage and costs sources and turns the increases they *submitted* (Outcome.submitted: a source whose
state could not be saved submitted nothing) into `openai.api.usage.estimated_cost` counts. Being derived from
the same deltas, the estimate is exactly once as the usage is: a delta is submitted once, so it is priced once.

Prices are learned from the bill: for each line item, amount / quantity of the most recent day it was billed
(today's included: a ratio does not depend on how complete the day is). `price_key_of` says which usage
quantity a line item bills; a line item no rule matches is never guessed, only counted. Configured `prices` win.

The source keeps its own state (StateStore, saved before its points are submitted, like a ledger): the prices
learned, so that a restart prices at once, and the estimated and billed cost per (day, project), bounded to the
costs revision window plus a few days, from which `openai.api.costs.estimate_ratio` compares a settled day.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from datadog_checks.base.utils.format import json

from ..catalogue import (
    CACHED_SAVINGS,
    ESTIMATE_RATIO,
    ESTIMATED_COST,
    TIER_SAVINGS,
    UNPRICED_LINE_ITEMS,
    UNPRICED_TOKENS,
)
from .base import Outcome, Run, Source, StateStore

DAY = 86400
STATE_VERSION = 1
# Days kept beyond the costs revision window: the settled day compared is just past it.
EXTRA_DAYS = 3
# A learned price not billed again for this long is dropped (a model no longer used).
PRICE_DAYS = 40

# -- which usage a line item bills: the one place that knows ---------------------------------------------------
#
# A price key is (tier, model, kind): tier '' (standard), 'batch', 'flex' or 'priority'; model '' for tools.
# OpenAI's line items look like "gpt-4o-2024-08-06, input", "gpt-4o-mini-2024-07-18, cached input",
# "gpt-audio-mini-2025-12-15 audio, input", "priority | gpt-5-2025-08-07, output", "whisper-1, audio",
# "web search tool calls". A qualifier after the kind ("..., output, long context") depends on the size of each
# request, which usage does not give: no rule matches it.
_MODEL_LINE = re.compile(
    r'^(?:(?P<tier>batch|flex|priority) \| )?(?P<model>[A-Za-z0-9][\w.:\-]*?)(?: (?P<modality>audio|image|text))?, '
    r'(?P<kind>input|cached input|output|images|characters|audio)$'
)
_TOOL_LINES = {
    'web search tool calls': 'web_search_calls',
    'file search tool calls': 'file_search_calls',
    'code interpreter sessions': 'code_interpreter_sessions',
}
# quantity_unit -> units per quantity (a price per token from a price per 1000 tokens).
UNIT_SCALE = {'1000_tokens': 1000.0}


def price_key_of(line_item: str) -> tuple[str, str, str] | None:
    """The (tier, model, kind) a line item bills, or None when no rule maps it (it is then never priced)."""
    text = line_item.strip()
    tool = _TOOL_LINES.get(text.lower())
    if tool is not None:
        return ('', '', tool)
    m = _MODEL_LINE.match(text)
    if m is None:
        return None
    kind = m['kind'].replace(' ', '_')
    modality = m['modality']
    if modality == 'audio' and kind in ('input', 'cached_input', 'output'):
        kind = f'audio_{kind}'
    elif modality not in (None, 'text'):
        return None  # image tokens billed apart: no usage field gives them alone with their cache split
    if kind == 'audio':
        kind = 'seconds'  # transcription, billed by duration
    return (m['tier'] or '', m['model'], kind)


# Completions: the quantity of each kind, as a linear combination of the usage fields (whose deltas are what the
# run submitted): cost = sum(price[kind] * quantity[kind]). Cache writes are billed as input; image input tokens too.
COMPLETION_KINDS = {
    'input': {'input_tokens': 1, 'input_cached_tokens': -1, 'input_audio_tokens': -1, 'input_cached_audio_tokens': 1},
    'cached_input': {'input_cached_tokens': 1, 'input_cached_audio_tokens': -1},
    'output': {'output_tokens': 1, 'output_audio_tokens': -1},
    'audio_input': {'input_audio_tokens': 1, 'input_cached_audio_tokens': -1},
    'audio_cached_input': {'input_cached_audio_tokens': 1},
    'audio_output': {'output_audio_tokens': 1},
}
# Other endpoints: one field, one kind. Moderations are free; num_model_requests is never billed.
SIMPLE_KINDS = {
    'embeddings': {'input_tokens': 'input'},
    'images': {'images': 'images'},
    'audio_speeches': {'characters': 'characters'},
    'audio_transcriptions': {'seconds': 'seconds'},
    'web_search_calls': {'num_requests': 'web_search_calls'},
    'file_search_calls': {'num_requests': 'file_search_calls'},
    'code_interpreter_sessions': {'num_sessions': 'code_interpreter_sessions'},
}
# Tools are billed by the call, whatever the model.
TOOL_ENDPOINTS = ('web_search_calls', 'file_search_calls', 'code_interpreter_sessions')
# The kind whose price a cached token saves against.
SAVINGS = {'cached_input': 'input', 'audio_cached_input': 'audio_input'}
TIERS = ('batch', 'flex', 'priority')
# Tiers billed below the standard price: what they save is `openai.api.usage.tier_savings`.
SAVING_TIERS = ('batch', 'flex')
CONFIG_KINDS = ('input', 'cached_input', 'output', 'audio_input', 'audio_cached_input', 'audio_output') + (
    'images',
    'characters',
    'seconds',
)


def configured_price_key(model: str, kind: str) -> tuple[str, str, str] | None:
    tier, _, rest = kind.partition('_')
    if tier in TIERS and rest in CONFIG_KINDS:
        return (tier, model, rest)
    if kind in CONFIG_KINDS:
        return ('', model, kind)
    return None


def tier_of(dims: tuple[str, ...], key: tuple[str, ...]) -> str:
    """The price tier of a completions series: batch, or the service tier billed apart; '' for standard."""
    values = dict(zip(dims, key))
    if values.get('batch') == 'true':
        return 'batch'
    tier = values.get('service_tier', '')
    return tier if tier in ('flex', 'priority') else ''


# -- state -----------------------------------------------------------------------------------------------------


@dataclass
class EstimateState:
    """The estimator's saved state."""

    # price key -> (dollars per unit, currency, day of the bill it was read from)
    prices: dict[tuple[str, str, str], tuple[float, str, int]] = field(default_factory=dict)
    # day -> (project_id, currency) -> dollars estimated / billed
    estimated: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    billed: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    # When the estimate began: a day that started earlier was not estimated in full.
    since: float = 0.0

    def dumps(self) -> str:
        def days(table):
            return {str(d): [[p, c, v] for (p, c), v in cells.items()] for d, cells in table.items()}

        return json.encode(
            {
                'v': STATE_VERSION,
                'since': self.since,
                'prices': [[*k, *v] for k, v in self.prices.items()],
                'estimated': days(self.estimated),
                'billed': days(self.billed),
            }
        )

    @classmethod
    def loads(cls, text: str) -> EstimateState:
        data = json.decode(text)
        if not isinstance(data, dict) or data.get('v') != STATE_VERSION:
            raise ValueError('unknown estimate state format')
        since = data.get('since')
        if type(since) not in (int, float) or not math.isfinite(since):
            raise ValueError('bad start time')
        prices = {}
        for row in data.get('prices') or []:
            tier, model, kind, price, currency, day = row
            if not all(isinstance(x, str) for x in (tier, model, kind, currency)) or not _amount(price):
                raise ValueError('bad price')
            prices[(tier, model, kind)] = (float(price), currency, int(day))

        def days(table):
            if not isinstance(table, dict):
                raise ValueError('bad days')
            out = {}
            for d, cells in table.items():
                out[int(d)] = {}
                for project, currency, value in cells:
                    if not isinstance(project, str) or not isinstance(currency, str) or not _amount(value):
                        raise ValueError('bad day figure')
                    out[int(d)][(project, currency)] = float(value)
            return out

        return cls(prices, days(data.get('estimated', {})), days(data.get('billed', {})), float(since))


def _amount(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


@dataclass
class Change:
    prices: dict
    estimated: dict
    billed: dict
    since: float
    horizon: int


class Layout:
    """Where a usage series key holds its model and project."""

    def __init__(self, dims: tuple[str, ...]):
        self.dims = dims
        self.model = dims.index('model') if 'model' in dims else None
        self.project = dims.index('project_id') if 'project_id' in dims else None


class Totals:
    """A usage source's estimate for the run, by series."""

    def __init__(self):
        self.cost: dict = defaultdict(float)
        self.cached: dict = defaultdict(float)
        self.tier: dict = defaultdict(float)
        self.unpriced: dict = defaultdict(float)

    def submit(self, outcome: Outcome, dims: tuple[str, ...]) -> None:
        with_currency = dims + ('currency',)
        for metric, table in ((ESTIMATED_COST, self.cost), (CACHED_SAVINGS, self.cached), (TIER_SAVINGS, self.tier)):
            outcome.counts.extend(
                (metric.name, v, with_currency, key + (currency,)) for (key, currency), v in table.items() if v
            )
        unpriced = self.unpriced.items()
        outcome.counts.extend((UNPRICED_TOKENS.name, q, ('model', 'kind'), key) for key, q in unpriced if q)


# -- the source ------------------------------------------------------------------------------------------------


class EstimateSource(Source):
    name = 'estimates'
    derived = True

    def __init__(self, usage_sources, costs_revision_days: int, configured: dict | None, state: StateStore, log):
        self.usage_sources = list(usage_sources)
        self.revision_days = costs_revision_days
        self.state = state
        self.log = log
        self.state_key = 'estimates'
        self.configured: dict[tuple[str, str, str], float] = {}
        for model, kinds in (configured or {}).items():
            for kind, per_million in kinds.items():
                key = configured_price_key(model, kind)
                if key is not None:
                    self.configured[key] = float(per_million) / 1e6
        self.ledger: EstimateState | None = None
        self._loaded = False
        self.notes: list[str] = []
        # Line items already logged as unmapped: once each for the life of the check.
        self.logged: set[str] = set()
        self.warned_no_line_item = False
        # usage metric name -> field name, per usage source
        self.fields_of = {
            s.name: {s.endpoint.metric_name(f): f.name for f in s.endpoint.flows} for s in self.usage_sources
        }

    # -- a run -----------------------------------------------------------------------------------------------

    def collect(self, run: Run) -> Outcome:
        outcome = Outcome(self.name, complete=True)
        base = self._state(run.now)
        prices = dict(base.prices)
        billed = {d: dict(cells) for d, cells in base.billed.items()}
        unpriced_items = self._learn(run, prices, billed)
        price = self._pricer(prices)
        estimated = {d: dict(cells) for d, cells in base.estimated.items()}
        for source in self.usage_sources:
            usage = run.outcomes.get(source.name)
            if usage is None or not usage.submitted or not usage.counts:
                continue
            self._estimate(source, usage, price, estimated, outcome)
        horizon = int(run.now // DAY * DAY) - (self.revision_days + EXTRA_DAYS) * DAY
        change = Change(prices, estimated, billed, base.since, horizon)
        outcome.change = change
        self._ratios(change, run.now, outcome)
        if unpriced_items is not None:
            outcome.gauges.append((UNPRICED_LINE_ITEMS.name, len(unpriced_items), (), ()))
        outcome.warnings.extend(self.notes)
        self.notes = []
        return outcome

    def _learn(self, run: Run, prices: dict, billed: dict) -> set[str] | None:
        """Prices and billed figures from this run's reading of the bill; the unmapped line items (None: no bill)."""
        costs = run.outcomes.get('costs')
        bill = costs.facts.get('bill') if costs is not None else None
        if bill is None:
            return None
        if bill.by_project:
            for day, cells in bill.projects.items():
                billed[day] = dict(cells)
        if not bill.by_line_item:
            if not self.configured and not self.warned_no_line_item:
                self.warned_no_line_item = True
                self.notes.append(
                    'estimates: group_by.costs has no line_item, so no price can be learned from the bill and no '
                    'usage is estimated. Add line_item to group_by.costs, or configure `prices`.'
                )
            return None
        unmapped = set()
        for day in sorted(bill.lines):
            for (line_item, unit, currency), (amount, quantity) in bill.lines[day].items():
                key = price_key_of(line_item)
                if key is None:
                    unmapped.add(line_item)
                    continue
                if quantity <= 0:
                    continue
                known = prices.get(key)
                if known is None or known[2] <= day:
                    prices[key] = (amount / (quantity * UNIT_SCALE.get(unit, 1.0)), currency, day)
        for line_item in sorted(unmapped - self.logged):
            self.logged.add(line_item)
            self.log.info(
                'costs: line item %r matches no rule of the estimate of spend; usage it bills gets no estimate '
                '(counted in openai.api.costs.unpriced_line_items). Configure `prices` to price it.',
                line_item,
            )
        # A partial reading prices what it read, but cannot say what the bill does not hold.
        return unmapped if bill.complete else None

    def _pricer(self, learned: dict):
        configured = self.configured

        def price(key: tuple[str, str, str]) -> tuple[float, str] | None:
            if key in configured:
                return configured[key], 'usd'
            found = learned.get(key)
            return (found[0], found[1]) if found is not None else None

        return price

    def _estimate(self, source, usage: Outcome, price, estimated: dict, outcome: Outcome) -> None:
        """Price the increases `usage` submitted: the run's points, and the estimate of each (day, project)."""
        name = source.name
        if name != 'completions' and name not in SIMPLE_KINDS:
            return  # moderations (free), vector store bytes (a level)
        fields_of = self.fields_of[name]
        totals = Totals()
        dims = None
        for start, first, end in usage.spans:
            # The increases of one bucket, by series.
            deltas: dict = defaultdict(dict)
            dims = usage.counts[first][2]
            for metric, value, _, key in usage.counts[first:end]:
                f = fields_of.get(metric)
                if f is not None:
                    cell = deltas[key]
                    cell[f] = cell.get(f, 0) + value
            if deltas:
                layout = Layout(dims)
                day = start // DAY * DAY
                for key, values in deltas.items():
                    self._price_series(name, layout, key, values, price, totals, estimated.setdefault(day, {}))
        if dims is not None:
            totals.submit(outcome, dims)

    @staticmethod
    def _price_series(name, layout, key, values: dict, price, totals: Totals, day: dict) -> None:
        """One series' increases in one bucket, priced kind by kind; what has no price is counted instead."""
        model = key[layout.model] if layout.model is not None else ''
        if name == 'completions':
            tier = tier_of(layout.dims, key)
            quantities = {
                kind: sum(c * values.get(f, 0) for f, c in combo.items()) for kind, combo in COMPLETION_KINDS.items()
            }
        else:
            tier = ''
            quantities = {kind: values.get(f, 0) for f, kind in SIMPLE_KINDS[name].items()}
        priced_as = '' if name in TOOL_ENDPOINTS else model
        cost, currency = 0.0, None
        for kind, q in quantities.items():
            if not q:
                continue
            found = price((tier, priced_as, kind))
            if found is None:
                totals.unpriced[(model, kind)] += q
                continue
            unit_price, currency = found
            cost += unit_price * q
            # What the same tokens would have cost uncached, or at the standard tier, when the bill says.
            full = price((tier, priced_as, SAVINGS[kind])) if kind in SAVINGS else None
            if full is not None and full[1] == currency:
                totals.cached[(key, currency)] += (full[0] - unit_price) * q
            standard = price(('', priced_as, kind)) if tier in SAVING_TIERS else None
            if standard is not None and standard[1] == currency:
                totals.tier[(key, currency)] += (standard[0] - unit_price) * q
        if currency is not None:
            totals.cost[(key, currency)] += cost
            project = (key[layout.project] if layout.project is not None else '', currency)
            day[project] = day.get(project, 0.0) + cost

    def _ratios(self, change: Change, now: float, outcome: Outcome) -> None:
        """Estimated / billed for the most recent day the bill has settled: one that ended more than the costs
        revision window ago, estimated from its start, with its bill read while it was in the window."""
        day = int(now // DAY * DAY) - (self.revision_days + 1) * DAY
        if day < change.since:
            return
        estimated, billed = change.estimated.get(day, {}), change.billed.get(day, {})
        for (project, currency), bill in billed.items():
            if bill > 0:
                ratio = estimated.get((project, currency), 0.0) / bill
                outcome.gauges.append((ESTIMATE_RATIO.name, ratio, ('project_id', 'currency'), (project, currency)))

    # -- state -----------------------------------------------------------------------------------------------

    def _state(self, now: float) -> EstimateState:
        if not self._loaded:
            self._loaded = True
            self.ledger = self._load()
        if self.ledger is None:
            # Usage submitted from now on is estimated: a day is estimated in full from the next midnight.
            self.ledger = EstimateState(since=now)
        return self.ledger

    def _load(self) -> EstimateState | None:
        text = self.state.read(self.state_key)
        if not text:
            return None
        try:
            return EstimateState.loads(text)
        except Exception as e:
            self.notes.append(
                f'estimates: the saved state is unreadable ({e}); prices are learned again from the next bill '
                'read, and the estimate ratio waits for a day estimated in full.'
            )
            return None

    def _pruned(self, change: Change) -> EstimateState:
        oldest_price = change.horizon - PRICE_DAYS * DAY
        return EstimateState(
            {k: v for k, v in change.prices.items() if v[2] >= oldest_price},
            {d: c for d, c in change.estimated.items() if d >= change.horizon},
            {d: c for d, c in change.billed.items() if d >= change.horizon},
            change.since,
        )

    def save(self, outcome: Outcome) -> int | None:
        ledger = self._pruned(outcome.change)
        text = ledger.dumps()
        self.state.write(self.state_key, text)
        outcome.series = len(ledger.prices)
        self._saved = ledger
        return len(text)

    def apply(self, outcome: Outcome) -> None:
        self.ledger = self._saved

    def forget(self) -> None:
        self.ledger = None
        self._loaded = False
