"""The OpenAI Administration API simulator behaves like the API it stands for.

The check's end-to-end tests trust the simulator; these tests earn that trust: pagination by buckets,
bucket alignment, per-endpoint group_by rules, revisions that only grow and then settle, figures that
agree across bucket widths and groupings, faults, keys, listings, and every 200 body conforming to
OpenAI's published OpenAPI description.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from datadog_checks.openai.catalogue import BUCKET_SECONDS, COSTS, ENDPOINTS, ENDPOINTS_BY_NAME, LEVEL, USAGE_ENDPOINTS
from tests.simulator import Clock, Organization, RealClock, SimulatorServer, load_spec

H = 3600
D = 86400
ADMIN = 'sk-admin-test'
ORG = Organization()
START = ORG.traffic_start
# Thirty-six hours and a bit into the organization's life: unaligned, like a real clock.
NOW = START + 36 * H + 1234
ALL_DIMS = sorted({d for e in ENDPOINTS for d in e.group_by} | {'foo'})
FLOW_ENDPOINTS = [e.name for e in ENDPOINTS if any(f.kind != LEVEL for f in e.fields)]
LEVEL_ENDPOINTS = [e.name for e in ENDPOINTS if e.fields and all(f.kind == LEVEL for f in e.fields)]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def spec():
    return load_spec()


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def server(clock):
    # Every 200 body any test receives is checked against the spec as it is sent.
    with SimulatorServer(ORG, clock, admin_key=ADMIN, validate_responses=True) as s:
        yield s
        assert s.response_errors == []


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def get(http, server, path, params=(), key=ADMIN, **kwargs):
    headers = {'Authorization': f'Bearer {key}'} if key is not None else {}
    return http.get(
        server.base_url + path, params=list(params), headers=headers, timeout=kwargs.pop('timeout', 10), **kwargs
    )


def usage_path(name):
    return ENDPOINTS_BY_NAME[name].path


def pages(http, server, path, params):
    """Every page of a usage/costs query, following next_page like a careful client."""
    out = []
    cursor = None
    while True:
        r = get(http, server, path, params + ([('page', cursor)] if cursor else []))
        assert r.status_code == 200, r.text
        body = r.json()
        out.append(body)
        if not body['has_more']:
            return out
        cursor = body['next_page']
        assert cursor


def row_values(row, endpoint):
    e = ENDPOINTS_BY_NAME[endpoint]
    if e.kind == COSTS:
        return {'amount': float(row['amount']['value'])}
    return {f.name: row[f.name] for f in e.fields}


def add_into(total, values):
    for k, v in values.items():
        total[k] = total.get(k, 0) + v


# -- the spec and the catalogue agree -----------------------------------------------------------------


def test_every_catalogue_endpoint_is_served_per_the_spec(spec):
    for e in ENDPOINTS:
        op = spec.operation('GET', '/v1' + e.path)
        allowed = op.parameters['group_by']['schema']['items']['enum']
        assert set(e.group_by) <= set(allowed), e.name
        rules = spec.limit_rules(e.path)
        assert {w: m for w, (_, m) in rules.items()} == dict(e.max_limit), e.name


# -- pagination ----------------------------------------------------------------------------------------


def test_limit_counts_buckets_not_rows_and_pages_join_up(http, server):
    start = START + 6 * H
    params = [('start_time', start), ('bucket_width', '1h'), ('group_by', 'model'), ('group_by', 'project_id')]
    pieces = pages(http, server, usage_path('completions'), params + [('limit', 7)])
    assert [len(p['data']) for p in pieces] == [7, 7, 7, 7, 3]
    assert all(p['has_more'] and p['next_page'] for p in pieces[:-1])
    assert pieces[-1]['next_page'] is None
    # A bucket holds many rows and still counts as one.
    assert max(len(b['results']) for p in pieces for b in p['data']) > 7
    joined = [b for p in pieces for b in p['data']]
    whole = get(http, server, usage_path('completions'), params + [('limit', 168)]).json()
    assert not whole['has_more']
    assert joined == whole['data']
    starts = [b['start_time'] for b in joined]
    assert starts == list(range(start, NOW, H))
    assert all(b['end_time'] == nxt for b, nxt in zip(joined, starts[1:]))


@pytest.mark.parametrize(
    'endpoint,width,default',
    [
        ('embeddings', '1m', 60),
        ('embeddings', '1h', 24),
        ('embeddings', '1d', 7),
        ('costs', '1d', 7),
    ],
)
def test_default_limit_per_bucket_width(http, server, endpoint, width, default):
    seconds = BUCKET_SECONDS[width]
    start = NOW // seconds * seconds - 100 * seconds if width != '1d' else NOW // D * D - 10 * D
    r = get(http, server, usage_path(endpoint), [('start_time', start), ('bucket_width', width)])
    assert r.status_code == 200, r.text
    assert len(r.json()['data']) == default
    assert r.json()['has_more'] is True


@pytest.mark.parametrize('endpoint', ['completions', 'vector_stores', 'costs'])
def test_limit_above_the_maximum_is_a_400(http, server, endpoint):
    e = ENDPOINTS_BY_NAME[endpoint]
    for width, maximum in e.max_limit.items():
        base = [('start_time', NOW - 2 * H), ('bucket_width', width)]
        assert get(http, server, e.path, base + [('limit', maximum)]).status_code == 200
        for bad in (maximum + 1, 0):
            r = get(http, server, e.path, base + [('limit', bad)])
            assert r.status_code == 400, (width, bad)
            assert r.json()['error']['param'] == 'limit'
            assert r.json()['error']['type'] == 'invalid_request_error'
    assert server.validation_errors == []  # the catalogue's rule, not the spec's


def test_a_cursor_belongs_to_its_query(http, server):
    params = [('start_time', NOW - 10 * H), ('bucket_width', '1h'), ('limit', 2)]
    cursor = get(http, server, usage_path('embeddings'), params).json()['next_page']
    other = [('start_time', NOW - 11 * H), ('bucket_width', '1h'), ('limit', 2), ('page', cursor)]
    assert get(http, server, usage_path('embeddings'), other).status_code == 400
    junk = get(http, server, usage_path('embeddings'), params + [('page', 'page_notacursor')])
    assert junk.status_code == 400 and junk.json()['error']['param'] == 'page'


# -- alignment -----------------------------------------------------------------------------------------


def test_partial_first_bucket_aligned_middle_and_in_progress_last(http, server):
    start = NOW - 5 * H - 123
    data = get(http, server, usage_path('completions'), [('start_time', start), ('bucket_width', '1h')]).json()['data']
    assert data[0]['start_time'] == start
    assert data[0]['end_time'] == (start // H + 1) * H
    for b in data[1:]:
        assert b['start_time'] % H == 0
    for b in data[1:-1]:
        assert b['end_time'] - b['start_time'] == H
    # No end_time: the last bucket is the one in progress, ending now.
    assert data[-1]['start_time'] == NOW // H * H
    assert data[-1]['end_time'] == NOW
    assert data[-1]['results'], 'the bucket in progress already shows traffic'


def test_unaligned_end_time_gives_a_partial_last_bucket(http, server):
    end = NOW - 2 * H - 77
    data = get(
        http,
        server,
        usage_path('completions'),
        [('start_time', NOW - 6 * H), ('end_time', end), ('bucket_width', '1h')],
    ).json()['data']
    assert data[-1]['end_time'] == end
    assert data[-1]['start_time'] == end // H * H
    assert (
        get(
            http, server, usage_path('completions'), [('start_time', NOW - 6 * H), ('end_time', NOW - 6 * H)]
        ).status_code
        == 400
    )


def test_empty_buckets_before_traffic_start_are_listed(http, server):
    data = get(
        http, server, usage_path('completions'), [('start_time', START - 3 * D), ('bucket_width', '1d'), ('limit', 5)]
    ).json()['data']
    assert [b['start_time'] for b in data] == [START - 3 * D + i * D for i in range(5)]
    assert [bool(b['results']) for b in data] == [False, False, False, True, True]
    assert ORG.observed('completions', '1h', (), START - H, NOW) == {}


def test_a_start_time_in_the_future_gives_no_buckets(http, server):
    body = get(http, server, usage_path('embeddings'), [('start_time', NOW + H)]).json()
    assert body == {'object': 'page', 'data': [], 'has_more': False, 'next_page': None}


def test_lookback_beyond_a_year_is_refused(http, server):
    r = get(http, server, usage_path('completions'), [('start_time', NOW - 366 * D)])
    assert r.status_code == 400
    assert r.json()['error']['code'] == 'reporting_lookback_exceeded'
    assert (
        get(http, server, usage_path('completions'), [('start_time', NOW - 300 * D), ('limit', 1)]).status_code == 200
    )


# -- group_by ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('endpoint', [e.name for e in ENDPOINTS])
def test_group_by_values_per_endpoint(http, server, endpoint):
    e = ENDPOINTS_BY_NAME[endpoint]
    base = [('start_time', NOW // D * D - D), ('bucket_width', '1d'), ('limit', 1)]
    for dim in e.group_by:
        r = get(http, server, e.path, base + [('group_by', dim)])
        if dim in e.refused_group_by:
            assert r.status_code == 400 and dim in r.json()['error']['message']
            continue
        assert r.status_code == 200, (dim, r.text)
        rows = r.json()['data'][0]['results']
        assert rows and all(set(e.group_by) <= set(row) for row in rows)
        assert all(row[d] is None for row in rows for d in e.group_by if d != dim)
        assert len({json.dumps(row[dim]) for row in rows}) == len(rows), 'one row per value'
    for dim in ALL_DIMS:
        if dim in e.group_by:
            continue
        r = get(http, server, e.path, base + [('group_by', dim)])
        assert r.status_code == 400, dim
        error = r.json()['error']
        assert f"'{dim}'" in error['message'] and error['param'] == 'group_by'
    usable = [d for d in e.group_by if d not in e.refused_group_by]
    both = get(http, server, e.path, base + [('group_by[]', d) for d in usable])
    assert both.status_code == 200


def test_costs_api_key_group_by_switch(http, server):
    params = [('start_time', NOW // D * D - D), ('group_by', 'api_key_id'), ('group_by', 'project_id')]
    assert get(http, server, '/organization/costs', params).status_code == 400
    server.refuse_costs_api_key_group_by = False
    rows = get(http, server, '/organization/costs', params).json()['data'][0]['results']
    assert any(row['api_key_id'] for row in rows)
    # Storage is billed to a project, not to a key.
    assert any(row['api_key_id'] is None for row in rows)


# -- revisions -----------------------------------------------------------------------------------------


# Ten times the default traffic: every endpoint then has enough requests per hour for some to land late.
DENSE = Organization(volume=10)


@pytest.mark.parametrize('endpoint', [e.name for e in ENDPOINTS])
def test_revisions_grow_monotonically_then_settle(endpoint):
    e = ENDPOINTS_BY_NAME[endpoint]
    width = '1d' if e.kind == COSTS else '1h'
    seconds = BUCKET_SECONDS[width]
    bucket = START + D if e.kind == COSTS else START + 30 * H
    end = bucket + seconds
    settled_at = DENSE.final_at(endpoint, end)
    step = H if e.kind == COSTS else 60
    times = list(range(bucket, settled_at + 3 * step, step))
    group_by = e.group_by
    seen = [DENSE.observed(endpoint, width, group_by, bucket, t) for t in times]
    final = DENSE.final(endpoint, width, group_by, bucket)
    assert final
    for before, after in zip(seen, seen[1:]):
        for key, values in before.items():
            assert key in after
            for name, v in values.items():
                assert after[key][name] >= v, (key, name)
    assert seen[-1] == final
    assert seen[0] == {}, 'nothing is reported at the instant a bucket opens'
    if any(f.kind != LEVEL for f in e.fields):
        # Late data: the bucket is not final when it closes, nor halfway to settling.
        settle = DENSE.settle_seconds(endpoint)
        assert settle == (36 * H if e.kind == COSTS else 20 * 60)
        total = DENSE.final(endpoint, width, (), bucket)
        for t in (end, end + settle // 2):
            assert DENSE.observed(endpoint, width, (), bucket, t) != total, t


def test_settle_times_are_configurable():
    quick = Organization(settle_seconds={'usage': 300, 'embeddings': 60, 'costs': 6 * H})
    assert (quick.settle_seconds('completions'), quick.settle_seconds('embeddings')) == (300, 60)
    assert quick.settle_seconds('costs') == 6 * H and quick.settle_seconds('vector_stores') == 0
    bucket = START + 30 * H
    final = quick.final('completions', '1h', (), bucket)
    assert quick.observed('completions', '1h', (), bucket, bucket + H + 300) == final
    assert quick.observed('completions', '1h', (), bucket, bucket + H) != final


def test_revisions_seen_over_http(http, server, clock):
    clock.set(START + 30 * H + 600)
    params = [('start_time', START + 30 * H), ('bucket_width', '1h')]

    def total():
        rows = get(http, server, usage_path('completions'), params).json()['data'][0]['results']
        return sum(r['input_tokens'] for r in rows)

    readings = []
    for _ in range(8):
        readings.append(total())
        clock.advance(600)
    assert readings == sorted(readings) and readings[0] < readings[-1]
    final = ORG.final('completions', '1h', (), START + 30 * H)[()]['input_tokens']
    assert readings[-1] == final


# -- consistency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('endpoint', [n for n in USAGE_ENDPOINTS if n in FLOW_ENDPOINTS])
@pytest.mark.parametrize('t', [START + 31 * H + 300, START + 31 * H + 900, START + 40 * H])
def test_minutes_add_up_to_hours_and_hours_to_days_at_any_time(endpoint, t):
    # At START+31h+300 the hour [30h, 31h) is still being revised: the widths agree even then.
    hour = START + 30 * H
    hourly = ORG.observed(endpoint, '1h', (), hour, t).get((), {})
    minutes = {}
    for m in range(hour, hour + H, 60):
        add_into(minutes, ORG.observed(endpoint, '1m', (), m, t).get((), {}))
    assert minutes == hourly and hourly
    day = START + D
    daily = ORG.observed(endpoint, '1d', ('project_id',), day, t)
    hours = defaultdict(dict)
    for h in range(day, day + D, H):
        for key, values in ORG.observed(endpoint, '1h', ('project_id',), h, t).items():
            add_into(hours[key], values)
    assert dict(hours) == daily


@pytest.mark.parametrize('endpoint', [e.name for e in ENDPOINTS])
def test_grouped_rows_add_up_to_the_ungrouped_total(http, server, endpoint):
    e = ENDPOINTS_BY_NAME[endpoint]
    params = [
        ('start_time', START + D if e.kind == COSTS else START + 35 * H),
        ('bucket_width', '1d' if e.kind == COSTS else '1h'),
        ('limit', 1),
    ]
    ungrouped = get(http, server, e.path, params).json()['data'][0]['results']
    assert len(ungrouped) == 1
    total = row_values(ungrouped[0], endpoint)
    usable = [d for d in e.group_by if d not in e.refused_group_by]
    for group in ([usable[0]], usable):
        rows = get(http, server, e.path, params + [('group_by', d) for d in group]).json()['data'][0]['results']
        summed = {}
        for row in rows:
            add_into(summed, row_values(row, endpoint))
        assert summed == pytest.approx(total, rel=1e-12), group


def test_http_minute_buckets_add_up_to_the_hour(http, server):
    hour = NOW // H * H - H
    params = [('start_time', hour), ('end_time', hour + H), ('group_by', 'model')]
    minutes = get(http, server, usage_path('completions'), params + [('bucket_width', '1m'), ('limit', 60)]).json()
    assert len(minutes['data']) == 60 and not minutes['has_more']
    by_model = defaultdict(dict)
    for b in minutes['data']:
        for row in b['results']:
            add_into(by_model[row['model']], row_values(row, 'completions'))
    hourly = get(http, server, usage_path('completions'), params + [('bucket_width', '1h')]).json()['data']
    assert len(hourly) == 1
    assert {row['model']: row_values(row, 'completions') for row in hourly[0]['results']} == dict(by_model)


def test_completions_rows_are_internally_consistent(http, server):
    data = get(
        http,
        server,
        usage_path('completions'),
        [('start_time', NOW - 5 * H), ('bucket_width', '1h')]
        + [('group_by', d) for d in ENDPOINTS_BY_NAME['completions'].group_by],
    ).json()['data']
    rows = [r for b in data for r in b['results']]
    assert rows
    for r in rows:
        assert r['num_model_requests'] > 0
        assert (
            r['input_tokens'] == r['input_cached_tokens'] + r['input_cache_write_tokens'] + r['input_uncached_tokens']
        )
        assert r['input_tokens'] == r['input_text_tokens'] + r['input_audio_tokens'] + r['input_image_tokens']
        assert r['input_cached_tokens'] == (
            r['input_cached_text_tokens'] + r['input_cached_audio_tokens'] + r['input_cached_image_tokens']
        )
        assert r['output_tokens'] == r['output_text_tokens'] + r['output_audio_tokens'] + r['output_image_tokens']
        assert isinstance(r['batch'], bool)
    assert any(r['user_id'] is None for r in rows), 'service-account keys have no user'
    assert any(r['input_audio_tokens'] for r in rows) and any(r['input_cached_tokens'] for r in rows)


def test_final_totals_are_the_sum_of_final_buckets():
    start, end = START + 5 * H, START + 2 * D + 7 * H
    totals = ORG.final_totals('completions', ('project_id',), start, end)
    summed = defaultdict(dict)
    a = start
    while a < end:
        b = min(end, (a // D + 1) * D)
        for key, values in ORG.final('completions', '1d', ('project_id',), a, end=b).items():
            add_into(summed[key], values)
        a = b
    assert dict(summed) == totals
    costs = ORG.final_totals('costs', ('project_id', 'line_item'), START, START + 3 * D)
    assert all(key[-1] == 'usd' and len(key) == 3 for key in costs)


def test_vector_store_bytes_are_a_level():
    day = START + D
    levels = [ORG.observed('vector_stores', '1h', ('project_id',), h, NOW) for h in range(day, day + 4 * H, H)]
    for before, after in zip(levels, levels[1:]):
        assert before.keys() == after.keys()
        assert all(after[k]['usage_bytes'] >= before[k]['usage_bytes'] for k in before)
    # A level is not summed over time: the day reports its last value.
    assert ORG.final('vector_stores', '1d', ('project_id',), day) == ORG.final(
        'vector_stores', '1h', ('project_id',), day + 23 * H
    )


def test_filters_select_series(http, server):
    project = ORG.projects[0].id
    params = [('start_time', NOW // D * D - D), ('limit', 1), ('group_by', 'project_id')]
    rows = get(http, server, usage_path('completions'), params + [('project_ids', project)]).json()['data'][0][
        'results'
    ]
    assert [r['project_id'] for r in rows] == [project]
    everyone = get(http, server, usage_path('completions'), params).json()['data'][0]['results']
    assert next(r for r in everyone if r['project_id'] == project) == rows[0]
    batch = get(
        http,
        server,
        usage_path('completions'),
        [('start_time', NOW // D * D - D), ('limit', 1), ('group_by', 'batch'), ('batch', 'true')],
    ).json()
    assert [r['batch'] for r in batch['data'][0]['results']] == [True]


def test_the_organization_is_deterministic():
    again = Organization()
    other = Organization(seed=5)
    args = ('completions', '1h', ('project_id', 'model'), START + 30 * H, NOW)
    assert again.observed(*args) == ORG.observed(*args)
    assert [p.id for p in again.projects] == [p.id for p in ORG.projects]
    assert other.observed(*args) != ORG.observed(*args)


# -- the spec ------------------------------------------------------------------------------------------


def _requests_for_every_route():
    day = NOW // D * D - 2 * D
    project = ORG.projects[0]
    key = ORG.api_keys_at(project.id, NOW)[0]
    out = []
    for e in ENDPOINTS:
        usable = [d for d in e.group_by if d not in e.refused_group_by]
        width = '1d' if e.kind == COSTS else '1h'
        out.append((e.path, [('start_time', day), ('bucket_width', width), ('limit', 3)]))
        out.append((e.path, [('start_time', day + 17), ('bucket_width', width)] + [('group_by', d) for d in usable]))
    out += [
        ('/organization/projects', [('include_archived', 'true')]),
        (f'/organization/projects/{project.id}', []),
        (f'/organization/projects/{project.id}/api_keys', [('limit', 100)]),
        (f'/organization/projects/{project.id}/api_keys/{key.id}', []),
        (f'/organization/projects/{project.id}/rate_limits', []),
        (f'/organization/projects/{project.id}/rate_limits', [('limit', 3), ('after', 'rl-gpt-4o-mini')]),
        ('/organization/spend_limit', []),
        (f'/organization/projects/{project.id}/spend_limit', []),
        ('/organization/users', []),
        (f'/organization/users/{ORG.users[0].id}', []),
    ]
    return out


def test_every_200_body_conforms_to_the_spec(http, server, spec):
    for path, params in _requests_for_every_route():
        r = get(http, server, path, params)
        assert r.status_code == 200, (path, r.text)
        assert spec.validate_response(path, r.json()) == [], path
    # The validator is not a rubber stamp: the costs quirk of a string amount breaks the schema.
    server.costs_amount_as_string = True
    body = get(http, server, '/organization/costs', [('start_time', NOW - D)]).json()
    assert isinstance(body['data'][0]['results'][0]['amount']['value'], str)
    assert spec.validate_response('/organization/costs', body)
    assert len(server.response_errors) == 1, 'the server-side check caught it too'
    server.response_errors.clear()


@pytest.mark.parametrize(
    'params,param,code',
    [
        ([('start_time', 'yesterday')], 'start_time', 'invalid_type'),
        ([], 'start_time', 'missing_required_parameter'),
        ([('start_time', '1'), ('bucket_width', '2h')], 'bucket_width', 'invalid_value'),
        ([('start_time', '1'), ('granularity', '1h')], 'granularity', None),
        ([('start_time', '1'), ('limit', '5'), ('limit', '6')], 'limit', 'invalid_type'),
        ([('start_time', '1'), ('batch', 'maybe')], 'batch', 'invalid_type'),
    ],
)
def test_the_spec_rejects_malformed_requests(http, server, spec, params, param, code):
    r = get(http, server, usage_path('completions'), params)
    assert r.status_code == 400
    assert spec.validate_schema('#/components/schemas/ErrorResponse', r.json()) == []
    error = r.json()['error']
    assert (error['param'], error['code'], error['type']) == (param, code, 'invalid_request_error')
    assert [(v.path, v.param) for v in server.validation_errors] == [('/v1' + usage_path('completions'), param)]


def test_costs_only_accept_daily_buckets(http, server):
    r = get(http, server, '/organization/costs', [('start_time', NOW - D), ('bucket_width', '1h')])
    assert r.status_code == 400 and r.json()['error']['param'] == 'bucket_width'


def test_unknown_url_is_a_404(http, server):
    r = get(http, server, '/organization/usage/teleportation', [('start_time', 1)])
    assert r.status_code == 404 and 'Invalid URL' in r.json()['error']['message']


# -- keys ----------------------------------------------------------------------------------------------


def test_keys(http, server, spec):
    server.restricted_keys.add('sk-admin-restricted')
    path = usage_path('completions')
    params = [('start_time', NOW - H)]
    cases = {
        None: (401, "didn't provide an API key"),
        'sk-proj-abcdefghijklmnopqrstuvwxyz': (401, 'api.usage.read'),
        'sk-admin-wrongwrongwrongwrong': (401, 'Incorrect API key'),
        'sk-admin-restricted': (403, 'api.usage.read'),
    }
    for key, (status, text) in cases.items():
        r = get(http, server, path, params, key=key)
        assert r.status_code == status, key
        assert text in r.json()['error']['message']
        assert spec.validate_schema('#/components/schemas/ErrorResponse', r.json()) == []
        if key:
            assert key not in r.text, 'a key is never echoed whole'
    assert (
        get(http, server, path, params, key='sk-admin-wrongwrongwrongwrong').json()['error']['code']
        == 'invalid_api_key'
    )
    r = get(http, server, '/organization/projects', key='sk-admin-restricted')
    assert r.status_code == 403 and 'api.management.read' in r.json()['error']['message']
    r = http.get(server.base_url + path, params=params, headers={'Authorization': f'Basic {ADMIN}'})
    assert r.status_code == 401
    assert get(http, server, path, params).status_code == 200


# -- faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('status', [400, 401, 403, 429, 500, 502, 503, 504])
def test_status_faults(http, server, spec, status):
    server.faults.add('completions', status, retry_after=7 if status == 429 else None)
    path = usage_path('completions')
    other = get(http, server, usage_path('embeddings'), [('start_time', NOW - H)])
    assert other.status_code == 200, 'a fault hits only its endpoint'
    r = get(http, server, path, [('start_time', NOW - H)])
    assert r.status_code == status
    assert spec.validate_schema('#/components/schemas/ErrorResponse', r.json()) == []
    assert r.headers.get('Retry-After') == ('7' if status == 429 else None)
    assert get(http, server, path, [('start_time', NOW - H)]).status_code == 200, 'consumed once'
    assert [(x.endpoint, x.status, x.fault) for x in server.requests[-2:]] == [
        ('completions', status, 'status'),
        ('completions', 200, None),
    ]


def test_fault_counts_and_matching(http, server):
    server.faults.add('usage/', 503, count=2)
    server.faults.add('projects', 500, count=None)
    statuses = [
        get(http, server, usage_path(n), [('start_time', NOW - H)]).status_code
        for n in ('images', 'moderations', 'images')
    ]
    assert statuses == [503, 503, 200]
    assert get(http, server, '/organization/projects').status_code == 500
    assert get(http, server, '/organization/projects').status_code == 500
    # A route name matches that route only, not the paths that contain it.
    assert get(http, server, f'/organization/projects/{ORG.projects[0].id}/api_keys').status_code == 200
    assert len(server.faults) == 1
    server.faults.clear()
    assert get(http, server, '/organization/projects').status_code == 200
    with pytest.raises(ValueError):
        server.faults.add('costs', 'meteor')


def test_a_fault_on_later_pages_spares_the_first(http, server):
    server.faults.add('embeddings', 503, count=None, on_later_pages=True)
    params = [('start_time', NOW - 10 * H), ('bucket_width', '1h'), ('limit', 3)]
    first = get(http, server, usage_path('embeddings'), params)
    assert first.status_code == 200 and first.json()['has_more']
    cursor = first.json()['next_page']
    assert get(http, server, usage_path('embeddings'), params + [('page', cursor)]).status_code == 503
    assert get(http, server, usage_path('embeddings'), params).status_code == 200
    server.faults.clear()
    assert get(http, server, usage_path('embeddings'), params + [('page', cursor)]).status_code == 200


def test_timeout_fault(http, server):
    server.faults.add('costs', 'timeout', delay=2)
    with pytest.raises(requests.Timeout):
        get(http, server, '/organization/costs', [('start_time', NOW - D)], timeout=0.3)
    assert get(http, server, '/organization/costs', [('start_time', NOW - D)]).status_code == 200


def test_truncated_fault(http, server):
    server.faults.add('completions', 'truncated')
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(http, server, usage_path('completions'), [('start_time', NOW - H)])
    server.faults.add('completions', 'truncated', declared_length='sent')
    r = get(http, server, usage_path('completions'), [('start_time', NOW - H)])
    assert r.status_code == 200 and r.content.startswith(b'{"object":"page"')
    with pytest.raises(ValueError):
        r.json()


def test_non_json_empty_and_disconnect_faults(http, server):
    path = usage_path('web_search_calls')
    params = [('start_time', NOW - H)]
    server.faults.add('web_search_calls', 'non_json')
    r = get(http, server, path, params)
    assert r.status_code == 502 and r.headers['Content-Type'] == 'text/html' and b'<html>' in r.content
    server.faults.add('web_search_calls', 'non_json', status=200)
    r = get(http, server, path, params)
    assert r.status_code == 200 and r.content.startswith(b'<html>')
    server.faults.add('web_search_calls', 'empty_body')
    r = get(http, server, path, params)
    assert r.status_code == 200 and r.content == b''
    server.faults.add('web_search_calls', 'disconnect')
    with pytest.raises(requests.ConnectionError):
        get(http, server, path, params)
    assert get(http, server, path, params).status_code == 200
    assert [x.fault for x in server.requests] == ['non_json', 'non_json', 'empty_body', 'disconnect', None]


# -- costs quirks --------------------------------------------------------------------------------------


def test_costs_cursor_after_the_last_page(http, server):
    server.costs_cursor_on_last_page = True
    params = [('start_time', NOW // D * D - 3 * D), ('limit', 7)]
    body = get(http, server, '/organization/costs', params).json()
    assert body['has_more'] is False and body['next_page']
    after = get(http, server, '/organization/costs', params + [('page', body['next_page'])]).json()
    assert after['data'] == [] and after['has_more'] is False


def test_costs_rows(http, server):
    day = NOW // D * D - D
    rows = get(
        http,
        server,
        '/organization/costs',
        [('start_time', day), ('limit', 1), ('group_by', 'line_item'), ('group_by', 'project_id')],
    ).json()['data'][0]['results']
    assert rows
    for row in rows:
        assert row['amount']['currency'] == 'usd' and isinstance(row['amount']['value'], float)
        assert row['line_item'] and row['project_id'] and row['quantity'] > 0 and row['quantity_unit']
    final = ORG.final('costs', '1d', ('line_item', 'project_id'), day)
    got = {(r['line_item'], r['project_id'], 'usd'): r['amount']['value'] for r in rows}
    assert got.keys() == final.keys()
    # Yesterday's costs are still being revised.
    assert sum(got.values()) < sum(v['amount'] for v in final.values())


# -- listings ------------------------------------------------------------------------------------------


def _walk(http, server, path, params=()):
    items, after = [], None
    while True:
        body = get(http, server, path, list(params) + [('limit', 2)] + ([('after', after)] if after else [])).json()
        items += body['data']
        assert len(body['data']) <= 2
        if not body['has_more']:
            return items
        assert body['last_id'] == body['data'][-1]['id']
        after = body['last_id']


def test_projects(http, server):
    active = _walk(http, server, '/organization/projects')
    everything = _walk(http, server, '/organization/projects', [('include_archived', 'true')])
    archived = [p for p in everything if p['status'] == 'archived']
    assert len(archived) == 1 and archived[0]['archived_at'] <= NOW
    assert [p for p in everything if p['status'] == 'active'] == active
    assert len(everything) == len(ORG.projects)
    names = [p['name'] for p in everything]
    assert len(set(names)) < len(names), 'two projects share a name'
    assert get(http, server, '/organization/projects', [('limit', 101)]).status_code == 400


def test_api_keys_and_users(http, server):
    project = ORG.projects[1]
    keys = _walk(http, server, f'/organization/projects/{project.id}/api_keys')
    assert {k['id'] for k in keys} == {k.id for k in ORG.api_keys_at(project.id, NOW)}
    deleted = [k for k in ORG.api_keys if k.deleted_at is not None]
    assert deleted and deleted[0].id not in {k['id'] for k in keys}
    assert {k['owner']['type'] for k in keys} == {'user', 'service_account'}
    assert get(http, server, '/organization/projects/proj_nope/api_keys').status_code == 404
    users = _walk(http, server, '/organization/users')
    assert [u['id'] for u in users] == [u.id for u in ORG.users]
    email = ORG.users[2].email
    body = get(http, server, '/organization/users', [('emails', email)]).json()
    assert [u['email'] for u in body['data']] == [email]


def test_usage_ids_resolve_to_listed_names_except_deleted_keys():
    keys = {k.id for p in ORG.projects for k in ORG.api_keys_at(p.id, NOW)}
    used = {key[0] for key in ORG.final_totals('completions', ('api_key_id',), START, NOW - H)}
    missing = used - keys
    assert missing == {k.id for k in ORG.api_keys if k.deleted_at is not None} & used


# -- the log, the clock, the CLI, the scale ------------------------------------------------------------


def test_request_log(http, server, clock):
    clock.advance(42)
    get(
        http, server, usage_path('completions'), [('start_time', NOW - H), ('group_by', 'model'), ('group_by', 'batch')]
    )
    record = server.requests[-1]
    assert record.method == 'GET' and record.path == '/v1' + usage_path('completions')
    assert record.query == {'start_time': [str(NOW - H)], 'group_by': ['model', 'batch']}
    assert record.status == 200 and record.bytes > 100 and record.time == NOW + 42
    assert server.requests_to('completions') == [record]


def test_same_query_same_time_same_page_later_more(http, server, clock):
    params = [('start_time', NOW - H), ('bucket_width', '1m'), ('limit', 120)]
    first = get(http, server, usage_path('completions'), params).content
    assert get(http, server, usage_path('completions'), params).content == first
    clock.advance(120)
    assert get(http, server, usage_path('completions'), params).content != first


def test_clocks():
    c = Clock(100)
    assert c.now() == 100 and c.advance(5) == 105 and c() == 105
    assert c.set(50) == 50
    with pytest.raises(ValueError):
        c.advance(-1)
    fake = [1000.0]
    r = RealClock(start=10, factor=60, time_fn=lambda: fake[0])
    assert r.now() == 10
    fake[0] += 2
    assert r.now() == 130
    r.advance(5)
    assert r.now() == 135
    r.set(0)
    assert r.now() == 0


def test_standalone_server():
    proc = subprocess.Popen(
        [sys.executable, '-m', 'tests.simulator', '--port', '0', '--admin-key', 'sk-admin-demo', '--accelerate', '120'],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith('http://127.0.0.1:') and base_url.endswith('/v1')
        r = requests.get(
            base_url + '/organization/usage/completions',
            params={'start_time': int(time.time()) - 3600},
            headers={'Authorization': 'Bearer sk-admin-demo'},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()['data']
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_big_organization_serves_whole_pages():
    # How fast it serves them is the benchmark's to measure (simulator_cpu_s), not a timed test's: a wall-clock
    # bound here would fail on a loaded machine.
    big = Organization(seed=3, series_per_bucket={'completions': 3000}, projects=40)
    clock = Clock(big.traffic_start + 36 * H + 1234)
    with SimulatorServer(big, clock) as server, requests.Session() as http:
        r = http.get(
            server.base_url + usage_path('completions'),
            params=[('start_time', int(clock.now()) // H * H - 6 * H), ('bucket_width', '1h'), ('limit', 168)]
            + [('group_by', d) for d in ENDPOINTS_BY_NAME['completions'].group_by],
            headers={'Authorization': 'Bearer sk-admin-test'},
            timeout=30,
        )
    data = r.json()['data']
    assert len(data) == 7
    assert [len(b['results']) for b in data[:-1]] == [
        big.series_alive('completions', b['start_time']) for b in data[:-1]
    ]
    assert min(len(b['results']) for b in data[:-1]) > 2900
