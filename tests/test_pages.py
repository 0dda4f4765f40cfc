"""A usage or costs page decoded a part of each bucket's rows at a time (sources/pages.py).

The expectation is always a decoding of the whole page with the JSON module, rows added up the same way: the parts
must hold the same rows, in the same order, whatever the page's spacing and whatever its strings hold.
"""

import hashlib
import json

import pytest

from datadog_checks.openai.catalogue import ENDPOINTS_BY_NAME
from datadog_checks.openai.sources import pages
from datadog_checks.openai.sources.pages import Known, Read, decode_page
from datadog_checks.openai.sources.rows import Tally, aggregate, key_reader, values_reader

COMPLETIONS = ENDPOINTS_BY_NAME['completions']
KEY_OF = key_reader(('model', 'project_id'), ())
READ = values_reader(COMPLETIONS.flows)


def row(model, tokens, project='proj_a', **extra):
    return {
        'object': 'organization.usage.completions.result',
        'input_tokens': tokens,
        'output_tokens': 2 * tokens,
        'num_model_requests': 1,
        'project_id': project,
        'model': model,
        **extra,
    }


def page(*buckets, has_more=False):
    data = [{'object': 'bucket', 'start_time': s, 'end_time': s + 3600, 'results': rows} for s, rows in buckets]
    return {'object': 'page', 'data': data, 'has_more': has_more, 'next_page': 'page_2' if has_more else None}


class CountingTally(Tally):
    """A Tally that notes how many rows each part it is given holds (in `sizes`, shared by the tallies of a page)."""

    __slots__ = ('sizes',)

    def __init__(self, sizes=None):
        super().__init__(KEY_OF, READ)
        self.sizes = [] if sizes is None else sizes

    def add(self, rows):
        self.sizes.append(len(rows))
        super().add(rows)


class Parts:
    """Makes the tallies of a page, and keeps them and the size of every part."""

    def __init__(self):
        self.sizes = []
        self.tallies = []

    def __call__(self):
        tally = CountingTally(self.sizes)
        self.tallies.append(tally)
        return tally


def expected(body: dict) -> list:
    """Each bucket's rows as a whole decoding adds them up: (series, malformed)."""
    return [aggregate(b['results'], KEY_OF, READ) for b in body['data']]


def read_back(body: dict) -> list:
    out = []
    for b in body['data']:
        results = b['results']
        if isinstance(results, Known):
            results = results.read(CountingTally)
        assert isinstance(results, Read)
        out.append((results.tally.flows, results.tally.malformed))
    return out


ODD_STRINGS = [
    'gpt-4o},{"model":"x"}',  # a row break inside a string
    'a]b',
    'ends with }]',
    'a], {"model": "y"}',  # where the rows end, then a row, inside a string
    'x},',
    '"results":[{"model":"fake"}]',  # what starts a bucket's rows, inside a string (its quotes escaped)
    '\\"results\\":[',
    'back\\slash',
    'unicode \u00e9\u4e2d \U0001f600',
]


def hostile_page():
    rows = [row(f'm{i}', i, project=ODD_STRINGS[i % len(ODD_STRINGS)]) for i in range(300)]
    rows.insert(17, 'not a row')
    rows.insert(40, None)
    rows.insert(41, [1, 2, {'x': 3}])
    rows.append(row('m5', 1000))  # a key seen before: added up
    rows.append(7)  # the array ends with no object
    return page((0, rows), (3600, []), (7200, [row('late', 5, project='p}]')]))


SPACINGS = {
    'minified': lambda body: json.dumps(body, separators=(',', ':')),
    'python': lambda body: json.dumps(body),
    'pretty': lambda body: json.dumps(body, indent=2),
    'crlf-tabs': lambda body: json.dumps(body, indent='\t').replace('\n', '\r\n'),
}


@pytest.mark.parametrize('spacing', list(SPACINGS))
def test_a_page_read_a_part_at_a_time_adds_up_the_rows_a_whole_decoding_reads(monkeypatch, spacing):
    monkeypatch.setattr(pages, 'PART_BYTES', 512)
    body = hostile_page()
    text = SPACINGS[spacing](body).encode()
    parts = Parts()
    decoded = decode_page(text, json.loads, parts)
    assert read_back(decoded) == expected(json.loads(text))
    # The rows came in parts, none of the first bucket's 305 whole: the page was not decoded whole.
    assert len(parts.tallies) == 3 and all(isinstance(b['results'], Read) for b in decoded['data'])
    assert 305 == sum(parts.sizes[:-1]) and max(parts.sizes) < 100 and len(parts.sizes) > 10
    assert [b['results'].rows for b in decoded['data']] == [305, 0, 1]
    # The rest of the page is as a whole decoding has it.
    whole = json.loads(text)
    for got, want in zip(decoded['data'], whole['data']):
        assert {k: v for k, v in got.items() if k != 'results'} == {k: v for k, v in want.items() if k != 'results'}
    assert {k: v for k, v in decoded.items() if k != 'data'} == {k: v for k, v in whole.items() if k != 'data'}


def test_a_large_bucket_is_never_held_decoded_whole():
    # The default part: about a megabyte of text (some 4,200 of these short rows, 1,700 of OpenAI's), of 4.8 MB.
    rows = [row(f'model-{i}', i) for i in range(20_000)]
    text = json.dumps(page((0, rows)), indent=2).encode()
    parts = Parts()
    decoded = decode_page(text, json.loads, parts)
    assert decoded['data'][0]['results'].rows == 20_000 == sum(parts.sizes)
    assert len(text) > 4 * pages.PART_BYTES and len(parts.sizes) == 5 and max(parts.sizes) < 20_000 / 4
    assert read_back(decoded) == expected(json.loads(text))


def digest_of(text: bytes, rows_at: int, end: int) -> tuple:
    return (end - rows_at, hashlib.sha256(text[rows_at:end]).digest())


def test_rows_whose_text_was_read_before_are_not_decoded_until_asked_for(monkeypatch):
    monkeypatch.setattr(pages, 'PART_BYTES', 64)  # a part a row
    body = page((0, [row('a', 1), row('b', 2)]), (3600, [row('c', 3)]))
    text = json.dumps(body, indent=2).encode()
    first = decode_page(text, json.loads, Parts())
    known = [b['results'].digest for b in first['data']]
    # The digest is of the text between the brackets: its length and SHA-256.
    rows_at = text.index(b'[', text.index(b'"results"')) + 1
    assert known[0] == digest_of(text, rows_at, rows_at + known[0][0]) and text[rows_at + known[0][0]] == ord(']')
    # Decoded again with the first bucket's digest known: that bucket is not decoded, the other is.
    parts = Parts()
    again = decode_page(text, json.loads, parts, [known[0]])
    settled, fresh = (b['results'] for b in again['data'])
    assert isinstance(settled, Known) and settled.digest == known[0]
    assert isinstance(fresh, Read) and parts.sizes == [1]
    # Read when asked for, it holds the rows the first decoding read, and keeps its digest.
    read = settled.read(CountingTally)
    assert (read.tally.flows, fresh.tally.flows) == tuple(b['results'].tally.flows for b in first['data'])
    assert (read.rows, read.digest) == (2, known[0])
    # A text of the same length with one figure changed is not the known one.
    changed = text.replace(b'"input_tokens": 2', b'"input_tokens": 7')
    assert len(changed) == len(text)
    revised = decode_page(changed, json.loads, Parts(), known)
    assert isinstance(revised['data'][0]['results'], Read) and isinstance(revised['data'][1]['results'], Known)
    assert revised['data'][0]['results'].tally.flows[('b', 'proj_a')][0] == 7


@pytest.mark.parametrize(
    'body',
    [
        # Rows outside any bucket: the placeholder would not stand where a bucket's rows stand.
        {'object': 'page', 'results': [row('a', 1)], 'data': [], 'has_more': False},
        {'object': 'page', 'data': [{'start_time': 0, 'inner': {'results': [row('a', 1)]}}], 'has_more': False},
        # Two `results` in one bucket: a whole decoding keeps the last.
        {'object': 'page', 'data': [{'start_time': 0, 'results': [row('a', 1)]}], 'has_more': False},
        # No bucket has rows.
        {'object': 'page', 'data': [], 'has_more': False},
    ],
    ids=['top-level', 'nested', 'duplicate-key', 'no-rows'],
)
def test_a_page_of_another_layout_is_decoded_whole(body, request):
    text = json.dumps(body)
    if request.node.callspec.id == 'duplicate-key':
        text = text.replace('"results": [', '"results": [{"model": "first"}], "results": [', 1)
    decoded = decode_page(text.encode(), json.loads, Parts())
    assert decoded == json.loads(text)


def test_rows_that_hold_what_cuts_a_part_everywhere_are_decoded_whole(monkeypatch):
    # Rows whose strings hold where rows may end, many times: after MAX_FALSE_CUTS cuts of a part that do not
    # decode, the page is decoded whole (rather than try cut after cut).
    monkeypatch.setattr(pages, 'PART_BYTES', 64)
    body = page((0, [row(f'm{i}', i, project='],' * 10) for i in range(200)]))
    text = json.dumps(body).encode()
    tried = []
    monkeypatch.setattr(pages, 'MAX_FALSE_CUTS', 3)

    def loads(t):
        tried.append(len(t))
        return json.loads(t)

    decoded = decode_page(text, loads, Parts())
    assert decoded == body and len(tried) == 3 + 1 + 1  # three cuts tried, the one too many, the whole page


@pytest.mark.parametrize(
    'damage',
    [
        lambda t: t[: len(t) // 2],  # cut off mid-rows
        lambda t: t[:-2],  # cut off after the rows
        lambda t: t.replace(b'}, {', b'}, {{', 1),  # a row that does not parse
        lambda t: t.replace(b'"has_more"', b'"has_more', 1),  # the rest of the page does not parse
        lambda t: t.replace(b'}]', b'},]', 1),  # a trailing comma
    ],
    ids=['truncated-rows', 'truncated-page', 'bad-row', 'bad-envelope', 'trailing-comma'],
)
def test_a_damaged_page_fails_to_decode_as_it_would_whole(damage):
    text = damage(json.dumps(page((0, [row('a', 1), row('b', 2)]), (3600, [row('c', 3)]))).encode())
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        decode_page(text, json.loads, Parts())


def test_known_rows_that_no_longer_cut_are_decoded_whole(monkeypatch):
    # Read when asked for, a known text is cut again the same way; should that fail, its array is decoded whole.
    monkeypatch.setattr(pages, 'PART_BYTES', 64)
    # Its first rows cut cleanly, the others hold what looks like the end of the array.
    body = page((0, [row(f'm{i % 20}', i, project='p' if i < 10 else 'a], b') for i in range(30)]))
    text = json.dumps(body).encode()
    first = decode_page(text, json.loads, Parts())['data'][0]['results']
    settled = decode_page(text, json.loads, Parts(), [first.digest])['data'][0]['results']
    assert isinstance(settled, Known)
    monkeypatch.setattr(pages, 'MAX_FALSE_CUTS', 0)
    # The cuts fail now: a page of that text is decoded whole.
    assert decode_page(text, json.loads, Parts())['data'][0]['results'] == body['data'][0]['results']
    parts = Parts()
    again = settled.read(parts)
    assert again.rows == 30 and parts.sizes[-1] == 30 and again.tally.flows == first.tally.flows
    assert again.tally.flows == aggregate(body['data'][0]['results'], KEY_OF, READ)[0]
