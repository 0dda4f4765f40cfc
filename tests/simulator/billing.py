"""The simulated bill: the organization's usage priced at fixed per-model prices, reported as cost lines.

Each priced usage series (a model, a tier, a key...) yields one cost series per line item it is billed under
("gpt-4o-2024-08-06, input", "batch | gpt-4o-2024-08-06, cached input", "whisper-1, audio", "web search tool
calls"...), whose quantity is a fixed linear combination of the usage series' fields (uncached input = input -
cached - uncached audio...) and whose amount is that quantity times the line item's price. The quantities follow
the usage series' own hourly drivers, but reported with the costs' delays (a day's cost fills in for 36 hours), so
that once both are settled, the bill of a day is exactly the usage of that day priced: what an estimate of spend
from usage must reproduce. Prices are integers of nano-dollars per unit, which keeps every sum exact.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

from .organization import (
    CHAT_MODELS_BY_NAME,
    DAY,
    EMBEDDING_MODELS,
    IMAGE_MODELS,
    REVISION_PROFILES,
    SPEECH_MODELS,
    TRANSCRIPTION_MODELS,
    LineItem,
    _lru_get,
    _Traffic,
    floor_to,
)

# Tier -> (line item prefix, price multiplier as numerator/denominator of the standard price).
TIERS = {'': ('', 1, 1), 'batch': ('batch | ', 1, 2), 'flex': ('flex | ', 1, 2), 'priority': ('priority | ', 2, 1)}
# Audio tokens cost this many times the model's text tokens.
AUDIO_FACTOR = 4
# Completions: line item suffix -> the fields of a usage row whose combination is its quantity.
CHAT_LINES = (
    (
        ', input',
        {'input_tokens': 1, 'input_cached_tokens': -1, 'input_audio_tokens': -1, 'input_cached_audio_tokens': 1},
    ),
    (', cached input', {'input_cached_tokens': 1, 'input_cached_audio_tokens': -1}),
    (', output', {'output_tokens': 1, 'output_audio_tokens': -1, 'output_image_tokens': -1}),
    (' audio, input', {'input_audio_tokens': 1, 'input_cached_audio_tokens': -1}),
    (' audio, cached input', {'input_cached_audio_tokens': 1}),
    (' audio, output', {'output_audio_tokens': 1}),
    # Billed apart on OpenAI's bill, at the output price here; no usage field splits its cache, so an estimate
    # from usage has no rule for it (it prices those tokens as output): the unmapped line item of the bill.
    (' image, output', {'output_image_tokens': 1}),
)
# Other endpoints: (line item for a model, unit, field billed, model -> nano-dollars per unit).
SIMPLE_LINES = {
    'embeddings': ('{}, input', 'tokens', 'input_tokens', {m: v[2] for m, v in EMBEDDING_MODELS.items()}),
    'images': ('{}, images', 'images', 'images', {m: v[2] for m, v in IMAGE_MODELS.items()}),
    'audio_speeches': ('{}, characters', 'characters', 'characters', {m: v[2] for m, v in SPEECH_MODELS.items()}),
    'audio_transcriptions': (
        '{}, audio',
        'duration_seconds',
        'seconds',
        {m: v[2] for m, v in TRANSCRIPTION_MODELS.items()},
    ),
}
TOOL_LINES = {
    'web_search_calls': ('web search tool calls', 'calls', 'num_requests', 10_000_000),
    'file_search_calls': ('file search tool calls', 'calls', 'num_requests', 2_500_000),
    'code_interpreter_sessions': ('code interpreter sessions', 'sessions', 'num_sessions', 30_000_000),
}


def chat_price(model, suffix: str, tier: str) -> int:
    input_price, cached_price, output_price = model.prices
    base = {
        ', input': input_price,
        ', cached input': cached_price,
        ', output': output_price,
        ' image, output': output_price,
        ' audio, input': AUDIO_FACTOR * input_price,
        ' audio, cached input': AUDIO_FACTOR * cached_price,
        ' audio, output': AUDIO_FACTOR * output_price,
    }[suffix]
    _, num, den = TIERS[tier]
    return base * num // den


def _tier(values: dict) -> str:
    if values.get('batch') is True:
        return 'batch'
    tier = values.get('service_tier')
    return tier if tier in ('flex', 'priority') else ''


def _shadow(usage: _Traffic, settle: int) -> _Traffic:
    """The usage traffic's own drivers, reported with the costs' delays and spread evenly over each hour."""
    shadow = copy.copy(usage)
    shadow._hours, shadow._days, shadow._coeffs = OrderedDict(), OrderedDict(), OrderedDict()
    shadow._curves, shadow._masks = OrderedDict(), OrderedDict()
    shadow._lock = threading.RLock()
    shadow.settle = settle
    shadow.minute_weights = False
    shadow.components = []
    cumulative = 0
    for share, delay in REVISION_PROFILES['costs']:
        shadow.components.append((cumulative, cumulative + share, int(round(delay * settle))))
        cumulative += share
    return shadow


class DerivedCosts(_Traffic):
    """The costs endpoint's series, each one line item of one usage series, with the _Traffic interface the
    organization renders and sums from: a driver (the billed quantity) and coefficients (price, 1)."""

    def __init__(self, org, endpoint):
        self.org = org
        self.endpoint = endpoint
        self.name = endpoint.name
        self.dims = endpoint.group_by
        self.settle = org.settle_seconds(endpoint.name)
        self.value_names = ('amount', 'quantity')
        self._masks: OrderedDict = OrderedDict()
        self._quantities: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.items: list[LineItem] = []
        items: dict[str, LineItem] = {}
        series, prices = [], []
        # Per usage endpoint: (its costs-delayed traffic, usage index of each cost series, combination of fields).
        self.blocks = []
        for name, usage in org.traffic.items():
            lines = self._lines_of(name, usage)
            if not lines:
                continue
            indices, combos = [], []
            for i, project_id, api_key_id, line_item, unit, price, combo in lines:
                if line_item not in items:
                    items[line_item] = LineItem(line_item, unit, price, 0)
                series.append((project_id, line_item, api_key_id))
                prices.append((price, 1))
                indices.append(i)
                combos.append(combo)
            self.blocks.append((_shadow(usage, self.settle), indices, combos))
        self.items = list(items.values())
        self.series = series
        self.n = len(series)
        self.prices = prices
        # line item -> (first day, new price in nano-dollars per unit): a price change mid-month, for tests.
        self.price_changes: dict[str, tuple[int, int]] = {}

    def _lines_of(self, name: str, usage: _Traffic) -> list:
        """(usage index, project, key, line item, unit, price, {field index: factor}) for each cost series."""
        fields = {f: k for k, f in enumerate(usage.value_names)}
        dims = usage.dims
        out = []
        for i, s in enumerate(usage.series):
            values = dict(zip(dims, s))
            project_id, key = values.get('project_id'), values.get('api_key_id')
            if name == 'completions':
                model = CHAT_MODELS_BY_NAME[values['model']]
                tier = _tier(values)
                prefix = TIERS[tier][0]
                variants = usage.variants[i]
                for suffix, combo in CHAT_LINES:
                    combo = {fields[f]: c for f, c in combo.items()}
                    if not any(sum(c * v[f] for f, c in combo.items()) for v in variants):
                        continue  # the series never bills this kind (no audio, no cache...)
                    line = f'{prefix}{model.name}{suffix}'
                    out.append((i, project_id, key, line, 'tokens', chat_price(model, suffix, tier), combo))
            elif name in SIMPLE_LINES:
                template, unit, field, table = SIMPLE_LINES[name]
                out.append(
                    (
                        i,
                        project_id,
                        key,
                        template.format(values['model']),
                        unit,
                        table[values['model']],
                        {fields[field]: 1},
                    )
                )
            elif name in TOOL_LINES:
                line, unit, field, price = TOOL_LINES[name]
                out.append((i, project_id, key, line, unit, price, {fields[field]: 1}))
        return out

    def quantities(self, day: int, block: int) -> list[int]:
        """Units billed per unit of the usage driver, for each cost series of a block, on that day."""

        def make():
            shadow, indices, combos = self.blocks[block]
            coefficients = shadow.coefficients(day)
            return [sum(c * coefficients[i][f] for f, c in combo.items()) for i, combo in zip(indices, combos)]

        return _lru_get(self._quantities, (day, block), 64, make)

    def driver(self, a: int, b: int, t: int):
        day = floor_to(a, DAY)
        out = []
        seen = False
        for block, (shadow, indices, _) in enumerate(self.blocks):
            r = shadow.driver(a, b, t)
            if r is None:
                out.extend([0] * len(indices))
                continue
            seen = True
            out.extend(r[i] * q for i, q in zip(indices, self.quantities(day, block)))
        return out if seen else None

    def hour_final(self, h: int):
        out = []
        seen = False
        for block, (shadow, indices, _) in enumerate(self.blocks):
            r = shadow.hour_final(h)
            if r is None:
                out.extend([0] * len(indices))
                continue
            seen = True
            out.extend(r[i] * q for i, q in zip(indices, self.quantities(floor_to(h, DAY), block)))
        return out if seen else None

    def coefficients(self, day: int):
        changes = self.price_changes
        if not changes:
            return self.prices
        out = []
        for s, price in zip(self.series, self.prices):
            change = changes.get(s[1])
            out.append((change[1], 1) if change is not None and day >= change[0] else price)
        return out
