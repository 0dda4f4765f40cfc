import base64
import json
import os
import re
import sys
import zlib
from array import array
from collections import defaultdict
from pathlib import Path

import pytest
from datadog_checks.base.stubs import aggregator as _aggregator
from datadog_checks.base.stubs import datadog_agent as _datadog_agent

from datadog_checks.openai import OpenAICheck
from tests.simulator import Clock, Organization, SimulatorServer

ADMIN_KEY = 'sk-admin-test-key'


def pytest_collection_modifyitems(config, items):
    # Under mutmut (scripts/mutation), run a mutant's fastest tests first: it stops at the first failure (-x), so a
    # killed mutant then costs the quick test that catches it, not the day-long simulations it happened to meet first.
    if '__mutmut_' not in os.environ.get('MUTANT_UNDER_TEST', ''):
        return
    try:
        durations = json.loads(Path('mutmut-stats.json').read_text())['duration_by_test']
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, float('inf')))


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


# == What the check must send, written out independently of its code =======================================
#
# The exactly-once proofs compare what the aggregator received with the simulator's figures. Nothing below comes
# from the check's catalogue, encoder or tag normalizer: a wrong metric name, metric type, tag or series key in the
# check makes them fail instead of being mirrored here. tests/test_exactly_once.py checks these tables against
# metadata.csv (itself checked against the catalogue by tests/test_assets.py and scripts/check-generated.sh).

ACCOUNT = 'test'

# Metric name -> the field of OpenAI's result rows it sums, per endpoint: the flows, submitted as counts.
FLOW_METRICS = {
    'completions': {
        'openai.api.usage.completions.input_tokens': 'input_tokens',
        'openai.api.usage.completions.output_tokens': 'output_tokens',
        'openai.api.usage.completions.num_model_requests': 'num_model_requests',
        'openai.api.usage.completions.input_cached_tokens': 'input_cached_tokens',
        'openai.api.usage.completions.input_cache_write_tokens': 'input_cache_write_tokens',
        'openai.api.usage.completions.input_uncached_tokens': 'input_uncached_tokens',
        'openai.api.usage.completions.input_text_tokens': 'input_text_tokens',
        'openai.api.usage.completions.input_audio_tokens': 'input_audio_tokens',
        'openai.api.usage.completions.input_image_tokens': 'input_image_tokens',
        'openai.api.usage.completions.input_cached_text_tokens': 'input_cached_text_tokens',
        'openai.api.usage.completions.input_cached_audio_tokens': 'input_cached_audio_tokens',
        'openai.api.usage.completions.input_cached_image_tokens': 'input_cached_image_tokens',
        'openai.api.usage.completions.output_text_tokens': 'output_text_tokens',
        'openai.api.usage.completions.output_audio_tokens': 'output_audio_tokens',
        'openai.api.usage.completions.output_image_tokens': 'output_image_tokens',
    },
    'embeddings': {
        'openai.api.usage.embeddings.input_tokens': 'input_tokens',
        'openai.api.usage.embeddings.num_model_requests': 'num_model_requests',
    },
    'moderations': {
        'openai.api.usage.moderations.input_tokens': 'input_tokens',
        'openai.api.usage.moderations.num_model_requests': 'num_model_requests',
    },
    'images': {
        'openai.api.usage.images.images': 'images',
        'openai.api.usage.images.num_model_requests': 'num_model_requests',
    },
    'audio_speeches': {
        'openai.api.usage.audio_speeches.characters': 'characters',
        'openai.api.usage.audio_speeches.num_model_requests': 'num_model_requests',
    },
    'audio_transcriptions': {
        'openai.api.usage.audio_transcriptions.seconds': 'seconds',
        'openai.api.usage.audio_transcriptions.num_model_requests': 'num_model_requests',
    },
    'code_interpreter_sessions': {
        'openai.api.usage.code_interpreter_sessions.num_sessions': 'num_sessions',
    },
    'file_search_calls': {
        'openai.api.usage.file_search_calls.num_requests': 'num_requests',
    },
    'web_search_calls': {
        'openai.api.usage.web_search_calls.num_requests': 'num_requests',
        'openai.api.usage.web_search_calls.num_model_requests': 'num_model_requests',
    },
    'costs': {
        'openai.api.costs.amount': 'amount',
    },
}
# The levels, submitted as gauges (the newest value, never summed).
LEVEL_METRICS = {
    'vector_stores': {
        'openai.api.usage.vector_stores.usage_bytes': 'usage_bytes',
    },
}
# Tagged on every row whatever the group_by: the cost's currency.
FIXED_DIMS = {'costs': ('currency',)}
# Names the check puts next to ids: allowed on a series, never part of its key.
NAME_TAGS = {'project_id': 'project_name', 'api_key_id': 'api_key_name', 'user_id': 'user_email'}
ID_DIMS = ('project_id', 'api_key_id', 'user_id', 'vector_store_id')
# The default group_by of each endpoint (README, Configuration), as the tests' expectations use it.
DEFAULT_GROUP_BY = {
    'completions': ('project_id', 'model', 'batch', 'service_tier'),
    'embeddings': ('project_id', 'model'),
    'moderations': ('project_id', 'model'),
    'images': ('project_id', 'model', 'size'),
    'audio_speeches': ('project_id', 'model'),
    'audio_transcriptions': ('project_id', 'model'),
    'vector_stores': ('project_id',),
    'code_interpreter_sessions': ('project_id',),
    'file_search_calls': ('project_id',),
    'web_search_calls': ('project_id', 'model'),
    'costs': ('project_id', 'line_item'),
}

_NOT_IN_TAGS = re.compile(r'[^a-z0-9_:./-]+')
_UNDERSCORES = re.compile(r'_+')


def normalized(dim: str, value) -> str:
    """A dimension value of the simulator as the check must tag it: '' for a null (no tag), `true`/`false` for a
    boolean, and text as Datadog stores tags (lowercase, one `_` for each run of characters other than letters,
    digits and `_-:./`, no `_` at the end).

    Datadog's rule, not the check's tags.py: the two must agree on every value the simulator sends. The hashed
    suffix tags.py appends when an id would lose more than its case, or a value its end, is not reproduced: the
    simulator's values never need it, and this says so rather than guess."""
    if value is None:
        return ''
    if value is True or value is False:
        return 'true' if value else 'false'
    text = str(value)
    lowered = text.lower()
    out = _UNDERSCORES.sub('_', _NOT_IN_TAGS.sub('_', lowered)).rstrip('_')
    if (dim in ID_DIMS and out != lowered) or len(dim) + 1 + len(out) > 200:
        raise AssertionError(f'{dim}:{text!r} would need the hashed form: give the simulator another value')
    return out


def _series(endpoint_name: str, group_by) -> tuple[str, ...]:
    return tuple(group_by) + FIXED_DIMS.get(endpoint_name, ())


def _key_of(stub, endpoint_name: str, dims: tuple[str, ...], account: str) -> tuple[str, ...]:
    """The series a point belongs to, read from its tags alone: every tag must be one the series may carry."""
    tags = {}
    for t in stub.tags:
        name, sep, value = t.partition(':')
        assert sep and value, f'{stub.name}: malformed tag {t!r}'
        assert name not in tags, f'{stub.name}: tag {name} twice in {stub.tags}'
        tags[name] = value
    assert tags.pop('openai_account', None) == account, f'{stub.name}: no openai_account:{account} in {stub.tags}'
    allowed = set(dims) | {NAME_TAGS[d] for d in dims if d in NAME_TAGS}
    unexpected = set(tags) - allowed
    assert not unexpected, f'{stub.name}: tags {sorted(unexpected)} are not dimensions of {endpoint_name} {dims}'
    for dim, name_tag in NAME_TAGS.items():
        assert name_tag not in tags or dim in tags, f'{stub.name}: {name_tag} without {dim} in {stub.tags}'
    return tuple(tags.get(d, '') for d in dims)


def submitted_totals(endpoint_name: str, group_by, account: str = ACCOUNT) -> dict:
    """Everything submitted for an endpoint's flows over all runs: {series key: {field: sum}}.

    The series key is the tuple of the series' dimension values as tagged ('' for a dimension not tagged), in
    the order of `group_by` (and the currency for costs). Every point must be a count."""
    dims = _series(endpoint_name, group_by)
    out = defaultdict(lambda: defaultdict(float))
    for metric, field in FLOW_METRICS[endpoint_name].items():
        for stub in _aggregator.metrics(metric):
            assert stub.type == _aggregator.COUNT, f'{metric} is a flow, submitted as type {stub.type}: not a count'
            out[_key_of(stub, endpoint_name, dims, account)][field] += stub.value
    return out


def submitted_levels(endpoint_name: str, group_by, account: str = ACCOUNT) -> dict:
    """The last value submitted for each series of an endpoint's levels: {series key: {field: value}}. Every
    point must be a gauge."""
    dims = _series(endpoint_name, group_by)
    out = defaultdict(dict)
    for metric, field in LEVEL_METRICS[endpoint_name].items():
        for stub in _aggregator.metrics(metric):
            assert stub.type == _aggregator.GAUGE, f'{metric} is a level, submitted as type {stub.type}: not a gauge'
            out[_key_of(stub, endpoint_name, dims, account)][field] = stub.value
    return out


def reported_totals(org, endpoint_name: str, group_by, start: int, end: int, t: float) -> dict:
    """What OpenAI reports at time t, summed over [start, end), in the shape of submitted_totals (for a level,
    the level at time t)."""
    dims = _series(endpoint_name, group_by)
    fields = {**FLOW_METRICS, **LEVEL_METRICS}[endpoint_name].values()
    out = defaultdict(lambda: defaultdict(float))
    for values_key, values in org.observed_totals(endpoint_name, tuple(group_by), start, end, t).items():
        key = tuple(normalized(d, v) for d, v in zip(dims, values_key, strict=True))
        for f in fields:
            if values.get(f):
                out[key][f] += values[f]
    return out


def assert_same_totals(submitted: dict, reported: dict, endpoint_name: str):
    costs = endpoint_name == 'costs'
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


# == The command line the check sees =======================================================================


class FakeProcess:
    cmdline_value: list[str] = []

    def cmdline(self):
        return list(self.cmdline_value)


@pytest.fixture
def command_line(monkeypatch):
    """Make psutil report this process's command line as the Agent's, the way it does inside the Agent."""
    import psutil

    def set_to(argv):
        monkeypatch.setattr(FakeProcess, 'cmdline_value', argv)
        monkeypatch.setattr(psutil, 'Process', FakeProcess)

    return set_to


def opened_array(part: str) -> array:
    """A bucket's saved part (format 5: its array's type code, b'z' for zlib or b'r' for as is, its bytes little-endian)
    as an array: written out here, not read with the check's own code."""
    saved = base64.b64decode(part)
    data = zlib.decompress(saved[2:]) if saved[1:2] == b'z' else saved[2:]
    numbers = array(chr(saved[0]))
    numbers.frombytes(data)
    if sys.byteorder != 'little':
        numbers.byteswap()
    return numbers


def closed_array(numbers, typecode: str = 'i', compressed: bool = True) -> str:
    """The reverse of opened_array, for any numbers (even those the check never saves)."""
    numbers = array(typecode, numbers)
    if sys.byteorder != 'little':
        numbers.byteswap()
    data = zlib.compress(numbers.tobytes()) if compressed else numbers.tobytes()
    return base64.b64encode(typecode.encode() + (b'z' if compressed else b'r') + data).decode('ascii')


def opened_state(text: str) -> dict:
    """A saved ledger of format 5 as the JSON of format 4 once decompressed: each bucket as its series' places in the
    table and their rows (None for a field never reported), as closed_state writes them back."""
    data = json.loads(text)
    width = data.pop('width')
    stride = width or 1
    buckets = {}
    for start, part in data['buckets'].items():
        numbers = opened_array(part).tolist()
        held = [g for g in range(len(numbers) // stride) if numbers[g * stride] != -2]
        rows = [[None if v == -1 else v for v in numbers[g * stride : g * stride + width]] for g in held]
        buckets[start] = [held, rows]
    return {**data, 'v': 4, 'buckets': buckets}


def closed_state(data: dict) -> str:
    """A state of format 4 (still read) from what opened_state gives (buckets given as a list stay a list, of
    compressed columns)."""

    def closed(columns):
        return base64.b64encode(zlib.compress(json.dumps(columns).encode())).decode('ascii')

    buckets = data['buckets']
    if isinstance(buckets, dict):
        buckets = {s: closed(c) for s, c in buckets.items()}
    else:
        buckets = [closed(c) for c in buckets]
    return json.dumps({**data, 'buckets': buckets})
