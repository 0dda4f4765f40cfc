"""Hostile and broken inputs, against a misbehaving server on loopback (tests/hostile.py) or a damaged
saved state: the admin key never leaks, one response cannot exhaust memory or time, no request leaves
the configured host, and bad data never becomes a metric.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import logging
import math
import re
import threading
import time
import tracemalloc
import weakref
import zlib
from pathlib import Path

import pytest
from datadog_checks.base import AgentCheck, ConfigurationError
from datadog_checks.base.stubs import aggregator as _aggregator
from datadog_checks.base.stubs import datadog_agent as _datadog_agent

from datadog_checks.openai import OpenAICheck
from datadog_checks.openai import client as client_module
from datadog_checks.openai.config_models import InstanceConfig
from datadog_checks.openai.ledger import Ledger
from datadog_checks.openai.tags import MAX_TAG_LENGTH

from .conftest import closed_array, closed_state, opened_array, opened_state
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
            # One endpoint, and nothing else: these tests count its requests and bound its memory.
            'collect_headroom': False,
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
    """What the first run does before collecting: build the config models, then what they decide."""
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


# -- 1. The key never leaks --------------------------------------------------------------------------


def echoing(status: int, form: str, hour: int = HOUR):
    """A gateway that puts the request's Authorization header (and every other one) in its answer."""

    def respond(request):
        auth = request.authorization or ''
        headers = {'Content-Type': 'application/json'}
        if status == 429:
            headers['Retry-After'] = '1'
        if form == 'json':
            body = dumps(
                {
                    'error': {
                        'message': f'Request with header Authorization: {auth} refused; key={auth[7:]}',
                        'type': 'invalid_request_error',
                        'headers': request.headers,
                    }
                }
            )
        elif form == 'html':
            headers['Content-Type'] = 'text/html'
            body = f'<html><body><p>{auth}</p><pre>{request.headers}</pre>{auth[7:]}</body></html>'.encode()
        else:  # a JSON page whose data carries the key
            row = completions_row(10, model=auth, user_id=auth[7:])
            body = page(bucket(hour, row))
        return Reply(status, body, headers)

    return respond


LEAKS = [
    (401, 'json'),
    (403, 'json'),
    (429, 'json'),
    (500, 'html'),
    (500, 'json'),
    (400, 'json'),
    (200, 'html'),
    (200, 'page'),
]


@pytest.fixture
def dd_run_check():
    """Run the check as the Agent does, keeping a failed run's error (what `agent status` shows) instead of raising:
    most runs against a hostile server read nothing, and their error is one more channel the key must not reach."""

    def run(check):
        error = check.run()
        if error:
            check.run_errors = [*getattr(check, 'run_errors', []), *json.loads(error)]
        return error

    return run


def everything_said(check, caplog, extra: str = '') -> str:
    records = caplog.records
    parts = [caplog.text, extra]
    parts += [f'{e["message"]}\n{e["traceback"]}' for e in getattr(check, 'run_errors', [])]
    parts += [r.getMessage() for r in records] + [str(r.exc_text) for r in records]
    parts += list(check.warnings)
    parts += [f'{sc.message} {sc.tags}' for sc in statuses()]
    parts += all_tags()
    parts += [f'{k} {v}' for k, v in _datadog_agent._cache.items()]
    parts += [repr(check.config), str(check.config), repr(check.scrubber)]
    return '\n'.join(parts)


def assert_no_key(text: str, key: str = KEY) -> None:
    assert key not in text
    body = key[len('sk-admin-') :]
    pieces = {body[i : i + 16] for i in range(0, len(body) - 16)}
    leaked = [p for p in pieces if p in text]
    assert not leaked, f'parts of the key leaked: {leaked[:3]}'


@pytest.mark.parametrize('how', ['admin_api_key', 'auth_token'])
@pytest.mark.parametrize('status, form', LEAKS)
def test_no_channel_carries_the_key(status, form, how, hostile, make, fake, caplog, tmp_path, dd_run_check):
    caplog.set_level(logging.DEBUG)
    hostile.respond = echoing(status, form)
    # Every listing the check makes too: projects, and the API keys of an endpoint grouped by api_key_id.
    options = {
        'resolve_project_names': True,
        'resolve_api_key_names': True,
        'group_by': {'completions': ['project_id', 'api_key_id']},
    }
    if how == 'auth_token':
        options.update(admin_api_key=None, auth_token=key_file(tmp_path, KEY + '\n'))
    check = make(**options)
    for _ in range(2):
        dd_run_check(check)
        fake.sleep(300)
    # The server did see the key: the test would prove nothing otherwise.
    assert any(r.authorization == f'Bearer {KEY}' for r in hostile.requests)
    said = everything_said(check, caplog)
    assert_no_key(said)
    assert last_status().status != AgentCheck.OK
    if form == 'page':
        assert any('contains the admin key the check sent' in w for w in check.warnings)


def test_control_characters_of_a_response_do_not_reach_the_messages(hostile, make, dd_run_check):
    body = b'\x1b[2J\x1b[31mGateway\x00 error\x07 \x1b]0;owned\x07'
    hostile.respond = lambda request: Reply(502, body, {'Content-Type': 'text/plain'})
    check = make(max_retries=0)
    dd_run_check(check)
    said = '\n'.join(list(check.warnings) + [sc.message for sc in statuses()])
    assert 'Gateway' in said
    assert not any(c in said for c in '\x1b\x00\x07')


def load_runner():
    spec = importlib.util.spec_from_file_location('run_check', ROOT / 'scripts' / 'run_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('status, form', [(401, 'json'), (500, 'html'), (200, 'html'), (200, 'page')])
@pytest.mark.parametrize('output', ['--json', None])
def test_the_local_runner_prints_no_key(status, form, output, hostile, state, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    # The runner runs on the real clock: the page's bucket must be in its window.
    hostile.respond = echoing(status, form, hour=int(time.time()) // H * H)
    conf = tmp_path / 'conf.yaml'
    instance = {
        'account_name': 'evil',
        'admin_api_key': KEY,
        'api_base_url': hostile.base_url,
        'min_collection_interval': 300,
        'usage_endpoints': ['completions'],
        'max_retries': 0,
    }
    conf.write_text(json.dumps({'init_config': {}, 'instances': [instance]}))  # JSON is YAML
    args = ['-c', str(conf), '--times', '1', '--state-dir', str(tmp_path / 'state')]
    load_runner().main(args + ([output] if output else []))
    out, err = capsys.readouterr()
    assert any(r.authorization == f'Bearer {KEY}' for r in hostile.requests)
    assert 'evil' in out
    state_files = ''.join(p.read_text() for p in (tmp_path / 'state').glob('*'))
    assert_no_key('\n'.join([out, err, caplog.text, state_files]))


def test_the_configuration_repr_has_no_key(make):
    check = make()
    initialize(check)
    assert isinstance(check.config, InstanceConfig)
    assert KEY not in repr(check.config) and KEY not in str(check.config)
    assert check.config.admin_api_key == KEY


# -- 2. Bounded memory per response ----------------------------------------------------------------

CAP = 4 * 2**20


def peak_memory(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize('declared', [False, True])
def test_a_huge_body_is_refused_with_bounded_memory(declared, hostile, make, dd_run_check, monkeypatch):
    monkeypatch.setattr(client_module, 'MAX_RESPONSE_BYTES', CAP)
    chunk = b' ' * 2**20
    size = 64 * 2**20

    def respond(request):
        headers = {'Content-Type': 'application/json'}
        if declared:
            headers['Content-Length'] = str(size)
        return Reply(200, (chunk for _ in range(size // len(chunk))), headers)

    hostile.respond = respond
    check = make(max_retries=0)
    peak = peak_memory(lambda: dd_run_check(check))
    assert peak < 3 * CAP, f'peak {peak / 2**20:.1f} MiB for a {CAP / 2**20:.0f} MiB limit'
    assert any('is larger than the 4 MiB the check reads from one response' in w for w in check.warnings)
    assert last_status().status != AgentCheck.OK


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    'encoding, compress',
    [
        ('gzip', lambda size: gzip_bomb(size)),
        ('deflate', lambda size: zlib.compress(bytes(size), 9)),
        ('deflate', lambda size: _raw_deflate(bytes(size))),  # without the zlib header: the check's second try
    ],
)
def test_a_compression_bomb_is_refused_with_bounded_memory(
    encoding, compress, hostile, make, dd_run_check, monkeypatch
):
    monkeypatch.setattr(client_module, 'MAX_RESPONSE_BYTES', CAP)
    bomb = compress(64 * 2**20)
    assert len(bomb) < 100_000
    headers = {'Content-Type': 'application/json', 'Content-Encoding': encoding}
    hostile.respond = lambda request: Reply(200, bomb, headers)
    check = make(max_retries=0)
    peak = peak_memory(lambda: dd_run_check(check))
    assert peak < 3 * CAP, f'peak {peak / 2**20:.1f} MiB for a {CAP / 2**20:.0f} MiB limit'
    assert any('is larger than the 4 MiB' in w for w in check.warnings)


@pytest.mark.parametrize('maps', [True, False])
def test_a_page_is_received_in_memory_of_its_own_given_back_by_its_last_reader(maps, monkeypatch):
    # A page is received into a mapping of its own rather than grown in the C heap (client.Received); where no
    # mapping can be made (a strict commit limit, a platform without it), into a bytearray, which reads the same.
    if not maps:

        def refuse(*args):
            raise OSError(12, 'Cannot allocate memory')

        monkeypatch.setattr(client_module.mmap, 'mmap', refuse)
    received = client_module.Received(64, mapped=True)
    for piece in (b'{"data":', bytearray(b'[1,2]'), memoryview(b'}')):
        received += piece
    assert len(received) == 14 and received.find(b'[1,2]') == 8 and received.find(b'sk-admin') == -1
    assert (received.map is not None) is maps
    text = received.value()
    assert text == b'{"data":[1,2]}' and json.loads(bytes(text)) == {'data': [1, 2]}
    if not maps:
        return
    assert text.readonly
    with pytest.raises(ValueError):
        received += b'x' * 51  # never past its room, however the chunks come: the limit is refused before
    mapping = weakref.ref(received.map)
    del received
    assert mapping() is not None  # the text read from it keeps it
    del text
    assert mapping() is None


def test_a_page_is_received_in_the_mapping_of_a_page_nothing_reads_any_more():
    first = client_module.Received(64, mapped=True)
    first += b'{"a":1}'
    text = first.value()
    # Its text is still read (a bucket not compared yet holds a view of it): the next page gets a mapping of its own,
    # and the text stays as it came.
    second = client_module.Received(64, mapped=True, spare=first.map)
    assert second.map is not None and second.map is not first.map
    second += b'{"b":22}'
    assert bytes(text) == b'{"a":1}'
    del text
    # Nothing reads it any more: written over from its start, the old bytes past the new ones left out.
    third = client_module.Received(64, mapped=True, spare=first.map)
    assert third.map is first.map
    third += b'[]'
    assert bytes(third.value()) == b'[]' and third.find(b'"a"') == -1
    # Another limit, another room: a mapping of another size is not taken.
    other = client_module.Received(128, mapped=True, spare=second.map)
    assert other.map is not second.map and len(other.map) == 128


def test_the_pages_of_a_read_share_a_mapping_let_go_of_before_the_save(hostile, make, fake, dd_run_check, monkeypatch):
    made = []
    real = client_module.mmap.mmap

    def counted(*args):
        made.append(args)
        return real(*args)

    monkeypatch.setattr(client_module.mmap, 'mmap', counted)
    calls, tokens = [], [10]

    def respond(request):
        # Three pages of a bucket each; the last bucket holds `tokens`.
        calls.append(request)
        cursor = request.query.get('page', [''])[0]
        if not cursor:
            return Reply(200, page(bucket(HOUR - 2 * H, completions_row(5, model='m')), has_more=True, next_page='p2'))
        if cursor == 'p2':
            return Reply(200, page(bucket(HOUR - H, completions_row(7, model='m')), has_more=True, next_page='p3'))
        return Reply(200, page(bucket(HOUR, completions_row(tokens[0], model='m'))), JSON)

    hostile.respond = respond
    check = make(group_by={'completions': ['model']})
    spares = []
    collect = check.collect

    def observed(source, run):
        # The mapping the client keeps for a next page, as the source saves its state and once it is done.
        save = source.save

        def saving(outcome):
            spares.append(run.client.spare)
            return save(outcome)

        source.save = saving
        try:
            outcome = collect(source, run)
        finally:
            del source.save
        spares.append(run.client.spare)
        return outcome

    check.collect = observed
    dd_run_check(check)
    fake.sleep(300)
    _aggregator.reset()
    del calls[:], made[:]
    tokens[0] = 25
    dd_run_check(check)
    assert last_status().status == AgentCheck.OK, check.warnings
    # The run read its three pages into one mapping, and compared each rightly: the last bucket grew by 15 tokens.
    assert len(calls) == 3 and len(made) == 1
    _aggregator.assert_metric('openai.api.usage.completions.input_tokens', 15, count=1)
    # Once the source has read its pages, the check holds no mapping for a next page: not during its save, nor for
    # the next source.
    assert len(spares) >= 4 and all(spare is None for spare in spares)


def test_a_decoder_that_reads_no_view_is_given_bytes(hostile, make, dd_run_check, monkeypatch):
    # The standard library's decoder (the Agent ships orjson, which reads views) is given a bytearray.
    client_module._decoder_reads_views.cache_clear()
    assert client_module._decoder_reads_views() is (importlib.util.find_spec('orjson') is not None)
    client_module._decoder_reads_views.cache_clear()
    monkeypatch.setattr(client_module, 'json', type('StdJson', (), {'decode': staticmethod(json.loads)}))
    try:
        assert not client_module._decoder_reads_views()
        # Pages of rows (decoded a part at a time, in bytes) and a page without rows (decoded whole, from the body).
        pages = iter([page(bucket(HOUR, completions_row(100, model='m'))), page()])
        hostile.respond = lambda request: Reply(200, next(pages, page()), JSON)
        check = make(group_by={'completions': ['model']})
        dd_run_check(check)
        assert last_status().status == AgentCheck.OK, check.warnings
    finally:
        client_module._decoder_reads_views.cache_clear()  # worked out again with the real decoder


@pytest.mark.parametrize('size', [60_000, 5 * 2**20])
def test_an_error_answer_is_read_only_for_its_message(size, hostile, make, dd_run_check):
    body = dumps({'error': {'message': 'x' * size}})
    hostile.respond = lambda request: Reply(500, body, JSON)
    check = make(max_retries=0)
    peak = peak_memory(lambda: dd_run_check(check))
    assert peak < 2 * 2**20
    sc = last_status()
    assert sc.status != AgentCheck.OK and 'OpenAI answered 500' in sc.message
    # Capped: a message of megabytes does not go to the service check nor to `agent status` every run.
    assert len(sc.message) < 2200
    assert check.warnings and all(len(w) < 2200 for w in check.warnings)


def run_twice(check, fake, dd_run_check):
    dd_run_check(check)
    fake.sleep(300)
    _aggregator.reset()
    dd_run_check(check)


def growing_page(encode=lambda body: body, headers=None):
    """A completions page whose one series grows by 50 tokens at each request."""
    calls = []

    def respond(request):
        calls.append(request)
        body = page(bucket(HOUR, completions_row(100 + 50 * len(calls), model='gpt-4o')))
        return Reply(200, encode(body), {**JSON, **(headers or {})})

    return respond


@pytest.mark.parametrize(
    'encoding, encode',
    [
        ('gzip', gzipped),
        ('gzip', lambda body: gzipped(body[:40]) + gzipped(body[40:])),  # two members
        ('x-gzip', gzipped),  # the older name, which RFC 9110 asks readers to take as gzip
        ('X-Gzip', gzipped),
        ('deflate', zlib.compress),
        ('deflate', lambda body: zlib.compress(body)[2:-4]),  # raw deflate, without the zlib header
        ('identity', lambda body: body),
    ],
)
def test_compressed_pages_are_read(encoding, encode, hostile, make, fake, dd_run_check, aggregator):
    hostile.respond = growing_page(encode, {'Content-Encoding': encoding})
    check = make(group_by={'completions': ['model']})
    run_twice(check, fake, dd_run_check)
    # The baseline asks twice (its first bucket alone, then the rest), and this server answers both with the
    # bucket: read once, at 150 tokens; the next run's answer is 250.
    aggregator.assert_metric('openai.api.usage.completions.input_tokens', 100, count=1)
    assert last_status().status == AgentCheck.OK
    assert hostile.requests[0].headers['accept-encoding'] == 'gzip, deflate'


@pytest.mark.parametrize('encoding, encode', [('identity', lambda b: b), ('gzip', gzipped), ('deflate', zlib.compress)])
def test_a_page_of_exactly_the_limit_is_read_and_one_byte_more_is_not(
    encoding, encode, hostile, make, dd_run_check, monkeypatch
):
    body = page(bucket(HOUR, completions_row(100, model='gpt-4o')))
    hostile.respond = lambda request: Reply(200, encode(body), {**JSON, 'Content-Encoding': encoding})
    for limit, refused in ((len(body), False), (len(body) - 1, True)):
        monkeypatch.setattr(client_module, 'MAX_RESPONSE_BYTES', limit)
        check = make(group_by={'completions': ['model']})
        dd_run_check(check)
        too_large = [w for w in check.warnings if 'is larger than the' in w]
        assert bool(too_large) is refused, (limit, check.warnings)
        assert (last_status().status == AgentCheck.OK) is not refused


@pytest.mark.parametrize('status', [200, 502])
def test_a_page_that_is_not_utf_8_is_quoted_not_a_crash(status, hostile, make, dd_run_check):
    # A gateway's page in Latin-1 (or any bytes): quoted with what cannot be decoded replaced.
    body = b'<html><body>Passerelle \xe9chou\xe9e \xff\xfe proxy-7</body></html>'
    hostile.respond = lambda request: Reply(status, body, {'Content-Type': 'text/html; charset=iso-8859-1'})
    check = make(max_retries=0)
    dd_run_check(check)
    assert not any('unexpected error' in w for w in check.warnings), check.warnings
    quoted = [w for w in check.warnings if 'Passerelle \ufffdchou\ufffde' in w and 'proxy-7' in w]
    assert quoted, check.warnings
    assert last_status().status != AgentCheck.OK


@pytest.mark.parametrize('before', [470, 100])
def test_a_key_cut_by_the_quoted_window_leaves_no_part_of_it(before, hostile, make, dd_run_check):
    # The check quotes the start of a page that is not JSON (480 bytes at most): an echoed key cut at that bound is
    # no longer recognised as the key, so the cut word goes, even when it is the only one (a page of blanks).
    body = b' ' * before + b'x ' * ((470 - before) // 2) + KEY.encode() + b' tail'
    hostile.respond = lambda request: Reply(502, body, {'Content-Type': 'text/html'})
    check = make(max_retries=0)
    dd_run_check(check)
    said = ' '.join(check.warnings) + last_status().message
    assert 'OpenAI answered 502' in said
    # Not even its first characters: a fragment too short for the key's shape (sk- and 12 more) is not redacted.
    assert KEY[: len('sk-admin-') + 1] not in said, said
    assert not any(KEY[i : i + 8] in said for i in range(4, len(KEY) - 8)), said


def test_a_minified_page_longer_than_the_quoted_window_is_still_quoted(hostile, make, dd_run_check):
    body = b'{"detail":"' + b'upstream-overloaded,' * 40 + b'"}'  # one word of 800 bytes
    hostile.respond = lambda request: Reply(502, body, {'Content-Type': 'application/problem+json'})
    check = make(max_retries=0)
    dd_run_check(check)
    assert any('{"detail":"upstream-overloaded,upstream-overloaded,' in w for w in check.warnings), check.warnings


@pytest.mark.parametrize(
    'body, says',
    [
        (b'', '(empty body)'),
        (b' \n\t ' * 50, '(empty body)'),  # blanks only, within the quoted window
        (b'Z' * 2000, '(a body with no break in its first bytes)'),  # one token longer than the window: cut, so dropped
    ],
)
def test_an_error_page_with_nothing_to_quote_says_what_it_was(body, says, hostile, make, dd_run_check):
    hostile.respond = lambda request: Reply(502, body, {'Content-Type': 'text/plain'})
    check = make(max_retries=0)
    dd_run_check(check)
    assert any(says in w for w in check.warnings), check.warnings


@pytest.mark.parametrize(
    'body, quoted',
    [
        (b'Bad gateway', 'Bad gateway'),  # whole, with nothing added
        (b'x' * 120, 'x' * 120),  # exactly as long as a quote may be: whole
        (b'gateway ' * 25, 'gateway ' * 15 + '...'),  # 200 bytes: its first 120 characters, then an ellipsis
    ],
)
def test_an_error_page_is_quoted_whole_up_to_120_characters_and_cut_with_an_ellipsis_beyond(
    body, quoted, hostile, make, dd_run_check
):
    hostile.respond = lambda request: Reply(502, body, {'Content-Type': 'text/plain'})
    check = make(max_retries=0)
    dd_run_check(check)
    assert any(f'OpenAI answered 502 on /organization/usage/completions ({quoted}).' in w for w in check.warnings), (
        check.warnings
    )


def test_an_encoding_the_check_cannot_bound_is_refused(hostile, make, dd_run_check):
    hostile.respond = growing_page(headers={'Content-Encoding': 'br'})
    check = make()
    dd_run_check(check)
    assert any('in an encoding the check does not read (br)' in w for w in check.warnings)


# -- 3. A deadline for the whole request -----------------------------------------------------------


def test_a_dripping_server_is_cut_at_the_deadline(hostile, make, dd_run_check):
    def respond(request):
        def body():
            yield b'{"object": "page", "data": ['
            for _ in range(300):  # a byte every 0.1 s for 30 s: never a 5 s silence
                yield b' '

        return Reply(200, body(), JSON, drip=0.1)

    hostile.respond = respond
    check = make(real_time=True, time_budget=1, max_retries=0)
    dd_run_check(check)
    sc = last_status()
    assert sc.status != AgentCheck.OK
    # Only the deadline says this; had the check read on, the whole body (28 + 300 bytes, never valid JSON) would
    # have arrived after 30 s and been refused as not JSON. No wall-clock bound: it would depend on the load.
    assert 'was still sending' in sc.message and "time budget ran out" in sc.message
    received = int(re.search(r'\((\d+) bytes received\)', sc.message).group(1))
    assert received < 28 + 300


def test_a_body_that_stops_arriving_is_given_up_after_the_read_timeout(hostile, make, dd_run_check, aggregator):
    stalled = threading.Event()

    def respond(request):
        def body():
            full = page(bucket(HOUR, completions_row(100, model='gpt-4o')))
            yield full[:20]
            # Silent for 8 s (the check's read timeout is 1 s), then the rest of a valid page: a check that waited
            # on without a timeout would read it whole and call the run a success.
            stalled.wait(8)
            yield full[20:]

        return Reply(200, body(), JSON)

    hostile.respond = respond
    check = make(real_time=True, timeout=1, max_retries=0)
    try:
        dd_run_check(check)
    finally:
        stalled.set()
    sc = last_status()
    assert (
        sc.status != AgentCheck.OK and 'OpenAI did not answer /organization/usage/completions within 1s.' in sc.message
    )
    # Counted as a timeout, not as the 200 its headers said.
    aggregator.assert_metric(
        'openai.check.api.requests',
        value=1,
        tags=['openai_account:evil', 'endpoint:completions', 'status_code:timeout'],
    )


# -- 4. Where the key may go ------------------------------------------------------------------------


def test_redirects_are_not_followed(hostile, make, dd_run_check):
    with HostileServer(growing_page()) as elsewhere:
        hostile.respond = lambda request: Reply(
            302, b'', {'Location': f'{elsewhere.base_url}/organization/usage/completions?x=1'}
        )
        check = make(max_retries=0)
        dd_run_check(check)
        assert elsewhere.requests == []
    sc = last_status()
    assert sc.status != AgentCheck.OK
    assert 'was redirected (302) to http://127.0.0.1:' in sc.message and 'does not follow redirects' in sc.message


def test_plain_http_to_another_host_warns_at_every_run(hostile, make, fake, dd_run_check):
    hostile.respond = growing_page()
    # Through the hostile server as a proxy: the check believes it talks to openai.example.test.
    check = make(api_base_url='http://openai.example.test/v1', proxy={'http': f'http://127.0.0.1:{hostile.port}'})
    run_twice(check, fake, dd_run_check)
    assert hostile.requests and all(r.host == 'openai.example.test' for r in hostile.requests)
    warned = [w for w in check.warnings if 'is plain http to another host' in w]
    assert len(warned) == 2 and 'unencrypted' in warned[0]


def test_plain_http_on_this_host_does_not_warn(hostile, make, fake, dd_run_check):
    hostile.respond = growing_page()
    check = make(api_base_url=hostile.base_url.replace('127.0.0.1', 'localhost'))
    run_twice(check, fake, dd_run_check)
    assert not [w for w in check.warnings if 'plain http' in w]


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
    # API key names are listed only for an endpoint grouped by api_key_id.
    check = make(
        resolve_project_names=True, resolve_api_key_names=True, group_by={'completions': ['project_id', 'api_key_id']}
    )
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
        for key, text in _datadog_agent._cache.items():
            assert 'NaN' not in text and 'Infinity' not in text
            if 'ledger_' in key:  # the estimate keeps a state of its own, read by its own test
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


# The separator format 2 of the saved state joined a series key's values with.
SEP = '\x1f'


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
    # A series key is a tuple of values: the separator is one more character of the user id, which keeps its key
    # and, changed by the tag rules, a hash that keeps it apart from any `user_a_evil`.
    [evil] = [
        m for m in aggregator.metrics('openai.api.usage.completions.input_tokens') if 'api_key_id:key_a' in m.tags
    ]
    assert evil.value == 30
    [user] = [t for t in evil.tags if t.startswith('user_id:')]
    assert re.fullmatch(r'user_id:user_a_evil-[0-9a-f]{8}', user), user
    assert not any('malformed' in w for w in check.warnings)


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
    if how == 'not json':
        return text[: len(text) // 2]
    if how in COMPRESSION_DAMAGE:
        data = json.loads(text)
        first = next(iter(data['buckets']))
        data['buckets'][first] = COMPRESSION_DAMAGE[how](data['buckets'][first])
        return json.dumps(data)
    data = opened_state(text)
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
    elif how == 'a value too many in a key':
        data['series'][0].append('evil')
    elif how == 'buckets as a list':
        data['buckets'] = list(data['buckets'].values())
    elif how == 'nan':
        values[0][0] = math.nan  # written as NaN, which only a lenient decoder reads
    return closed_state(data)


# Damage to a bucket's saved array (format 5: its type code, how it is stored, its bytes; in base64). The damage
# above is to the same state rewritten in format 4 (still read), whose JSON can hold what an array cannot.
COMPRESSION_DAMAGE = {
    'columns not base64': lambda b: b[:-2] + '!!',
    'columns not zlib': lambda b: base64.b64encode(b'iz[[0],[[1]]]').decode(),
    'columns cut short': lambda b: base64.b64encode(base64.b64decode(b)[:-6]).decode(),
    'columns as plain JSON': lambda b: [list(range(len(opened_array(b)))), [list(opened_array(b))]],
    'an array of another type': lambda b: base64.b64encode(b'f' + base64.b64decode(b)[1:]).decode(),
    'a figure below the markers': lambda b: closed_array([-3] + list(opened_array(b))[1:]),
    'a row half absent': lambda b: closed_array([-2] + list(opened_array(b))[1:]),
    'an infinite figure': lambda b: closed_array([math.inf] + list(opened_array(b))[1:], 'd', compressed=False),
}


CORRUPTIONS = [
    'negative',
    'huge',
    'string',
    'short row',
    'bad index',
    'a value too many in a key',
    'buckets as a list',
    'nan',
    'not json',
    *COMPRESSION_DAMAGE,
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


# -- 9. Small ones: a key with a newline, the auth_token path ------------------------------------------


def test_a_key_with_a_trailing_newline_is_sent_without_it(hostile, make, dd_run_check):
    hostile.respond = growing_page()
    check = make(admin_api_key=KEY + '\n')
    dd_run_check(check)
    assert last_status().status == AgentCheck.OK
    assert {r.authorization for r in hostile.requests} == {f'Bearer {KEY}'}


def test_a_key_with_a_space_inside_is_a_configuration_error_that_does_not_show_it(make):
    check = make(admin_api_key=KEY[:20] + ' ' + KEY[20:])
    with pytest.raises(ConfigurationError) as e:
        initialize(check)
    assert 'contains spaces, line breaks or control characters' in str(e.value)
    assert KEY[:20] not in str(e.value) and KEY[20:] not in str(e.value)


def test_auth_token_with_admin_api_key_is_a_configuration_error(make, tmp_path):
    check = make(auth_token=key_file(tmp_path, KEY))
    with pytest.raises(ConfigurationError, match='not both'):
        initialize(check)


def rate_limited_then_page(fake, times: int, status: int = 429):
    seen = []

    def respond(request):
        seen.append((fake.now(), request.authorization))
        if len(seen) <= times:
            return Reply(status, dumps({'error': {'message': 'slow down'}}), {**JSON, 'Retry-After': '7'})
        return Reply(200, page(bucket(HOUR, completions_row(100, model='a'))), JSON)

    return respond, seen


@pytest.mark.parametrize('status', [429, 500])
def test_auth_token_requests_follow_the_retry_policy(status, hostile, make, fake, tmp_path, dd_run_check):
    respond, seen = rate_limited_then_page(fake, 2, status)
    hostile.respond = respond
    check = make(admin_api_key=None, auth_token=key_file(tmp_path, KEY + '\n'), max_retries=3)
    dd_run_check(check)
    # Each attempt is sent once (the HTTP wrapper would send every failed one twice, at once), and the
    # waits are Retry-After's. (Then the rest of the baseline's window, after its first bucket.)
    assert len(seen) == 4
    # Retry-After for a 429, the backoff (1 s, then 2 s) for a 500.
    assert [b[0] - a[0] for a, b in zip(seen, seen[1:])] == ([7, 7, 0] if status == 429 else [1, 2, 0])
    assert {auth for _, auth in seen} == {f'Bearer {KEY}'}
    assert last_status().status == (AgentCheck.WARNING if status == 429 else AgentCheck.OK)


def test_auth_token_file_is_read_at_every_run(hostile, make, fake, tmp_path, dd_run_check, caplog):
    caplog.set_level(logging.DEBUG)
    hostile.respond = echoing(401, 'json')
    config = key_file(tmp_path, KEY)
    check = make(admin_api_key=None, auth_token=config)
    dd_run_check(check)
    first = len(hostile.requests)
    Path(config['reader']['path']).write_text(OTHER_KEY + '\n')
    fake.sleep(300)
    dd_run_check(check)
    # The next run sends the new key from its first request on.
    assert {r.authorization for r in hostile.requests[first:]} == {f'Bearer {OTHER_KEY}'}
    said = everything_said(check, caplog)
    assert_no_key(said, KEY)
    assert_no_key(said, OTHER_KEY)


def test_an_unreadable_auth_token_file_is_critical_and_sends_nothing(hostile, make, tmp_path, dd_run_check):
    hostile.respond = growing_page()
    config = key_file(tmp_path, KEY)
    Path(config['reader']['path']).unlink()
    check = make(admin_api_key=None, auth_token=config)
    dd_run_check(check)
    assert hostile.requests == []
    sc = last_status()
    assert sc.status == AgentCheck.CRITICAL and 'Cannot read the admin key from the auth_token file' in sc.message
    _aggregator.assert_metric('openai.check.can_connect', 0)


def test_an_empty_auth_token_file_says_so(hostile, make, tmp_path, dd_run_check):
    check = make(admin_api_key=None, auth_token=key_file(tmp_path, '\n'))
    dd_run_check(check)
    assert hostile.requests == []
    assert 'holds no key' in last_status().message


def test_auth_token_needs_a_file_reader(make):
    check = make(
        admin_api_key=None,
        auth_token={
            'reader': {'type': 'oauth', 'url': 'http://127.0.0.1:1/token', 'client_id': 'a', 'client_secret': 'b'},
            'writer': {'type': 'header', 'name': 'Authorization', 'value': 'Bearer <TOKEN>'},
        },
    )
    with pytest.raises(ConfigurationError, match='must have a `file` reader'):
        initialize(check)


def test_gzip_is_what_the_check_asks_for(hostile, make, dd_run_check):
    body = page(bucket(HOUR))
    hostile.respond = lambda request: Reply(200, gzip.compress(body), {**JSON, 'Content-Encoding': 'gzip'})
    check = make()
    dd_run_check(check)
    assert last_status().status == AgentCheck.OK
