"""A part of a bucket's rows read whole (rows.part_reader) adds up to exactly what the row-by-row readers read.

The part reader is the fast path of every large run; the row readers are the careful one. Each case below is read
both ways, and the series, their figures (types included: 1 and 1.0 are different figures to a test, not to `==`),
their order and, for costs, the unit noted for each series must be the same. The cases a part reader must decline
are checked to be declined: read whole, they would be read wrong.
"""

import logging

import pytest

from datadog_checks.openai.catalogue import COSTS_ENDPOINT, ENDPOINTS_BY_NAME
from datadog_checks.openai.sources import CostsSource, StateStore, UsageSource, Windows
from datadog_checks.openai.sources.rows import Tally

COMPLETIONS = ENDPOINTS_BY_NAME['completions']
WINDOWS = Windows(6, 24, 3)


def source(endpoint, group_by):
    state = StateStore(lambda key: None, lambda key, text: None, False)
    cls = CostsSource if endpoint is COSTS_ENDPOINT else UsageSource
    return cls(
        endpoint, '1d' if endpoint is COSTS_ENDPOINT else '1h', group_by, WINDOWS, state, logging.getLogger(), None
    )


def usage_row(i, **changes):
    # Every figure the catalogue reads, as the API's responses carry them.
    row = {
        'object': 'organization.usage.completions.result',
        **{f.name: n * i for n, f in enumerate(COMPLETIONS.flows)},
    }
    row.update(input_tokens=100 + i, output_tokens=2 * i, num_model_requests=1)
    row |= {
        'project_id': f'proj_{i % 3}',
        'user_id': None if i % 4 == 0 else f'user_{i}',
        'model': 'gpt-4o',
        'batch': i % 2 == 0,
    }
    row.update(changes)
    return row


def cost_row(i, **changes):
    row = {
        'object': 'organization.costs.result',
        'amount': {'value': 0.25 * i, 'currency': 'usd'},
        'line_item': f'item {i}',
        'project_id': f'proj_{i % 3}',
        'quantity': 10 * i,
        'quantity_unit': 'tokens',
    }
    row.update(changes)
    return row


def typed(flows: dict) -> list:
    return [(key, tuple((type(v), v) for v in values)) for key, values in flows.items()]


def read_both(src, parts):
    """The parts added up by the source's tally, and by one without the part reader, with the units each noted."""
    results = []
    for read_part in (src.read_part, None):
        units = src.units = {} if isinstance(src, CostsSource) else None
        tally = Tally(src.key_of, src.read_flows, None, read_part)
        for part in parts:
            tally.add(part)
        results.append((typed(tally.flows), tally.malformed, tally.rows, units))
    return results


USAGE_GROUP_BY = ('project_id', 'user_id', 'model', 'batch')
PLAIN_USAGE = [usage_row(i) for i in range(12)]
PLAIN_COSTS = [cost_row(i) for i in range(12)]


@pytest.mark.parametrize(
    'endpoint, group_by, parts',
    [
        pytest.param(
            COMPLETIONS, USAGE_GROUP_BY, [PLAIN_USAGE[:5], PLAIN_USAGE[5:]], id='completions, nulls and flags'
        ),
        pytest.param(COMPLETIONS, ('model',), [[usage_row(i, model=f'm{i}') for i in range(4)]], id='one dimension'),
        pytest.param(COMPLETIONS, (), [PLAIN_USAGE[:1]], id='no dimension'),
        pytest.param(COSTS_ENDPOINT, ('project_id', 'line_item'), [PLAIN_COSTS[:7], PLAIN_COSTS[7:]], id='costs'),
        pytest.param(COSTS_ENDPOINT, ('line_item',), [PLAIN_COSTS], id='costs by line item'),
        pytest.param(
            COSTS_ENDPOINT,
            ('project_id', 'line_item'),
            [[cost_row(i, quantity=None, quantity_unit=None) if i % 2 else cost_row(i) for i in range(6)]],
            id='costs, some rows without a unit',
        ),
    ],
)
def test_a_plain_part_is_read_whole_and_adds_up_as_row_by_row(endpoint, group_by, parts):
    src = source(endpoint, group_by)
    assert all(src.read_part(part) is not None for part in parts)
    fast, careful = read_both(src, parts)
    assert fast == careful
    assert len(fast[0]) == sum(map(len, parts))


@pytest.mark.parametrize(
    'endpoint, part',
    [
        pytest.param(COMPLETIONS, PLAIN_USAGE[:3] + ['not a row'] + PLAIN_USAGE[3:], id='a row that is not an object'),
        pytest.param(COMPLETIONS, PLAIN_USAGE[:3] + [None], id='a null row'),
        pytest.param(COMPLETIONS, [usage_row(0), usage_row(1, input_tokens='12')], id='a figure as a string'),
        pytest.param(COMPLETIONS, [usage_row(0), usage_row(1, output_tokens=True)], id='a figure as a boolean'),
        pytest.param(COMPLETIONS, [usage_row(0), usage_row(0, output_tokens=5)], id='two rows of one series'),
        pytest.param(COMPLETIONS, [usage_row(0), usage_row(1, model=7)], id='a dimension as a number'),
        pytest.param(
            COMPLETIONS, [usage_row(1, batch=True), usage_row(1, batch='true')], id='a flag as a boolean and as text'
        ),
        pytest.param(COMPLETIONS, [usage_row(1, batch=True), usage_row(1, batch=1)], id='a flag as true and as 1'),
        pytest.param(COMPLETIONS, [usage_row(4, user_id=None), usage_row(4, user_id='')], id='a null and an empty id'),
        pytest.param(
            COSTS_ENDPOINT, [cost_row(1), cost_row(2, amount={'value': '0.5', 'currency': 'usd'})], id='a string amount'
        ),
        pytest.param(COSTS_ENDPOINT, [cost_row(1), cost_row(2, amount=None)], id='no amount object'),
        pytest.param(COSTS_ENDPOINT, [cost_row(1), cost_row(1, quantity=3)], id='two cost rows of one series'),
    ],
)
def test_a_part_the_careful_readers_must_read_is_left_to_them(endpoint, part):
    group_by = ('project_id', 'line_item') if endpoint is COSTS_ENDPOINT else USAGE_GROUP_BY
    src = source(endpoint, group_by)
    assert src.read_part(part) is None
    fast, careful = read_both(src, [part])
    assert fast == careful


@pytest.mark.parametrize(
    'endpoint, part',
    [
        pytest.param(COMPLETIONS, [usage_row(0), {'model': 'gpt-4o', 'input_tokens': 3}], id='entries absent'),
        pytest.param(COSTS_ENDPOINT, [cost_row(1), cost_row(2, amount={'value': 1.5})], id='no currency'),
        pytest.param(COSTS_ENDPOINT, [cost_row(1), {'amount': {'value': 2, 'currency': 'usd'}}], id='only an amount'),
    ],
)
def test_a_row_without_an_entry_is_read_the_careful_way_within_its_part(endpoint, part):
    group_by = ('project_id', 'line_item') if endpoint is COSTS_ENDPOINT else USAGE_GROUP_BY
    src = source(endpoint, group_by)
    assert src.read_part(part) is not None
    fast, careful = read_both(src, [part])
    assert fast == careful
    assert len(fast[0]) == len(part)


def test_a_series_in_two_parts_is_added_up_as_row_by_row():
    src = source(COMPLETIONS, USAGE_GROUP_BY)
    parts = [PLAIN_USAGE[:4], [usage_row(2, input_tokens=1000)] + PLAIN_USAGE[4:6]]
    fast, careful = read_both(src, parts)
    assert fast == careful
    ((key, values),) = [(k, v) for k, v in fast[0] if k[0] == 'proj_2' and k[1] == 'user_2']
    assert values[0] == (int, 102 + 1000)


def test_layouts_the_part_reader_does_not_know_are_read_row_by_row():
    # Code interpreter sessions were named `sessions` in older responses (an alias), vector stores are levels.
    assert source(ENDPOINTS_BY_NAME['code_interpreter_sessions'], ('project_id',)).read_part is None
    assert source(ENDPOINTS_BY_NAME['vector_stores'], ('project_id',)).read_part is None
