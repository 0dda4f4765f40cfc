"""The audit log in Datadog Logs: every event once, its attributes mapped, failures said plainly.

The check runs against the simulator's audit log (tests/simulator/audit.py), which lists events newest
first with `after` cursors and shows some of them late. What the check sent is read from the stub
Agent's log queue; what it had to send is the simulator's own list of events.
"""

from collections import Counter

import pytest
from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import datadog_agent

from datadog_checks.openai.sources import audit as audit_module
from tests.simulator import AuditLog

from .conftest import ADMIN_KEY

H = 3600
LOOKBACK = 12 * H
METRICS_LIGHT = {'usage_endpoints': ['completions'], 'collect_costs': False}


@pytest.fixture
def logs_on(monkeypatch):
    """An Agent with logs_enabled: true, and an empty log queue."""
    monkeypatch.setitem(datadog_agent._config, 'logs_enabled', True)
    datadog_agent._sent_logs.clear()
    yield
    datadog_agent._sent_logs.clear()


def sent_logs() -> list[dict]:
    return [log for logs in datadog_agent._sent_logs.values() for log in logs]


def sent_ids() -> Counter:
    return Counter(log['id'] for log in sent_logs())


def expected_ids(audit_log: AuditLog, t: float, since: float) -> set:
    return {e['id'] for e in audit_log.visible(t) if e['effective_at'] >= since}


def assert_once(audit_log: AuditLog, t: float, since: float):
    counts = sent_ids()
    twice = [i for i, n in counts.items() if n > 1]
    assert not twice, f'{len(twice)} events sent more than once'
    expected = expected_ids(audit_log, t, since)
    assert expected, 'the scenario produced no audit events: the comparison would prove nothing'
    missing = expected - set(counts)
    extra = set(counts) - expected
    assert not missing, f'{len(missing)} of {len(expected)} events never sent'
    assert not extra, f'{len(extra)} events sent that OpenAI does not list (or older than the lookback)'


def audit_requests(sim):
    return sim.requests_to('audit_logs')


# -- exactly once ------------------------------------------------------------------------------------------


def test_each_event_once_over_a_day_of_restarts_retries_429s_and_late_events(
    org, clock, sim, make_check, dd_run_check, logs_on
):
    t0 = int(clock.now())
    # 30 h of events from 14 h before the first run; 15% appear up to 40 minutes late.
    sim.audit_log = AuditLog(org, seed=3, per_hour=25, late_fraction=0.15, start=t0 - 14 * H, hours=30)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    for i in range(12 * 26):
        if i % 17 == 0:
            check = make_check(collect_audit_logs=True, **METRICS_LIGHT)  # an Agent restart
        if i % 11 == 3:
            sim.faults.add('audit_logs', 429, count=2, retry_after=20)
        if i % 13 == 5:
            sim.faults.add('audit_logs', 503, count=1)
        if i % 19 == 7:
            sim.faults.add('audit_logs', 'truncated', declared_length='sent')
        if i % 23 == 9:
            # A storm longer than the audit log's share of the budget: the run gives up, the next goes on.
            sim.faults.add('audit_logs', 429, count=None, retry_after=600)
        if i % 23 == 10:
            sim.faults.clear()
        if 100 <= i < 136:
            sim.faults.add('audit_logs', 'disconnect', count=None)  # three hours unreachable
        if i == 136:
            sim.faults.clear()
        dd_run_check(check)
        clock.advance(300)
    sim.faults.clear()
    dd_run_check(check)
    faults = {r.fault for r in audit_requests(sim) if r.fault}
    assert {'status', 'truncated', 'disconnect'} <= faults
    assert any(e['effective_at'] < t0 - LOOKBACK for e in sim.audit_log.all_events())
    late = [e for e in sim.audit_log.entries if e.visible_at - e.event['effective_at'] >= 300]
    assert len(late) > 20
    assert_once(sim.audit_log, clock.now(), t0 - LOOKBACK)
    assert not sim.validation_errors


def test_a_page_boundary_that_moves_between_two_requests(org, clock, sim, make_check, dd_run_check, logs_on):
    t0 = int(clock.now())
    log = sim.audit_log = AuditLog(org, seed=5, per_hour=60, late_fraction=0, start=t0 - 6 * H, hours=6)
    added = []

    def shift(params):
        # Between two page requests of one run: new events at the head, and late ones among the pages read
        # and the pages still to read.
        if params.get('after') and len(added) < 30:
            now = clock.now()
            added.append(log.add('login.failed', int(now) - 1))
            added.append(log.add('api_key.created', int(now) - 30 * 60))
            added.append(log.add('user.updated', int(now) - 10 * 60))

    log.on_request = shift
    # Every request the check sends, and every page the simulator answers, follows the spec extract.
    sim.validate_responses = True
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    for _ in range(6):
        dd_run_check(check)
        clock.advance(300)
    log.on_request = None
    dd_run_check(check)
    assert any(r.param('after') for r in audit_requests(sim))
    assert len(added) >= 6, "the log moved fewer than twice between two page requests"
    assert_once(log, clock.now(), t0 - LOOKBACK)
    assert not sim.validation_errors
    assert not sim.response_errors
    assert len({e['type'] for e in log.all_events()}) >= 10


def test_a_huge_backlog_is_paced_over_runs_and_the_newest_events_never_wait(
    org, clock, sim, make_check, dd_run_check, logs_on
):
    t0 = int(clock.now())
    log = sim.audit_log = AuditLog(org, seed=9, per_hour=700, late_fraction=0, start=t0 - 10 * H, hours=10)
    backlog = len(log.visible(t0))
    per_run = audit_module.MAX_PAGES_PER_RUN * audit_module.PAGE_LIMIT
    assert backlog > 2 * per_run
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)
    first = sent_ids()
    assert len(first) == per_run
    newest = sorted(log.visible(t0), key=lambda e: e['effective_at'], reverse=True)
    assert {e['id'] for e in newest[:per_run]} == set(first)
    runs = 1
    while len(sent_ids()) < len(expected_ids(log, clock.now(), t0 - LOOKBACK)) and runs < 20:
        clock.advance(300)
        fresh = log.add('api_key.deleted', int(clock.now()) - 5)
        dd_run_check(check)
        runs += 1
        # The event of the last five minutes goes out in this run, backlog or not.
        assert fresh['id'] in sent_ids()
    assert 3 <= runs < 20
    assert_once(log, clock.now(), t0 - LOOKBACK)


def test_a_lost_state_with_the_default_sends_again_only_the_lookback(
    org, clock, sim, make_check, dd_run_check, logs_on, state
):
    t0 = int(clock.now())
    log = sim.audit_log = AuditLog(org, seed=11, per_hour=20, start=t0 - 13 * H, hours=40)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    for _ in range(12 * 6):
        dd_run_check(check)
        clock.advance(300)
    before = sent_ids()
    state.clear()
    t_loss = clock.now()
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    for _ in range(12):
        dd_run_check(check)
        clock.advance(300)
    counts = sent_ids()
    by_id = {e['id']: e for e in log.all_events()}
    twice = {i for i, n in counts.items() if n == 2}
    assert twice, 'the lookback after the loss held no event sent before it: the test proves nothing'
    # Sent again: exactly the events sent before the loss that are still within the lookback; never a third time.
    assert max(counts.values()) == 2
    assert twice == {i for i in before if by_id[i]['effective_at'] >= t_loss - LOOKBACK}
    assert set(counts) == expected_ids(log, clock.now() - 300, t0 - LOOKBACK)


def test_a_lost_state_with_without_state_now_sends_nothing_twice(
    org, clock, sim, make_check, dd_run_check, logs_on, state
):
    t0 = int(clock.now())
    sim.audit_log = AuditLog(org, seed=13, per_hour=20, late_fraction=0.2, start=t0 - 2 * H, hours=30)
    options = dict(collect_audit_logs=True, audit_logs_without_state='now', **METRICS_LIGHT)
    check = make_check(**options)
    dd_run_check(check)
    assert not sent_logs(), 'a baseline sends nothing of the past'
    for _ in range(12 * 6):
        clock.advance(300)
        dd_run_check(check)
    state.clear()
    check = make_check(**options)
    for _ in range(12 * 3):
        clock.advance(300)
        dd_run_check(check)
    counts = sent_ids()
    assert counts and max(counts.values()) == 1
    # Every event that appeared after the first baseline, and was not in the way of the second, was sent.
    assert len(counts) > 100


def test_the_state_is_saved_before_the_events_are_sent(org, clock, sim, make_check, dd_run_check, logs_on, state):
    t0 = int(clock.now())
    sim.audit_log = AuditLog(org, seed=17, per_hour=20, start=t0 - 3 * H, hours=3)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    write = check.write_persistent_cache
    broken = True

    def failing(key, value):
        if broken and key.endswith('audit_log'):
            raise OSError('disk full')
        return write(key, value)

    check.write_persistent_cache = failing
    dd_run_check(check)
    assert not sent_logs(), 'events were sent although the state recording them as sent was not saved'
    assert any('audit_logs: could not save the state' in w for w in check.warnings)
    broken = False
    clock.advance(300)
    dd_run_check(check)
    assert_once(sim.audit_log, clock.now(), t0 - LOOKBACK)


def test_a_stale_cluster_check_state_is_not_caught_up_from(org, clock, sim, make_check, dd_run_check, logs_on, state):
    t0 = int(clock.now())
    sim.audit_log = AuditLog(org, seed=19, per_hour=20, start=t0 - 3 * H, hours=24)
    options = dict(collect_audit_logs=True, audit_logs_without_state='now', empty_default_hostname=True)
    check = make_check(**options, **METRICS_LIGHT)
    dd_run_check(check)
    clock.advance(300)
    dd_run_check(check)
    sent_before = sent_ids()
    clock.advance(4 * H)  # another runner had the check meanwhile
    check = make_check(**options, **METRICS_LIGHT)
    dd_run_check(check)
    assert any('cluster check' in w and 'audit_logs' in w for w in check.warnings)
    assert sent_ids() == sent_before, 'the period another runner covered was sent again'


def test_a_backlog_that_outlives_the_lookback_says_what_was_not_sent(
    org, clock, sim, make_check, dd_run_check, logs_on
):
    t0 = int(clock.now())
    log = sim.audit_log = AuditLog(org, seed=9, per_hour=600, late_fraction=0, start=t0 - 12 * H, hours=12)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    for _ in range(6):
        dd_run_check(check)
        clock.advance(300)
    counts = sent_ids()
    assert max(counts.values()) == 1
    unsent = [e for e in log.visible(t0) if e['id'] not in counts]
    assert unsent, 'the backlog was read before the lookback moved past it: the test proves nothing'
    # Only the oldest events, those the moving lookback left behind before their turn came, and a warning says so.
    assert max(e['effective_at'] for e in unsent) < t0 - LOOKBACK + 6 * 300
    assert any('were not sent: they were not read within audit_logs_lookback_hours' in w for w in check.warnings)


# -- what a log says ---------------------------------------------------------------------------------------


def test_each_log_maps_the_event_to_datadog_standard_attributes(org, clock, sim, make_check, dd_run_check, logs_on):
    log = sim.audit_log
    t = int(clock.now()) - 600
    user, project, sa = org.users[0], org.projects[0], org.service_accounts[0]
    session = {
        'type': 'session',
        'session': {
            'user': {'id': user.id, 'email': user.email},
            'ip_address': '198.51.100.7',
            'user_agent': 'Mozilla/5.0 test',
            'ip_address_details': {'country': 'US', 'city': 'San Francisco'},
        },
    }
    created = log.add('api_key.created', t, actor=session, project={'id': project.id, 'name': project.name})
    by_sa = log.add(
        'rate_limit.updated',
        t + 1,
        actor={
            'type': 'api_key',
            'api_key': {'id': 'key_x', 'type': 'service_account', 'service_account': {'id': sa.id}},
        },
    )
    failed = log.add('login.failed', t + 2, actor=None)
    check = make_check(collect_audit_logs=True, audit_logs_service='openai-audit', tags=['team:ml'], **METRICS_LIGHT)
    dd_run_check(check)
    logs = {entry['id']: entry for entry in sent_logs()}
    assert set(logs) == {created['id'], by_sa['id'], failed['id']}

    one = logs[created['id']]
    assert one['message'] == f'api_key.created by {user.email} in project {project.name}'
    assert one['timestamp'] == t * 1000  # milliseconds, from effective_at
    assert one['ddsource'] == 'openai'
    assert one['service'] == 'openai-audit'
    assert set(one['ddtags'].split(',')) == {'openai_account:test', 'team:ml'}
    assert one['evt'] == {'name': 'api_key.created', 'outcome': 'success'}
    assert one['usr'] == {'id': user.id, 'email': user.email}
    assert one['network'] == {'client': {'ip': '198.51.100.7'}}
    assert one['http'] == {'useragent': 'Mozilla/5.0 test'}
    assert one['project_id'] == project.id and one['project_name'] == project.name
    assert one['details'] == created['api_key.created']
    assert one['actor'] == session
    assert one['status'] == 'info'

    two = logs[by_sa['id']]
    assert two['usr'] == {'id': sa.id}
    assert two['message'].startswith(f'rate_limit.updated by service account {sa.id}')
    assert 'network' not in two and 'http' not in two
    assert two['details'] == by_sa['rate_limit.updated']

    three = logs[failed['id']]
    assert three['message'] == 'login.failed by an unnamed actor'
    assert three['status'] == 'warn'
    assert three['evt']['outcome'] == 'failure'
    assert 'usr' not in three and 'actor' not in three
    # The check's own health: one count of the events sent, and the size of the audit state.
    assert check.warnings == []


def test_the_logs_sent_are_counted(org, clock, sim, make_check, dd_run_check, logs_on, aggregator):
    sim.audit_log = AuditLog(org, seed=23, per_hour=20, start=int(clock.now()) - 3 * H, hours=3)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)
    n = len(sent_logs())
    assert n > 0
    tags = ['openai_account:test', 'endpoint:audit_logs']
    aggregator.assert_metric('openai.check.logs.sent', value=n, count=1, tags=tags)
    aggregator.assert_metric('openai.check.state.size', count=1, tags=tags)
    # A source of logs has no series and no metric contexts of its own.
    assert not [m for m in aggregator.metrics('openai.check.contexts') if 'endpoint:audit_logs' in m.tags]
    assert not [m for m in aggregator.metrics('openai.check.series') if 'endpoint:audit_logs' in m.tags]


def test_no_secret_reaches_a_log(org, clock, sim, make_check, dd_run_check, logs_on):
    t = int(clock.now()) - 60
    leaked = 'sk-proj-abcdefghijklmnopqrstuvwxyz0123'
    sim.audit_log.add(
        'api_key.created',
        t,
        **{'api_key.created': {'id': 'key_1', 'data': {'scopes': [leaked], 'note': 'Authorization: Bearer abc.def'}}},
    )
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)
    [entry] = sent_logs()
    text = repr(entry)
    assert leaked not in text and 'abc.def' not in text
    assert '********' in text
    # An event that echoes the admin key: the whole page is refused, nothing is sent, and the warning says why.
    sim.audit_log.add('organization.updated', t + 30, **{'organization.updated': {'id': 'org', 'note': ADMIN_KEY}})
    clock.advance(300)
    dd_run_check(check)
    assert len(sent_logs()) == 1
    assert any('contains the admin key' in w for w in check.warnings)
    assert all(ADMIN_KEY not in w for w in check.warnings)


def test_malformed_events_are_skipped_and_counted(org, clock, sim, make_check, dd_run_check, logs_on):
    t = int(clock.now()) - 60
    good = sim.audit_log.add('login.succeeded', t)
    sim.audit_log.add('login.succeeded', t - 1, id=None)
    sim.audit_log.add('login.succeeded', t - 2, effective_at='yesterday')
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)
    assert [e['id'] for e in sent_logs()] == [good['id']]
    assert any('2 malformed audit events were skipped' in w for w in check.warnings)


# -- when the audit log cannot be read ---------------------------------------------------------------------


def test_audit_logging_off_warns_how_to_enable_it_and_metrics_go_on(
    org, clock, sim, make_check, dd_run_check, logs_on, aggregator
):
    sim.audit_log.enabled = False
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)  # the usage baseline
    clock.advance(H)
    aggregator.reset()
    check.warnings.clear()
    dd_run_check(check)
    [warning] = [w for w in check.warnings if 'audit' in w]
    assert 'refused to list the audit log (403' in warning
    assert 'data-controls/data-retention' in warning and 'collect_audit_logs: false' in warning
    assert 'Metrics are collected' in warning
    assert aggregator.metrics('openai.api.usage.completions.input_tokens')
    [sc] = aggregator.service_checks('openai.can_connect')
    assert sc.status == AgentCheck.WARNING
    assert 'audit log' in sc.message
    assert not sent_logs()


def test_an_agent_with_logs_disabled_reads_no_audit_log_and_says_so_once(
    org, clock, sim, make_check, dd_run_check, monkeypatch, aggregator
):
    monkeypatch.setitem(datadog_agent._config, 'logs_enabled', False)
    datadog_agent._sent_logs.clear()
    sim.audit_log.add('login.succeeded', int(clock.now()) - 60)
    check = make_check(collect_audit_logs=True, **METRICS_LIGHT)
    dd_run_check(check)
    [warning] = [w for w in check.warnings if 'logs_enabled false' in w]
    # What to do, whole: turn logs on, give the check a logs section, restart; what is then sent.
    for step in (
        'the audit events: the audit log is not read.',
        'Set logs_enabled: true in datadog.yaml',
        'add the `logs` section (type: integration, source: openai) to conf.d/openai.d/conf.yaml',
        'and restart the Agent; the events of the last audit_logs_lookback_hours are then sent.',
    ):
        assert step in warning, (step, warning)
    clock.advance(300)
    dd_run_check(check)
    assert len([w for w in check.warnings if 'logs_enabled' in w]) == 1
    assert not audit_requests(sim)
    assert not sent_logs()
    statuses = {sc.status for sc in aggregator.service_checks('openai.can_connect')}
    assert statuses == {AgentCheck.OK}


def test_audit_logs_are_off_by_default(org, clock, sim, make_check, dd_run_check, logs_on):
    sim.audit_log.add('login.succeeded', int(clock.now()) - 60)
    dd_run_check(make_check(**METRICS_LIGHT))
    assert not audit_requests(sim)
    assert not sent_logs()


def test_the_lookback_is_bounded_by_datadogs_18_hours(make_check, dd_run_check):
    check = make_check(collect_audit_logs=True, audit_logs_lookback_hours=19)
    with pytest.raises(Exception, match='audit_logs_lookback_hours'):
        dd_run_check(check, extract_message=True)


def test_the_audit_log_alone_is_something_to_read(org, clock, sim, make_check, dd_run_check, logs_on):
    sim.audit_log.add('login.succeeded', int(clock.now()) - 60)
    check = make_check(collect_audit_logs=True, usage_endpoints=[], collect_costs=False)
    dd_run_check(check)
    assert len(sent_logs()) == 1


def test_the_simulator_refuses_an_unknown_member_of_effective_at(sim):
    import requests

    url = sim.url('/organization/audit_logs')
    headers = {'Authorization': f'Bearer {ADMIN_KEY}'}
    assert requests.get(url, params={'effective_at[gte]': 5}, headers=headers, timeout=5).status_code == 200
    assert requests.get(url, params={'effective_at[soon]': 5}, headers=headers, timeout=5).status_code == 400
    assert requests.get(url, params={'effective_at[gte]': 'x'}, headers=headers, timeout=5).status_code == 400


# -- a hostile server --------------------------------------------------------------------------------------


def test_a_hostile_audit_log_never_puts_a_secret_in_a_log_line(monkeypatch, state, dd_run_check, caplog):
    import json as _json

    from datadog_checks.openai import OpenAICheck

    from .hostile import HostileServer, Reply

    monkeypatch.setitem(datadog_agent._config, 'logs_enabled', True)
    datadog_agent._sent_logs.clear()
    key = 'sk-admin-' + 'Hq3WzX8vLm2N' * 5 + 'auditKey99'
    other = 'sk-proj-' + 'Pp0oIi9uUy8T' * 3
    now = 1_767_225_600

    def event(i, **details):
        return {
            'id': f'audit_log-{i}',
            'type': 'api_key.updated',
            'effective_at': now - 60 * i,
            'api_key.updated': details,
        }

    def respond(request):
        auth = request.authorization or ''
        if request.query.get('after'):
            # The second page echoes the request's Authorization header: it must not be used at all.
            data = [event(3, note=f'seen header {auth}'), event(4, headers=dict(request.headers))]
            return Reply(200, _json.dumps({'object': 'list', 'data': data, 'has_more': False}).encode())
        data = [
            event(1, note=f'token Bearer {other[8:]} and key {other}', user_agent=f'curl {other}'),
            event(2, scopes=['api.model.request']),
        ]
        body = {'object': 'list', 'data': data, 'has_more': True, 'last_id': 'audit_log-2'}
        return Reply(200, _json.dumps(body).encode(), {'Content-Type': 'application/json'})

    with HostileServer(respond) as server:
        instance = {
            'account_name': 'evil',
            'admin_api_key': key,
            'api_base_url': server.base_url,
            'min_collection_interval': 300,
            'usage_endpoints': [],
            'collect_costs': False,
            'collect_audit_logs': True,
            'max_retries': 0,
        }
        check = OpenAICheck('openai', {}, [instance])
        check.clock = lambda: float(now)
        # The audit log is this instance's only source, and its read failed: the run fails, visibly.
        with pytest.raises(Exception, match='contains the admin key the check sent'):
            dd_run_check(check, extract_message=True)
        assert any(r.authorization == f'Bearer {key}' for r in server.requests)
    logs = sent_logs()
    # The first page was used, redacted; the page that echoed the key was not.
    assert [entry['id'] for entry in logs] == ['audit_log-1', 'audit_log-2']
    said = repr(logs) + ' '.join(check.warnings) + caplog.text
    for secret in (key, other, other[8:], key[9:25]):
        assert secret not in said
    assert any('contains the admin key the check sent' in w for w in check.warnings)
