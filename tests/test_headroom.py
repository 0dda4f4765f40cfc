"""Headroom: rate limits, their per-minute utilization, spend limits and the month-end projection.

The check runs against the API simulator; the expected figures are computed here from the simulator's own traffic,
costs and limits, with the tests' own mapping of usage models to limit models and their own formulas.
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict

import pytest
from datadog_checks.base import AgentCheck

from datadog_checks.openai.headroom import days_left, days_remaining, limit_model, projected_month_end

from .conftest import DEFAULT_GROUP_BY, assert_same_totals, normalized, reported_totals, submitted_totals

M = 60
H = 3600
D = 86400

# How OpenAI's limits name the simulator's usage models (tests/simulator/limits.py), written out by hand.
USAGE_TO_LIMIT = {
    'gpt-4o-mini-2024-07-18': 'gpt-4o-mini',
    'gpt-4o-2024-08-06': 'gpt-4o',
    'gpt-4.1-2025-04-14': 'gpt-4.1',
    'gpt-4.1-mini-2025-04-14': 'gpt-4.1-mini',
    'o3-2025-04-16': 'o3',
    'o4-mini-2025-04-16': 'o4-mini',
    'gpt-5-2025-08-07': 'gpt-5',
    'gpt-4o-realtime-preview-2024-12-17': 'gpt-4o-realtime-preview',
    'gpt-4o-audio-preview-2024-12-17': 'gpt-4o-audio-preview',
    'text-embedding-3-small': 'text-embedding-3-small',
    'text-embedding-3-large': 'text-embedding-3-large',
    'text-embedding-ada-002-v2': 'text-embedding-ada-002',
    'omni-moderation-latest': 'omni-moderation-latest',
    'text-moderation-latest': None,
    'gpt-image-1': 'gpt-image-1',
    'dall-e-3': 'dall-e-3',
    'dall-e-2': 'dall-e-2',
    'tts-1': 'tts-1',
    'tts-1-hd': 'tts-1-hd',
    'gpt-4o-mini-tts': 'gpt-4o-mini-tts',
    'whisper-1': 'whisper-1',
    'gpt-4o-transcribe': 'gpt-4o-transcribe',
    'gpt-4o-mini-transcribe': 'gpt-4o-mini-transcribe',
}
RPM, TPM, IPM = 'max_requests_per_1_minute', 'max_tokens_per_1_minute', 'max_images_per_1_minute'
# What each per-minute limit counts, per endpoint (the rule).
MEASURES = {
    'completions': {RPM: ('num_model_requests',), TPM: ('input_tokens', 'output_tokens')},
    'embeddings': {RPM: ('num_model_requests',), TPM: ('input_tokens',)},
    'moderations': {RPM: ('num_model_requests',), TPM: ('input_tokens',)},
    'images': {RPM: ('num_model_requests',), IPM: ('images',)},
    'audio_speeches': {RPM: ('num_model_requests',)},
    'audio_transcriptions': {RPM: ('num_model_requests',)},
}
SPEND_METRICS = (
    'openai.api.spend_limit.threshold',
    'openai.api.spend_limit.utilization',
    'openai.api.spend_limit.projected_utilization',
    'openai.api.spend_limit.days_left',
)


def tag_dict(stub) -> dict[str, str]:
    out = {}
    for t in stub.tags:
        name, _, value = t.partition(':')
        assert name not in out, stub.tags
        out[name] = value
    return out


def last_gauges(aggregator, metric: str, *keys: str) -> dict[tuple, float]:
    """The last value of each series of a gauge, by the values of the tags `keys` ('' when absent)."""
    out = {}
    for stub in aggregator.metrics(metric):
        assert stub.type == aggregator.GAUGE, metric
        tags = tag_dict(stub)
        assert tags['openai_account'] == 'test'
        out[tuple(tags.get(k, '') for k in keys)] = stub.value
    return out


def month_start(t: float) -> int:
    tm = time.gmtime(t)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def limits_of(sim, project_id: str, model: str) -> dict:
    [row] = [r for r in sim.limits.rate[project_id] if r['model'] == model]
    return row


def expected_utilization(org, sim, endpoint: str, now: float, minutes: int = 60) -> dict[tuple, float]:
    """(project_id tag, limit model, limit) -> peak per-minute usage of the window / limit, from the simulator."""
    now = int(now)
    start = now // M * M - minutes * M
    peaks: dict[tuple, float] = {}
    for minute in range(start, now, M):
        per: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
        for (project_id, model), values in org.observed(endpoint, '1m', ('project_id', 'model'), minute, now).items():
            project = org.project(project_id)
            if project is None or project.archived_by(now) or USAGE_TO_LIMIT[model] is None:
                continue
            for limit, fields in MEASURES[endpoint].items():
                per[(project_id, USAGE_TO_LIMIT[model])][limit] += sum(values.get(f) or 0 for f in fields)
        for (project_id, model), sums in per.items():
            for limit, value in sums.items():
                key = (project_id, model, limit)
                peaks[key] = max(peaks.get(key, 0), value)
    out = {}
    for (project_id, model, limit), peak in peaks.items():
        value = limits_of(sim, project_id, model).get(limit)
        if value:
            out[(normalized('project_id', project_id), model, limit)] = peak / value
    return out


# -- the model-name rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'usage, limits, expected',
    [
        ('gpt-4o-2024-08-06', {'gpt-4o', 'gpt-4o-mini'}, 'gpt-4o'),
        ('gpt-4o-mini-2024-07-18', {'gpt-4o', 'gpt-4o-mini'}, 'gpt-4o-mini'),
        ('gpt-4o-mini-2024-07-18', {'gpt-4o'}, 'gpt-4o'),
        ('ft:gpt-4o-mini-2024-07-18:org::abc', {'gpt-4o', 'gpt-4o-mini'}, 'gpt-4o-mini'),
        ('ft:gpt-4o-mini-2024-07-18:org::abc', {'ft:gpt-4o-mini-2024-07-18:org::abc', 'gpt-4o-mini'}, None),
        ('gpt-4o', {'gpt-4o', 'gpt-4o-mini'}, 'gpt-4o'),
        ('gpt-4o-2024-08-06', {'gpt-4o-2024-08-06', 'gpt-4o'}, 'gpt-4o-2024-08-06'),
        ('gpt-4.1-mini-2025-04-14', {'gpt-4', 'gpt-4.1', 'gpt-4.1-mini'}, 'gpt-4.1-mini'),
        # `gpt-4` is not followed by `-` in these: they are other models.
        ('gpt-4o-2024-08-06', {'gpt-4'}, None),
        ('gpt-4.1-2025-04-14', {'gpt-4'}, None),
        ('text-embedding-ada-002-v2', {'text-embedding-ada-002', 'text-embedding-3-small'}, 'text-embedding-ada-002'),
        ('text-moderation-latest', {'omni-moderation-latest'}, None),
        ('o4-mini-2025-04-16', {'o4', 'o4-mini', 'o3'}, 'o4-mini'),
        ('ft:', {'gpt-4o'}, None),
        ('ft:davinci-002:org:custom:id', set(), None),
    ],
)
def test_usage_models_match_the_limits_models(usage, limits, expected):
    if usage.startswith('ft:') and usage in limits:
        expected = usage  # a fine-tune with a limit of its own: the exact name first
    assert limit_model(usage, limits) == expected


def test_the_projection_formulas_on_hand_computed_values():
    now = calendar.timegm((2026, 1, 11, 6, 0, 0))  # 20 days and 18 hours left in January
    assert days_remaining(now) == pytest.approx(20.75)
    assert projected_month_end(100.0, 10.0, now) == pytest.approx(307.5)
    assert days_left(200.0, 100.0, 10.0) == pytest.approx(10.0)
    assert days_left(200.0, 250.0, 10.0) == 0.0
    assert days_left(200.0, 200.0, 0.0) == 0.0
    assert days_left(200.0, 100.0, 0.0) is None
    december = calendar.timegm((2026, 12, 31, 12, 0, 0))
    assert days_remaining(december) == pytest.approx(0.5)


# -- the check against the simulator ----------------------------------------------------------------------


def test_utilization_is_the_simulators_peak_over_its_limit(org, clock, sim, make_check, dd_run_check, aggregator):
    clock.advance(36 * H + 17)
    check = make_check()
    dd_run_check(check)
    now = clock.now()
    got = last_gauges(aggregator, 'openai.api.rate_limits.utilization', 'project_id', 'model', 'limit')
    expected = {}
    for endpoint in MEASURES:
        expected.update(expected_utilization(org, sim, endpoint, now))
    assert expected, 'the scenario has no per-minute usage: the comparison would prove nothing'
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert any(v > 0.05 for v in got.values()), 'some utilization should be more than noise in the sandboxes'
    assert not sim.validation_errors and not sim.response_errors


def test_limits_are_submitted_for_the_models_in_use_with_their_names(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    clock.advance(36 * H)
    check = make_check()
    dd_run_check(check)
    utilization = last_gauges(aggregator, 'openai.api.rate_limits.utilization', 'project_id', 'model')
    rpm = last_gauges(aggregator, 'openai.api.rate_limits.max_requests_per_1_minute', 'project_id', 'model')
    # Only the (project, model) pairs with usage in the window: a project lists every model OpenAI offers.
    assert set(rpm) == set(utilization)
    projects = {normalized('project_id', p.id): p for p in org.projects}
    for (project, model), value in rpm.items():
        assert value == limits_of(sim, projects[project].id, model)[RPM]
    per_day = last_gauges(aggregator, 'openai.api.rate_limits.max_requests_per_1_day', 'project_id', 'model')
    assert per_day and set(per_day) <= set(rpm)
    images = last_gauges(aggregator, 'openai.api.rate_limits.max_images_per_1_minute', 'project_id', 'model')
    assert {model for _, model in images} <= {'gpt-image-1', 'dall-e-3', 'dall-e-2'}
    for stub in aggregator.metrics('openai.api.rate_limits.utilization'):
        tags = tag_dict(stub)
        assert set(tags) == {'openai_account', 'project_id', 'project_name', 'model', 'limit'}
        assert tags['project_name'] == normalized('project_name', projects[tags['project_id']].name)


def test_rate_limits_follow_the_after_cursor(org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch):
    from datadog_checks.openai.sources import limits

    monkeypatch.setattr(limits, 'LIST_LIMIT', 4)
    clock.advance(36 * H)
    check = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(check)
    project = org.projects[0]
    pages = [r for r in sim.requests_to('rate_limits') if project.id in r.path]
    assert len(pages) == -(-len(sim.limits.rate[project.id]) // 4) > 1
    assert [r.param('after') for r in pages[1:]] == [
        sim.limits.rate[project.id][i * 4 - 1]['id'] for i in range(1, len(pages))
    ]
    # The last page's models are known: the utilization of gpt-5 (late in the listing) is there.
    assert sim.limits.rate[project.id][-1]['model'] not in {r['model'] for r in sim.limits.rate[project.id][:4]}
    rpm = last_gauges(aggregator, 'openai.api.rate_limits.max_requests_per_1_minute', 'project_id', 'model')
    assert (normalized('project_id', project.id), 'gpt-5') in rpm
    assert not sim.validation_errors


def test_spend_limits_in_dollars_with_projection_and_days_left(org, clock, sim, make_check, dd_run_check, aggregator):
    clock.advance(10 * D + 5 * H)
    check = make_check(usage_endpoints=['completions'])
    dd_run_check(check)
    now = clock.now()
    today = int(now) // D * D
    month = reported_totals(org, 'costs', ('project_id',), month_start(now), today + D, now)
    week = reported_totals(org, 'costs', ('project_id',), today - 7 * D, today, now)
    org_month = sum(v['amount'] for v in month.values())
    org_rate = sum(v['amount'] for v in week.values()) / 7
    left_in_month = (calendar.timegm((2026, 2, 1, 0, 0, 0)) - now) / D

    keys = ('scope', 'project_id', 'currency', 'enforcement')
    threshold = last_gauges(aggregator, 'openai.api.spend_limit.threshold', *keys)
    by_name = {p.name: p for p in org.projects}
    production, staging = by_name['Production'], by_name['Staging']
    sandboxes = [p for p in org.projects if p.name == 'Sandbox']
    pid = {p.id: normalized('project_id', p.id) for p in org.projects}
    # threshold_amount is in cents: 250000 cents is 2500 dollars.
    assert threshold == {
        ('organization', '', 'usd', 'enforcing'): 2500.0,
        ('project', pid[production.id], 'usd', 'enforcing'): 1500.0,
        ('project', pid[staging.id], 'usd', 'inactive'): 2000.0,
        ('project', pid[sandboxes[0].id], 'usd', 'enforcing'): 50.0,
        ('project', pid[sandboxes[1].id], 'usd', 'enforcing'): 1000.0,
    }, 'Research has no limit (404) and Legacy chatbot is archived: no threshold for them'

    utilization = last_gauges(aggregator, 'openai.api.spend_limit.utilization', *keys)
    projected = last_gauges(aggregator, 'openai.api.spend_limit.projected_utilization', *keys)
    left = last_gauges(aggregator, 'openai.api.spend_limit.days_left', *keys)
    org_key = ('organization', '', 'usd', 'enforcing')
    assert utilization[org_key] == pytest.approx(org_month / 2500)
    assert projected[org_key] == pytest.approx((org_month + org_rate * left_in_month) / 2500)
    assert left[org_key] == pytest.approx((2500 - org_month) / org_rate)
    for project, dollars in ((production, 1500.0), (sandboxes[0], 50.0), (sandboxes[1], 1000.0)):
        key = ('project', pid[project.id], 'usd', 'enforcing')
        spent = month[(pid[project.id], 'usd')]['amount']
        rate = week[(pid[project.id], 'usd')]['amount'] / 7
        assert utilization[key] == pytest.approx(spent / dollars)
        assert projected[key] == pytest.approx((spent + rate * left_in_month) / dollars)
        assert left[key] == pytest.approx(max(0.0, (dollars - spent) / rate))
    assert left[('project', pid[sandboxes[0].id], 'usd', 'enforcing')] == 0.0, 'the sandbox spent its 50 dollars'

    org_end = last_gauges(aggregator, 'openai.api.costs.projected_month_end', 'currency')
    assert org_end == {('usd',): pytest.approx(org_month + org_rate * left_in_month)}
    project_end = last_gauges(aggregator, 'openai.api.costs.project_projected_month_end', 'project_id', 'currency')
    research = pid[by_name['Research'].id]
    research_rate = week[(research, 'usd')]['amount'] / 7
    expected_research = month[(research, 'usd')]['amount'] + research_rate * left_in_month
    assert project_end[(research, 'usd')] == pytest.approx(expected_research)
    assert not sim.validation_errors and not sim.response_errors


def test_a_key_without_the_limits_permission_warns_and_usage_stays_ok(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    from .conftest import ADMIN_KEY

    sim.limits_denied_keys.add(ADMIN_KEY)
    clock.advance(36 * H)
    check = make_check(usage_endpoints=['completions'])
    dd_run_check(check)
    warnings = [w for w in check.warnings if 'spend limits' in w]
    assert len(warnings) == 1, check.warnings
    assert 'lacks the permission to read the organization\'s limits' in warnings[0]
    assert 'collect_headroom: false' in warnings[0]
    # One 403 is enough: the projects' spend limits are not asked for one by one.
    assert [r.status for r in sim.requests if r.endpoint in ('spend_limit', 'project_spend_limit')] == [403]
    for metric in SPEND_METRICS:
        assert not aggregator.metrics(metric), metric
    assert aggregator.metrics('openai.api.rate_limits.utilization'), 'rate limits are another permission'
    assert aggregator.metrics('openai.api.costs.month_to_date')
    [status] = aggregator.service_checks('openai.can_connect')
    assert status.status == AgentCheck.OK, status.message


def test_a_failed_per_minute_read_never_fails_the_usage_or_the_run(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    clock.advance(36 * H)
    check = make_check(usage_endpoints=['completions', 'embeddings'], max_retries=0)
    dd_run_check(check)
    clock.advance(300)
    aggregator.reset()
    check.warnings.clear()
    sim.faults.add('completions', 500, count=None, bucket_width='1m')
    dd_run_check(check)
    assert any(
        'completions_per_minute: OpenAI answered 500' in w and 'usage collection is not affected' in w
        for w in check.warnings
    ), check.warnings
    [status] = aggregator.service_checks('openai.can_connect')
    assert status.status == AgentCheck.OK, 'a headroom read is not an endpoint of the verdict'
    models = {tag_dict(s)['model'] for s in aggregator.metrics('openai.api.rate_limits.utilization')}
    assert models and models <= {'text-embedding-3-small', 'text-embedding-3-large', 'text-embedding-ada-002'}
    assert [r.status for r in sim.requests_to('completions') if r.param('bucket_width') == '1h'][-1] == 200
    assert aggregator.metrics('openai.api.usage.completions.input_tokens')


def test_a_run_that_reads_only_limits_is_still_critical(org, clock, sim, make_check, dd_run_check, aggregator):
    clock.advance(36 * H)
    check = make_check(usage_endpoints=['completions'], collect_costs=False, max_retries=0)
    sim.faults.add('completions', 500, count=None, bucket_width='1h')
    with pytest.raises(Exception, match='No endpoint could be read'):
        dd_run_check(check)
    assert aggregator.metrics('openai.api.spend_limit.threshold'), 'the limits were read'
    [status] = aggregator.service_checks('openai.can_connect')
    assert status.status == AgentCheck.CRITICAL


def test_limits_are_read_at_the_names_refresh_and_the_per_minute_reads_every_run(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    """The requests the headroom adds: 1 + 2 per active project at a refresh, 1 per endpoint with per-minute
    limits every run."""
    clock.advance(36 * H)
    check = make_check()
    dd_run_check(check)
    active = [p for p in org.projects_at(clock.now()) if not p.archived_by(clock.now())]
    refresh = [r for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]
    assert len(refresh) == 1 + 2 * len(active)
    per_minute = [r for r in sim.requests if r.param('bucket_width') == '1m']
    assert sorted(r.endpoint for r in per_minute) == sorted(MEASURES)
    for r in per_minute:
        assert r.query['group_by'] == ['project_id', 'model'] and int(r.param('limit')) == 61
        assert int(r.param('start_time')) == int(clock.now()) // M * M - H
    for _ in range(3):
        clock.advance(300)
        sim.clear_log()
        dd_run_check(check)
        assert not [r for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]
        assert len([r for r in sim.requests if r.param('bucket_width') == '1m']) == len(MEASURES)
    clock.advance(3600)
    sim.clear_log()
    dd_run_check(check)
    assert len([r for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]) == len(
        refresh
    )
    # Gauges every run, limits known or freshly read alike.
    assert aggregator.metrics('openai.api.spend_limit.threshold')
    assert not sim.validation_errors


def test_a_refresh_cut_short_goes_on_at_the_next_run(org, clock, sim, make_check, dd_run_check, aggregator):
    clock.advance(36 * H)
    check = make_check(usage_endpoints=['completions'], collect_costs=False, max_retries=0)
    sim.faults.add('project_spend_limit', 503, count=None)
    dd_run_check(check)
    assert any('limit reads left of this refresh are done at the next run' in w for w in check.warnings)
    first = [r.endpoint for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]
    # The organization's spend limit and the first project's rate limits, then the 503.
    assert first == ['spend_limit', 'rate_limits', 'project_spend_limit']
    sim.faults.clear()
    sim.clear_log()
    clock.advance(300)
    dd_run_check(check)
    rest = [r for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]
    active = [p for p in org.projects_at(clock.now()) if not p.archived_by(clock.now())]
    assert len(rest) == 2 * len(active) - 1, 'the rest of the refresh, from the spend limit that failed'
    assert all(r.status == 200 or r.endpoint == 'project_spend_limit' for r in rest)
    keys = ('scope', 'project_id')
    assert len(last_gauges(aggregator, 'openai.api.spend_limit.threshold', *keys)) == 5


def test_headroom_off_reads_and_submits_none_of_it(org, clock, sim, make_check, dd_run_check, aggregator):
    clock.advance(36 * H)
    check = make_check(collect_headroom=False, resolve_project_names=False)
    dd_run_check(check)
    assert not [r for r in sim.requests if r.endpoint in ('rate_limits', 'spend_limit', 'project_spend_limit')]
    assert not [r for r in sim.requests if r.param('bucket_width') == '1m']
    assert not sim.requests_to('projects')
    for stub_name in aggregator._metrics:
        assert not stub_name.startswith(('openai.api.rate_limits.', 'openai.api.spend_limit.')), stub_name
        assert 'projected' not in stub_name


def test_widening_the_costs_window_over_an_older_state_submits_no_day_twice(
    org, clock, sim, make_check, dd_run_check, monkeypatch
):
    """A state saved when the costs window reached 3 days back (before the projection needed 7): after the upgrade,
    the days between are read for the daily rate only, never submitted again."""
    from datadog_checks.openai.sources import CostsSource
    from datadog_checks.openai.sources.usage import floor_to

    def old_window(self, now, seconds):
        return min(month_start(now), floor_to(now - 3 * D, seconds))

    clock.advance(28 * D)  # January 29
    first = clock.now()
    monkeypatch.setattr(CostsSource, 'window_start', old_window)
    check = make_check(usage_endpoints=['completions'], collect_headroom=False)
    for _ in range(4 * 12):  # to February 2: the old window then starts on January 30
        dd_run_check(check)
        clock.advance(2 * H)
    monkeypatch.undo()
    check = make_check(usage_endpoints=['completions'], collect_headroom=False)  # the upgrade: reaches January 26
    for _ in range(4 * 12):
        dd_run_check(check)
        clock.advance(2 * H)
    dd_run_check(check)
    now = clock.now()
    group_by = DEFAULT_GROUP_BY['costs']
    # The first run recorded a baseline of what OpenAI reported then; every increase since was submitted, once.
    expected = reported_totals(org, 'costs', group_by, org.traffic_start, int(now) + D, now)
    for key, fields in reported_totals(org, 'costs', group_by, org.traffic_start, int(first) + D, first).items():
        expected[key]['amount'] -= fields['amount']
    assert_same_totals(submitted_totals('costs', group_by), expected, 'costs')


def test_odd_limit_answers_are_no_limit_or_a_warning_and_spare_the_rest(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    clock.advance(36 * H)
    by_name = {p.name: p for p in org.projects}
    production, staging = by_name['Production'], by_name['Staging']
    # An empty answer is no limit; a threshold that is not a number of cents is a warning, and no gauge.
    sim.limits.spend[production.id] = {'object': 'project.spend_limit'}
    sim.limits.spend[staging.id] = dict(sim.limits.spend[staging.id], threshold_amount='a lot')
    sim.limits.rate[production.id][0] = {'object': 'project.rate_limit', 'id': 'rl-x', 'max_requests_per_1_minute': 5}
    sim.limits.rate[production.id][1]['max_tokens_per_1_minute'] = -3
    check = make_check(usage_endpoints=['completions'])
    dd_run_check(check)
    pid = {p.id: normalized('project_id', p.id) for p in org.projects}
    threshold = last_gauges(aggregator, 'openai.api.spend_limit.threshold', 'scope', 'project_id')
    assert ('project', pid[production.id]) not in threshold and ('project', pid[staging.id]) not in threshold
    assert ('organization', '') in threshold and len(threshold) == 3
    assert any(
        f'Spend limit of project {staging.id} not refreshed: OpenAI sent a spend limit without a usable '
        'threshold_amount' in w
        for w in check.warnings
    ), check.warnings
    assert any(
        f'Rate limits of project {production.id}: 2 malformed entries or fields were skipped.' in w
        for w in check.warnings
    ), check.warnings
    # The entry with a bad field keeps its good ones; the model of the entry without a model has no limit now.
    assert sim.limits.rate[production.id][1]['model'] == 'gpt-4o-mini'
    rpm = last_gauges(aggregator, 'openai.api.rate_limits.max_requests_per_1_minute', 'project_id', 'model')
    tpm = last_gauges(aggregator, 'openai.api.rate_limits.max_tokens_per_1_minute', 'project_id', 'model')
    assert (pid[production.id], 'gpt-4o-mini') in rpm and (pid[production.id], 'gpt-4o-mini') not in tpm
    utilization = last_gauges(aggregator, 'openai.api.rate_limits.utilization', 'project_id', 'model')
    assert (pid[production.id], 'gpt-4o') not in utilization
    assert (pid[production.id], 'o3') in utilization, 'the other models of the project keep their limits'
    [status] = aggregator.service_checks('openai.can_connect')
    assert status.status == AgentCheck.OK
