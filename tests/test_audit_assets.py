"""The audit log's Datadog assets: the log pipeline and its tests file, the log monitors, the dashboard group.

Datadog runs a pipeline's tests file only when the integration is published; here the tests file is held to
what the check sends (each sample is the check's own log of an event of the spec's shape) and the pipeline's
category filters to the spec extract's event types, so that neither drifts from the code.
"""

import fnmatch
import json
import re
from pathlib import Path

import pytest
import yaml

from datadog_checks.openai.scrub import Scrubber
from datadog_checks.openai.sources.audit import AuditSource

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / 'assets' / 'logs'
EXTRACT = ROOT / 'tests' / 'simulator' / 'data' / 'openapi-admin-extract.yaml'
UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'

# One event of each actor kind, in the spec's shapes: the samples of assets/logs/openai_tests.yaml.
SAMPLE_EVENTS = [
    {
        'id': 'audit_log-0a1b2c3d4e5f60718293a4b5',
        'type': 'api_key.created',
        'effective_at': 1764590400,
        'project': {'id': 'proj_abc', 'name': 'Production'},
        'actor': {
            'type': 'session',
            'session': {
                'user': {'id': 'user-alice', 'email': 'alice@example.com'},
                'ip_address': '203.0.113.7',
                'user_agent': UA,
            },
        },
        'api_key.created': {'id': 'key_xyz', 'data': {'scopes': ['api.model.request']}},
    },
    {
        'id': 'audit_log-1b2c3d4e5f60718293a4b5c6',
        'type': 'rate_limit.updated',
        'effective_at': 1764590460,
        'project': {'id': 'proj_abc', 'name': 'Production'},
        'actor': {
            'type': 'api_key',
            'api_key': {'id': 'key_svc', 'type': 'service_account', 'service_account': {'id': 'svc_acct_ops'}},
        },
        'rate_limit.updated': {'id': 'rl-gpt-4o', 'changes_requested': {'max_requests_per_1_minute': 500}},
    },
    {
        'id': 'audit_log-2c3d4e5f60718293a4b5c6d7',
        'type': 'login.failed',
        'effective_at': 1764590520,
        'actor': {
            'type': 'session',
            'session': {'user': {'id': 'user-bob', 'email': 'bob@example.com'}, 'ip_address': '198.51.100.9'},
        },
        'login.failed': {'error_code': 'invalid_credentials', 'error_message': 'Wrong email or password.'},
    },
    {
        'id': 'audit_log-3d4e5f60718293a4b5c6d7e8',
        'type': 'invite.sent',
        'effective_at': 1764590580,
        'actor': {
            'type': 'api_key',
            'api_key': {'id': 'key_adm', 'type': 'user', 'user': {'id': 'user-alice', 'email': 'alice@example.com'}},
        },
        'invite.sent': {'id': 'invite-1', 'data': {'email': 'carol@example.com', 'role': 'owner'}},
    },
]
# What the Agent takes out of a log it ships (as the log's source, service, tags and time) rather than attributes.
SHIPPED_AS_FIELDS = ('ddsource', 'service', 'ddtags', 'timestamp')


def check_log(event: dict) -> dict:
    source = AuditSource(None, None, Scrubber(), ['openai_account:prod'], 'openai', 12)
    log = source.payload(event)
    log['timestamp'] = event['effective_at'] * 1000  # as AgentCheck.send_log writes it
    return log


def pipeline() -> dict:
    return yaml.safe_load((LOGS / 'openai.yaml').read_text())


def tests_file() -> dict:
    return yaml.safe_load((LOGS / 'openai_tests.yaml').read_text())


def event_types() -> list[str]:
    spec = yaml.safe_load(EXTRACT.read_text())
    return spec['components']['schemas']['AuditLogEventType']['enum']


def names_matched(query: str, names: list[str]) -> set[str]:
    """The event types a category filter `@evt.name:(a OR b.* OR ...)` (or `*`) matches."""
    if query == '*':
        return set(names)
    m = re.fullmatch(r'@evt\.name:\((?P<terms>.+)\)', ' '.join(query.split()))
    assert m, f'not a filter on @evt.name: {query!r}'
    terms = [t.strip() for t in m['terms'].split(' OR ')]
    return {n for n in names if any(fnmatch.fnmatchcase(n, t) for t in terms)}


def first_category(processor: dict, name: str) -> str:
    for category in processor['categories']:
        if name in names_matched(category['filter']['query'], [name]):
            return category['name']
    raise AssertionError(f'{processor["name"]}: no category for {name}')


def test_the_pipeline_is_for_the_checks_logs():
    p = pipeline()
    assert p['id'] == 'openai'
    assert p['pipeline']['filter']['query'] == 'source:openai'
    processors = {proc['type']: proc for proc in p['pipeline']['processors']}
    assert processors['date-remapper']['sources'] == ['timestamp']
    assert processors['status-remapper']['sources'] == ['status']
    assert all(proc['enabled'] for proc in p['pipeline']['processors'])
    # Every attribute a remapper reads is one the check's logs carry, at that path, for some sample.
    logs = [check_log(e) for e in SAMPLE_EVENTS]
    for proc in p['pipeline']['processors']:
        if proc['type'] != 'attribute-remapper':
            continue
        for path in proc['sources']:
            if path == 'type':
                continue  # OpenAI's own field name, for logs sent by another shipper
            assert any(_get(log, path) is not None for log in logs), f'{proc["name"]}: no log has {path}'
            # What the check already maps must agree with what the remapper would.
            for log in logs:
                if _get(log, path) is not None:
                    assert _get(log, proc['target']) == _get(log, path), (proc['name'], log['id'])


def test_every_event_type_of_the_spec_has_a_category():
    names = event_types()
    categorise = next(p for p in pipeline()['pipeline']['processors'] if p.get('target') == 'evt.category')
    covered = set().union(*(names_matched(c['filter']['query'], names) for c in categorise['categories']))
    assert covered == set(names), f'no category for {sorted(set(names) - covered)}'


def test_the_security_relevant_types_are_real_ones():
    names = event_types()
    flag = next(p for p in pipeline()['pipeline']['processors'] if p.get('target') == 'evt.security_relevant')
    query = flag['categories'][0]['filter']['query']
    terms = re.fullmatch(r'@evt\.name:\((.+)\)', ' '.join(query.split()))[1].split(' OR ')
    assert set(terms) <= set(names), f'not event types of the spec: {sorted(set(terms) - set(names))}'
    for wanted in ('api_key.created', 'api_key.deleted', 'login.failed', 'rate_limit.updated', 'invite.sent'):
        assert wanted in terms
    assert flag['categories'][-1]['filter']['query'] == '*'


@pytest.mark.parametrize('i', range(len(SAMPLE_EVENTS)))
def test_each_sample_of_the_tests_file_is_what_the_check_sends(i):
    log = check_log(SAMPLE_EVENTS[i])
    case = tests_file()['tests'][i]
    sample = json.loads(case['sample'])
    assert sample == {k: v for k, v in log.items() if k not in SHIPPED_AS_FIELDS}
    result = case['result']
    assert result['timestamp'] == log['timestamp']
    assert result['message'] == log['message']
    custom = result['custom']
    # The sample's attributes come through unchanged, plus what the pipeline adds.
    for key, value in sample.items():
        if key in ('evt', 'http'):
            assert custom[key].items() >= value.items(), key
        elif key not in ('message', 'status'):
            assert custom[key] == value, key
    assert result['status'] == log['status']
    processors = pipeline()['pipeline']['processors']
    for target in ('evt.category', 'evt.security_relevant'):
        processor = next(p for p in processors if p.get('target') == target)
        assert _get(custom, target) == first_category(processor, log['evt']['name']), target


def test_the_tests_file_covers_every_kind_of_actor():
    kinds = set()
    for case in tests_file()['tests']:
        actor = json.loads(case['sample']).get('actor') or {}
        kinds.add((actor.get('type'), (actor.get('api_key') or {}).get('type')))
    assert {('session', None), ('api_key', 'user'), ('api_key', 'service_account')} <= kinds
    assert len(tests_file()['tests']) == len(SAMPLE_EVENTS)


def _get(obj, path: str):
    for part in path.split('.'):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


LOG_MONITOR = re.compile(
    r'^logs\("(?P<search>[^"]+)"\)\.index\("\*"\)\.rollup\("count"\)\.by\("(?P<by>[\w.,]+)"\)'
    r'\.last\("(?P<window>\d+[mh])"\) (?P<op>>=|>) (?P<threshold>\d+)$'
)
LOG_MONITORS = sorted((ROOT / 'assets' / 'monitors').glob('audit_*.json'))


def test_the_recommended_audit_monitors_exist():
    titles = {json.loads(p.read_text())['title'] for p in LOG_MONITORS}
    assert titles == {
        'Admin API key was created or deleted',
        'Failed logins are frequent',
        'Owner or admin role was granted',
        'Project rate limit or spend limit was changed',
    }
    manifest = json.loads((ROOT / 'manifest.json').read_text())
    assert manifest['assets']['logs'] == {'source': 'openai'}
    assert {Path(p).name for p in manifest['assets']['monitors'].values()} >= {p.name for p in LOG_MONITORS}


@pytest.mark.parametrize('path', LOG_MONITORS, ids=lambda p: p.name)
def test_each_audit_monitor_queries_the_checks_logs_per_account(path):
    monitor = json.loads(path.read_text())
    definition = monitor['definition']
    assert definition['type'] == 'log alert'
    m = LOG_MONITOR.fullmatch(definition['query'])
    assert m, definition['query']
    assert m['search'].startswith('source:openai ')
    assert m['by'] == 'openai_account'
    assert definition['options']['thresholds']['critical'] == int(m['threshold'])
    if 'warning' in definition['options']['thresholds']:
        assert definition['options']['thresholds']['warning'] < int(m['threshold'])
    names = set(event_types())
    for group in re.findall(r'@evt\.name:(\([^)]*\)|[\w.]+)', m['search']):
        for name in group.strip('()').split(' OR '):
            assert name in names, f'{path.name}: {name} is not an event type of the spec'
    for attribute in re.findall(r'@([\w.]+):', m['search']):
        assert attribute in ('evt.name', 'details.data.role', 'details.changes_requested.role'), attribute
    message = definition['message']
    assert '{{#is_alert}}' in message and '{{/is_alert}}' in message
    assert set(re.findall(r'\{\{\s*([\w.]+)\.name\s*\}\}', message + definition['name'])) <= {'openai_account'}
    assert 'integration:openai' in monitor['tags'] and 'integration:openai' in definition['tags']


def test_the_owner_monitor_matches_the_checks_logs_of_owner_grants():
    # The role is in the event's details, which the check sends as `details`: the paths of the query exist there.
    invite = check_log(SAMPLE_EVENTS[3])
    assert invite['details']['data']['role'] == 'owner'
    query = json.loads((ROOT / 'assets' / 'monitors' / 'audit_owner_role_granted.json').read_text())['definition']
    assert '@details.data.role:owner' in query['query']
