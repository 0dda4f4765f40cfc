from collections import defaultdict

import pytest
from datadog_checks.base.stubs import aggregator as _aggregator
from datadog_checks.base.stubs import datadog_agent as _datadog_agent

from datadog_checks.openai import OpenAICheck
from datadog_checks.openai.catalogue import COSTS, ENDPOINTS_BY_NAME, FLOW
from datadog_checks.openai.collector import SEP, _encode
from datadog_checks.openai.tags import tag_value
from tests.simulator import Clock, Organization, SimulatorServer

ADMIN_KEY = 'sk-admin-test-key'


@pytest.fixture
def org():
    return Organization(seed=7)


@pytest.fixture
def clock(org):
    # The first run happens when the organization's traffic begins, so its baseline holds nothing
    # and every token the organization ever used must reach Datadog.
    return Clock(org.traffic_start)


@pytest.fixture
def sim(org, clock):
    with SimulatorServer(org, clock, admin_key=ADMIN_KEY) as server:
        yield server


@pytest.fixture
def state():
    """The Agent's persistent cache (the stub keeps it across check instances, like a restart)."""
    _datadog_agent._cache.clear()
    yield _datadog_agent._cache
    _datadog_agent._cache.clear()


@pytest.fixture
def make_check(sim, clock, state, aggregator):
    def make(**overrides):
        instance = {
            'account_name': 'test',
            'admin_api_key': ADMIN_KEY,
            'api_base_url': sim.base_url,
            'min_collection_interval': 300,
            'timeout': 5,
            **overrides,
        }
        check = OpenAICheck('openai', {}, [instance])
        # One clock for the API and the check: waits for Retry-After and backoff pass in simulated time.
        check.clock = clock.now
        check.monotonic = clock.now
        check.sleep = clock.advance
        return check

    return make


def submitted_totals(endpoint_name: str, group_by: tuple[str, ...]) -> dict:
    """Everything submitted for an endpoint's flows over all runs: {series key: {field: sum}}."""
    endpoint = ENDPOINTS_BY_NAME[endpoint_name]
    dims = group_by + tuple(name for name, _ in endpoint.fixed_dims)
    out = defaultdict(lambda: defaultdict(float))
    for f in endpoint.fields:
        if f.kind != FLOW:
            continue
        for stub in _aggregator.metrics(endpoint.metric_name(f)):
            tags = dict(t.split(':', 1) for t in stub.tags)
            key = SEP.join(tags.get(d, '') for d in dims)
            out[key][f.name] += stub.value
    return out


def reported_totals(org, endpoint_name: str, group_by: tuple[str, ...], start: int, end: int, t: float) -> dict:
    """What OpenAI reports at time t, summed over [start, end), in the same shape as submitted_totals."""
    endpoint = ENDPOINTS_BY_NAME[endpoint_name]
    dims = group_by + tuple(name for name, _ in endpoint.fixed_dims)
    out = defaultdict(lambda: defaultdict(float))
    for key, values in org.observed_totals(endpoint_name, group_by, start, end, t).items():
        # In the tags' terms (normalized as Datadog stores them), as submitted_totals reads them back.
        skey = SEP.join(tag_value(d, _encode(v)) for d, v in zip(dims, key))
        for f in endpoint.fields:
            if f.kind == FLOW and values.get(f.name):
                out[skey][f.name] += values[f.name]
    return out


def assert_same_totals(submitted: dict, reported: dict, endpoint_name: str):
    costs = ENDPOINTS_BY_NAME[endpoint_name].kind == COSTS
    keys = set(submitted) | set(reported)
    mismatches = []
    for key in sorted(keys):
        fields = set(submitted.get(key, {})) | set(reported.get(key, {}))
        for f in sorted(fields):
            got = submitted.get(key, {}).get(f, 0)
            want = reported.get(key, {}).get(f, 0)
            if (abs(got - want) > 1e-6) if costs else got != want:
                mismatches.append(f'{endpoint_name} {key!r} {f}: submitted {got}, OpenAI reports {want}')
    assert not mismatches, '\n'.join(mismatches[:20]) + f'\n({len(mismatches)} mismatches)'
    assert reported, f'the scenario produced no {endpoint_name} traffic: the comparison would prove nothing'
