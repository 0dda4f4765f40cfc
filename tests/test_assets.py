"""The integration's assets (dashboards, recommended monitors, README) checked against what the check submits.

`ddev validate` checks the JSON shapes it knows, and tests/test_asset_models.py checks them against Datadog's typed
API models; these tests check the meaning: every metric a dashboard or a monitor queries is in metadata.csv (or
is one of Datadog's own OpenAI integration, from the copy of its metadata.csv in tests/data), every tag it filters
or groups by is one the check sets on that metric,
counts are summed, no formula mixes two endpoints (a widget must keep working when an endpoint is turned off),
monitor queries parse and agree with their thresholds, and the README documents every message the check gives.

`queried_metrics()` is the list of metrics the assets rely on; a test that runs the check against the API
simulator can assert that each of them is actually submitted.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from datadog_checks.openai.catalogue import (
    API_LATENCY,
    API_REQUESTS,
    API_RETRIES,
    CAN_CONNECT,
    CONTEXTS,
    DATA_LAG,
    ENDPOINTS,
    ENDPOINTS_BY_NAME,
    ESTIMATED_COST,
    INTEGRATION,
    LOGS_SENT,
    MONTH_TO_DATE,
    NAME_TAGS,
    PROJECT_MONTH_TO_DATE,
    PROJECT_PROJECTED_MONTH_END,
    PROJECTED_MONTH_END,
    RATE_LIMIT_FIELDS,
    RATE_LIMIT_UTILIZATION,
    RUN_DURATION,
    SERIES,
    SERVICE_CHECK,
    SPEND_LIMIT_DAYS_LEFT,
    SPEND_LIMIT_PROJECTED_UTILIZATION,
    SPEND_LIMIT_THRESHOLD,
    SPEND_LIMIT_UTILIZATION,
    STATE_SIZE,
    all_metrics,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / 'assets' / 'dashboards'
MONITOR_DIR = ROOT / 'assets' / 'monitors'
README = ROOT / 'README.md'
PACKAGE = ROOT / 'datadog_checks' / 'openai'

ACCOUNT_TAG = 'openai_account'

# -- what the check tags each metric with (derived from the catalogue; see check.py) ---------------------


def metric_tag_keys() -> dict[str, frozenset[str]]:
    """Metric name -> the tag keys the check can put on it (besides the instance's own `tags`)."""
    tags: dict[str, frozenset[str]] = {}
    for endpoint in ENDPOINTS:
        keys = {ACCOUNT_TAG, *endpoint.group_by}
        keys.update(NAME_TAGS[d] for d in endpoint.group_by if d in NAME_TAGS)
        keys.update(name for name, _ in endpoint.fixed_dims)
        for f in endpoint.fields:
            tags[endpoint.metric_name(f)] = frozenset(keys)
    # check.submit_month_to_date
    tags[MONTH_TO_DATE.name] = frozenset({ACCOUNT_TAG, 'currency'})
    tags[PROJECT_MONTH_TO_DATE.name] = frozenset({ACCOUNT_TAG, 'project_id', 'project_name', 'currency'})
    # sources/limits.py and sources/utilization.py
    tags[PROJECTED_MONTH_END.name] = tags[MONTH_TO_DATE.name]
    tags[PROJECT_PROJECTED_MONTH_END.name] = tags[PROJECT_MONTH_TO_DATE.name]
    for f in RATE_LIMIT_FIELDS:
        tags[f.metric] = frozenset({ACCOUNT_TAG, 'project_id', 'project_name', 'model'})
    tags[RATE_LIMIT_UTILIZATION.name] = frozenset({ACCOUNT_TAG, 'project_id', 'project_name', 'model', 'limit'})
    for metric in (
        SPEND_LIMIT_THRESHOLD,
        SPEND_LIMIT_UTILIZATION,
        SPEND_LIMIT_PROJECTED_UTILIZATION,
        SPEND_LIMIT_DAYS_LEFT,
    ):
        tags[metric.name] = frozenset({ACCOUNT_TAG, 'scope', 'project_id', 'project_name', 'currency', 'enforcement'})
    # check.report_health and check.commit
    tags[CAN_CONNECT.name] = frozenset({ACCOUNT_TAG})
    tags[API_REQUESTS.name] = frozenset({ACCOUNT_TAG, 'endpoint', 'status_code'})
    tags[API_LATENCY.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    tags[API_RETRIES.name] = frozenset({ACCOUNT_TAG, 'endpoint', 'reason'})
    tags[DATA_LAG.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    tags[SERIES.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    tags[CONTEXTS.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    tags[RUN_DURATION.name] = frozenset({ACCOUNT_TAG})
    tags[STATE_SIZE.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    # sources/costs.py: the billed quantity, tagged as the amount plus its unit
    costs = ENDPOINTS_BY_NAME['costs']
    tags['openai.api.costs.quantity'] = tags['openai.api.costs.amount'] | {'quantity_unit'}
    # sources/estimates.py: tagged like any usage series they price, plus the currency
    usage = frozenset().union(*(tags[e.metric_name(f)] for e in ENDPOINTS if e is not costs for f in e.fields))
    for name in (ESTIMATED_COST.name, 'openai.api.usage.cached_savings', 'openai.api.usage.tier_savings'):
        tags[name] = usage | {'currency'}
    tags['openai.api.usage.unpriced_tokens'] = frozenset({ACCOUNT_TAG, 'model', 'kind'})
    tags['openai.api.costs.estimate_ratio'] = frozenset({ACCOUNT_TAG, 'project_id', 'project_name', 'currency'})
    tags['openai.api.costs.unpriced_line_items'] = frozenset({ACCOUNT_TAG})
    tags[LOGS_SENT.name] = frozenset({ACCOUNT_TAG, 'endpoint'})
    return tags


METRIC_TAGS = metric_tag_keys()
# The service check carries the account and the instance tags only.
SERVICE_CHECK_TAGS = frozenset({ACCOUNT_TAG})
# Every tag key the check sets somewhere: the group_by dimensions of all endpoints, the fixed dimensions
# (currency), the name tags next to ids, the account, and the health tags (endpoint, status_code, reason).
ALL_TAGS = frozenset().union(*METRIC_TAGS.values(), SERVICE_CHECK_TAGS)


# The source of the metrics of OpenAI's limits (sources/limits.py, sources/utilization.py).
HEADROOM = 'headroom'


def metric_source(metric: str) -> str:
    """The OpenAI endpoint a metric comes from ('completions', 'costs'...), 'check' for health metrics, or
    DATADOG_INTEGRATION for a metric of Datadog's own OpenAI integration."""
    if metric in DATADOG_METRICS:
        return DATADOG_INTEGRATION
    for endpoint in ENDPOINTS:
        if metric.startswith(endpoint.metric_prefix + '.'):
            return endpoint.name
    if metric.startswith(f'{INTEGRATION}.api.costs.'):
        return 'costs'
    if metric.startswith((f'{INTEGRATION}.api.rate_limits.', f'{INTEGRATION}.api.spend_limit.')):
        return HEADROOM
    if metric.startswith(f'{INTEGRATION}.api.usage.'):
        return 'estimates'  # sources/estimates.py: derived from every usage endpoint
    return 'check'


def load_metadata() -> dict[str, dict]:
    with open(ROOT / 'metadata.csv', newline='') as f:
        return {row['metric_name']: row for row in csv.DictReader(f)}


# The metrics of Datadog's own OpenAI integration (ddtrace's `openai.request.duration`, `openai.request.error`,
# `openai.tokens.total`...), from a copy of its metadata.csv (tests/data/README.md says where it comes from): the
# only names besides this check's that a dashboard or monitor may query, so that a widget can show what the
# applications saw next to what OpenAI billed. The check never submits them.
DATADOG_METADATA = ROOT / 'tests' / 'data' / 'datadog_openai_metadata.csv'
DATADOG_INTEGRATION = 'datadog_integration'


def load_datadog_metadata() -> dict[str, dict]:
    with open(DATADOG_METADATA, newline='') as f:
        return {row['metric_name']: row for row in csv.DictReader(f)}


DATADOG_METRICS = frozenset(load_datadog_metadata())
# The tags ddtrace's OpenAI integration puts on its metrics, as its documentation lists them
# (dd-trace-py, ddtrace/contrib/openai: unified service tagging, then the request's endpoint, method, model,
# organization and obfuscated key; errors also carry the error type).
DDTRACE_TAGS = frozenset(
    {
        'service',
        'env',
        'version',
        'openai.request.endpoint',
        'openai.request.method',
        'openai.request.model',
        'openai.organization.name',
        'openai.organization.id',
        'openai.user.api_key',
        'error_type',
    }
)
# The only metrics of Datadog's integration the dashboards may show: those of ddtrace the issue names.
DDTRACE_METRICS = frozenset({'openai.request.duration', 'openai.request.error', 'openai.tokens.total'})


def metric_metadata(metric: str) -> dict | None:
    """The metadata.csv row of a metric a dashboard or monitor may query: this check's, or Datadog's integration's
    for its own names; None for any other name, which no asset may query."""
    return load_metadata().get(metric) or load_datadog_metadata().get(metric)


# -- metric queries ---------------------------------------------------------------------------------------

# `space_agg:metric{filter} by {tags}.fn(...).fn(...)`: the unit of every dashboard and monitor query.
METRIC_QUERY = re.compile(
    r'(?P<space>sum|avg|max|min|count):(?P<metric>[A-Za-z][\w.]*)\{(?P<filter>[^{}]*)\}'
    r'(?:\s*by\s*\{(?P<by>[^{}]*)\})?'
    r'(?P<functions>(?:\.\w+\([^()]*\))*)'
)
TEMPLATE_VARIABLE = re.compile(r'^\$(?P<name>\w+)(?:\.value)?$')


@dataclass
class MetricQuery:
    text: str
    space: str
    metric: str
    filters: list[str]  # `key:value`, `!key:value`, `key` or `*`
    template_variables: list[str]  # names, without the `$`
    # `key:$name.value`: a template variable applied to another tag key than its prefix (name -> key)
    template_keys: dict[str, str]
    group_by: list[str]
    functions: list[tuple[str, str]]  # (name, raw arguments)

    @property
    def function_names(self) -> list[str]:
        return [name for name, _ in self.functions]

    def filter_keys(self) -> list[str]:
        keys = []
        for item in self.filters:
            if item == '*':
                continue
            keys.append(item.lstrip('!').split(':', 1)[0])
        return keys


def parse_metric_query(match: re.Match) -> MetricQuery:
    filters, tvars, tkeys = [], [], {}
    for raw in match['filter'].split(','):
        item = raw.strip()
        if not item:
            continue
        tv = TEMPLATE_VARIABLE.match(item)
        keyed = re.fullmatch(r'(?P<key>[\w.]+):\$(?P<name>\w+)\.value', item)
        if tv:
            tvars.append(tv['name'])
        elif keyed:
            tvars.append(keyed['name'])
            tkeys[keyed['name']] = keyed['key']
        else:
            filters.append(item)
    group_by = [t.strip() for t in (match['by'] or '').split(',') if t.strip()]
    functions = re.findall(r'\.(\w+)\(([^()]*)\)', match['functions'] or '')
    return MetricQuery(match.group(0), match['space'], match['metric'], filters, tvars, tkeys, group_by, functions)


def metric_queries_in(text: str) -> list[MetricQuery]:
    return [parse_metric_query(m) for m in METRIC_QUERY.finditer(text)]


# -- walking the dashboards -------------------------------------------------------------------------------


def load_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob('*.json'))


def monitor_files() -> list[Path]:
    """The monitors of metrics and service checks (the log monitors of the audit log: tests/test_audit_assets.py)."""
    return [p for p in all_monitor_files() if load_json(p)['definition']['type'] != 'log alert']


def log_monitor_files() -> list[Path]:
    return [p for p in all_monitor_files() if load_json(p)['definition']['type'] == 'log alert']


def all_monitor_files() -> list[Path]:
    return sorted(MONITOR_DIR.glob('*.json'))


def iter_widgets(widgets: list) -> Iterator[dict]:
    for widget in widgets:
        yield widget
        yield from iter_widgets(widget.get('definition', {}).get('widgets', []))


@dataclass
class Request:
    dashboard: str
    widget: dict
    request: dict

    @property
    def title(self) -> str:
        return self.widget['definition'].get('title', '')

    def queries(self) -> dict[str, MetricQuery]:
        """Query name -> parsed query, for the formula-and-functions form (and `q` as `query1`)."""
        out = {}
        for query in self.request.get('queries', []):
            if query.get('data_source') == 'logs':
                continue  # the audit log group's log queries: see test_every_widget_query_parses
            if query.get('data_source') == 'metrics':
                parsed = metric_queries_in(query['query'])
                assert len(parsed) == 1, f'{self.dashboard}: {self.title!r}: cannot parse {query["query"]!r}'
                out[query['name']] = parsed[0]
        if 'q' in self.request:
            for i, parsed in enumerate(metric_queries_in(self.request['q']), 1):
                out[f'query{i}'] = parsed
        return out

    def formulas(self) -> list[str]:
        return [f['formula'] for f in self.request.get('formulas', [])]


def iter_requests(dashboard_path: Path) -> Iterator[Request]:
    board = load_json(dashboard_path)
    for widget in iter_widgets(board['widgets']):
        requests = widget['definition'].get('requests')
        if isinstance(requests, dict):  # hostmap-style requests
            requests = list(requests.values())
        for request in requests or []:
            yield Request(dashboard_path.name, widget, request)


def dashboard_metric_queries() -> Iterator[tuple[str, MetricQuery]]:
    for path in dashboard_files():
        for request in iter_requests(path):
            for query in request.queries().values():
                yield f'{path.name}: {request.title}', query


# -- the monitor query grammar ----------------------------------------------------------------------------

COMPARATORS = ('>=', '<=', '==', '!=', '>', '<')
METRIC_MONITOR = re.compile(
    r'^(?P<agg>avg|sum|min|max|last)\((?P<window>last_\d+[mhdw])\):(?P<expression>.+?)\s*'
    r'(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>-?\d+(?:\.\d+)?)$',
    re.S,
)
SERVICE_CHECK_MONITOR = re.compile(
    r'^"(?P<check>[\w.]+)"\.over\((?P<over>"[^"]*"(?:\s*,\s*"[^"]*")*)\)'
    r'(?:\.exclude\((?P<exclude>"[^"]*"(?:\s*,\s*"[^"]*")*)\))?'
    r'\.by\((?P<by>"[^"]*"(?:\s*,\s*"[^"]*")*)\)'
    r'\.last\((?P<last>\d+)\)\.count_by_status\(\)$'
)
WINDOW_SECONDS = {'m': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}


def window_seconds(window: str) -> int:
    m = re.fullmatch(r'last_(\d+)([mhdw])', window)
    assert m, f'not a time window: {window!r}'
    return int(m[1]) * WINDOW_SECONDS[m[2]]


def split_top_level(text: str, separators: str) -> list[str]:
    """Split on the separator characters found outside (), {}, and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in '\'"':
            quote = ch
        elif ch in '({':
            depth += 1
        elif ch in ')}':
            depth -= 1
        elif depth == 0 and ch in separators:
            parts.append(''.join(current))
            parts.append(ch)
            current = []
            continue
        current.append(ch)
    parts.append(''.join(current))
    return parts


@dataclass
class ParsedMonitor:
    kind: str  # 'metric', 'anomaly' or 'service_check'
    threshold: float | None = None
    comparator: str | None = None
    time_aggregation: str | None = None
    window: str | None = None
    terms: list[MetricQuery] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)
    anomaly: dict = field(default_factory=dict)
    check: str | None = None
    over: list[str] = field(default_factory=list)
    by: list[str] = field(default_factory=list)
    last: int | None = None

    @property
    def group_by(self) -> list[str]:
        if self.kind == 'service_check':
            return self.by
        groups = {tuple(t.group_by) for t in self.terms}
        assert len(groups) == 1, f'terms group by different tags: {groups}'
        return list(groups.pop())


def parse_metric_expression(expression: str) -> tuple[list[MetricQuery], list[str]]:
    terms, operators = [], []
    for i, part in enumerate(split_top_level(expression.strip(), '+-*/')):
        if i % 2:
            operators.append(part)
            continue
        part = part.strip()
        m = METRIC_QUERY.fullmatch(part)
        assert m, f'not a metric query: {part!r}'
        terms.append(parse_metric_query(m))
    return terms, operators


def parse_anomaly_arguments(arguments: str) -> tuple[str, dict]:
    parts = [p.strip() for p in split_top_level(arguments, ',')[::2]]
    assert len(parts) >= 3, f'anomalies() needs a query, an algorithm and deviations: {arguments!r}'
    metric_expression, algorithm, deviations, *keywords = parts
    params = {'algorithm': algorithm.strip('\'"'), 'deviations': float(deviations)}
    for keyword in keywords:
        key, _, value = keyword.partition('=')
        assert value, f'anomalies() argument is not key=value: {keyword!r}'
        params[key.strip()] = value.strip().strip('\'"')
    return metric_expression, params


def parse_monitor_query(query: str, monitor_type: str) -> ParsedMonitor:
    if monitor_type == 'service check':
        m = SERVICE_CHECK_MONITOR.fullmatch(query)
        assert m, f'not a service check monitor query: {query!r}'
        return ParsedMonitor(
            kind='service_check',
            check=m['check'],
            over=re.findall(r'"([^"]*)"', m['over']),
            by=[b for b in re.findall(r'"([^"]*)"', m['by']) if b != '*'],
            last=int(m['last']),
        )
    m = METRIC_MONITOR.fullmatch(query.strip())
    assert m, f'not a metric monitor query: {query!r}'
    parsed = ParsedMonitor(
        kind='metric',
        threshold=float(m['threshold']),
        comparator=m['op'],
        time_aggregation=m['agg'],
        window=m['window'],
    )
    expression = m['expression'].strip()
    anomalies = re.fullmatch(r'anomalies\((?P<arguments>.*)\)', expression, re.S)
    if anomalies:
        parsed.kind = 'anomaly'
        expression, parsed.anomaly = parse_anomaly_arguments(anomalies['arguments'])
    parsed.terms, parsed.operators = parse_metric_expression(expression)
    return parsed


def monitor_metric_queries() -> Iterator[tuple[str, MetricQuery]]:
    for path in monitor_files():
        definition = load_json(path)['definition']
        parsed = parse_monitor_query(definition['query'], definition['type'])
        for term in parsed.terms:
            yield path.name, term


def queried_metrics() -> set[str]:
    """Every metric of this check that a dashboard widget or a recommended monitor queries (not Datadog's
    integration's: the check does not submit those).

    For a test that runs the check (against the API simulator) and asserts each one is submitted.
    """
    return all_queried_metrics() - DATADOG_METRICS


def all_queried_metrics() -> set[str]:
    metrics = {q.metric for _, q in dashboard_metric_queries()}
    metrics.update(q.metric for _, q in monitor_metric_queries())
    return metrics


def queried_service_checks() -> set[str]:
    checks = set()
    for path in dashboard_files():
        for widget in iter_widgets(load_json(path)['widgets']):
            if widget['definition']['type'] == 'check_status':
                checks.add(widget['definition']['check'])
    for path in monitor_files():
        definition = load_json(path)['definition']
        if definition['type'] == 'service check':
            checks.add(parse_monitor_query(definition['query'], 'service check').check)
    return checks


# == tests: dashboards ====================================================================================

EXPECTED_DASHBOARDS = {
    'openai_usage_overview.json': 'OpenAI Overview',
    'openai_costs_budget.json': 'OpenAI Costs and Budget',
    'openai_collector_health.json': 'OpenAI Collector Health',
}
EXPECTED_MONITORS = {
    'spend_above_budget.json',
    'project_spend_above_budget.json',
    'estimated_spend_spike.json',
    'token_usage_anomaly.json',
    'can_connect.json',
    'data_stale.json',
    'rate_limit_requests.json',
    'rate_limit_tokens.json',
    'spend_limit_projected.json',
    'spend_limit_reached.json',
}
EXPECTED_LOG_MONITORS = {
    'audit_admin_key_changed.json',
    'audit_failed_logins.json',
    'audit_owner_role_granted.json',
    'audit_limits_changed.json',
}
# Widgets allowed to put two endpoints in one formula: the ratio is meaningless without both.
CROSS_ENDPOINT_FORMULAS = {
    'Cost per 1k completions tokens by project',
    'Cost per 1k completions tokens, all projects',
}


def test_expected_assets_exist():
    assert {p.name for p in dashboard_files()} == set(EXPECTED_DASHBOARDS)
    assert {p.name for p in monitor_files()} == EXPECTED_MONITORS
    assert {p.name for p in log_monitor_files()} == EXPECTED_LOG_MONITORS


def test_manifest_lists_the_assets():
    manifest_path = ROOT / 'manifest.json'
    if not manifest_path.exists():
        pytest.skip('no manifest.json yet')
    assets = load_json(manifest_path)['assets']
    for kind, files in (('dashboards', dashboard_files()), ('monitors', all_monitor_files())):
        listed = {Path(p).name for p in assets.get(kind, {}).values()}
        assert listed == {p.name for p in files}, kind
    for title, path in assets.get('dashboards', {}).items():
        assert load_json(ROOT / path)['title'] == title
    for title, path in assets.get('monitors', {}).items():
        assert load_json(ROOT / path)['title'] == title


@pytest.mark.parametrize('path', dashboard_files(), ids=lambda p: p.name)
def test_dashboard_shape(path):
    board = load_json(path)
    for key in ('title', 'description', 'layout_type', 'widgets', 'template_variables'):
        assert key in board, f'{path.name} lacks {key}'
    assert board['title'] == EXPECTED_DASHBOARDS[path.name]
    assert board['layout_type'] == 'ordered'
    assert board['widgets']
    ids = []
    for widget in iter_widgets(board['widgets']):
        definition = widget['definition']
        assert definition.get('type'), widget
        assert 'layout' in widget, f'{path.name}: widget {definition.get("title")!r} has no layout'
        layout = widget['layout']
        assert 0 <= layout['x'] and layout['x'] + layout['width'] <= 12, definition.get('title')
        ids.append(widget['id'])
        if definition['type'] == 'group':
            assert definition['layout_type'] == 'ordered'
            bottom = max(w['layout']['y'] + w['layout']['height'] for w in definition['widgets'])
            assert layout['height'] >= bottom, f'{definition["title"]!r} is shorter than its widgets'
    assert len(ids) == len(set(ids)), f'{path.name}: duplicate widget ids'


@pytest.mark.parametrize('path', dashboard_files(), ids=lambda p: p.name)
def test_dashboard_template_variables(path):
    board = load_json(path)
    names = []
    for tv in board['template_variables']:
        assert set(tv) >= {'name', 'prefix', 'default'}, tv
        assert tv['default'] == '*', tv
        assert isinstance(tv.get('available_values', []), list)
        assert tv['prefix'] in ALL_TAGS, f'{path.name}: template variable {tv["name"]} uses a tag the check never sets'
        names.append(tv['name'])
    assert len(names) == len(set(names))
    used = set()
    for request in iter_requests(path):
        for query in request.queries().values():
            used.update(query.template_variables)
    for widget in iter_widgets(board['widgets']):
        for tag in widget['definition'].get('tags', []):
            if tag.startswith('$'):
                used.add(tag[1:])
    assert used <= set(names), f'{path.name}: undefined template variables {used - set(names)}'
    assert set(names) <= used, f'{path.name}: template variables used nowhere {set(names) - used}'


def test_usage_overview_template_variables():
    board = load_json(DASHBOARD_DIR / 'openai_usage_overview.json')
    prefixes = {tv['name']: tv['prefix'] for tv in board['template_variables']}
    assert prefixes == {
        'account': 'openai_account',
        'project': 'project_name',
        'model': 'model',
        'key': 'api_key_name',
        'user': 'user_id',
    }
    costs = load_json(DASHBOARD_DIR / 'openai_costs_budget.json')
    assert {tv['name']: tv['prefix'] for tv in costs['template_variables']} == {
        'account': 'openai_account',
        'project': 'project_name',
    }


def metrics_not_allowed(queries) -> list[str]:
    """`where: metric` for each query, of (where, MetricQuery) pairs, of a metric that is neither this check's nor
    one of Datadog's OpenAI integration."""
    return [f'{where}: {query.metric}' for where, query in queries if not metric_metadata(query.metric)]


def test_every_queried_metric_is_in_metadata():
    metadata = load_metadata()
    catalogue = {m.name for m in all_metrics()}
    assert set(metadata) == catalogue, 'metadata.csv is out of date: python -m datadog_checks.openai.catalogue'
    refused = metrics_not_allowed([*dashboard_metric_queries(), *monitor_metric_queries()])
    assert not refused, (
        f"neither in metadata.csv nor in Datadog's OpenAI integration's ({DATADOG_METADATA.relative_to(ROOT)}): "
        f'{refused}'
    )


def test_a_foreign_metric_is_allowed_only_if_datadogs_integration_has_it():
    """Ours and the names of the copy pass; any other, even a name Datadog's integration submits without listing
    it there (its hosted crawler's `openai.completions.*`), a misspelling or another integration's, is refused."""
    names = [
        'openai.api.costs.amount',
        'openai.request.duration',
        'openai.request.error',
        'openai.tokens.total',
        'openai.completions.input_tokens',
        'openai.request.durations',
        'openai.tokens',
        'aws.ec2.cpu',
    ]
    widget = {'definition': {'type': 'timeseries', 'title': 'Beside ours'}}
    request = {
        'queries': [
            {'data_source': 'metrics', 'name': f'query{i}', 'query': f'sum:{name}{{$account}}.as_count()'}
            for i, name in enumerate(names, 1)
        ]
    }
    queries = [('sample.json: Beside ours', q) for q in Request('sample.json', widget, request).queries().values()]
    assert [q.metric for _, q in queries] == names
    assert metrics_not_allowed(queries) == [
        'sample.json: Beside ours: openai.completions.input_tokens',
        'sample.json: Beside ours: openai.request.durations',
        'sample.json: Beside ours: openai.tokens',
        'sample.json: Beside ours: aws.ec2.cpu',
    ]
    assert metric_metadata('openai.request.error')['metric_type'] == 'count'  # the count rule applies to it too


def test_datadogs_metadata_copy():
    """The copy says where it comes from, reads as a metadata.csv, and shares no name with this check (the README
    promises both sets of metrics can be collected side by side)."""
    readme = (DATADOG_METADATA.parent / 'README.md').read_text()
    section = readme.split(f'## {DATADOG_METADATA.name}\n', 1)[1].split('\n## ', 1)[0]
    assert '- Source repository: https://github.com/DataDog/integrations-core\n' in section
    assert '- Source path: openai/metadata.csv\n' in section
    assert re.search(r'^- Source commit: [0-9a-f]{40}$', section, re.M)
    with open(DATADOG_METADATA, newline='') as f:
        header = next(csv.reader(f))
    with open(ROOT / 'metadata.csv', newline='') as f:
        ours = next(csv.reader(f))
    assert header == ours[: len(header)], 'the columns of a metadata.csv (ours has the newer sample_tags as well)'
    theirs = load_datadog_metadata()
    assert all(name.startswith('openai.') and row['integration'] == 'openai' for name, row in theirs.items())
    assert all(row['metric_type'] in ('gauge', 'count', 'rate', 'distribution') for row in theirs.values())
    assert not DATADOG_METRICS & {m.name for m in all_metrics()}


def test_every_widget_query_parses():
    for path in dashboard_files():
        for request in iter_requests(path):
            for query in request.request.get('queries', []):
                if query.get('data_source') == 'logs':
                    # The audit log group: the check's own logs only.
                    assert query['search']['query'].startswith('source:openai'), f'{path.name}: {request.title!r}'
                    continue
                assert query.get('data_source') == 'metrics', f'{path.name}: {request.title!r}'
                assert METRIC_QUERY.fullmatch(query['query']), f'{path.name}: cannot parse {query["query"]!r}'


@pytest.mark.parametrize(
    'where, query',
    [pytest.param(w, q, id=f'{w}|{q.text}') for w, q in [*dashboard_metric_queries(), *monitor_metric_queries()]],
)
def test_query_tags_are_set_on_the_metric(where, query):
    """Filters, group-bys and template variables only name tags the check puts on that very metric.

    A template variable applied to a metric without its tag would empty the widget as soon as it is set
    (vector stores have no `model`); a group-by on such a tag shows a single `N/A` group.
    """
    if query.metric in DATADOG_METRICS:
        assert query.metric in DDTRACE_METRICS, f'{where}: {query.metric} is not one of the ddtrace metrics shown'
        tags = DDTRACE_TAGS
    else:
        tags = METRIC_TAGS[query.metric]
    for key in query.filter_keys():
        assert key in tags, f'{where}: {query.metric} has no tag {key}'
    for key in query.group_by:
        assert key in tags, f'{where}: {query.metric} cannot be grouped by {key}'
    if '.json: ' not in where:
        return  # a monitor: no template variables
    board = load_json(DASHBOARD_DIR / where.split(': ', 1)[0])
    prefixes = {tv['name']: tv['prefix'] for tv in board['template_variables']}
    for name in query.template_variables:
        key = query.template_keys.get(name, prefixes[name])
        assert key in tags, f'{where}: ${name} ({key}) does not apply to {query.metric}'


@pytest.mark.parametrize(
    'where, query',
    [pytest.param(w, q, id=f'{w}|{q.text}') for w, q in [*dashboard_metric_queries(), *monitor_metric_queries()]],
)
def test_counts_are_summed_and_gauges_are_not_counted(where, query):
    kind = metric_metadata(query.metric)['metric_type']
    if kind == 'count':
        assert query.space == 'sum', f'{where}: a count must be summed across series: {query.text}'
        assert 'as_count' in query.function_names, f'{where}: a count needs .as_count(): {query.text}'
        for name, arguments in query.functions:
            if name == 'rollup':
                assert arguments.split(',')[0].strip() == 'sum', f'{where}: counts roll up with sum: {query.text}'
    else:
        assert 'as_count' not in query.function_names, f'{where}: {query.metric} is a gauge: {query.text}'
        assert 'as_rate' not in query.function_names, f'{where}: {query.metric} is a gauge: {query.text}'


def test_no_formula_mixes_endpoints():
    """A formula over two endpoints breaks when one of them is turned off in usage_endpoints."""
    for path in dashboard_files():
        for request in iter_requests(path):
            queries = request.queries()
            logs = {q['name'] for q in request.request.get('queries', []) if q.get('data_source') == 'logs'}
            for formula in request.formulas():
                names = set(re.findall(r'\b(query\d+)\b', formula)) - logs
                assert names <= set(queries), f'{path.name}: {request.title!r}: {formula} names unknown queries'
                sources = {metric_source(queries[n].metric) for n in names}
                if len(sources) > 1:
                    assert request.title in CROSS_ENDPOINT_FORMULAS, (
                        f'{path.name}: {request.title!r}: formula {formula!r} combines {sorted(sources)}'
                    )
    for path in monitor_files():
        definition = load_json(path)['definition']
        parsed = parse_monitor_query(definition['query'], definition['type'])
        assert len({metric_source(t.metric) for t in parsed.terms}) <= 1, path.name


def test_cross_endpoint_formulas_explain_themselves():
    """The one ratio over two endpoints (cost per 1k tokens) comes with a note giving its caveat."""
    board = load_json(DASHBOARD_DIR / 'openai_costs_budget.json')
    titles = {w['definition'].get('title') for w in iter_widgets(board['widgets'])}
    assert CROSS_ENDPOINT_FORMULAS <= titles
    notes = ' '.join(
        w['definition']['content'] for w in iter_widgets(board['widgets']) if w['definition']['type'] == 'note'
    )
    assert 'not split costs by model' in notes


def test_every_dashboard_explains_counts():
    for name in ('openai_usage_overview.json', 'openai_costs_budget.json'):
        board = load_json(DASHBOARD_DIR / name)
        notes = ' '.join(
            w['definition']['content'] for w in iter_widgets(board['widgets']) if w['definition']['type'] == 'note'
        )
        assert 'count' in notes and 'each run' in notes.lower(), name


def test_usage_dashboard_covers_every_endpoint():
    board = DASHBOARD_DIR / 'openai_usage_overview.json'
    covered = {metric_source(q.metric) for w, q in dashboard_metric_queries() if w.startswith(board.name)}
    usage = {e.name for e in ENDPOINTS if e.kind == 'usage'}
    assert usage <= covered, f'no widget for {usage - covered}'


def test_collector_health_covers_every_health_metric():
    board = 'openai_collector_health.json'
    queried = {q.metric for w, q in dashboard_metric_queries() if w.startswith(board)}
    health = {m.name for m in all_metrics() if metric_source(m.name) == 'check'}
    assert health <= queried, f'not on the health dashboard: {health - queried}'
    assert SERVICE_CHECK in queried_service_checks()


def test_queried_metrics_helper():
    metrics = queried_metrics()
    assert metrics <= {m.name for m in all_metrics()}
    assert MONTH_TO_DATE.name in metrics and DATA_LAG.name in metrics
    assert 'openai.api.usage.completions.input_tokens' in metrics
    assert queried_service_checks() == {SERVICE_CHECK}


# -- what a user sees first, and Datadog's dashboard conventions --------------------------------------------

OVERVIEW = DASHBOARD_DIR / 'openai_usage_overview.json'
# Words a title keeps in lower case: short function words, and names spelled that way.
LOWER_WORDS = frozenset(
    {'a', 'an', 'and', 'as', 'at', 'by', 'for', 'in', 'of', 'on', 'or', 'the', 'to', 'vs', 'per', 'ddtrace'}
)
TIMEFRAME_IN_TITLE = re.compile(
    r'\b(past|last|previous|this) (\d+ )?(minutes?|hours?|days?|weeks?|months?)\b|selected time frame|\(\d+[mhdw]\)',
    re.IGNORECASE,
)


def groups_of(board: dict) -> list[dict]:
    return [w for w in board['widgets'] if w['definition']['type'] == 'group']


def widget_metrics(widget: dict) -> set[str]:
    metrics = set()
    for request in widget['definition'].get('requests', []):
        for query in request.get('queries', []):
            metrics.update(q.metric for q in metric_queries_in(query.get('query', '')))
    return metrics


def test_overview_first_screen_answers_the_first_questions():
    """The first group, on screen without scrolling: spend, usage, health and the monitors, before any note."""
    board = load_json(OVERVIEW)
    first = board['widgets'][0]
    assert first['definition']['type'] == 'group' and first['definition']['title'] == 'Overview'
    assert first['layout']['height'] <= 8, 'the overview group must fit on a laptop screen without scrolling'
    widgets = first['definition']['widgets']
    assert not [w for w in widgets if w['definition']['type'] == 'note'], 'notes belong below the first screen'
    metrics = set().union(*(widget_metrics(w) for w in widgets))
    wanted = {
        MONTH_TO_DATE.name,  # month-to-date spend
        PROJECT_MONTH_TO_DATE.name,  # top projects by spend
        'openai.api.usage.completions.input_tokens',
        'openai.api.usage.completions.output_tokens',
        'openai.api.usage.completions.num_model_requests',
        DATA_LAG.name,
        PROJECTED_MONTH_END.name,  # projected month end
        SPEND_LIMIT_UTILIZATION.name,  # against the spend limit
        SPEND_LIMIT_PROJECTED_UTILIZATION.name,
        ESTIMATED_COST.name,  # estimated spend today, top models by spend
        RATE_LIMIT_UTILIZATION.name,  # the highest rate-limit utilization
    }
    assert wanted <= metrics, f'missing from the first screen: {wanted - metrics}'
    kinds = {w['definition']['type']: w['definition'] for w in widgets}
    assert kinds['check_status']['check'] == SERVICE_CHECK
    assert kinds['manage_status']['query'] == 'tag:integration:openai'
    for path in monitor_files():
        assert 'integration:openai' in load_json(path)['tags'], f'{path.name} would not show in the monitor summary'
    by_project = [
        w
        for w in widgets
        if w['definition']['type'] == 'toplist' and 'by {project_name}' in json.dumps(w['definition']['requests'])
    ]
    assert by_project, 'no top projects by spend'


@pytest.mark.parametrize('path', dashboard_files(), ids=lambda p: p.name)
def test_dashboard_conventions(path):
    board = load_json(path)
    groups = groups_of(board)
    assert len(groups) == len(board['widgets']), f'{path.name}: every widget sits in a group'
    assert len({g['definition']['background_color'] for g in groups}) == 1, f'{path.name}: one group color'
    for group in groups:
        title = group['definition']['title']
        for i, word in enumerate(title.replace('(', ' ').replace(')', ' ').split()):
            if i and word.lower() in LOWER_WORDS:
                assert word.islower() or word == 'ddtrace', f'{path.name}: {title!r}: {word!r} in lower case'
            else:
                assert word[0].isupper() or word == 'ddtrace', (
                    f'{path.name}: group title {title!r} is not in title case'
                )
    palettes = set()
    for widget in iter_widgets(board['widgets']):
        definition = widget['definition']
        title = definition.get('title', '')
        assert not TIMEFRAME_IN_TITLE.search(title), (
            f'{path.name}: {title!r}: a time frame belongs in the widget settings'
        )
        if definition['type'] == 'timeseries':
            assert widget['layout']['width'] >= 4, f'{path.name}: {title!r} is narrower than 4 columns'
            for request in definition['requests']:
                kinds = {
                    metric_metadata(m)['metric_type'] for m in widget_metrics({'definition': {'requests': [request]}})
                }
                expected = 'bars' if kinds == {'count'} else 'line'
                assert request['display_type'] == expected, f'{path.name}: {title!r}: {sorted(kinds)} as {expected}'
        for request in definition.get('requests', []):
            if isinstance(request, dict) and 'palette' in request.get('style', {}):
                palettes.add(request['style']['palette'])
        if 'palette' in definition.get('style', {}):
            palettes.add(definition['style']['palette'])
    assert len(palettes) <= 1, f'{path.name}: one color scheme, not {sorted(palettes)}'
    about = [g for g in groups if g['definition']['title'] == 'About']
    assert len(about) == 1 and about[0]['definition'].get('banner_img', '').startswith('/static/images/logos/openai')
    links = ' '.join(w['definition']['content'] for w in about[0]['definition']['widgets'])
    assert 'https://github.com/datadog-openai/datadog-openai#' in links, f'{path.name}: About links to the README'


@pytest.mark.parametrize('path', dashboard_files(), ids=lambda p: p.name)
def test_every_template_variable_filters_every_widget_it_can(path):
    board = load_json(path)
    prefixes = {tv['name']: tv['prefix'] for tv in board['template_variables']}
    for request in iter_requests(path):
        for query in request.queries().values():
            tags = DDTRACE_TAGS if query.metric in DATADOG_METRICS else METRIC_TAGS[query.metric]
            if 'scope:organization' in query.filters:
                tags = tags - {'project_id', 'project_name'}  # the organization's spend limit has no project
            for name, prefix in prefixes.items():
                applies = prefix in tags or (query.metric in DATADOG_METRICS and name == 'model')
                if applies:
                    assert name in query.template_variables, (
                        f'{path.name}: {request.title!r}: ${name} does not filter {query.text}'
                    )
    for widget in iter_widgets(board['widgets']):
        definition = widget['definition']
        if definition['type'] == 'check_status' and 'account' in prefixes:
            assert '$account' in definition['tags'], f'{path.name}: {definition["title"]!r} ignores $account'


def test_ddtrace_group_is_marked_and_beside_the_billed_figures():
    board = load_json(OVERVIEW)
    group = next(g for g in groups_of(board) if 'ddtrace' in g['definition']['title'])
    widgets = group['definition']['widgets']
    metrics = set().union(*(widget_metrics(w) for w in widgets))
    assert DDTRACE_METRICS <= metrics
    assert 'openai.api.usage.completions.input_tokens' in metrics, 'the billed figures stand next to the ddtrace ones'
    notes = ' '.join(w['definition']['content'] for w in widgets if w['definition']['type'] == 'note')
    assert 'Needs ddtrace' in notes


# == tests: monitors ======================================================================================


@pytest.mark.parametrize('path', monitor_files(), ids=lambda p: p.name)
def test_monitor_shape(path):
    monitor = load_json(path)
    assert monitor['version'] == 2
    for key in ('created_at', 'last_updated_at'):
        assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', monitor[key]), key
    assert monitor['created_at'] <= monitor['last_updated_at']
    assert monitor['title'] and monitor['title'][0].isupper()
    assert 0 < len(monitor['description']) <= 300
    assert f'integration:{INTEGRATION}' in monitor['tags']
    definition = monitor['definition']
    for key in ('name', 'type', 'query', 'message', 'tags', 'options'):
        assert key in definition, f'{path.name}: definition lacks {key}'
    assert f'integration:{INTEGRATION}' in definition['tags']
    assert definition['type'] in ('query alert', 'service check')
    assert 'thresholds' in definition['options']
    assert '{{#is_alert}}' in definition['message'] and '{{/is_alert}}' in definition['message']


@pytest.mark.parametrize('path', monitor_files(), ids=lambda p: p.name)
def test_monitor_query_agrees_with_options(path):
    definition = load_json(path)['definition']
    parsed = parse_monitor_query(definition['query'], definition['type'])
    options = definition['options']
    thresholds = options['thresholds']
    if parsed.kind == 'service_check':
        assert definition['type'] == 'service check'
        assert parsed.check == SERVICE_CHECK
        assert set(parsed.by) <= SERVICE_CHECK_TAGS
        # `last(N)` must cover the largest number of consecutive statuses a threshold asks for.
        assert parsed.last >= max(thresholds.values())
        assert set(thresholds) <= {'ok', 'warning', 'critical', 'unknown'}
        return

    assert definition['type'] == 'query alert'
    assert thresholds['critical'] == parsed.threshold, 'options.thresholds.critical must equal the query threshold'
    for term in parsed.terms:
        assert set(term.group_by) <= METRIC_TAGS[term.metric]
    if 'warning' in thresholds:
        if parsed.comparator in ('>', '>='):
            assert thresholds['warning'] < thresholds['critical']
        elif parsed.comparator in ('<', '<='):
            assert thresholds['warning'] > thresholds['critical']
    window = window_seconds(parsed.window)

    if parsed.kind == 'anomaly':
        a = parsed.anomaly
        assert parsed.time_aggregation == 'avg' and parsed.comparator == '>='
        assert 0 < parsed.threshold <= 1
        assert a['algorithm'] in ('basic', 'agile', 'robust')
        assert a['deviations'] > 0
        assert a['direction'] in ('above', 'below', 'both')
        assert a['count_default_zero'] in ('true', 'false')
        if a['algorithm'] == 'basic':
            assert 'seasonality' not in a
        else:
            assert a['seasonality'] in ('hourly', 'daily', 'weekly')
        alert_window = window_seconds(a['alert_window'])
        interval = int(a['interval'])
        # Datadog: the query window covers the alert window; the interval is at most a fifth of it.
        assert window >= alert_window
        assert interval * 5 <= alert_window
        assert options['threshold_windows']['trigger_window'] == a['alert_window']
        assert window_seconds(options['threshold_windows']['recovery_window'])
        assert thresholds.get('critical_recovery', 0) < thresholds['critical']
        for term in parsed.terms:
            for name, arguments in term.functions:
                if name == 'rollup':
                    assert int(arguments.split(',')[1]) == interval, 'the rollup must match interval='
    else:
        assert 'threshold_windows' not in options


@pytest.mark.parametrize('path', monitor_files(), ids=lambda p: p.name)
def test_monitor_message_variables_are_groups(path):
    """`{{tag.name}}` in a message only works for a tag the monitor groups by."""
    definition = load_json(path)['definition']
    parsed = parse_monitor_query(definition['query'], definition['type'])
    groups = set(parsed.group_by)
    assert ACCOUNT_TAG in groups, 'every monitor alerts per account'
    for text in (definition['message'], definition['name']):
        for tag in re.findall(r'\{\{\s*([\w.]+)\.name\s*\}\}', text):
            assert tag in groups, f'{path.name}: {{{{{tag}.name}}}} but the query groups by {sorted(groups)}'


MONITOR_TITLE = re.compile(r'^[A-Z][\w -]*? (is|are|was|were|will|cannot|has|have) [\w ]+$')


@pytest.mark.parametrize('path', monitor_files(), ids=lambda p: p.name)
def test_monitor_title_and_description(path):
    """Titles say the object then what happens to it, as Datadog recommends; anomaly monitors warn they need history."""
    monitor = load_json(path)
    assert MONITOR_TITLE.match(monitor['title']), f'{path.name}: {monitor["title"]!r} is not "object then verb"'
    assert '{{' not in monitor['title']
    if 'anomalies(' in monitor['definition']['query']:
        assert 'three weeks' in monitor['description'], f'{path.name}: say it needs three weeks of history'


def test_monitor_contents():
    def query_of(name):
        definition = load_json(MONITOR_DIR / name)['definition']
        return parse_monitor_query(definition['query'], definition['type'])

    spend = query_of('spend_above_budget.json')
    assert spend.terms[0].metric == MONTH_TO_DATE.name and spend.comparator == '>'
    assert set(spend.group_by) == {ACCOUNT_TAG, 'currency'}
    project = query_of('project_spend_above_budget.json')
    assert project.terms[0].metric == PROJECT_MONTH_TO_DATE.name and 'project_id' in project.group_by
    estimate = query_of('estimated_spend_spike.json')
    assert estimate.kind == 'anomaly' and estimate.terms[0].metric == ESTIMATED_COST.name
    assert set(estimate.group_by) == {ACCOUNT_TAG, 'project_id'}
    # An estimate says so: billed and estimated never share a name, and the description tells which this is.
    assert 'estimate' in load_json(MONITOR_DIR / 'estimated_spend_spike.json')['description'].lower()
    tokens = query_of('token_usage_anomaly.json')
    assert tokens.kind == 'anomaly'
    assert {t.metric for t in tokens.terms} == {
        'openai.api.usage.completions.input_tokens',
        'openai.api.usage.completions.output_tokens',
    }
    assert tokens.operators == ['+']
    stale = query_of('data_stale.json')
    assert stale.terms[0].metric == DATA_LAG.name and set(stale.group_by) == {ACCOUNT_TAG, 'endpoint'}
    connect = query_of('can_connect.json')
    assert connect.kind == 'service_check' and connect.by == [ACCOUNT_TAG]
    message = load_json(MONITOR_DIR / 'can_connect.json')['definition']['message']
    assert 'https://platform.openai.com/settings/organization/admin-keys' in message
    assert 'proxy' in message
    for name, limit in (
        ('rate_limit_requests.json', 'max_requests_per_1_minute'),
        ('rate_limit_tokens.json', 'max_tokens_per_1_minute'),
    ):
        rate = query_of(name)
        assert rate.terms[0].metric == RATE_LIMIT_UTILIZATION.name and rate.terms[0].filters == [f'limit:{limit}']
        assert {'project_id', 'model'} <= set(rate.group_by) and rate.comparator == '>=' and rate.threshold == 0.95
        assert load_json(MONITOR_DIR / name)['definition']['options']['thresholds']['warning'] == 0.8
    projected = query_of('spend_limit_projected.json')
    assert projected.terms[0].metric == SPEND_LIMIT_PROJECTED_UTILIZATION.name
    assert projected.comparator == '>=' and projected.threshold == 1
    reached = query_of('spend_limit_reached.json')
    assert reached.terms[0].metric == SPEND_LIMIT_UTILIZATION.name
    assert reached.comparator == '>=' and reached.threshold == 1
    for spend in (projected, reached):
        assert {ACCOUNT_TAG, 'scope', 'project_id'} <= set(spend.group_by)


def test_headroom_on_the_dashboards():
    """The overview has a Headroom group; the costs dashboard draws the organization's hard spend limit on its
    month-to-date chart."""
    board = load_json(DASHBOARD_DIR / 'openai_usage_overview.json')
    [last] = [g['definition'] for g in board['widgets'] if g['definition']['title'].startswith('Headroom')]
    metrics = {q.metric for w in iter_widgets(last['widgets']) for q in _widget_queries(w)}
    assert {
        RATE_LIMIT_UTILIZATION.name,
        SPEND_LIMIT_THRESHOLD.name,
        SPEND_LIMIT_UTILIZATION.name,
        PROJECTED_MONTH_END.name,
    } <= metrics
    costs = load_json(DASHBOARD_DIR / 'openai_costs_budget.json')
    chart = next(
        w for w in iter_widgets(costs['widgets']) if w['definition'].get('title') == 'Month-to-date spend vs budget'
    )
    queries = list(_widget_queries(chart))
    assert {q.metric for q in queries} == {MONTH_TO_DATE.name, SPEND_LIMIT_THRESHOLD.name}
    limit = next(q for q in queries if q.metric == SPEND_LIMIT_THRESHOLD.name)
    assert 'scope:organization' in limit.filters, 'the project limits are not the organization month-to-date line'


def _widget_queries(widget: dict) -> Iterator[MetricQuery]:
    for request in widget['definition'].get('requests', []):
        yield from Request('', widget, request).queries().values()


@pytest.mark.parametrize(
    'query, kind, threshold',
    [
        ('max(last_5m):max:openai.api.costs.month_to_date{*} by {openai_account,currency} > 1000', 'metric', 1000),
        (
            'avg(last_1w):anomalies(sum:openai.api.costs.amount{*} by {openai_account}.as_count().rollup(sum, 3600), '
            "'agile', 3, direction='above', interval=3600, alert_window='last_1d', count_default_zero='true', "
            "seasonality='weekly') >= 1",
            'anomaly',
            1,
        ),
        ('min(last_10m):avg:openai.check.can_connect{openai_account:prod,!env:dev} < 0.5', 'metric', 0.5),
    ],
)
def test_monitor_parser(query, kind, threshold):
    parsed = parse_monitor_query(query, 'query alert')
    assert parsed.kind == kind and parsed.threshold == threshold
    assert parsed.terms and all(t.metric.startswith('openai.') for t in parsed.terms)


def test_monitor_parser_rejects_garbage():
    for query in ('max:openai.api.costs.amount{*} > 1', 'avg(last_5m):openai.check.data_lag > 1'):
        with pytest.raises(AssertionError):
            parse_monitor_query(query, 'query alert')
    with pytest.raises(AssertionError):
        parse_monitor_query('"openai.can_connect".over("*").count_by_status()', 'service check')
    sc = parse_monitor_query(
        '"openai.can_connect".over("env:prod").by("openai_account").last(3).count_by_status()', 'service check'
    )
    assert sc.over == ['env:prod'] and sc.by == ['openai_account'] and sc.last == 3


# == tests: README ========================================================================================

OPERATOR_CALLS = {
    'warning',
    'info',
    'append',
    'AuthError',
    'TransientError',
    'BadResponse',
    'RequestRefused',
    'ApiError',
    'ConfigurationError',
    'UnusableResponse',
    'DeadlineExceeded',
    'ValueError',
}
# Where operator messages are made: every module of the check, the configuration rules among the generated models.
MESSAGE_MODULES = sorted(
    str(p.relative_to(PACKAGE))
    for p in PACKAGE.rglob('*.py')
    if p.parent.name != 'config_models' or p.name == 'validators.py'
)


def _fragments(node: ast.AST) -> list[str]:
    """The literal text of a message: the constant parts of an f-string, or a %-format split at its fields."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [p for p in re.split(r'%[-\d.]*[sdfr]', node.value)]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def operator_messages() -> dict[str, list[str]]:
    """Message source -> its literal fragments, for every warning, error and log message meant for the operator."""
    messages = {}
    for module in MESSAGE_MODULES:
        tree = ast.parse((PACKAGE / module).read_text())
        for node in ast.walk(tree):
            candidates = []
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)
                # A ValueError is an operator message where the configuration rules raise it; elsewhere (the saved
                # state's checks) it is the detail of one.
                if name in OPERATOR_CALLS and (name != 'ValueError' or module.endswith('validators.py')):
                    candidates.append(node.args[0])
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                candidates.extend(node.value.elts)
            elif isinstance(node, ast.Return) and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
                # Text a function returns as what went wrong (refresh_key, key_problem); not single words.
                if any(' ' in f for f in _fragments(node.value)):
                    candidates.append(node.value)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith('_HELP') for t in node.targets
            ):
                candidates.append(node.value)
            for candidate in candidates:
                fragments = [' '.join(f.split()) for f in _fragments(candidate)]
                fragments = [f for f in fragments if len(f) >= 12]
                if fragments:
                    messages[f'{module}:{node.lineno}'] = fragments
    return messages


def readme_text() -> str:
    return README.read_text()


def test_readme_sections():
    text = readme_text()
    assert text.startswith('# Agent Check: OpenAI Usage and Costs\n')
    h2 = re.findall(r'^## (.+)$', text, re.M)
    expected = [
        'Overview',
        'Quick start',
        'Setup',
        'Data Collected',
        'How exactly-once works',
        'Benchmark',
        'Troubleshooting',
        'Support',
    ]
    assert [h for h in h2 if h in expected] == expected, h2
    quick_start = text.split('## Quick start\n', 1)[1].split('\n## ', 1)[0]
    commands = re.findall(r'^(scripts/\S+)', quick_start.split('```shell', 1)[1].split('```', 1)[0], re.M)
    # The README's promise: two commands, one for the demo, one for the tests, and CI runs the second.
    assert commands == ['scripts/demo', 'scripts/test']
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command
    # CI runs both, in a clone of its own (no `shared/` above it), before anything else of the project.
    ci = (ROOT / '.ci' / 'run').read_text()
    assert re.search(r'^git clone .+\n(?:.*\n)*?cd "\$WORK/', ci, re.M), 'CI must work in a clone of its own'
    after_clone = ci.split('git clone', 1)[1]
    ran = re.findall(r'^(scripts/\S+)', after_clone, re.M)
    assert ran[:2] == commands, ran


def test_readme_is_ascii():
    """`ddev validate readmes` rejects characters above U+0100."""
    bad = [(i, line) for i, line in enumerate(readme_text().splitlines(), 1) if any(ord(c) > 127 for c in line)]
    assert not bad, bad[:5]


def test_readme_documents_every_message():
    text = ' '.join(readme_text().split())
    messages = operator_messages()
    assert len(messages) >= 30, 'the message scan found too little: did the code move?'
    missing = {where: [f for f in fragments if f not in text] for where, fragments in messages.items()}
    missing = {where: fragments for where, fragments in missing.items() if fragments}
    assert not missing, f'README Troubleshooting lacks these message texts: {missing}'


def test_readme_names_every_metric_family_and_endpoint():
    text = readme_text()
    for endpoint in ENDPOINTS:
        assert f'`{endpoint.name}`' in text, endpoint.name
    for metric in all_metrics():
        if metric_source(metric.name) in ('check', HEADROOM) or metric.name in (
            MONTH_TO_DATE.name,
            PROJECT_MONTH_TO_DATE.name,
            PROJECTED_MONTH_END.name,
            PROJECT_PROJECTED_MONTH_END.name,
        ):
            assert metric.name in text, metric.name
    assert SERVICE_CHECK in text
