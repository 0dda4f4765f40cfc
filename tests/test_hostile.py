"""Hostile and broken inputs, against a misbehaving server on loopback (tests/hostile.py) or a damaged
saved state: the admin key never leaks, one response cannot exhaust memory or time, no request leaves
the configured host, and bad data never becomes a metric.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import math
import re
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from datadog_checks.base import AgentCheck, ConfigurationError
from datadog_checks.base.stubs import aggregator as _aggregator
from datadog_checks.base.stubs import datadog_agent as _datadog_agent

from datadog_checks.openai import OpenAICheck
from datadog_checks.openai import client as client_module
from datadog_checks.openai.collector import SEP
from datadog_checks.openai.ledger import Ledger
from datadog_checks.openai.settings import Settings
from datadog_checks.openai.tags import MAX_TAG_LENGTH

from .hostile import (
    HostileServer,
    Reply,
    bucket,
    completions_row,
    cost_row,
    dumps,
    gzip_bomb,
    gzipped,
    listing,
    page,
)

H = 3600
D = 86400
# 2026-01-01T10:10:00Z: inside the first hour bucket of a month, so costs and usage share one day.
NOW = 1_767_225_600 + 10 * H + 600
HOUR = NOW // H * H
DAY = NOW // D * D
# Long and distinctive, so that a partial leak shows too (any 16 characters of it).
KEY = 'sk-admin-' + 'Zq7RtY2wPx9K' * 6 + 'endOfTheKey42'
OTHER_KEY = 'sk-admin-' + 'Mn4BvC8xLk3J' * 6 + 'rotatedKey77'
JSON = {'Content-Type': 'application/json'}
ROOT = Path(__file__).resolve().parent.parent


class FakeTime:
    """The check's clocks, moving only when the check sleeps or the test advances them."""

    def __init__(self, now: float = NOW):
        self.t = float(now)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def make(hostile, fake, state, aggregator):
    def make_check(real_time=False, **overrides):
        instance = {
            'account_name': 'evil',
            'admin_api_key': KEY,
            'api_base_url': hostile.base_url,
            'min_collection_interval': 300,
            'timeout': 5,
            'usage_endpoints': ['completions'],
            'collect_costs': False,
            'resolve_project_names': False,
            'resolve_api_key_names': False,
            'max_retries': 1,
            **overrides,
        }
        instance = {k: v for k, v in instance.items() if v is not None}
        check = OpenAICheck('openai', {}, [instance])
        if not real_time:
            check.clock = fake.now
            check.monotonic = fake.now
            check.sleep = fake.sleep
        return check

    return make_check


def initialize(check) -> None:
    """What the first run does before collecting: build the config models, then the settings."""
    while check.check_initializations:
        check.check_initializations.popleft()()


def key_file(tmp_path, content: str) -> dict:
    path = tmp_path / 'openai_admin_key'
    path.write_text(content)
    return {
        'reader': {'type': 'file', 'path': str(path)},
        'writer': {'type': 'header', 'name': 'Authorization', 'value': 'Bearer <TOKEN>'},
    }


def statuses():
    return [sc for scs in _aggregator._service_checks.values() for sc in scs]


def last_status():
    return _aggregator.service_checks('openai.can_connect')[-1]


def all_tags() -> list[str]:
    return [t for stubs in _aggregator._metrics.values() for m in stubs for t in m.tags]


# -- 5. Ids from responses never choose the path -----------------------------------------------------


def test_ids_from_responses_are_quoted_in_paths(hostile, make, dd_run_check, aggregator):
    evil = '../../organization/admin_api_keys?'

    def respond(request):
        if request.path == '/v1/organization/projects':
            projects = [{'id': evil, 'name': 'evil'}, {'id': '..', 'name': 'dots'}, {'id': 'proj_ok', 'name': 'ok'}]
            return Reply(200, listing(*({'object': 'organization.project', **p} for p in projects)), JSON)
        if request.path.endswith('/api_keys'):
            return Reply(200, listing(), JSON)
        if request.path.startswith('/v1/organization/usage/'):
            return Reply(200, page(bucket(HOUR)), JSON)
        return Reply(404, dumps({'error': {'message': 'not here'}}), JSON)

    hostile.respond = respond
    check = make(resolve_project_names=True, resolve_api_key_names=True)
    dd_run_check(check)
    paths = hostile.paths()
    assert '/v1/organization/admin_api_keys' not in paths
    allowed = re.compile(r'/v1/organization/(projects|projects/[^/]+/api_keys|usage/completions)')
    assert all(allowed.fullmatch(p) for p in paths), paths
    assert '/v1/organization/projects/..%2F..%2Forganization%2Fadmin_api_keys%3F/api_keys' in paths
    assert '/v1/organization/projects/proj_ok/api_keys' in paths


# -- 6. Non-finite numbers are malformed --------------------------------------------------------------


@pytest.fixture
def stdlib_json(monkeypatch):
    """The JSON decoder of an Agent without orjson, which reads NaN, Infinity and 1e999 as floats."""

    class Stdlib:
        decode = staticmethod(json.loads)
        encode = staticmethod(json.dumps)

    monkeypatch.setattr(client_module, 'json', Stdlib)


def serve_costs(hostile, rows_of_run):
    """Costs pages: the rows of the current run (rows_of_run[0] first), one daily bucket."""

    def respond(request):
        return Reply(200, page(bucket(DAY, *rows_of_run[0], width=D)), JSON)

    hostile.respond = respond


@pytest.mark.parametrize('decoder', ['orjson', 'stdlib'])
@pytest.mark.parametrize('bad', ['NaN', 'Infinity', '-Infinity', '1e999', '-5', -5, 1e300, 'nan-numeric'])
def test_non_finite_and_negative_amounts_are_malformed(bad, decoder, hostile, make, fake, dd_run_check, request):
    if decoder == 'stdlib':
        request.getfixturevalue('stdlib_json')
    elif bad == 'nan-numeric':
        pytest.skip('orjson refuses a NaN literal: the whole page is not JSON (covered elsewhere)')
    if bad == 'nan-numeric':
        bad = math.nan
    rows = [[cost_row(1.5, 'proj_a'), cost_row(2.0, 'proj_b')]]
    serve_costs(hostile, rows)
    check = make(usage_endpoints=[], collect_costs=True, group_by={'costs': ['project_id']})
    dd_run_check(check)  # the baseline
    for run, row_a, row_b in ((2, bad, 2.5), (3, 1.75, 2.5)):
        rows[0] = [cost_row(row_a, 'proj_a'), cost_row(row_b, 'proj_b')]
        fake.sleep(300)
        _aggregator.reset()
        dd_run_check(check)
        amounts = {
            next(t for t in m.tags if t.startswith('project_id:')): m.value
            for m in _aggregator.metrics('openai.api.costs.amount')
        }
        totals = [m.value for m in _aggregator.metrics('openai.api.costs.month_to_date')]
        assert totals and all(math.isfinite(v) for v in totals)
        if run == 2:
            assert amounts == {'project_id:proj_b': pytest.approx(0.5)}
            assert totals[-1] == pytest.approx(4.0)  # proj_a's last good figure stands in the month's total
            assert any('1 malformed rows or buckets were skipped' in w for w in check.warnings)
        else:
            assert amounts == {'project_id:proj_a': pytest.approx(0.25)}
            assert totals[-1] == pytest.approx(4.25)
        for text in _datadog_agent._cache.values():
            assert 'NaN' not in text and 'Infinity' not in text
            Ledger.loads(text)
    for stubs in _aggregator._metrics.values():
        assert all(math.isfinite(m.value) for m in stubs)


def test_non_finite_usage_counts_are_malformed(stdlib_json, hostile, make, fake, dd_run_check, aggregator):
    tokens = [100]

    def respond(request):
        rows = [completions_row(tokens[0], model='a'), completions_row(10, model='b')]
        return Reply(200, page(bucket(HOUR, *rows)).replace(b'"input_tokens": 101', b'"input_tokens": 1e999'), JSON)

    hostile.respond = respond
    check = make(group_by={'completions': ['model']})
    dd_run_check(check)
    tokens[0] = 101  # sent as 1e999
    fake.sleep(300)
    aggregator.reset()
    dd_run_check(check)
    assert not aggregator.metrics('openai.api.usage.completions.input_tokens')
    assert any('1 malformed rows' in w for w in check.warnings)
    tokens[0] = 150
    fake.sleep(300)
    aggregator.reset()
    dd_run_check(check)
    aggregator.assert_metric('openai.api.usage.completions.input_tokens', 50, tags=['openai_account:evil', 'model:a'])


# -- 7. Tag values as Datadog stores them, distinct ids distinct, no separator injection ---------------


def test_a_separator_in_a_value_cannot_shift_dimensions(hostile, make, fake, dd_run_check, aggregator):
    tokens = [100]

    def respond(request):
        rows = [
            completions_row(tokens[0], user_id=f'user_a{SEP}evil', api_key_id='key_a'),
            completions_row(tokens[0], user_id='user_b', api_key_id='key_b'),
        ]
        return Reply(200, page(bucket(HOUR, *rows)), JSON)

    hostile.respond = respond
    check = make(group_by={'completions': ['user_id', 'api_key_id']})
    dd_run_check(check)
    tokens[0] = 130
    fake.sleep(300)
    aggregator.reset()
    dd_run_check(check)
    tags = all_tags()
    assert 'api_key_id:evil' not in tags and 'user_id:user_a' not in tags
    aggregator.assert_metric(
        'openai.api.usage.completions.input_tokens',
        30,
        tags=['openai_account:evil', 'user_id:user_b', 'api_key_id:key_b'],
    )
    assert any('1 malformed rows' in w for w in check.warnings)



ALLOWED_TAG = re.compile(r'[a-z][a-z0-9_:./-]*')


def test_tag_values_are_normalized_and_distinct_ids_stay_distinct(hostile, make, fake, dd_run_check, aggregator):
    long_a = 'Model ' + 'x' * 300 + ' A'
    long_b = 'Model ' + 'x' * 300 + ' B'
    tokens = [100]

    def respond(request):
        if request.path == '/v1/organization/projects':
            names = [('proj_A,B', 'Team|Alpha\nOne'), ('proj_A;B', 'TEAM ALPHA ONE'), ('proj_C', 'y' * 300)]
            projects = [{'object': 'organization.project', 'id': i, 'name': n} for i, n in names]
            return Reply(200, listing(*projects), JSON)
        rows = [
            completions_row(tokens[0], project_id='proj_A,B', model=long_a),
            completions_row(tokens[0], project_id='proj_A;B', model=long_b),
            completions_row(tokens[0], project_id='proj_C', model='GPT-4o'),
        ]
        return Reply(200, page(bucket(HOUR, *rows)), JSON)

    hostile.respond = respond
    check = make(group_by={'completions': ['project_id', 'model']}, resolve_project_names=True)
    dd_run_check(check)
    tokens[0] = 150
    fake.sleep(300)
    aggregator.reset()
    dd_run_check(check)
    series = aggregator.metrics('openai.api.usage.completions.input_tokens')
    assert len(series) == 3 and all(m.value == 50 for m in series)
    tag_sets = [dict(t.split(':', 1) for t in m.tags) for m in series]
    # Distinct ids and distinct long values keep distinct tags.
    assert len({t['project_id'] for t in tag_sets}) == 3
    assert len({t['model'] for t in tag_sets}) == 3
    for tag in all_tags():
        assert len(tag) <= MAX_TAG_LENGTH, tag
        assert ALLOWED_TAG.fullmatch(tag), tag
    by_project = {t['project_id']: t for t in tag_sets}
    assert by_project['proj_c']['model'] == 'gpt-4o'
    assert by_project['proj_c']['project_name'].startswith('yyyy')
    assert {t['project_name'] for t in tag_sets if t['project_id'] != 'proj_c'} == {'team_alpha_one'}


# -- 8. The saved state is validated on load ------------------------------------------------------------


def corrupt(text: str, how: str) -> str:
    data = json.loads(text)
    [values] = [v for _, v in data['buckets'].values()][:1]
    if how == 'negative':
        values[0][0] = -1e15
    elif how == 'huge':
        values[0][0] = 1e300
    elif how == 'string':
        values[0][0] = '1000'
    elif how == 'short row':
        values[0].pop()
    elif how == 'bad index':
        next(iter(data['buckets'].values()))[0][0] = 99
    elif how == 'separator in a key':
        data['series'][0] += SEP + 'evil'
    elif how == 'buckets as a list':
        data['buckets'] = list(data['buckets'].values())
    elif how == 'nan':
        values[0][0] = math.nan  # written as NaN, which only a lenient decoder reads
    elif how == 'not json':
        return text[: len(text) // 2]
    return json.dumps(data)


CORRUPTIONS = [
    'negative',
    'huge',
    'string',
    'short row',
    'bad index',
    'separator in a key',
    'buckets as a list',
    'nan',
    'not json',
]


@pytest.mark.parametrize('how', CORRUPTIONS)
def test_a_damaged_state_gets_one_warning_and_a_new_baseline(how, hostile, make, fake, state, dd_run_check, aggregator):
    tokens = [1000]
    hostile.respond = lambda request: Reply(
        200, page(bucket(HOUR, completions_row(tokens[0], model='a'), completions_row(5, model='b'))), JSON
    )
    check = make(group_by={'completions': ['model']})
    dd_run_check(check)
    [name] = [k for k in state if k.endswith('ledger_completions')]
    state[name] = corrupt(state[name], how)
    tokens[0] = 1100
    fake.sleep(300)
    aggregator.reset()
    check = make(group_by={'completions': ['model']})  # a restart: the state is read from disk
    dd_run_check(check)
    unreadable = [w for w in check.warnings if 'the saved state is unreadable' in w]
    assert len(unreadable) == 1 and 'recording a new baseline' in unreadable[0]
    assert not aggregator.metrics('openai.api.usage.completions.input_tokens')  # a baseline, no huge delta
    Ledger.loads(state[name])  # the new state is sound
    # The next run is a normal one: no warning again, no crash, the right difference.
    tokens[0] = 1150
    fake.sleep(300)
    aggregator.reset()
    dd_run_check(check)
    assert len([w for w in check.warnings if 'unreadable' in w or 'unexpected error' in w]) == 1
    aggregator.assert_metric('openai.api.usage.completions.input_tokens', 50, tags=['openai_account:evil', 'model:a'])
    for stubs in _aggregator._metrics.values():
        assert all(abs(m.value) < 1e6 for m in stubs)


