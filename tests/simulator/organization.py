"""The simulated OpenAI organization: its projects, users and keys, and the traffic they generate.

Everything is a deterministic function of the seed and of the time asked about, so the HTTP server, the
check under test and the test's own expectations all see the same numbers.

How the traffic is built, and why it stays consistent whatever the question:

* Each endpoint has a fixed set of *series*: one combination of every group-by dimension the catalogue
  lists for it (project, user, key, model, batch...). A series has a *driver* per UTC hour (model
  requests for most endpoints, sessions or calls for some, billed units for costs) and per-series
  integer coefficients turning the driver into every numeric field (tokens per request...). Fields are
  therefore linear in the driver, so `input_tokens == cached + cache_write + uncached` and the modality
  splits hold exactly in every bucket, every grouping and every revision, and a row always has
  `num_model_requests > 0`.
* Within an hour the driver is spread over time by a cumulative weight curve C (per-minute weights for
  usage, uniform for costs). The value of any interval [a, b) of the hour is F(b) - F(a) with
  F(x) = floor(R*C(x) + phase) (a per-series phase in [0, 1) spreads the rounding): any partition of the
  hour (minute buckets, a partial first bucket) telescopes back to the hour exactly. Days are sums of
  hours.
* Late data: a cell's driver is split into a few components, each reported `delay` seconds after the
  traffic happened. At clock time T a component has reported the traffic of [a, min(b, T - delay)).
  Each term is non-decreasing in T, so observed values only grow; the last delay is the endpoint's
  settle time, after which the value is final. The same telescoping keeps 1m, 1h and 1d buckets, and
  every group_by, exactly consistent at every T, not only once settled.
* Levels (vector store bytes) are not flows: a bucket reports the level at its end (or now, while in
  progress); the level only grows, so observed values are monotone too.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from operator import add, itemgetter
from typing import Any, Iterable, Mapping

from datadog_checks.openai.catalogue import BUCKET_SECONDS, COSTS, ENDPOINTS, ENDPOINTS_BY_NAME, LEVEL, Endpoint

COSTS_NAME = 'costs'

MINUTE = 60
HOUR = 3600
DAY = 86400

# 2026-01-01T00:00:00Z: a fixed origin keeps every test's numbers reproducible.
DEFAULT_TRAFFIC_START = 1_767_225_600

# Seconds after a bucket closes until its value is final, per endpoint kind (or endpoint name).
DEFAULT_SETTLE_SECONDS = {'usage': 20 * MINUTE, COSTS: 36 * HOUR}

# How a cell's value is reported: (share in thousandths, delay as a fraction of the settle time).
# Most traffic shows at once (an in-progress bucket grows), the rest trickles in until settled.
REVISION_PROFILES = {
    'usage': ((500, 0.0), (250, 0.1), (150, 0.4), (100, 1.0)),
    COSTS: ((300, 0.0), (300, 0.15), (250, 0.5), (150, 1.0)),
}

# Series (group-by combinations) per endpoint in the small default organization.
DEFAULT_SERIES = {
    'completions': 40,
    'embeddings': 8,
    'moderations': 4,
    'images': 6,
    'audio_speeches': 3,
    'audio_transcriptions': 3,
    'code_interpreter_sessions': 3,
    'file_search_calls': 6,
    'web_search_calls': 6,
    'costs': 40,
}
# An endpoint added to the catalogue later gets generic traffic rather than none.
GENERIC_SERIES = 6

_IDENT = re.compile(r'[a-z_][a-z0-9_]*\Z')
_OBJECT = re.compile(r'[a-z0-9_.]+\Z')
_ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'


# -- models -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatModel:
    name: str
    weight: float
    input_tokens: int
    output_tokens: int
    cached: float = 0.0
    cache_write: float = 0.0
    audio_in: float = 0.0
    image_in: float = 0.0
    audio_out: float = 0.0
    image_out: float = 0.0
    batch: bool = True
    tiers: tuple[str, ...] = ('default', 'priority')
    # Nano-dollars per token: input, cached input, output.
    prices: tuple[int, int, int] = (0, 0, 0)


CHAT_MODELS = (
    ChatModel('gpt-4o-mini-2024-07-18', 5, 1400, 300, 0.45, 0.01, image_in=0.03, prices=(150, 75, 600)),
    ChatModel('gpt-4o-2024-08-06', 3, 1800, 420, 0.35, 0.02, image_in=0.06, prices=(2500, 1250, 10000)),
    ChatModel('gpt-4.1-2025-04-14', 2, 3200, 520, 0.5, 0.02, image_in=0.04, prices=(2000, 500, 8000)),
    ChatModel('gpt-4.1-mini-2025-04-14', 2, 2100, 380, 0.55, 0.01, prices=(400, 100, 1600)),
    ChatModel('o3-2025-04-16', 1, 2600, 2400, 0.3, 0.02, tiers=('default', 'flex'), prices=(2000, 500, 8000)),
    ChatModel('o4-mini-2025-04-16', 1.5, 1900, 1800, 0.35, 0.01, tiers=('default', 'flex'), prices=(1100, 275, 4400)),
    ChatModel('gpt-5-2025-08-07', 1.5, 2800, 1600, 0.45, 0.02, 0, 0.05, 0, 0.04, prices=(1250, 125, 10000)),
    ChatModel(
        'gpt-4o-realtime-preview-2024-12-17',
        0.5,
        900,
        700,
        0.2,
        audio_in=0.75,
        audio_out=0.85,
        batch=False,
        tiers=('default',),
        prices=(5000, 2500, 20000),
    ),
    ChatModel(
        'gpt-4o-audio-preview-2024-12-17',
        0.5,
        700,
        500,
        0.1,
        audio_in=0.6,
        audio_out=0.7,
        batch=False,
        tiers=('default',),
        prices=(2500, 1250, 10000),
    ),
)
CHAT_MODELS_BY_NAME = {m.name: m for m in CHAT_MODELS}

# name -> (weight, units per request, nano-dollars per unit)
EMBEDDING_MODELS = {
    'text-embedding-3-small': (3, 900, 20),
    'text-embedding-3-large': (1, 1200, 130),
    'text-embedding-ada-002-v2': (0.5, 700, 100),
}
MODERATION_MODELS = {'omni-moderation-latest': (3, 250, 0), 'text-moderation-latest': (1, 200, 0)}
# name -> (weight, images per request, nano-dollars per image, sizes, sources)
IMAGE_MODELS = {
    'gpt-image-1': (3, 1, 42_000_000, ('1024x1024',), ('image.generation', 'image.edit')),
    'dall-e-3': (2, 1, 40_000_000, ('1024x1024', '1024x1792'), ('image.generation',)),
    'dall-e-2': (
        1,
        2,
        20_000_000,
        ('256x256', '512x512', '1024x1024'),
        ('image.generation', 'image.edit', 'image.variation'),
    ),
}
SPEECH_MODELS = {'tts-1': (3, 600, 15_000), 'tts-1-hd': (1, 800, 30_000), 'gpt-4o-mini-tts': (2, 500, 12_000)}
TRANSCRIPTION_MODELS = {
    'whisper-1': (3, 90, 100_000),
    'gpt-4o-transcribe': (2, 120, 100_000),
    'gpt-4o-mini-transcribe': (1, 60, 50_000),
}
WEB_SEARCH_MODELS = ('gpt-4o-mini-2024-07-18', 'gpt-4o-2024-08-06', 'gpt-4.1-2025-04-14', 'gpt-5-2025-08-07')

# Endpoint -> (median driver per hour, spread of the log-normal around it).
DRIVER_SCALE = {
    'completions': (30, 1.3),
    'embeddings': (60, 1.1),
    'moderations': (40, 1.0),
    'images': (3, 0.8),
    'audio_speeches': (5, 0.8),
    'audio_transcriptions': (4, 0.8),
    'code_interpreter_sessions': (2, 0.7),
    'file_search_calls': (10, 1.0),
    'web_search_calls': (6, 1.0),
}
GENERIC_DRIVER = (5, 0.8)


# -- entities ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created_at: int
    archived_at: int | None = None

    def exists_at(self, t: float) -> bool:
        return self.created_at <= t

    def archived_by(self, t: float) -> bool:
        return self.archived_at is not None and self.archived_at <= t

    def to_api(self, t: float) -> dict:
        archived = self.archived_by(t)
        return {
            'id': self.id,
            'object': 'organization.project',
            'name': self.name,
            'created_at': self.created_at,
            'archived_at': self.archived_at if archived else None,
            'status': 'archived' if archived else 'active',
        }


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    role: str
    added_at: int

    def to_api(self) -> dict:
        return {
            'object': 'organization.user',
            'id': self.id,
            'name': self.name,
            'email': self.email,
            'role': self.role,
            'added_at': self.added_at,
        }


@dataclass(frozen=True)
class ServiceAccount:
    id: str
    name: str
    project_id: str
    created_at: int


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    project_id: str
    created_at: int
    redacted_value: str
    # Exactly one owner: a user (usage rows then carry its user_id) or a service account (user_id null).
    owner_user_id: str | None = None
    service_account_id: str | None = None
    # A deleted key keeps its past usage but is no longer listed: its name cannot be resolved.
    deleted_at: int | None = None

    @property
    def user_id(self) -> str | None:
        return self.owner_user_id

    def listed_at(self, t: float) -> bool:
        return self.created_at <= t and (self.deleted_at is None or self.deleted_at > t)


@dataclass(frozen=True)
class VectorStore:
    id: str
    project_id: str


@dataclass(frozen=True)
class LineItem:
    name: str
    unit: str
    # Nano-dollars per unit: integers keep costs exact through every sum.
    price: int
    median: float
    # Storage is billed to the project, not to a key.
    keyless: bool = False


# -- small helpers ----------------------------------------------------------------------------------


def _lru_get(cache: OrderedDict, key, limit: int, make):
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
        return value
    value = make()
    cache[key] = value
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def _sum_into(acc, part):
    if part is None:
        return acc
    if acc is None:
        return part
    return list(map(add, acc, part))


def _json(value: Any) -> str:
    return json.dumps(value)


def _compile_renderers(result_object: str, fields: tuple[str, ...]):
    """Row renderers as generated f-string comprehensions: the fastest pure-Python way to JSON.

    `scaled(R, C, D)` renders one row per series with driver r > 0, fields r*c[i]; `plain(V, D)` renders
    rows whose values are already summed. D holds the rows' dimension fragments (closing brace included).
    """
    if not _OBJECT.match(result_object) or not all(_IDENT.match(f) for f in fields):
        raise ValueError(f'unexpected characters in {result_object!r} or {fields!r}')
    head = '{{"object":"' + result_object + '"'
    scaled = head + ''.join(f',"{f}":{{r*c[{i}]}}' for i, f in enumerate(fields)) + '{d}'
    plain = head + ''.join(f',"{f}":{{v[{i}]}}' for i, f in enumerate(fields)) + '{d}'
    source = (
        'def scaled(R, C, D):\n'
        f"    return [f'{scaled}' for r, c, d in zip(R, C, D) if r]\n"
        'def plain(V, D):\n'
        f"    return [f'{plain}' for v, d in zip(V, D)]\n"
    )
    namespace: dict = {}
    exec(compile(source, f'<renderer {result_object}>', 'exec'), namespace)
    return namespace['scaled'], namespace['plain']


def floor_to(t: float, seconds: int) -> int:
    return int(t // seconds * seconds)


def bucket_end(start: int, width: str) -> int:
    """End of the bucket that starts at `start`: the next boundary (a partial bucket if unaligned)."""
    seconds = BUCKET_SECONDS[width]
    return floor_to(start, seconds) + seconds


# -- traffic ----------------------------------------------------------------------------------------


class _Traffic:
    """The series of one endpoint and the values they report at any time."""

    def __init__(
        self,
        org: 'Organization',
        endpoint: Endpoint,
        series: list[tuple],
        bases: list[float],
        lifetimes: list[tuple[int, int] | None],
        coefficients: list[tuple[tuple[int, ...], ...]],
        value_names: tuple[str, ...],
        seed: int,
    ):
        self.org = org
        self.endpoint = endpoint
        self.name = endpoint.name
        self.dims = endpoint.group_by
        self.series = series
        self.n = len(series)
        self.bases = bases
        self.lifetimes = lifetimes
        self.all_alive = all(life is None for life in lifetimes)
        # Per series, a few variants of its coefficients; the day picks one so that tokens per request
        # drift from day to day without a per-day computation per series.
        self.variants = coefficients
        self.value_names = value_names
        self.seed = seed
        self.start = org.traffic_start
        kind = 'usage' if endpoint.kind != COSTS else COSTS
        self.settle = org.settle_seconds(endpoint.name)
        profile = REVISION_PROFILES[kind]
        cumulative = 0
        self.components = []
        for share, delay in profile:
            self.components.append((cumulative, cumulative + share, int(round(delay * self.settle))))
            cumulative += share
        assert cumulative == 1000, profile
        self.minute_weights = kind != COSTS
        rnd = random.Random(seed * 31 + 7).random
        self.phases = array('q', (int(1000 * rnd()) for _ in range(self.n)))
        self._hours: OrderedDict = OrderedDict()
        self._days: OrderedDict = OrderedDict()
        self._coeffs: OrderedDict = OrderedDict()
        self._curves: OrderedDict = OrderedDict()
        self._masks: OrderedDict = OrderedDict()
        # About 40 MB of cached hours whatever the number of series.
        self._hour_cache = max(72, 5_000_000 // max(1, self.n))
        self._dims_json: list[str] | None = None
        self._lock = threading.RLock()

    # The driver's final value per hour -----------------------------------------------------------

    def _shape(self, h: int) -> float:
        """Volume factor of hour h: a UTC working-day curve, quieter weekends, slow growth."""
        hour = (h // HOUR) % 24
        weekday = (h // DAY + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
        diurnal = 0.55 + 0.45 * math.sin(math.pi * ((hour - 9) % 24) / 16) if (hour - 9) % 24 < 16 else 0.35
        weekly = 0.6 if weekday >= 5 else 1.0
        growth = 1.0 + 0.003 * max(0, (h - self.start) / DAY)
        return max(0.2, diurnal) * weekly * growth

    def hour_final(self, h: int) -> array | None:
        if h < self.start:
            return None
        return _lru_get(self._hours, h, self._hour_cache, lambda: self._make_hour(h))

    def _make_hour(self, h: int) -> array:
        rnd = random.Random(self.seed * 1_000_003 + h // HOUR).random
        m = self.org.volume * self._shape(h)
        values = [int(b * m * (0.55 + 0.9 * rnd())) or 1 for b in self.bases]
        if not self.all_alive:
            for i, life in enumerate(self.lifetimes):
                if life is not None and not (life[0] <= h < life[1]):
                    values[i] = 0
        return array('q', values)

    def _curve(self, h: int):
        """C(x) for an offset x in [0, 3600] of hour h, as (numerator function, denominator)."""
        if not self.minute_weights:
            return (lambda x: x), HOUR

        def make():
            rnd = random.Random(self.seed * 7_000_003 + h // HOUR).random
            weights = [50 + int(100 * rnd()) for _ in range(60)]
            cum = [0]
            for w in weights:
                cum.append(cum[-1] + w)
            return weights, cum

        weights, cum = _lru_get(self._curves, h, 512, make)
        total = cum[-1]

        def numerator(x: int) -> int:
            i = x // MINUTE
            if i >= 60:
                return total * MINUTE
            return cum[i] * MINUTE + weights[i] * (x - i * MINUTE)

        return numerator, total * MINUTE

    def interval(self, h: int, a: int, b: int, t: int):
        """Observed driver per series over [a, b) within hour h at time t (None: nothing yet)."""
        final = self.hour_final(h)
        if final is None or t <= a:
            return None
        if a == h and b == h + HOUR and t >= b + self.settle:
            return final
        numerator, den = self._curve(h)
        # Each series has a phase p in [0, 1000): its share of a component is
        # floor(R*s1/1000 + p/1000) - floor(R*s0/1000 + p/1000), and within the hour it has reported
        # floor(q*C(x) + p/1000). Both telescope and grow with x; the phase spreads the rounding so
        # that a series of a few requests still has some arrive late, at its own moment.
        phases = self.phases
        big = den * 1000
        ca = numerator(a - h) * 1000
        acc = None
        for s0, s1, delay in self.components:
            x = min(b, t - delay)
            if x <= a:
                continue
            cx = numerator(x - h) * 1000
            if ca == 0 and cx == big:
                part = [(r * s1 + p) // 1000 - (r * s0 + p) // 1000 for r, p in zip(final, phases)]
            elif ca == 0:
                part = [
                    (((r * s1 + p) // 1000 - (r * s0 + p) // 1000) * cx + p * den) // big for r, p in zip(final, phases)
                ]
            else:
                part = [
                    ((q := (r * s1 + p) // 1000 - (r * s0 + p) // 1000) * cx + p * den) // big
                    - (q * ca + p * den) // big
                    for r, p in zip(final, phases)
                ]
            acc = _sum_into(acc, part)
        return acc

    def day_final(self, day: int):
        def make():
            hours = [self.hour_final(h) for h in range(day, day + DAY, HOUR)]
            hours = [x for x in hours if x is not None]
            if not hours:
                return None
            return array('q', map(sum, zip(*hours)))

        if day + DAY <= self.start:
            return None
        return _lru_get(self._days, day, 64, make)

    def driver(self, a: int, b: int, t: int):
        """Observed driver per series over [a, b), which lies within one UTC day, at time t."""
        if b <= self.start or t <= a:
            return None
        day = floor_to(a, DAY)
        if a == day and b == day + DAY and t >= b + self.settle:
            return self.day_final(day)
        acc = None
        h = floor_to(max(a, self.start), HOUR)
        while h < b and h < t:
            acc = _sum_into(acc, self.interval(h, max(a, h), min(b, h + HOUR), t))
            h += HOUR
        return acc

    def coefficients(self, day: int) -> list[tuple[int, ...]]:
        def make():
            k = len(self.variants[0]) if self.variants else 1
            shift = (day // DAY) % k
            return [v[(i + shift) % k] for i, v in enumerate(self.variants)]

        return _lru_get(self._coeffs, day, 32, make)

    # Filters, dimension fragments -----------------------------------------------------------------

    def mask(self, filters: Mapping[str, frozenset] | None):
        if not filters:
            return None
        key = tuple(sorted(filters.items(), key=lambda kv: kv[0]))

        def make():
            checks = [(self.dims.index(d), allowed) for d, allowed in key if d in self.dims]
            return [all(s[p] in allowed for p, allowed in checks) for s in self.series]

        return _lru_get(self._masks, key, 16, make)

    def dims_json(self) -> list[str]:
        if self._dims_json is None:
            # Few distinct values per dimension: encode each once.
            memos = [{} for _ in self.dims]
            encoded = []
            for s in self.series:
                parts = []
                for d, v, memo in zip(self.dims, s, memos):
                    text = memo.get(v)
                    if text is None:
                        text = memo[v] = f',"{d}":{_json(v)}'
                    parts.append(text)
                encoded.append(''.join(parts) + '}')
            self._dims_json = encoded
        return self._dims_json


class _Levels(_Traffic):
    """A storage level per series: it reports its value at the bucket's end, and only grows."""

    def __init__(self, org, endpoint, series, bases, growth, seed):
        super().__init__(
            org,
            endpoint,
            series,
            bases,
            [None] * len(series),
            [((1,) * len(endpoint.fields),)] * len(series),
            tuple(f.name for f in endpoint.fields),
            seed,
        )
        self.growth = growth
        self.settle = 0

    def driver(self, a: int, b: int, t: int):
        x = min(b, t)
        if x <= self.start or t <= a:
            return None
        hours = (x - 1 - self.start) // HOUR
        return [int(base) + g * hours for base, g in zip(self.bases, self.growth)]

    def coefficients(self, day: int):
        return [v[0] for v in self.variants]


# -- the organization -------------------------------------------------------------------------------


class Organization:
    """A deterministic OpenAI organization.

    Series keys: `observed()`/`final()` and the totals return `{series_key: {field: value}}` where
    series_key is the tuple of the values of the requested group_by dimensions, in the request's
    order, followed for costs by the currency (`'usd'`). Values are ints for usage fields and floats
    (dollars) for costs' `amount`. Null dimension values are None, `batch` is a bool.
    """

    def __init__(
        self,
        seed: int = 0,
        traffic_start: int = DEFAULT_TRAFFIC_START,
        projects: int = 6,
        users: int = 8,
        keys_per_project: int = 2,
        series_per_bucket: Mapping[str, int] | None = None,
        settle_seconds: Mapping[str, int] | None = None,
        volume: float = 1.0,
    ):
        if projects < 2:
            raise ValueError('an organization needs at least 2 projects (one of them is archived)')
        self.seed = seed
        # Hour-aligned: the first hour of traffic is a whole one, which keeps the arithmetic simple.
        self.traffic_start = floor_to(traffic_start, HOUR)
        self.volume = volume
        self._settle = dict(DEFAULT_SETTLE_SECONDS)
        self._settle.update(settle_seconds or {})
        self.series_per_bucket = dict(DEFAULT_SERIES)
        self.series_per_bucket.update(series_per_bucket or {})
        self._rng = random.Random(seed)
        self._ids: set[str] = set()
        self.projects: list[Project] = []
        self.users: list[User] = []
        self.service_accounts: list[ServiceAccount] = []
        self.api_keys: list[ApiKey] = []
        self.vector_stores: list[VectorStore] = []
        self._by_id: dict[str, Any] = {}
        self._build_entities(projects, users, keys_per_project)
        self.traffic: dict[str, _Traffic] = {}
        for i, endpoint in enumerate(ENDPOINTS):
            if endpoint.kind == COSTS:
                continue
            self.traffic[endpoint.name] = self._build_traffic(endpoint, seed * 1009 + i * 7919 + 17)
        # The bill is the usage priced (see billing.py): built once every usage endpoint has its traffic.
        self.traffic[COSTS_NAME] = DerivedCosts(self, ENDPOINTS_BY_NAME[COSTS_NAME])
        self.line_items = self.traffic[COSTS_NAME].items
        self.line_items_by_name = {li.name: li for li in self.line_items}
        self._renderers = {
            e.name: _compile_renderers(e.result_object, tuple(f.name for f in e.fields))
            for e in ENDPOINTS
            if e.kind != COSTS
        }
        self._results_cache: OrderedDict = OrderedDict()
        self._results_cache_chars = 0
        self._results_cache_limit = 200_000_000
        self._lock = threading.RLock()

    # -- entities ----------------------------------------------------------------------------------

    def _id(self, prefix: str, length: int = 24) -> str:
        while True:
            candidate = prefix + ''.join(self._rng.choice(_ALNUM) for _ in range(length))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _build_entities(self, n_projects: int, n_users: int, keys_per_project: int) -> None:
        rng = self._rng
        start = self.traffic_start
        names = [
            'Production',
            'Staging',
            'Research',
            'Sandbox',
            'Legacy chatbot',
            'Sandbox',
            'Support bot',
            'Data pipeline',
            'Evals',
            'Marketing site',
        ]
        for i in range(n_projects):
            name = names[i] if i < len(names) else f'team-{i:04d}'
            created = start - rng.randint(30, 400) * DAY - rng.randint(0, DAY)
            # One archived project, with traffic until it was archived: its name must still be
            # resolvable (include_archived) for the usage it left behind.
            archived = start + DAY + 6 * HOUR if i == 4 else None
            self._register(self.projects, Project(self._id('proj_'), name, created, archived))
        first = [
            'Ada',
            'Grace',
            'Alan',
            'Edsger',
            'Barbara',
            'Donald',
            'Frances',
            'John',
            'Katherine',
            'Ken',
            'Margaret',
            'Niklaus',
            'Radia',
            'Tim',
            'Vint',
            'Whitfield',
        ]
        last = [
            'Lovelace',
            'Hopper',
            'Turing',
            'Dijkstra',
            'Liskov',
            'Knuth',
            'Allen',
            'McCarthy',
            'Johnson',
            'Thompson',
            'Hamilton',
            'Wirth',
            'Perlman',
            'Berners-Lee',
            'Cerf',
            'Diffie',
        ]
        for i in range(max(1, n_users)):
            fn, ln = first[i % len(first)], last[(i * 7 + i // len(first)) % len(last)]
            suffix = '' if i < len(first) else str(i)
            email = f'{fn.lower()}.{ln.lower().replace("-", "")}{suffix}@example.com'
            role = 'owner' if i == 0 else ('reader' if i % 3 else 'owner')
            added = start - rng.randint(10, 500) * DAY
            self._register(self.users, User(self._id('user-'), f'{fn} {ln}', email, role, added))
        for p, project in enumerate(self.projects):
            for k in range(keys_per_project):
                self._add_key(project, service_account=(k == keys_per_project - 1 and p % 2 == 1))
        # A key created after traffic began: its series start late.
        self._add_key(self.projects[0], created_at=start + 2 * DAY + 3 * HOUR, name='new-deploy-key')
        # A deleted key: usage until its deletion, then absent from every listing.
        self._add_key(self.projects[1], deleted_at=start + 12 * HOUR, name='leaked-key-revoked')
        for project in self.projects:
            if project.archived_at is None and rng.random() < 0.7 or project is self.projects[0]:
                for _ in range(rng.randint(1, 3)):
                    self.vector_stores.append(VectorStore(self._id('vs_'), project.id))

    def _register(self, collection: list, entity):
        collection.append(entity)
        self._by_id[entity.id] = entity
        return entity

    def _add_key(
        self,
        project: Project,
        service_account: bool = False,
        created_at: int | None = None,
        name: str | None = None,
        deleted_at: int | None = None,
    ) -> ApiKey:
        rng = self._rng
        created = created_at if created_at is not None else project.created_at + rng.randint(0, 20) * DAY
        created = min(created, self.traffic_start - HOUR) if created_at is None else created
        created = max(created, project.created_at)
        secret = ''.join(rng.choice(_ALNUM) for _ in range(4))
        n = len(self.api_keys)
        if service_account:
            sa = ServiceAccount(
                self._id('svc_acct_'), f'{project.name.lower().replace(" ", "-")}-bot', project.id, created
            )
            self._register(self.service_accounts, sa)
            key = ApiKey(
                self._id('key_', 16),
                name or f'{sa.name}-key',
                project.id,
                created,
                f'sk-svcacct-****{secret}',
                service_account_id=sa.id,
                deleted_at=deleted_at,
            )
        else:
            user = self.users[rng.randrange(len(self.users))]
            key = ApiKey(
                self._id('key_', 16),
                name or f'{user.name.split()[0].lower()}-key-{n}',
                project.id,
                created,
                f'sk-proj-****{secret}',
                owner_user_id=user.id,
                deleted_at=deleted_at,
            )
        return self._register(self.api_keys, key)

    def project(self, project_id: str) -> Project | None:
        found = self._by_id.get(project_id)
        return found if isinstance(found, Project) else None

    def user(self, user_id: str) -> User | None:
        found = self._by_id.get(user_id)
        return found if isinstance(found, User) else None

    def service_account(self, sa_id: str) -> ServiceAccount | None:
        found = self._by_id.get(sa_id)
        return found if isinstance(found, ServiceAccount) else None

    def api_key(self, key_id: str) -> ApiKey | None:
        found = self._by_id.get(key_id)
        return found if isinstance(found, ApiKey) else None

    def keys_of(self, project_id: str) -> list[ApiKey]:
        return [k for k in self.api_keys if k.project_id == project_id]

    def _key_end(self, key: ApiKey) -> int | None:
        project = self.project(key.project_id)
        ends = [x for x in (key.deleted_at, project.archived_at) if x is not None]
        return min(ends) if ends else None

    # -- series ------------------------------------------------------------------------------------

    @staticmethod
    def _pick(rng: random.Random, weighted: Mapping[str, float]):
        return rng.choices(list(weighted), list(weighted.values()))[0]

    def _models_for(self, name: str) -> dict[str, float]:
        if name == 'completions':
            return {m.name: m.weight for m in CHAT_MODELS}
        table = {
            'embeddings': EMBEDDING_MODELS,
            'moderations': MODERATION_MODELS,
            'images': IMAGE_MODELS,
            'audio_speeches': SPEECH_MODELS,
            'audio_transcriptions': TRANSCRIPTION_MODELS,
        }.get(name)
        if table is not None:
            return {k: v[0] for k, v in table.items()}
        if name == 'web_search_calls':
            return {m: 1.0 for m in WEB_SEARCH_MODELS}
        return {m.name: m.weight for m in CHAT_MODELS}

    def _sample(
        self,
        endpoint: Endpoint,
        rng: random.Random,
        keys: list[ApiKey],
        key_weights: list[float],
        stores_by_project: dict[str, list[VectorStore]],
        models: tuple[list, list],
    ) -> dict[str, Any]:
        dims = endpoint.group_by
        values: dict[str, Any] = {}
        item = None
        if endpoint.kind == COSTS:
            item = self.line_items[rng.randrange(len(self.line_items))]
            values['line_item'] = item.name
        key_dims = {'api_key_id', 'user_id'} & set(dims)
        if key_dims or endpoint.kind == COSTS or 'vector_store_id' in dims:
            key = rng.choices(keys, cum_weights=key_weights)[0]
            values['project_id'] = key.project_id
            values['api_key_id'] = None if item is not None and item.keyless else key.id
            values['user_id'] = key.user_id
            values['_key'] = key
        else:
            projects = (
                [p for p in self.projects if p.id in stores_by_project]
                if endpoint.name == 'vector_stores'
                else self.projects
            )
            values['project_id'] = projects[rng.randrange(len(projects))].id
        model = None
        if 'model' in dims:
            model = rng.choices(models[0], cum_weights=models[1])[0]
            values['model'] = model
        for d in dims:
            if d in values:
                continue
            if d == 'batch':
                chat = CHAT_MODELS_BY_NAME.get(model)
                values[d] = bool(chat is not None and chat.batch and rng.random() < 0.15)
            elif d == 'service_tier':
                chat = CHAT_MODELS_BY_NAME.get(model)
                tiers = chat.tiers if chat is not None else ('default',)
                values[d] = 'default' if values.get('batch') or rng.random() < 0.75 else rng.choice(tiers)
            elif d == 'size':
                values[d] = rng.choice(IMAGE_MODELS.get(model, (0, 0, 0, ('1024x1024',)))[3])
            elif d == 'source':
                values[d] = rng.choice(IMAGE_MODELS.get(model, (0, 0, 0, (), ('image.generation',)))[4])
            elif d == 'context_level':
                values[d] = self._pick(rng, {'low': 2, 'medium': 5, 'high': 1})
            elif d == 'vector_store_id':
                stores = stores_by_project.get(values['project_id'])
                values[d] = stores[rng.randrange(len(stores))].id if stores else None
            else:
                values[d] = f'{d}-{rng.randrange(3)}'
        return values

    def _build_traffic(self, endpoint: Endpoint, seed: int) -> _Traffic:
        rng = random.Random(seed)
        stores_by_project: dict[str, list[VectorStore]] = {}
        for vs in self.vector_stores:
            stores_by_project.setdefault(vs.project_id, []).append(vs)
        if endpoint.kind != COSTS and all(f.kind == LEVEL for f in endpoint.fields):
            return self._build_levels(endpoint, rng, stores_by_project, seed)

        wanted = self.series_per_bucket.get(endpoint.name, GENERIC_SERIES)
        if set(endpoint.group_by) <= {'project_id'}:
            wanted = min(wanted, len(self.projects))
        keys = [k for k in self.api_keys]
        if 'vector_store_id' in endpoint.group_by:
            keys = [k for k in keys if k.project_id in stores_by_project]
        key_based = (
            bool({'api_key_id', 'user_id', 'vector_store_id'} & set(endpoint.group_by)) or endpoint.kind == COSTS
        )
        if key_based:
            # Each key yields only a handful of distinct combinations: a big organization has many keys.
            self._grow_keys(
                keys,
                -(-wanted // 6) - len(keys),
                rng,
                stores_by_project if 'vector_store_id' in endpoint.group_by else None,
            )
        key_weights = _cumulative(1.0 / (1 + i % 7) for i in range(len(keys)))
        table = self._models_for(endpoint.name)
        models = (list(table), _cumulative(table.values()))
        seen: dict[tuple, dict] = {}
        attempts = 0
        while len(seen) < wanted:
            attempts += 1
            if attempts > 3 * wanted + 200:
                if not key_based:
                    break
                self._grow_keys(
                    keys,
                    -(-(wanted - len(seen)) // 6),
                    rng,
                    stores_by_project if 'vector_store_id' in endpoint.group_by else None,
                )
                key_weights = _cumulative(1.0 / (1 + i % 7) for i in range(len(keys)))
                attempts = 0
            values = self._sample(endpoint, rng, keys, key_weights, stores_by_project, models)
            combo = tuple(values[d] for d in endpoint.group_by)
            if combo not in seen:
                seen[combo] = values
        series = list(seen)
        median, spread = DRIVER_SCALE.get(endpoint.name, GENERIC_DRIVER)
        bases, lifetimes, variants = [], [], []
        for values in seen.values():
            # A keyless cost (storage) lives as long as its project, not as a key.
            key = values.get('_key') if values.get('api_key_id') is not None else None
            if endpoint.kind == COSTS:
                item = self.line_items_by_name[values['line_item']]
                base = item.median * math.exp(rng.gauss(0, 1.0))
                variants.append(((item.price, 1),))
            else:
                # A few heavy series and many light ones, as in real organizations; capped so one
                # series cannot dwarf a benchmark.
                base = min(median * math.exp(rng.gauss(0, spread)), median * 400)
                variants.append(self._coefficients(endpoint, values, rng))
            bases.append(max(1.0, base))
            lifetimes.append(self._lifetime(key, values.get('project_id')))
        value_names = ('amount', 'quantity') if endpoint.kind == COSTS else tuple(f.name for f in endpoint.fields)
        return _Traffic(self, endpoint, series, bases, lifetimes, variants, value_names, seed)

    def _grow_keys(self, keys: list[ApiKey], count: int, rng: random.Random, stores_by_project: dict | None) -> None:
        projects = [
            p
            for p in self.projects
            if p.archived_at is None and (stores_by_project is None or p.id in stores_by_project)
        ]
        for _ in range(max(0, count)):
            keys.append(self._add_key(projects[rng.randrange(len(projects))], service_account=rng.random() < 0.25))

    def _lifetime(self, key: ApiKey | None, project_id: str | None) -> tuple[int, int] | None:
        begin = self.traffic_start
        end = None
        if key is not None:
            begin = max(begin, key.created_at)
            end = self._key_end(key)
        elif project_id is not None:
            end = self.project(project_id).archived_at
        if begin == self.traffic_start and end is None:
            return None
        begin = -(-begin // HOUR) * HOUR
        end = floor_to(end, HOUR) if end is not None else 2**62
        return begin, end

    def _build_levels(self, endpoint, rng, stores_by_project, seed) -> _Levels:
        series, bases, growth = [], [], []
        for project in self.projects:
            stores = stores_by_project.get(project.id)
            if not stores:
                continue
            series.append(tuple(project.id if d == 'project_id' else None for d in endpoint.group_by))
            bases.append(sum(rng.randint(2_000_000, 900_000_000) for _ in stores))
            growth.append(rng.randint(0, 400_000))
        return _Levels(self, endpoint, series, bases, growth, seed)

    def _coefficients(self, endpoint: Endpoint, values: dict, rng: random.Random) -> tuple[tuple[int, ...], ...]:
        """Integer coefficients of each catalogue field per unit of driver, in three daily variants."""
        fields = [f.name for f in endpoint.fields]
        scale = math.exp(rng.gauss(0, 0.35))
        out = []
        for day_factor in (0.9, 1.0, 1.12):
            f = scale * day_factor
            derived = self._derive(endpoint.name, values, f)
            out.append(tuple(int(derived.get(name, 100 if 'token' in name else 1)) for name in fields))
        return tuple(out)

    def _derive(self, name: str, values: dict, f: float) -> dict[str, int]:
        """Per-request amounts of every field a series reports, scaled by f (a series' own size)."""
        if name == 'completions':
            m = CHAT_MODELS_BY_NAME[values['model']]
            inp = int(m.input_tokens * f) + 1
            out = int(m.output_tokens * f) + 1
            audio = int(inp * m.audio_in)
            image = int(inp * m.image_in)
            text = inp - audio - image
            cached = 0.0 if values.get('batch') else m.cached
            tc, tw = int(text * cached), int(text * m.cache_write)
            tu = text - tc - tw
            ac = int(audio * cached * 0.5)
            au = audio - ac
            ic = int(image * cached)
            iu = image - ic
            oa, oi = int(out * m.audio_out), int(out * m.image_out)
            ot = out - oa - oi
            return {
                'input_tokens': tc + tw + tu + ac + au + ic + iu,
                'output_tokens': ot + oa + oi,
                'num_model_requests': 1,
                'input_cached_tokens': tc + ac + ic,
                'input_cache_write_tokens': tw,
                'input_uncached_tokens': tu + au + iu,
                'input_text_tokens': tc + tw + tu,
                'input_audio_tokens': ac + au,
                'input_image_tokens': ic + iu,
                'input_cached_text_tokens': tc,
                'input_cached_audio_tokens': ac,
                'input_cached_image_tokens': ic,
                'output_text_tokens': ot,
                'output_audio_tokens': oa,
                'output_image_tokens': oi,
            }
        table = {
            'embeddings': EMBEDDING_MODELS,
            'moderations': MODERATION_MODELS,
            'images': IMAGE_MODELS,
            'audio_speeches': SPEECH_MODELS,
            'audio_transcriptions': TRANSCRIPTION_MODELS,
        }.get(name)
        if table is not None:
            per_request = table[values['model']][1]
            units = max(1, int(per_request * f)) if name != 'images' else per_request
            field = {
                'embeddings': 'input_tokens',
                'moderations': 'input_tokens',
                'images': 'images',
                'audio_speeches': 'characters',
                'audio_transcriptions': 'seconds',
            }[name]
            return {field: units, 'num_model_requests': 1}
        if name == 'web_search_calls':
            return {'num_requests': 1 + (values.get('context_level') == 'high'), 'num_model_requests': 1}
        if name in ('code_interpreter_sessions', 'file_search_calls'):
            return {'num_sessions': 1, 'sessions': 1, 'num_requests': 1}
        return {}

    def series(self, endpoint: str) -> list[tuple]:
        """Every series of an endpoint: the values of all its group_by dimensions, in catalogue order."""
        return list(self.traffic[endpoint].series)

    def series_alive(self, endpoint: str, hour: int) -> int:
        """Series with traffic in the hour starting at `hour` (a key deleted or a project archived ends
        its series; a key created later starts them late)."""
        traffic = self.traffic[endpoint]
        if isinstance(traffic, _Levels):
            return traffic.n if hour >= self.traffic_start else 0
        final = traffic.hour_final(floor_to(hour, HOUR))
        return 0 if final is None else sum(1 for r in final if r)

    # -- settle ------------------------------------------------------------------------------------

    def settle_seconds(self, endpoint: str) -> int:
        """Seconds after a bucket ends until its values stop changing."""
        e = ENDPOINTS_BY_NAME[endpoint]
        if e.kind != COSTS and all(f.kind == LEVEL for f in e.fields):
            return 0
        kind = 'usage' if e.kind != COSTS else COSTS
        return int(self._settle.get(endpoint, self._settle[kind]))

    def final_at(self, endpoint: str, end: int) -> int:
        """Clock time from which a bucket ending at `end` reports its final values."""
        return end + self.settle_seconds(endpoint)

    # -- values ------------------------------------------------------------------------------------

    def _check(self, endpoint: str, group_by: Iterable[str]) -> tuple[_Traffic, tuple[str, ...]]:
        traffic = self.traffic.get(endpoint)
        if traffic is None:
            raise KeyError(f'unknown endpoint {endpoint!r}; known: {", ".join(self.traffic)}')
        group_by = tuple(group_by or ())
        bad = [d for d in group_by if d not in traffic.dims]
        if bad or len(set(group_by)) != len(group_by):
            raise ValueError(f'group_by {group_by!r} is not valid for {endpoint} (allowed: {traffic.dims})')
        return traffic, group_by

    @staticmethod
    def _days(a: int, b: int):
        while a < b:
            end = min(b, floor_to(a, DAY) + DAY)
            yield a, end
            a = end

    def _merge(self, traffic: _Traffic, group_by: tuple[str, ...], parts, filters) -> dict[tuple, list]:
        """Sum `(driver, coefficients)` pairs by the group_by key: {key: [value per value name]}."""
        mask = traffic.mask(filters)
        positions = [traffic.dims.index(d) for d in group_by]
        if not positions:
            keyf = lambda s: ()  # noqa: E731
        elif len(positions) == 1:
            p = positions[0]
            keyf = lambda s: (s[p],)  # noqa: E731
        else:
            keyf = itemgetter(*positions)
        out: dict[tuple, list] = {}
        series = traffic.series
        for driver, coeffs in parts:
            if driver is None:
                continue
            for i, r in enumerate(driver):
                if not r or (mask is not None and not mask[i]):
                    continue
                key = keyf(series[i])
                values = [r * c for c in coeffs[i]]
                seen = out.get(key)
                if seen is None:
                    out[key] = values
                else:
                    out[key] = list(map(add, seen, values))
        return out

    def _parts(self, traffic: _Traffic, start: int, end: int, t: int):
        for a, b in self._days(start, end):
            yield traffic.driver(a, b, t), traffic.coefficients(floor_to(a, DAY))

    def _as_dicts(self, traffic: _Traffic, group_by: tuple[str, ...], merged: dict[tuple, list]) -> dict:
        if traffic.endpoint.kind == COSTS:
            currency = tuple('usd' for _ in traffic.endpoint.fixed_dims)
            return {
                key + currency: {'amount': values[0] / 1e9, 'quantity': values[1]} for key, values in merged.items()
            }
        names = traffic.value_names
        return {key: dict(zip(names, values)) for key, values in merged.items()}

    def observed(
        self,
        endpoint: str,
        bucket_width: str,
        group_by: Iterable[str],
        bucket_start: int,
        t: float,
        *,
        end: int | None = None,
        filters: Mapping[str, Iterable] | None = None,
    ) -> dict:
        """What the API reports at clock time t for the bucket starting at bucket_start.

        The bucket ends at the next `bucket_width` boundary (so an unaligned start is a partial first
        bucket, as in the API) or at `end`; traffic after t is not reported yet.
        """
        traffic, group_by = self._check(endpoint, group_by)
        b = end if end is not None else bucket_end(bucket_start, bucket_width)
        if floor_to(b - 1, DAY) > floor_to(bucket_start, DAY):
            raise ValueError('a bucket lies within one UTC day; use observed_totals() for longer ranges')
        with traffic._lock:
            merged = self._merge(traffic, group_by, self._parts(traffic, bucket_start, b, int(t)), _filters(filters))
        return self._as_dicts(traffic, group_by, merged)

    def final(
        self,
        endpoint: str,
        bucket_width: str,
        group_by: Iterable[str],
        bucket_start: int,
        *,
        end: int | None = None,
        filters: Mapping[str, Iterable] | None = None,
    ) -> dict:
        """The settled values of a bucket: what observed() returns from final_at(bucket end) on."""
        b = end if end is not None else bucket_end(bucket_start, bucket_width)
        return self.observed(
            endpoint, bucket_width, group_by, bucket_start, self.final_at(endpoint, b), end=b, filters=filters
        )

    def observed_totals(
        self,
        endpoint: str,
        group_by: Iterable[str],
        start: int,
        end: int,
        t: float,
        *,
        filters: Mapping[str, Iterable] | None = None,
    ) -> dict:
        """Sum over [start, end) (any alignment) of what the API reports at time t, per series.

        Equal to the sum of the observed buckets of any width covering the range. For a level
        (vector_stores) the value is the level at the end of the range, not a sum.
        """
        traffic, group_by = self._check(endpoint, group_by)
        t = int(t)
        with traffic._lock:
            if isinstance(traffic, _Levels):
                parts = [(traffic.driver(start, end, t), traffic.coefficients(0))]
            else:
                parts = self._parts(traffic, start, end, t)
            merged = self._merge(traffic, group_by, parts, _filters(filters))
        return self._as_dicts(traffic, group_by, merged)

    def final_totals(
        self,
        endpoint: str,
        group_by: Iterable[str],
        start: int,
        end: int,
        *,
        filters: Mapping[str, Iterable] | None = None,
    ) -> dict:
        """The settled totals over [start, end): what an exactly-once collector must end up with."""
        return self.observed_totals(endpoint, group_by, start, end, self.final_at(endpoint, end), filters=filters)

    # -- rendering for the HTTP server --------------------------------------------------------------

    def render_results(
        self,
        endpoint: str,
        a: int,
        b: int,
        t: int,
        group_by: tuple[str, ...],
        filters: Mapping[str, frozenset] | None = None,
        amount_as_string: bool = False,
    ) -> str:
        """The JSON of a bucket's `results` array content (rows joined by commas, no brackets)."""
        traffic, group_by = self._check(endpoint, group_by)
        settled = t >= b + traffic.settle
        cache_key = (endpoint, a, b, group_by, tuple(sorted((filters or {}).items())), amount_as_string)
        if settled:
            with self._lock:
                cached = self._results_cache.get(cache_key)
                if cached is not None:
                    self._results_cache.move_to_end(cache_key)
                    return cached
        with traffic._lock:
            text = self._render(traffic, a, b, t, group_by, filters, amount_as_string)
        if settled:
            with self._lock:
                self._results_cache[cache_key] = text
                self._results_cache_chars += len(text)
                while self._results_cache_chars > self._results_cache_limit and len(self._results_cache) > 1:
                    _, old = self._results_cache.popitem(last=False)
                    self._results_cache_chars -= len(old)
        return text

    def _render(self, traffic: _Traffic, a, b, t, group_by, filters, amount_as_string) -> str:
        driver = traffic.driver(a, b, t)
        if driver is None:
            return ''
        coeffs = traffic.coefficients(floor_to(a, DAY))
        if traffic.endpoint.kind == COSTS:
            merged = self._merge(traffic, group_by, [(driver, coeffs)], filters)
            return ','.join(
                self._cost_row(traffic, group_by, key, values, amount_as_string) for key, values in merged.items()
            )
        scaled, plain = self._renderers[traffic.name]
        if set(group_by) == set(traffic.dims):
            # One row per series: no merging needed, the fast path for the default (full) group_by.
            mask = traffic.mask(filters)
            if mask is not None:
                driver = [r if m else 0 for r, m in zip(driver, mask)]
            return ','.join(scaled(driver, coeffs, traffic.dims_json()))
        merged = self._merge(traffic, group_by, [(driver, coeffs)], filters)
        fragments = [self._fragment(traffic.dims, group_by, key) for key in merged]
        return ','.join(plain(list(merged.values()), fragments))

    @staticmethod
    def _fragment(dims: tuple[str, ...], group_by: tuple[str, ...], key: tuple) -> str:
        by = dict(zip(group_by, key))
        return ''.join(f',"{d}":{_json(by.get(d))}' for d in dims) + '}'

    def _cost_row(self, traffic: _Traffic, group_by, key, values, amount_as_string) -> str:
        by = dict(zip(group_by, key))
        amount = repr(values[0] / 1e9)
        if amount_as_string:
            amount = f'"{amount}"'
        line_item = by.get('line_item')
        unit = None
        quantity = None
        if line_item is not None:
            unit = self.line_items_by_name[line_item].unit
            quantity = values[1]
        dims = ''.join(f',"{d}":{_json(by.get(d))}' for d in traffic.dims)
        return (
            f'{{"object":"{traffic.endpoint.result_object}","amount":{{"value":{amount},"currency":"usd"}}'
            f'{dims},"quantity":{_json(quantity)},"quantity_unit":{_json(unit)}}}'
        )

    # -- listings ----------------------------------------------------------------------------------

    def projects_at(self, t: float, include_archived: bool = False) -> list[Project]:
        return [p for p in self.projects if p.exists_at(t) and (include_archived or not p.archived_by(t))]

    def users_at(self, t: float) -> list[User]:
        return [u for u in self.users if u.added_at <= t]

    def api_keys_at(self, project_id: str, t: float) -> list[ApiKey]:
        return [k for k in self.api_keys if k.project_id == project_id and k.listed_at(t)]

    def api_key_to_api(self, key: ApiKey, t: float) -> dict:
        if key.service_account_id:
            sa = self.service_account(key.service_account_id)
            owner = {
                'type': 'service_account',
                'service_account': {'id': sa.id, 'name': sa.name, 'created_at': sa.created_at, 'role': 'member'},
            }
        else:
            u = self.user(key.owner_user_id)
            owner = {
                'type': 'user',
                'user': {'id': u.id, 'email': u.email, 'name': u.name, 'created_at': u.added_at, 'role': u.role},
            }
        last_used = floor_to(t, 60) if t >= self.traffic_start else None
        return {
            'object': 'organization.project.api_key',
            'redacted_value': key.redacted_value,
            'name': key.name,
            'created_at': key.created_at,
            'last_used_at': last_used,
            'id': key.id,
            'owner_project_access': 'active',
            'owner': owner,
        }

    def describe(self) -> str:
        counts = ', '.join(f'{name} {t.n}' for name, t in self.traffic.items())
        return (
            f'{len(self.projects)} projects, {len(self.users)} users, {len(self.api_keys)} API keys; series: {counts}'
        )


def _cumulative(weights: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _filters(filters: Mapping[str, Iterable] | None) -> dict[str, frozenset] | None:
    if not filters:
        return None
    return {d: frozenset(v) for d, v in filters.items()}


from .billing import DerivedCosts  # noqa: E402 (billing builds on the classes above)
