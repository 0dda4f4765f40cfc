"""What the check sends and says: tags, names, health, and a message for every way it can go wrong."""

import socket

import pytest
from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import datadog_agent
from datadog_checks.dev.utils import get_metadata_metrics

from datadog_checks.openai.catalogue import all_metrics

from .conftest import normalized
from .test_assets import queried_metrics

H = 3600


def warm(check, clock, dd_run_check, runs=3, step=300):
    for _ in range(runs):
        dd_run_check(check)
        clock.advance(step)


def tags_of(aggregator, metric):
    return [dict(t.split(':', 1) for t in m.tags) for m in aggregator.metrics(metric)]


def only_status(aggregator):
    return aggregator.service_checks('openai.can_connect')[-1]


def test_metrics_match_the_catalogue_metadata_and_the_assets(
    org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch
):
    # The audit log too (openai.check.logs.sent), on an Agent that ships logs.
    monkeypatch.setitem(datadog_agent._config, 'logs_enabled', True)
    sim.audit_log.add('login.succeeded', int(clock.now()) + 30 * H)
    check = make_check(group_by={'costs': ['project_id', 'line_item']}, collect_audit_logs=True, estimate_spend=True)
    clock.advance(30 * H)  # history for the first run to baseline, then growth to submit
    warm(check, clock, dd_run_check, runs=6)
    sim.faults.add('completions', 429, retry_after=1)
    dd_run_check(check)
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)
    submitted = set(aggregator.metric_names)
    # Those need days of runs (a settled day) or usage no price is known for: tests/test_estimates.py sends them.
    later = {'openai.api.costs.estimate_ratio', 'openai.api.usage.unpriced_tokens'}
    catalogue = {m.name for m in all_metrics()} - later
    assert submitted == catalogue, (
        f'never submitted: {catalogue - submitted}; not in catalogue: {submitted - catalogue}'
    )
    missing = queried_metrics() - submitted - later
    assert not missing, f'dashboards or monitors query metrics the check never sends: {missing}'


ALL_COMPLETIONS_DIMS = ['project_id', 'user_id', 'api_key_id', 'model', 'batch', 'service_tier']


def test_series_carry_ids_names_and_no_null_dimensions(org, clock, sim, make_check, dd_run_check, aggregator):
    # Per-key (and per-user) splits are opt-in: ask for them to see their names.
    check = make_check(tags=['team:ml'], group_by={'completions': ALL_COMPLETIONS_DIMS})
    clock.advance(30 * H)
    warm(check, clock, dd_run_check)
    rows = tags_of(aggregator, 'openai.api.usage.completions.input_tokens')
    assert rows
    # Ids and names as Datadog stores them (lowercase, `_` for the characters tags do not allow), spelled out by
    # the tests rather than by the check's own normalizer.
    names = {normalized('project_id', p.id): normalized('project_name', p.name) for p in org.projects}
    for tags in rows:
        assert tags['openai_account'] == 'test' and tags['team'] == 'ml'
        assert 'none' not in tags.values() and '' not in tags.values()
        if 'project_id' in tags:
            assert tags['project_name'] == names[tags['project_id']]
        assert 'user_email' not in tags  # personal data: off unless asked for
        assert tags.get('batch') in (None, 'true', 'false')
    assert any('api_key_name' in t for t in rows)
    # The archived project's usage still gets its name.
    archived = {normalized('project_id', p.id) for p in org.projects if p.archived_at}
    assert any(t.get('project_id') in archived and t.get('project_name') for t in rows)


def test_no_api_key_listing_unless_some_endpoint_is_grouped_by_key(org, clock, sim, make_check, dd_run_check):
    # By default nothing is grouped by api_key_id: listing every project's keys each hour would be for nothing.
    dd_run_check(make_check())
    assert not sim.requests_to('api_keys')
    assert sim.requests_to('projects')  # project names are still wanted
    sim.clear_log()
    dd_run_check(make_check(account_name='keys', group_by={'embeddings': ['project_id', 'api_key_id']}))
    assert sim.requests_to('api_keys')


def test_user_emails_on_request(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(
        resolve_user_emails=True,
        usage_endpoints=['completions'],
        collect_costs=False,
        group_by={'completions': ALL_COMPLETIONS_DIMS},
    )
    clock.advance(30 * H)
    warm(check, clock, dd_run_check)
    emails = {normalized('user_id', u.id): normalized('user_email', u.email) for u in org.users}
    rows = [t for t in tags_of(aggregator, 'openai.api.usage.completions.input_tokens') if t.get('user_id')]
    assert rows and all(t['user_email'] == emails[t['user_id']] for t in rows)


def test_a_project_key_is_rejected_with_what_to_do(sim, make_check, dd_run_check, aggregator):
    # Only the live API can tell a non-admin key of an unknown shape; the message must say what to do.
    check = make_check(admin_api_key='sk-a-user-key-not-admin')
    # A run that read nothing fails, so `agent status` lists the instance as an error with this message...
    with pytest.raises(Exception, match='organization admin key') as raised:
        dd_run_check(check, extract_message=True)
    # ...after the health it reports: the service check and can_connect are submitted before the error.
    sc = only_status(aggregator)
    assert str(raised.value) == sc.message
    assert sc.status == AgentCheck.CRITICAL
    assert 'organization admin key' in sc.message and 'admin-keys' in sc.message
    assert 'sk-a-user-key-not-admin' not in sc.message
    aggregator.assert_metric('openai.check.can_connect', 0)
    # A rejected key stops the run at the first endpoint instead of hammering the rest.
    assert len([r for r in sim.requests if r.status == 401]) <= 2


def test_a_key_without_the_usage_scope_gets_403_and_the_same_advice(sim, make_check, dd_run_check, aggregator):
    sim.faults.add('usage', 403, count=None)
    sim.faults.add('costs', 403, count=None)
    check = make_check(resolve_project_names=False, resolve_api_key_names=False)
    with pytest.raises(Exception, match='403'):
        dd_run_check(check, extract_message=True)
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.CRITICAL and '403' in sc.message and 'admin key' in sc.message
    aggregator.assert_metric('openai.check.can_connect', 0)
    aggregator.assert_metric('openai.check.run.duration', count=1)


def test_a_partly_read_run_is_a_warning_and_does_not_fail(sim, make_check, dd_run_check, aggregator):
    # A key refused on costs alone still reads usage: the run goes on, and says what was refused.
    sim.faults.add('costs', 403, count=None)
    check = make_check(resolve_project_names=False, resolve_api_key_names=False)
    dd_run_check(check)
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.WARNING
    assert sc.message.startswith('costs: OpenAI refused the key with 403') and 'admin key' in sc.message
    aggregator.assert_metric('openai.check.can_connect', 1)


def test_an_error_answer_is_quoted_by_openai_s_own_message_not_its_json(sim, make_check, dd_run_check, aggregator):
    # OpenAI's error bodies are JSON: the operator reads error.message, not the braces around it (a body that does
    # not decode is quoted as it is, see test_hostile.py).
    sim.faults.add('costs', 403, count=None, message='Missing scopes: api.usage.read.')
    check = make_check(resolve_project_names=False, resolve_api_key_names=False)
    dd_run_check(check)
    sc = only_status(aggregator)
    assert sc.message.startswith(
        'costs: OpenAI refused the key with 403 on /organization/costs (Missing scopes: api.usage.read.). '
    )
    assert '{' not in sc.message and 'invalid_request_error' not in sc.message


def test_a_run_whose_every_endpoint_hits_an_unexpected_error_fails(
    sim, make_check, dd_run_check, aggregator, monkeypatch
):
    from datadog_checks.openai.sources import UsageSource

    check = make_check(usage_endpoints=['completions', 'embeddings'], collect_costs=False)

    def broken(*args, **kwargs):
        raise KeyError('surprise')

    monkeypatch.setattr(UsageSource, 'collect', broken)
    with pytest.raises(Exception, match='every endpoint failed with an unexpected error'):
        dd_run_check(check, extract_message=True)
    assert only_status(aggregator).status == AgentCheck.CRITICAL
    assert sum('unexpected error (KeyError' in w for w in check.warnings) == 2


def test_unreachable_api_is_critical_with_a_network_message(make_check, dd_run_check, aggregator):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    check = make_check(api_base_url=f'http://127.0.0.1:{port}/v1', max_retries=1)
    with pytest.raises(Exception, match='No endpoint could be read: Cannot reach'):
        dd_run_check(check, extract_message=True)
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.CRITICAL
    assert 'Cannot reach' in sc.message and 'proxy' in sc.message


@pytest.mark.parametrize(
    'fault, options, expected, status_code',
    [
        ('non_json', {'status': 200}, 'not JSON', '200'),
        ('non_json', {'status': 502}, '502', '502'),
        ('truncated', {'declared_length': 'sent'}, 'not JSON', '200'),
        ('truncated', {'declared_length': 'full'}, 'cut off', 'truncated'),
        ('empty_body', {}, 'not JSON', '200'),
        (500, {}, '500', '500'),
        ('timeout', {'delay': 3}, 'did not answer', 'timeout'),
    ],
)
def test_bad_responses_get_a_message_and_spare_the_other_endpoints(
    fault, options, expected, status_code, clock, sim, make_check, dd_run_check, aggregator
):
    sim.faults.add('embeddings', fault, count=None, **options)
    check = make_check(max_retries=1, timeout=1)
    dd_run_check(check)
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.WARNING
    assert 'embeddings' in sc.message and expected in sc.message
    assert any(expected in w for w in check.warnings)
    # Every other endpoint was read.
    read = {r.endpoint for r in sim.requests if r.status == 200 and not r.fault}
    assert {'completions', 'moderations', 'costs'} <= read
    aggregator.assert_metric(
        'openai.check.api.retries',
        tags=['openai_account:test', 'endpoint:embeddings', f'reason:{_reason(fault, options)}'],
    )
    # Each answer counted under what it was, both tries: the dashboards split requests by status_code. A body cut
    # off or never finished is not the 200 its headers said; a body that is not JSON came whole, under its status.
    aggregator.assert_metric(
        'openai.check.api.requests',
        value=2,
        tags=['openai_account:test', 'endpoint:embeddings', f'status_code:{status_code}'],
    )


def _reason(fault, options):
    if fault == 'timeout':
        return 'network'
    if fault == 500 or options.get('status') == 502:
        return 'server_error'
    return 'bad_response'


def test_retry_after_is_honoured_within_the_time_budget(clock, sim, make_check, dd_run_check, aggregator):
    sim.faults.add('completions', 429, count=2, retry_after=7)
    check = make_check(usage_endpoints=['completions'], collect_costs=False, collect_headroom=False)
    started = clock.now()
    dd_run_check(check)
    # The baseline's first bucket, twice refused and then read; then the rest of its window, at once.
    times = [r.time for r in sim.requests_to('completions')]
    assert len(times) == 4 and times[3] == times[2]
    assert times[1] - times[0] == pytest.approx(7) and times[2] - times[1] == pytest.approx(7)
    assert clock.now() - started == pytest.approx(14)
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.WARNING and 'rate limited' in sc.message
    # The retries are counted as rate limited: what the collector health dashboard and monitors read.
    aggregator.assert_metric(
        'openai.check.api.retries', value=2, tags=['openai_account:test', 'endpoint:completions', 'reason:rate_limited']
    )


def test_a_wait_beyond_the_budget_is_not_taken(clock, sim, make_check, dd_run_check, aggregator):
    sim.faults.add('completions', 429, count=None, retry_after=3600)
    check = make_check(usage_endpoints=['completions', 'embeddings'], collect_costs=False)
    started = clock.now()
    dd_run_check(check)
    assert clock.now() - started < 240
    sc = only_status(aggregator)
    assert sc.status == AgentCheck.WARNING and 'exceeds what is left of the run\'s time budget' in sc.message
    assert sim.requests_to('embeddings')[-1].status == 200


def test_health_metrics_describe_the_run(clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(usage_endpoints=['completions'])
    warm(check, clock, dd_run_check, runs=2)
    base = ['openai_account:test']
    aggregator.assert_metric('openai.check.can_connect', 1, tags=base)
    aggregator.assert_metric('openai.check.api.requests', tags=base + ['endpoint:completions', 'status_code:200'])
    aggregator.assert_metric('openai.check.data_lag', 0, tags=base + ['endpoint:completions'])
    aggregator.assert_metric('openai.check.run.duration', tags=base)
    aggregator.assert_service_check('openai.can_connect', AgentCheck.OK, tags=base)
    # During an outage the lag grows by the time since the last complete read.
    sim.faults.add('completions', 503, count=None)
    aggregator.reset()
    dd_run_check(check)
    aggregator.assert_metric('openai.check.data_lag', 300, tags=base + ['endpoint:completions'])


def test_series_counts_the_level_endpoints_too(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(usage_endpoints=['vector_stores', 'code_interpreter_sessions'], collect_costs=False)
    clock.advance(30 * H)
    dd_run_check(check)
    # Vector stores group by project only: one series per project that holds a store.
    projects_with_stores = {vs.project_id for vs in org.vector_stores}
    assert len(projects_with_stores) >= 2
    base = ['openai_account:test']
    aggregator.assert_metric(
        'openai.check.series', len(projects_with_stores), tags=base + ['endpoint:vector_stores'], count=1
    )
    assert len(aggregator.metrics('openai.api.usage.vector_stores.usage_bytes')) == len(projects_with_stores)


def test_unreadable_state_starts_a_new_baseline_with_a_warning(clock, sim, make_check, dd_run_check, state, aggregator):
    check = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(check)
    for key in list(state):
        state[key] = '{"not": "a ledger"'
    clock.advance(300)
    check = make_check(usage_endpoints=['completions'], collect_costs=False)  # the state is read at a restart
    dd_run_check(check)
    assert any(w.startswith('completions: the saved state is unreadable (') for w in check.warnings), check.warnings


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['/opt/datadog-agent/bin/agent/agent', 'check', 'openai'], True),
        (['datadog-agent', '-c', '/etc/datadog-agent', 'check', 'openai', '--json'], True),
        (['/opt/datadog-agent/bin/agent/agent', 'run', '-p', '/opt/datadog-agent/run/agent.pid'], False),
        (['/usr/bin/python3', '-m', 'pytest'], False),
    ],
)
def test_the_agent_check_command_is_recognised(argv, expected):
    from datadog_checks.openai.check import running_under_agent_check_command

    assert running_under_agent_check_command(argv) is expected


def test_under_agent_check_the_state_is_read_but_never_saved(
    clock, sim, make_check, dd_run_check, state, aggregator, command_line
):
    command_line(['/opt/datadog-agent/bin/agent/agent', 'run'])
    agent = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(agent)
    saved = dict(state)
    clock.advance(3 * H)
    # Detected from the command line (psutil), as inside the Agent: nothing set by hand.
    command_line(['/opt/datadog-agent/bin/agent/agent', 'check', 'openai'])
    cli = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(cli)
    assert aggregator.metrics('openai.api.usage.completions.input_tokens')  # it shows what it would send
    assert state == saved  # and leaves the running Agent to send it


def test_an_unexpected_error_skips_one_endpoint_and_loses_nothing(
    org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch
):
    from datadog_checks.openai.sources import UsageSource

    from .conftest import DEFAULT_GROUP_BY, assert_same_totals, reported_totals, submitted_totals

    check = make_check(usage_endpoints=['completions', 'embeddings'], collect_costs=False)
    warm(check, clock, dd_run_check, runs=3)
    original = UsageSource._diff_bucket

    def broken(self, reading, start, *args):
        # Fail half-way through the window, after some buckets were already compared.
        if self.name == 'completions' and start > clock.now() - 3 * H:
            raise TypeError('a shape nobody foresaw')
        return original(self, reading, start, *args)

    monkeypatch.setattr(UsageSource, '_diff_bucket', broken)
    dd_run_check(check)
    assert any('completions: unexpected error (TypeError: a shape nobody foresaw)' in w for w in check.warnings)
    assert sim.requests_to('embeddings')[-1].status == 200
    assert only_status(aggregator).status == AgentCheck.WARNING
    monkeypatch.setattr(UsageSource, '_diff_bucket', original)
    warm(check, clock, dd_run_check, runs=3)
    now = clock.now() - 300
    group_by = DEFAULT_GROUP_BY['completions']
    expected = reported_totals(org, 'completions', group_by, org.traffic_start, int(now) + H, now)
    assert_same_totals(submitted_totals('completions', group_by), expected, 'completions')


def test_the_readmes_metric_patterns_example_drops_the_modality_splits(
    clock, sim, make_check, dd_run_check, aggregator
):
    import re

    import yaml

    from datadog_checks.openai.catalogue import ENDPOINTS_BY_NAME

    from .test_assets import readme_text

    section = readme_text().split('### Custom metrics\n', 1)[1].split('\n### ', 1)[0]
    example = yaml.safe_load(re.search(r'```yaml\n(.*?)```', section, re.S).group(1))
    (instance,) = example['instances']
    check = make_check(
        usage_endpoints=['completions'], collect_costs=False, metric_patterns=instance['metric_patterns']
    )
    warm(check, clock, dd_run_check, runs=3)
    sent = {m for m in aggregator.metric_names if m.startswith('openai.api.usage.completions.')}
    completions = ENDPOINTS_BY_NAME['completions']
    splits = {
        completions.metric_name(f)
        for f in completions.fields
        if f.name.endswith(('text_tokens', 'audio_tokens', 'image_tokens'))
    }
    assert len(splits) == 9
    assert not sent & splits
    assert {'openai.api.usage.completions.input_tokens', 'openai.api.usage.completions.input_cached_tokens'} <= sent


@pytest.mark.parametrize('group_by', [None, {'completions': ALL_COMPLETIONS_DIMS}], ids=['defaults', 'per_key_user'])
def test_contexts_is_the_number_of_distinct_metric_contexts_a_run_sent_per_endpoint(
    group_by, org, clock, sim, make_check, dd_run_check, aggregator
):
    from datadog_checks.openai.catalogue import (
        CACHED_SAVINGS,
        ENDPOINTS,
        ESTIMATE_RATIO,
        ESTIMATED_COST,
        HEADROOM_METRICS,
        MONTH_TO_DATE,
        PER_MINUTE_LIMITS,
        PROJECT_MONTH_TO_DATE,
        PROJECT_PROJECTED_MONTH_END,
        PROJECTED_MONTH_END,
        TIER_SAVINGS,
        UNPRICED_LINE_ITEMS,
        UNPRICED_TOKENS,
    )

    check = make_check(estimate_spend=True, **({'group_by': group_by} if group_by else {}))
    clock.advance(30 * H)
    warm(check, clock, dd_run_check, runs=3)
    aggregator.reset()
    dd_run_check(check)
    # Counted from what the aggregator received, not from the check's own bookkeeping: the Agent keys a context
    # on the metric name and the set of tags.
    reported = {
        tags['endpoint']: m.value
        for m, tags in zip(aggregator.metrics('openai.check.contexts'), tags_of(aggregator, 'openai.check.contexts'))
    }
    per_minute = {f'{name}_per_minute' for name in PER_MINUTE_LIMITS}
    assert set(reported) == {e.name for e in ENDPOINTS} | {'estimates', 'limits'} | per_minute
    estimates = {ESTIMATED_COST.name, CACHED_SAVINGS.name, UNPRICED_TOKENS.name, ESTIMATE_RATIO.name}
    estimates |= {UNPRICED_LINE_ITEMS.name, TIER_SAVINGS.name}
    sent = {(name, frozenset(m.tags)) for name in estimates for m in aggregator.metrics(name)}
    assert reported['estimates'] == len(sent) > 0
    for endpoint in ENDPOINTS:
        names = {endpoint.metric_name(f) for f in endpoint.fields}
        if endpoint.kind == 'costs':
            names |= {MONTH_TO_DATE.name, PROJECT_MONTH_TO_DATE.name}
        sent = {(name, frozenset(m.tags)) for name in names for m in aggregator.metrics(name)}
        assert reported[endpoint.name] == len(sent), endpoint.name
    # The headroom: the spend limits and projections, and the per-minute reads' utilizations and limits (the
    # simulator's endpoints share no model, so no context is sent by two of them).
    spend = {m.name for m in HEADROOM_METRICS if m.name.startswith('openai.api.spend_limit.')}
    spend |= {PROJECTED_MONTH_END.name, PROJECT_PROJECTED_MONTH_END.name}
    rate = {m.name for m in HEADROOM_METRICS if m.name.startswith('openai.api.rate_limits.')}
    for source, names in (({'limits'}, spend), (per_minute, rate)):
        sent = {(name, frozenset(m.tags)) for name in names for m in aggregator.metrics(name)}
        assert sum(reported[s] for s in source) == len(sent) > 0, source
    # Not a count of series: a completions series reports several fields.
    series = {m.value for m in aggregator.metrics('openai.check.series') if 'endpoint:completions' in m.tags}
    assert reported['completions'] > max(series) > 0


def test_series_whose_tags_come_out_the_same_count_as_one_context(
    org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch
):
    # As if two models' names normalised to one tag value: the Agent would merge their series into one context.
    from datadog_checks.openai.tags import TagBuilder

    check = make_check(usage_endpoints=['completions'], collect_costs=False, collect_headroom=False)
    own = TagBuilder.dimension_tags
    monkeypatch.setattr(
        TagBuilder,
        'dimension_tags',
        lambda self, dim, value: ('model:same',) if dim == 'model' else own(self, dim, value),
    )
    clock.advance(30 * H)
    warm(check, clock, dd_run_check, runs=3)
    results = []
    collect = check.collect
    check.collect = lambda *args: results.append(collect(*args)) or results[-1]
    aggregator.reset()
    dd_run_check(check)
    (reported,) = [m.value for m in aggregator.metrics('openai.check.contexts')]
    endpoint_metrics = [n for n in aggregator.metric_names if n.startswith('openai.api.usage.completions.')]
    sent = {(name, frozenset(m.tags)) for name in endpoint_metrics for m in aggregator.metrics(name)}
    (result,) = results
    assert reported == len(sent) > 0
    assert reported < len({(metric, key) for metric, _, _, key in result.counts})  # the series that merged count once


def test_the_cyclic_collector_is_paused_while_a_source_reads_and_submits_and_restored_even_when_it_fails(
    clock, sim, make_check, dd_run_check, monkeypatch
):
    import gc

    from datadog_checks.openai.sources.usage import UsageSource

    reading, submitting = [], []
    read = UsageSource._read_bucket
    broken = set()

    def spy(self, *args):
        reading.append((self.name, gc.isenabled()))
        if self.name in broken:
            raise RuntimeError('a bug')
        return read(self, *args)

    monkeypatch.setattr(UsageSource, '_read_bucket', spy)
    check = make_check(usage_endpoints=['completions', 'embeddings'], collect_costs=False)
    from datadog_checks.base.stubs import aggregator as stub

    submit = stub.submit_metric

    def counted(check, check_id, mtype, name, *args):
        if name.startswith('openai.api.usage.'):
            submitting.append(gc.isenabled())
        return submit(check, check_id, mtype, name, *args)

    monkeypatch.setattr(stub, 'submit_metric', counted)
    clock.advance(30 * H)
    dd_run_check(check)
    clock.advance(300)
    dd_run_check(check)
    assert {name for name, _ in reading} == {'completions', 'embeddings'}
    assert [on for _, on in reading] == [False] * len(reading)
    assert len(submitting) > 0 and not any(submitting)
    assert gc.isenabled()

    # A source that fails unexpectedly gives the collector back; the next source reads as before.
    broken.add('completions')
    reading.clear()
    clock.advance(300)
    dd_run_check(check)
    assert [name for name, _ in reading][0] == 'completions' and 'embeddings' in {n for n, _ in reading}
    assert gc.isenabled()

    # A host that runs with the collector off keeps it off.
    gc.disable()
    try:
        clock.advance(300)
        dd_run_check(check)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_slow_project_listing_cannot_starve_the_usage_endpoints(clock, sim, make_check, dd_run_check, aggregator):
    # Every projects listing rate limited with a long Retry-After, and retries allowed for a long time: names stop
    # within their quarter of the time budget (60 of 240 s: one wait of 50 s, then the next would pass it).
    sim.faults.add('projects', 429, count=None, retry_after=50)
    check = make_check(usage_endpoints=['completions'], collect_costs=False, max_retries=10)
    started = clock.now()
    dd_run_check(check)
    assert [r.status for r in sim.requests_to('projects')] == [429, 429]
    assert clock.now() - started == 50
    assert [r.status for r in sim.requests_to('completions')] == [200, 200]  # the baseline's first bucket, the rest
    aggregator.assert_metric('openai.check.data_lag', 0, tags=['openai_account:test', 'endpoint:completions'])


def test_a_large_run_gives_its_memory_back_once_its_pages_and_points_are_dropped(
    clock, sim, make_check, dd_run_check, monkeypatch
):
    import gc

    from datadog_checks.openai import check as check_module
    from datadog_checks.openai.sources import Outcome

    calls = []
    # Outcomes other tests left alive (in a kept exception, say) are not this run's.
    others = {id(o) for o in gc.get_objects() if isinstance(o, Outcome)}

    def release():
        # At the run's end, what the run read must be garbage: an outcome still alive would keep its points' memory.
        alive = [o for o in gc.get_objects() if isinstance(o, Outcome) and id(o) not in others]
        calls.append([(o.source, o.submitted) for o in alive])
        return True

    monkeypatch.setattr(check_module, 'release_freed_memory', release)
    check = make_check(usage_endpoints=['completions'], collect_costs=False)
    clock.advance(30 * H)
    monkeypatch.setattr(check_module, 'RELEASE_AFTER_ROWS', 10**9)
    dd_run_check(check)
    assert calls == []  # a small read: nothing worth a pass over the heap
    monkeypatch.setattr(check_module, 'RELEASE_AFTER_ROWS', 1)
    clock.advance(300)
    dd_run_check(check)
    # Once, at the end: given back after each large source too, the next source's read and save took it from the
    # system again, page by page, for the same peak.
    assert calls == [[]]


def test_what_a_large_run_leaves_in_reference_cycles_is_freed_before_its_memory_is_given_back(
    clock, sim, make_check, dd_run_check, monkeypatch
):
    import gc
    import weakref

    from datadog_checks.openai import check as check_module

    check = make_check(usage_endpoints=['completions'], collect_costs=False)
    clock.advance(30 * H)
    dd_run_check(check)
    source = check.sources_by_name['completions']
    collect = source.collect
    left = []

    class Garbage:
        pass

    def leaving_a_cycle(run):
        # A run's object in a reference cycle (as a kept exception's frames were), which reference counts never free.
        outcome = collect(run)
        garbage = Garbage()
        garbage.itself = garbage
        left.append(weakref.ref(garbage))
        return outcome

    monkeypatch.setattr(source, 'collect', leaving_a_cycle)
    alive = []
    monkeypatch.setattr(check_module, 'release_freed_memory', lambda: alive.append(left[-1]() is not None))
    monkeypatch.setattr(check_module, 'RELEASE_AFTER_ROWS', 1)
    clock.advance(300)
    gc.collect()
    # Only the check's own collection may free it: the automatic one would, at some allocation after the source's read.
    thresholds = gc.get_threshold()
    gc.set_threshold(0)
    try:
        dd_run_check(check)
    finally:
        gc.set_threshold(*thresholds)
    assert alive == [False]
