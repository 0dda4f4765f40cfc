"""The one declarative description of what the check collects.

Every OpenAI endpoint the check reads is one `Endpoint` entry below. The client builds its requests
from it, the check derives metric names, metric types and tags from it, `metadata.csv` is generated
from it (`python -m datadog_checks.openai.catalogue`), and the tests' API simulator serves exactly
these endpoints. Adding an endpoint that OpenAI ships later means adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

INTEGRATION = 'openai'
METRIC_NAMESPACE = 'openai'

# A flow is consumption during a bucket (tokens, requests, dollars): the check submits the increase
# since its previous submission as a count, so summing in Datadog reproduces OpenAI's figures.
# A level is a state at a point in time (bytes stored): summing it across buckets is meaningless, so
# the check submits the newest value as a gauge.
FLOW = 'flow'
LEVEL = 'level'

USAGE = 'usage'
COSTS = 'costs'

# Largest `limit` (buckets per page) OpenAI accepts for each bucket width; one above is a 400.
USAGE_MAX_LIMIT = {'1m': 1440, '1h': 168, '1d': 31}
COSTS_MAX_LIMIT = {'1d': 180}
BUCKET_SECONDS = {'1m': 60, '1h': 3600, '1d': 86400}

USER_DIMS = ('project_id', 'user_id', 'api_key_id')
MODEL_DIMS = USER_DIMS + ('model',)
# The default split: by project and by model, the dimensions every price depends on. Per-user and per-key
# splits multiply the series (each a billed custom metric) by the users and keys: opt-in. Endpoints add the
# dimensions that change the price of what they count (batch and service tier for completions, size for images).
DEFAULT_DIMS = ('project_id', 'model')


@dataclass(frozen=True)
class Field:
    """A numeric field of a result row."""

    name: str
    unit: str
    description: str
    kind: str = FLOW
    # Older responses name some fields differently (`sessions` before `num_sessions`).
    aliases: tuple[str, ...] = ()
    # Where the number sits in the row when it is nested (`amount.value` in costs).
    path: tuple[str, ...] = ()
    metric_suffix: str = ''

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    kind: str
    result_object: str
    fields: tuple[Field, ...]
    group_by: tuple[str, ...]
    default_group_by: tuple[str, ...]
    max_limit: Mapping[str, int]
    # Dimensions read from a nested place of every row whatever the group_by (the cost currency).
    fixed_dims: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # group_by values the published spec allows but the live API has been seen to refuse with a 400.
    refused_group_by: tuple[str, ...] = ()
    description: str = ''

    @property
    def metric_prefix(self) -> str:
        if self.kind == COSTS:
            return f'{METRIC_NAMESPACE}.api.costs'
        return f'{METRIC_NAMESPACE}.api.usage.{self.name}'

    def metric_name(self, f: Field) -> str:
        return f'{self.metric_prefix}.{f.metric_suffix or f.name}'

    @property
    def flows(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind == FLOW)

    @property
    def levels(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind == LEVEL)


def _tok(name: str, what: str) -> Field:
    return Field(name, 'token', what)


REQUESTS = Field('num_model_requests', 'request', 'Requests made to the model.')

COMPLETIONS_FIELDS = (
    _tok('input_tokens', 'Input tokens, cached and cache-write tokens included.'),
    _tok('output_tokens', 'Output tokens.'),
    REQUESTS,
    _tok('input_cached_tokens', 'Input tokens read from the prompt cache (part of input_tokens).'),
    _tok('input_cache_write_tokens', 'Input tokens written to the prompt cache (part of input_tokens).'),
    _tok('input_uncached_tokens', 'Input tokens neither read from nor written to the cache (part of input_tokens).'),
    _tok('input_text_tokens', 'Text input tokens (part of input_tokens).'),
    _tok('input_audio_tokens', 'Audio input tokens (part of input_tokens).'),
    _tok('input_image_tokens', 'Image input tokens (part of input_tokens).'),
    _tok('input_cached_text_tokens', 'Cached text input tokens (part of input_cached_tokens).'),
    _tok('input_cached_audio_tokens', 'Cached audio input tokens (part of input_cached_tokens).'),
    _tok('input_cached_image_tokens', 'Cached image input tokens (part of input_cached_tokens).'),
    _tok('output_text_tokens', 'Text output tokens (part of output_tokens).'),
    _tok('output_audio_tokens', 'Audio output tokens (part of output_tokens).'),
    _tok('output_image_tokens', 'Image output tokens (part of output_tokens).'),
)


def _usage(name, result_object, fields, group_by, default_group_by=None, description=''):
    return Endpoint(
        name=name,
        path=f'/organization/usage/{name}',
        kind=USAGE,
        result_object=result_object,
        fields=fields,
        group_by=group_by,
        default_group_by=default_group_by if default_group_by is not None else group_by,
        max_limit=USAGE_MAX_LIMIT,
        description=description,
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    _usage(
        'completions',
        'organization.usage.completions.result',
        COMPLETIONS_FIELDS,
        MODEL_DIMS + ('batch', 'service_tier'),
        DEFAULT_DIMS + ('batch', 'service_tier'),
        description='Chat, responses and completions',
    ),
    _usage(
        'embeddings',
        'organization.usage.embeddings.result',
        (_tok('input_tokens', 'Input tokens embedded.'), REQUESTS),
        MODEL_DIMS,
        DEFAULT_DIMS,
        description='Embeddings',
    ),
    _usage(
        'moderations',
        'organization.usage.moderations.result',
        (_tok('input_tokens', 'Input tokens moderated.'), REQUESTS),
        MODEL_DIMS,
        DEFAULT_DIMS,
        description='Moderations',
    ),
    _usage(
        'images',
        'organization.usage.images.result',
        (Field('images', 'item', 'Images generated, edited or varied.'), REQUESTS),
        MODEL_DIMS + ('size', 'source'),
        DEFAULT_DIMS + ('size',),
        description='Images',
    ),
    _usage(
        'audio_speeches',
        'organization.usage.audio_speeches.result',
        (Field('characters', '', 'Characters of text turned into speech.'), REQUESTS),
        MODEL_DIMS,
        DEFAULT_DIMS,
        description='Text to speech',
    ),
    _usage(
        'audio_transcriptions',
        'organization.usage.audio_transcriptions.result',
        (Field('seconds', 'second', 'Seconds of audio transcribed.'), REQUESTS),
        MODEL_DIMS,
        DEFAULT_DIMS,
        description='Speech to text',
    ),
    _usage(
        'vector_stores',
        'organization.usage.vector_stores.result',
        (Field('usage_bytes', 'byte', 'Bytes held in vector stores (a level, not summed across time).', LEVEL),),
        ('project_id',),
        description='Vector store storage',
    ),
    _usage(
        'code_interpreter_sessions',
        'organization.usage.code_interpreter_sessions.result',
        (Field('num_sessions', 'session', 'Code interpreter sessions.', aliases=('sessions',)),),
        ('project_id',),
        description='Code interpreter',
    ),
    _usage(
        'file_search_calls',
        'organization.usage.file_searches.result',
        (Field('num_requests', 'request', 'File search calls.'),),
        USER_DIMS + ('vector_store_id',),
        ('project_id',),
        description='File search',
    ),
    _usage(
        'web_search_calls',
        'organization.usage.web_searches.result',
        (Field('num_requests', 'request', 'Web search calls.'), REQUESTS),
        MODEL_DIMS + ('context_level',),
        DEFAULT_DIMS,
        description='Web search',
    ),
    Endpoint(
        name='costs',
        path='/organization/costs',
        kind=COSTS,
        result_object='organization.costs.result',
        fields=(
            Field(
                'amount',
                'dollar',
                'Cost in the currency of the currency tag (OpenAI bills in usd); the figure that reconciles '
                'to the invoice, before credits.',
                path=('amount', 'value'),
            ),
            # With group_by line_item only (null otherwise): amount / quantity is the unit price billed, which the
            # estimate of spend learns (sources/estimates.py).
            Field(
                'quantity',
                '',
                'Billed quantity of the line item, in the unit named by the quantity_unit tag (tokens, '
                '1000_tokens, images, characters, duration_seconds...); reported with group_by line_item only.',
            ),
        ),
        group_by=('project_id', 'line_item', 'api_key_id'),
        default_group_by=('project_id', 'line_item'),
        max_limit=COSTS_MAX_LIMIT,
        fixed_dims=(('currency', ('amount', 'currency')),),
        refused_group_by=('api_key_id',),
        description='Costs',
    ),
)

ENDPOINTS_BY_NAME: Mapping[str, Endpoint] = {e.name: e for e in ENDPOINTS}
USAGE_ENDPOINTS = tuple(e.name for e in ENDPOINTS if e.kind == USAGE)
COSTS_ENDPOINT = ENDPOINTS_BY_NAME['costs']

# Tags that name what an id tag points at, resolved by the check from the administration API.
NAME_TAGS = {'project_id': 'project_name', 'api_key_id': 'api_key_name', 'user_id': 'user_email'}


@dataclass(frozen=True)
class Metric:
    """One row of metadata.csv."""

    name: str
    type: str
    unit: str
    description: str
    per_unit: str = ''
    orientation: int = 0


def _health(name, type_, unit, description, orientation=0, per_unit=''):
    return Metric(f'{METRIC_NAMESPACE}.check.{name}', type_, unit, description, per_unit, orientation)


MONTH_TO_DATE = Metric(
    f'{METRIC_NAMESPACE}.api.costs.month_to_date',
    'gauge',
    'dollar',
    'Cost of the account since the first of the current UTC month, by currency.',
    orientation=-1,
)
PROJECT_MONTH_TO_DATE = Metric(
    f'{METRIC_NAMESPACE}.api.costs.project_month_to_date',
    'gauge',
    'dollar',
    'Cost of each project since the first of the current UTC month, by currency.',
    orientation=-1,
)

# Estimated spend (sources/estimates.py): derived from the usage the check submits, priced from the bill. Never under
# an openai.api.costs.* name but for the two that describe the bill itself (its reconciliation, its unmapped lines).
ESTIMATED_COST = Metric(
    f'{METRIC_NAMESPACE}.api.usage.estimated_cost',
    'count',
    'dollar',
    'ESTIMATE of the cost of the usage submitted, priced from the unit prices of the bill (or configured prices), '
    'tagged like the usage series plus currency. Not the bill: see openai.api.costs.amount.',
    orientation=-1,
)
UNPRICED_TOKENS = Metric(
    f'{METRIC_NAMESPACE}.api.usage.unpriced_tokens',
    'count',
    'token',
    'Usage submitted for which no unit price is known (no matching line item billed yet, no configured price), by '
    'model and field: it has no estimated cost.',
)
CACHED_SAVINGS = Metric(
    f'{METRIC_NAMESPACE}.api.usage.cached_savings',
    'count',
    'dollar',
    'ESTIMATE of what prompt caching saved: cached input tokens times the difference between the input and the '
    'cached input unit price of the model, tagged like the usage series plus currency.',
    orientation=1,
)
TIER_SAVINGS = Metric(
    f'{METRIC_NAMESPACE}.api.usage.tier_savings',
    'count',
    'dollar',
    'ESTIMATE of what the Batch API and flex processing saved: their tokens times the difference between the '
    'standard and their own unit price, where the bill prices them apart; tagged like the usage series plus currency.',
    orientation=1,
)
ESTIMATE_RATIO = Metric(
    f'{METRIC_NAMESPACE}.api.costs.estimate_ratio',
    'gauge',
    'fraction',
    'Estimated cost divided by billed cost for the most recent day the bill has settled (older than '
    'costs_revision_window_days), by project: how far to trust openai.api.usage.estimated_cost.',
)
UNPRICED_LINE_ITEMS = Metric(
    f'{METRIC_NAMESPACE}.api.costs.unpriced_line_items',
    'gauge',
    'item',
    'Line items of the bill that no rule maps to a usage field: their cost is in openai.api.costs.amount but '
    'usage of that kind gets no estimate.',
)

# -- headroom: how close each project is to OpenAI's own rate limits and spend limits --------------------------


@dataclass(frozen=True)
class RateLimitField:
    """A field of OpenAI's project rate limit object, submitted as the gauge openai.api.rate_limits.<name>."""

    name: str
    unit: str
    per_unit: str
    description: str

    @property
    def metric(self) -> str:
        return f'{METRIC_NAMESPACE}.api.rate_limits.{self.name}'


RATE_LIMIT_FIELDS = (
    RateLimitField('max_requests_per_1_minute', 'request', 'minute', 'Requests per minute'),
    RateLimitField('max_tokens_per_1_minute', 'token', 'minute', 'Tokens per minute'),
    RateLimitField('max_images_per_1_minute', 'item', 'minute', 'Images per minute'),
    RateLimitField('max_audio_megabytes_per_1_minute', 'megabyte', 'minute', 'Audio megabytes per minute'),
    RateLimitField('max_requests_per_1_day', 'request', 'day', 'Requests per day'),
    RateLimitField('batch_1_day_max_input_tokens', 'token', 'day', 'Batch input tokens per day'),
)
RATE_LIMIT_FIELDS_BY_NAME = {f.name: f for f in RATE_LIMIT_FIELDS}

# The usage endpoints whose figures count against a per-minute limit: limit field -> the result fields whose sum
# per minute is what the limit bounds. Requests count num_model_requests, tokens input plus output tokens (where the
# endpoint has output), images count images. Audio megabytes are not in any usage result: no utilization for them.
PER_MINUTE_LIMITS: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    'completions': (
        ('max_requests_per_1_minute', ('num_model_requests',)),
        ('max_tokens_per_1_minute', ('input_tokens', 'output_tokens')),
    ),
    'embeddings': (
        ('max_requests_per_1_minute', ('num_model_requests',)),
        ('max_tokens_per_1_minute', ('input_tokens',)),
    ),
    'moderations': (
        ('max_requests_per_1_minute', ('num_model_requests',)),
        ('max_tokens_per_1_minute', ('input_tokens',)),
    ),
    'images': (
        ('max_requests_per_1_minute', ('num_model_requests',)),
        ('max_images_per_1_minute', ('images',)),
    ),
    'audio_speeches': (('max_requests_per_1_minute', ('num_model_requests',)),),
    'audio_transcriptions': (('max_requests_per_1_minute', ('num_model_requests',)),),
}

RATE_LIMIT_UTILIZATION = Metric(
    f'{METRIC_NAMESPACE}.api.rate_limits.utilization',
    'gauge',
    'fraction',
    'Peak per-minute usage of the trailing window divided by the project\'s rate limit for the model (1 = at the '
    'limit), by project, model (as the limit names it) and limit. A lower bound for tokens: OpenAI also counts '
    'max_tokens of admitted requests.',
    orientation=-1,
)
SPEND_LIMIT_THRESHOLD = Metric(
    f'{METRIC_NAMESPACE}.api.spend_limit.threshold',
    'gauge',
    'dollar',
    'Hard spend limit of the month, for the organization (scope:organization) or a project (scope:project), by '
    'currency and enforcement status.',
)
SPEND_LIMIT_UTILIZATION = Metric(
    f'{METRIC_NAMESPACE}.api.spend_limit.utilization',
    'gauge',
    'fraction',
    'Month-to-date cost divided by the hard spend limit (1 = reached).',
    orientation=-1,
)
SPEND_LIMIT_PROJECTED_UTILIZATION = Metric(
    f'{METRIC_NAMESPACE}.api.spend_limit.projected_utilization',
    'gauge',
    'fraction',
    'Projected month-end cost divided by the hard spend limit (1 or more: the limit is reached before the month '
    'ends at the rate of the last 7 complete days).',
    orientation=-1,
)
SPEND_LIMIT_DAYS_LEFT = Metric(
    f'{METRIC_NAMESPACE}.api.spend_limit.days_left',
    'gauge',
    'day',
    'Days until the hard spend limit is reached at the average daily cost of the last 7 complete days (0: '
    'reached; absent when that cost is 0).',
    orientation=1,
)
PROJECTED_MONTH_END = Metric(
    f'{METRIC_NAMESPACE}.api.costs.projected_month_end',
    'gauge',
    'dollar',
    'Month-to-date cost plus the average daily cost of the last 7 complete days times the days left in the UTC '
    'month, by currency. An estimate.',
    orientation=-1,
)
PROJECT_PROJECTED_MONTH_END = Metric(
    f'{METRIC_NAMESPACE}.api.costs.project_projected_month_end',
    'gauge',
    'dollar',
    'Projected month-end cost of each project (as projected_month_end), by currency. An estimate.',
    orientation=-1,
)

CAN_CONNECT = _health(
    'can_connect', 'gauge', '', '1 when the last run reached OpenAI with a valid admin key, else 0.', 1
)
API_REQUESTS = _health(
    'api.requests', 'count', 'request', 'Requests sent to the OpenAI API, by endpoint and status_code.'
)
API_LATENCY = _health(
    'api.latency', 'gauge', 'second', 'Mean response time of the API requests of the run, by endpoint.', -1
)
API_RETRIES = _health(
    'api.retries', 'count', 'attempt', 'Requests retried after a 429, a 5xx or a timeout, by endpoint and reason.', -1
)
DATA_LAG = _health(
    'data_lag',
    'gauge',
    'second',
    'How far behind the submitted data is: seconds since the endpoint was last read in full.',
    -1,
)
SERIES = _health('series', 'gauge', '', 'Series (group-by combinations) tracked in the re-read window, by endpoint.')
# What the run cost in custom metrics: each distinct context (a metric name with one set of tags) is one.
CONTEXTS = _health(
    'contexts',
    'gauge',
    '',
    'Distinct metric contexts (metric name and tag set, each a custom metric) the run submitted for the '
    "endpoint's usage or cost data (health metrics not included), by endpoint.",
)
RUN_DURATION = _health('run.duration', 'gauge', 'second', 'Wall time of the last run of the check.', -1)
STATE_SIZE = _health('state.size', 'gauge', 'byte', 'Size of the state kept in the persistent cache, by endpoint.')
LOGS_SENT = _health(
    'logs.sent', 'count', 'event', 'Audit log events sent to Datadog Logs (with collect_audit_logs), by endpoint.'
)

DERIVED_METRICS = (
    MONTH_TO_DATE,
    PROJECT_MONTH_TO_DATE,
    ESTIMATED_COST,
    UNPRICED_TOKENS,
    CACHED_SAVINGS,
    TIER_SAVINGS,
    ESTIMATE_RATIO,
    UNPRICED_LINE_ITEMS,
    PROJECTED_MONTH_END,
    PROJECT_PROJECTED_MONTH_END,
)
HEADROOM_METRICS = (
    *(
        Metric(
            f.metric, 'gauge', f.unit, f"{f.description} of the model in the project (OpenAI's rate limit).", f.per_unit
        )
        for f in RATE_LIMIT_FIELDS
    ),
    RATE_LIMIT_UTILIZATION,
    SPEND_LIMIT_THRESHOLD,
    SPEND_LIMIT_UTILIZATION,
    SPEND_LIMIT_PROJECTED_UTILIZATION,
    SPEND_LIMIT_DAYS_LEFT,
)
HEALTH_METRICS = (
    CAN_CONNECT,
    API_REQUESTS,
    API_LATENCY,
    API_RETRIES,
    DATA_LAG,
    SERIES,
    CONTEXTS,
    RUN_DURATION,
    STATE_SIZE,
    LOGS_SENT,
)

SERVICE_CHECK = f'{METRIC_NAMESPACE}.can_connect'


def field_metrics() -> list[Metric]:
    rows = []
    for endpoint in ENDPOINTS:
        for f in endpoint.fields:
            rows.append(
                Metric(
                    endpoint.metric_name(f),
                    'count' if f.kind == FLOW else 'gauge',
                    f.unit,
                    f'{endpoint.description}: {f.description}',
                    orientation=-1 if endpoint.kind == COSTS else 0,
                )
            )
    return rows


def all_metrics() -> list[Metric]:
    return field_metrics() + list(DERIVED_METRICS) + list(HEADROOM_METRICS) + list(HEALTH_METRICS)


METADATA_HEADER = (
    'metric_name',
    'metric_type',
    'interval',
    'unit_name',
    'per_unit_name',
    'description',
    'orientation',
    'integration',
    'short_name',
    'curated_metric',
    'sample_tags',
)


def metadata_rows() -> list[dict]:
    return [
        {
            'metric_name': m.name,
            'metric_type': m.type,
            'interval': '',
            'unit_name': m.unit,
            'per_unit_name': m.per_unit,
            'description': m.description,
            'orientation': str(m.orientation),
            'integration': INTEGRATION,
            'short_name': m.name.split('.', 2)[-1].replace('.', ' ').replace('_', ' '),
            'curated_metric': '',
            'sample_tags': '',
        }
        for m in all_metrics()
    ]


def render_metadata_csv() -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METADATA_HEADER, lineterminator='\n')
    writer.writeheader()
    writer.writerows(metadata_rows())
    return out.getvalue()


if __name__ == '__main__':  # pragma: no cover - maintenance entry point
    import sys

    sys.stdout.write(render_metadata_csv())
