"""The check's points reach the aggregator exactly as AgentCheck.count and gauge would send them (submit.py)."""

from __future__ import annotations

import pytest
from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator as stub

from datadog_checks.openai.submit import COUNT, GAUGE, Sender
from datadog_checks.openai.tags import LookedUp, TagBuilder

TAGS = ['account:prod', 'host:build-7', 'project_id:proj_1', 'model:gpt-4o', 'service:checkout', 'batch:false']


class Plain(AgentCheck):
    def check(self, _):
        pass


class Namespaced(Plain):
    __NAMESPACE__ = 'ns'


@pytest.fixture
def calls(monkeypatch):
    """Every call the aggregator receives, argument for argument (the check itself left out: it is the same)."""
    received = []

    def record(check, check_id, mtype, name, value, tags, hostname, flush_first_value):
        received.append((check_id, mtype, name, value, type(value), list(tags), hostname, flush_first_value))

    monkeypatch.setattr(stub, 'submit_metric', record)
    return received


def both_ways(make, calls, points):
    """What count/gauge of one check send for `points`, and what a Sender sends for them from another check made
    the same way (state such as a metric limiter's is each check's own)."""
    check = make()
    through_check = {COUNT: check.count, GAUGE: check.gauge}
    for mtype, name, value, tags in points:
        through_check[mtype](name, value, tags=tags)
    expected = list(calls)
    calls.clear()
    sender = Sender(make())
    contexts = {}
    for mtype, name, value, tags in points:
        normalized = sender.normalize(list(tags))
        sender.submit(mtype, [(name, value, ('dim',), ('key',))], lambda dims, t=normalized: lambda key: t, contexts)
    return expected, list(calls), sender


POINTS = [
    (COUNT, 'openai.api.usage.completions.input_tokens', 12, TAGS),
    (COUNT, 'openai.api.usage.completions.output_tokens', 3.5, TAGS[:3]),
    (GAUGE, 'openai.api.costs.month_to_date', 41.25, ['account:prod', 'currency:usd']),
    (COUNT, 'openai.api.usage.completions.input_tokens', 7, []),
]


@pytest.mark.parametrize(
    'cls, instance, points, mark',
    [
        (Plain, {}, 4, 'host:build-7'),
        (Plain, {'disable_generic_tags': True}, 4, 'openai_host:build-7'),
        (Namespaced, {}, 4, 'ns.openai.api.costs.month_to_date'),
        (Plain, {'metric_patterns': {'exclude': ['output_tokens$'], 'include': ['^openai\\.']}}, 3, 'input_tokens'),
        (Plain, {'metric_patterns': {'include': ['costs']}}, 1, 'month_to_date'),
    ],
    ids=['plain', 'generic-tags-renamed', 'namespace', 'exclude-pattern', 'include-pattern'],
)
def test_the_aggregator_receives_what_count_and_gauge_would_send(calls, cls, instance, points, mark):
    expected, sent, sender = both_ways(lambda: cls('openai', {}, [instance]), calls, POINTS)
    assert sender.direct
    assert sent == expected
    # The cases differ where they should: points left out, a tag renamed, a name prefixed; every value a float.
    assert len(sent) == points and mark in repr(sent)
    assert {call[4] for call in sent} == {float}


def test_a_metric_limiter_sends_every_point_through_count_and_gauge(calls):
    through = []

    def make():
        check = Plain('openai', {}, [{'max_returned_metrics': 2}])
        count = check.count
        check.count = lambda *a, **k: through.append(a[0]) or count(*a, **k)
        return check

    expected, sent, sender = both_ways(make, calls, POINTS)
    assert sender.check.metric_limiter is not None and not sender.direct
    assert sent == expected
    assert len(sent) == 2  # the limiter stopped the rest, as it would have
    assert through.count('openai.api.usage.completions.input_tokens') == 4  # twice each way: both went through count


def test_tags_are_normalized_once_per_value_and_shared_by_the_series_whose_tags_are_the_same(calls):
    check = Plain('openai', {}, [{'disable_generic_tags': True}])
    sender = Sender(check)
    normalized = []

    def normalize(tags):
        normalized.append(tuple(tags))
        return sender.normalize(tags)

    class Names:
        enabled = {}

    builder = TagBuilder(['account:prod', 'host:a'], Names(), normalize)
    tags_of = builder.of(('project_id', 'model', 'host'))
    a, b = tags_of(('proj_1', 'gpt-4o', 'x')), tags_of(('proj_2', 'gpt-4o', 'x'))
    again = tags_of(('proj_1', 'gpt-4o', 'x'))
    # A model written otherwise that Datadog would store the same: one tag list, one context.
    same = tags_of(('proj_1', 'GPT-4o', 'x'))
    assert a is again and a is same and a is not b
    assert builder.of(('project_id', 'model', 'host')) is tags_of  # one reader per dims and run
    # The account's tags once, then each value once: proj_1, gpt-4o, x, proj_2, GPT-4o.
    assert len(normalized) == 6
    assert a == ['account:prod', 'openai_host:a', 'project_id:proj_1', 'model:gpt-4o', 'openai_host:x']
    point = ('openai.api.usage.completions.input_tokens', 1, ('project_id', 'model', 'host'), ('proj_1', 'gpt-4o', 'x'))
    sender.submit(COUNT, [point], builder.of, {})
    raw = ['account:prod', 'host:a', 'project_id:proj_1', 'model:gpt-4o', 'host:x']
    check.count('openai.api.usage.completions.input_tokens', 1, tags=raw)
    assert calls[0] == calls[1]


def test_a_looked_up_dimension_gives_the_tags_and_lists_of_the_key_with_its_value_appended():
    class Names:
        enabled = {}

    dims = ('project_id', 'line_item', 'currency')
    units = {('p1', 'gpt-4o, input', 'usd'): 'tokens', ('p1', 'GPT-4o, input', 'usd'): 'TOKENS'}
    keys = [*units, ('p3', 'web search', 'usd')]  # p3 has no unit noted: no tag for it
    looked_up, appended = TagBuilder(['account:prod'], Names()), TagBuilder(['account:prod'], Names())
    tags_of = looked_up.of(LookedUp(dims, 'quantity_unit', units.get))
    plain_of = looked_up.of(dims)
    expected_of = appended.of(dims + ('quantity_unit',))
    got = [tags_of(key) for key in keys]
    assert got == [expected_of(key + (units.get(key, ''),)) for key in keys]
    assert got[0] == ['account:prod', 'project_id:p1', 'line_item:gpt-4o_input', 'currency:usd', 'quantity_unit:tokens']
    # Series whose tags come out the same share one list (one context), as the appended keys' do.
    assert got[1] is got[0] and tags_of(keys[1]) is got[0]
    assert expected_of(keys[1] + ('TOKENS',)) is expected_of(keys[0] + ('tokens',))
    # Without a unit, the series' tags are those of its amount, the same list.
    assert got[2] is plain_of(keys[2])


def test_a_series_tags_are_looked_up_once_and_its_contexts_counted_per_metric_and_tag_list(calls):
    sender = Sender(Plain('openai', {}, [{}]))
    looked_up = []
    lists = {('p1',): ['project_id:p1'], ('p2',): ['project_id:p2'], ('P1',): None}
    lists[('P1',)] = lists[('p1',)]  # written otherwise, the same tags: the same list

    def tags_of(dims):
        def read(key):
            looked_up.append((dims, key))
            return lists[key]

        return read

    a, b, c = ('project_id',), ('project_id', 'quantity_unit'), ('p1',)
    input_tokens, output_tokens, quantity = 'openai.api.in', 'openai.api.out', 'openai.api.quantity'
    points = [
        (input_tokens, 1, a, c),
        (output_tokens, 2, a, c),  # the same series: its tags are not looked up again
        (input_tokens, 3, a, ('p2',)),
        (input_tokens, 4, a, ('P1',)),  # another series with the same tags: no new context
        (quantity, 5, b, ('p2',)),  # dims alternate, as costs' do
        (input_tokens, 6, a, ('p2',)),
    ]
    contexts = {}
    sender.submit(COUNT, points, tags_of, contexts)
    assert [(name, value, tags) for _, _, name, value, _, tags, _, _ in calls] == [
        (name, float(value), lists[key]) for name, value, _, key in points
    ]
    assert looked_up == [(a, c), (a, ('p2',)), (a, ('P1',)), (b, ('p2',)), (a, ('p2',))]
    assert {name: len(ids) for name, ids in contexts.items()} == {input_tokens: 2, output_tokens: 1, quantity: 1}


def test_a_metric_left_out_by_the_include_exclude_patterns_is_not_counted_as_a_context(calls):
    sender = Sender(Plain('openai', {}, [{'metric_patterns': {'exclude': ['output_tokens$']}}]))
    kept, left_out = 'openai.api.usage.completions.input_tokens', 'openai.api.usage.completions.output_tokens'
    points = [(kept, 1, ('project_id',), ('p1',)), (left_out, 2, ('project_id',), ('p1',))]
    contexts = {}
    sender.submit(COUNT, points, lambda dims: lambda key: ['project_id:p1'], contexts)
    assert [call[2] for call in calls] == [kept]
    assert sum(map(len, contexts.values())) == 1  # openai.check.contexts: what was sent
