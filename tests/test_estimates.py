"""Estimated spend: priced from the bill, exactly once like the usage, reconciled with the bill; billed quantities."""

from collections import defaultdict

import pytest
from datadog_checks.base.stubs import datadog_agent

from datadog_checks.openai.ledger import Ledger
from datadog_checks.openai.sources.estimates import price_key_of
from tests.conftest import normalized
from tests.simulator.billing import CHAT_LINES, SIMPLE_LINES, TOOL_LINES

H = 3600
D = 86400


@pytest.fixture
def make_check(make_check):
    """The estimate is opt-in (estimate_spend): these tests turn it on unless they say otherwise."""

    def make(**overrides):
        return make_check(**{'estimate_spend': True, **overrides})

    return make


def run_for(check, clock, dd_run_check, hours, step=H):
    for _ in range(int(hours * H // step)):
        dd_run_check(check)
        clock.advance(step)
    dd_run_check(check)


def by_tags(aggregator, metric, *dims):
    out = defaultdict(float)
    for m in aggregator.metrics(metric):
        tags = dict(t.split(':', 1) for t in m.tags)
        out[tuple(tags.get(d, '') for d in dims)] += m.value
    return out


# -- the rules, with OpenAI's own line item texts ----------------------------------------------------------------


@pytest.mark.parametrize(
    'line_item, key',
    [
        ('gpt-4o-2024-08-06, input', ('', 'gpt-4o-2024-08-06', 'input')),
        ('gpt-4o-mini-2024-07-18, cached input', ('', 'gpt-4o-mini-2024-07-18', 'cached_input')),
        ('gpt-4.1-2025-04-14, output', ('', 'gpt-4.1-2025-04-14', 'output')),
        ('ft-gpt-4o-2024-08-06, input', ('', 'ft-gpt-4o-2024-08-06', 'input')),
        ('gpt-audio-mini-2025-12-15 audio, input', ('', 'gpt-audio-mini-2025-12-15', 'audio_input')),
        ('priority | gpt-5-2025-08-07, output', ('priority', 'gpt-5-2025-08-07', 'output')),
        ('batch | gpt-4o-mini-2024-07-18, input', ('batch', 'gpt-4o-mini-2024-07-18', 'input')),
        ('whisper-1, audio', ('', 'whisper-1', 'seconds')),
        ('tts-1, characters', ('', 'tts-1', 'characters')),
        ('web search tool calls', ('', '', 'web_search_calls')),
        # Never guessed: a qualifier usage cannot tell, image tokens billed apart, storage, the extract's example.
        ('priority | gpt-5.6-sol, output, long context', None),
        ('gpt-5-2025-08-07 image, output', None),
        ('gpt-image-2.5-flare image, output', None),
        ('Vector storage', None),
        ('input_tokens', None),
    ],
)
def test_line_items_map_to_what_they_bill_or_to_nothing(line_item, key):
    assert price_key_of(line_item) == key


def test_every_line_item_the_simulator_bills_is_mapped_but_image_output():
    suffixes = [s for s, _ in CHAT_LINES]
    assert ' image, output' in suffixes
    texts = [f'gpt-4o-2024-08-06{s}' for s in suffixes] + [f'batch | o3-2025-04-16{s}' for s in suffixes]
    texts += [t.format('dall-e-3') for t, *_ in SIMPLE_LINES.values()] + [t for t, *_ in TOOL_LINES.values()]
    unmapped = [t for t in texts if price_key_of(t) is None]
    assert unmapped == ['gpt-4o-2024-08-06 image, output', 'batch | o3-2025-04-16 image, output']


# -- the billed quantity -----------------------------------------------------------------------------------------


def test_billed_quantity_is_submitted_exactly_once_tagged_with_its_unit(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    check = make_check(usage_endpoints=['completions', 'audio_transcriptions'], estimate_spend=False)
    run_for(check, clock, dd_run_check, hours=60, step=2 * H)
    now = clock.now()
    got = by_tags(aggregator, 'openai.api.costs.quantity', 'project_id', 'line_item', 'quantity_unit')
    want = defaultdict(float)
    start = org.traffic_start
    for (project, item, _), values in org.observed_totals(
        'costs', ('project_id', 'line_item'), start, now + D, now
    ).items():
        unit = org.line_items_by_name[item].unit
        want[(normalized('project_id', project), item_tag(item), unit)] += values['quantity']
    assert want and got == want
    assert {'tokens', 'duration_seconds'} <= {unit for *_, unit in got}


def item_tag(item: str) -> str:
    return normalized('line_item', item)


def test_a_costs_state_saved_before_quantities_keeps_its_amounts(
    org, clock, sim, make_check, dd_run_check, aggregator, state
):
    from tests.test_exactly_once import assert_exact

    options = dict(usage_endpoints=[], estimate_spend=False)
    first = make_check(**options)
    run_for(first, clock, dd_run_check, hours=30, step=3 * H)
    # The state as the version without quantities saved it: one field per row, the shape without it.
    [key] = [k for k in state if k.endswith('ledger_costs')]
    ledger = Ledger.loads(state[key])
    assert ledger.shape.endswith('|amount,quantity')
    legacy = {s: {k: v[:1] for k, v in cells.items()} for s, cells in ledger.buckets.items()}
    ledger = Ledger(ledger.shape.replace('|amount,quantity', '|amount'), ledger.horizon, ledger.read_at, legacy)
    state[key] = ledger.dumps()[0]
    submitted_before = len(aggregator.metrics('openai.api.costs.quantity'))
    upgraded = make_check(**options)
    run_for(upgraded, clock, dd_run_check, hours=30, step=3 * H)
    now = clock.now()
    # Amounts: exactly once across the upgrade (no new baseline: the day before it is not lost).
    assert_exact(org, now, endpoints=('costs',))
    # Quantities: every bucket still in the window at the upgrade (here the whole month) submitted once after it.
    after = defaultdict(float)
    for m in aggregator.metrics('openai.api.costs.quantity')[submitted_before:]:
        after[dict(t.split(':', 1) for t in m.tags)['line_item']] += m.value
    want = defaultdict(float)
    for (item, _), values in org.observed_totals('costs', ('line_item',), org.traffic_start, now + D, now).items():
        want[item_tag(item)] += values['quantity']
    assert want and after == want


# -- the estimate ------------------------------------------------------------------------------------------------


def test_a_settled_day_is_estimated_within_one_percent_per_project(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    check = make_check(costs_revision_window_days=2)
    # Day 0 to the middle of day 4: day 1 ended more than two days ago, and its bill was read while it settled.
    run_for(check, clock, dd_run_check, hours=4 * 24 + 12, step=2 * H)
    now = clock.now()
    day = int(now // D * D) - 3 * D
    billed = org.final_totals('costs', ('project_id',), day, day + D)
    last = {}
    for m in aggregator.metrics('openai.api.costs.estimate_ratio'):
        tags = dict(t.split(':', 1) for t in m.tags)
        last[tags['project_id']] = m.value
    assert set(last) == {normalized('project_id', p) for (p, _), v in billed.items() if v['amount'] > 0}
    for project, ratio in last.items():
        assert abs(ratio - 1) < 0.01, (project, ratio)
    # The bill's image output lines match no rule: counted, and never priced under their own name.
    items = org.observed_totals('costs', ('line_item',), org.traffic_start, now + D, now)
    images = {item for item, _ in items if item.endswith(' image, output')}
    assert images
    assert aggregator.metrics('openai.api.costs.unpriced_line_items')[-1].value == len(images)
    # Estimates never share a name with the bill, and carry the usage series' tags plus the currency.
    for m in aggregator.metrics('openai.api.usage.estimated_cost'):
        tags = dict(t.split(':', 1) for t in m.tags)
        assert tags['currency'] == 'usd' and 'line_item' not in tags
    assert aggregator.metrics('openai.api.usage.cached_savings')


def uniform_prices(model, dollars_per_million):
    return {model: {kind: dollars_per_million for kind in ('input', 'cached_input', 'output')}}


def test_configured_prices_win_over_learned_ones(org, clock, sim, make_check, dd_run_check, aggregator):
    model = 'gpt-4o-2024-08-06'
    check = make_check(usage_endpoints=['completions'], prices=uniform_prices(model, 1000))
    run_for(check, clock, dd_run_check, hours=20, step=H)
    dims = ('project_id', 'model', 'batch', 'service_tier')
    estimated = by_tags(aggregator, 'openai.api.usage.estimated_cost', *dims)
    tokens = by_tags(aggregator, 'openai.api.usage.completions.input_tokens', *dims)
    for key, value in by_tags(aggregator, 'openai.api.usage.completions.output_tokens', *dims).items():
        tokens[key] += value
    standard = [k for k in tokens if k[1] == model and k[2] == 'false' and k[3] == 'default']
    assert standard
    for key in standard:
        # The gpt-4o text model has no audio: every input and output token at the configured $1000 per million.
        assert estimated[key] == pytest.approx(tokens[key] * 1000 / 1e6, rel=1e-9)
    # Other models keep the bill's prices: gpt-4o-mini's output is $0.60 per million there.
    others = [k for k in estimated if k[1] != model]
    assert others and all(estimated[k] < tokens_of(aggregator, k, dims) * 1000 / 1e6 / 10 for k in others)


def tokens_of(aggregator, key, dims):
    total = 0.0
    for metric in ('input_tokens', 'output_tokens'):
        total += by_tags(aggregator, f'openai.api.usage.completions.{metric}', *dims).get(key, 0)
    return total


def test_estimates_are_exactly_once_across_restarts_and_failed_saves(
    org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch
):
    model = 'gpt-4o-mini-2024-07-18'
    options = dict(usage_endpoints=['completions', 'embeddings'], prices=uniform_prices(model, 1000))
    check = make_check(**options)
    write = datadog_agent.write_persistent_cache

    def disk_full_for_completions(key, value):
        if key.endswith('ledger_completions'):
            raise OSError(28, 'No space left on device')
        return write(key, value)

    for i in range(40):
        if i % 9 == 8:
            check = make_check(**options)  # a restart: the same saved state, a new instance
        if i % 7 == 3:
            # Completions' increases of that run are not submitted: the estimate must not price them either.
            monkeypatch.setattr(datadog_agent, 'write_persistent_cache', disk_full_for_completions)
        dd_run_check(check)
        monkeypatch.setattr(datadog_agent, 'write_persistent_cache', write)
        clock.advance(H)
    dims = ('project_id', 'model', 'batch', 'service_tier')
    estimated = by_tags(aggregator, 'openai.api.usage.estimated_cost', *dims)
    keys = [k for k in estimated if k[1] == model and k[2] == 'false' and k[3] == 'default']
    assert keys
    for key in keys:
        assert estimated[key] == pytest.approx(tokens_of(aggregator, key, dims) * 1000 / 1e6, rel=1e-9)
    from tests.test_exactly_once import assert_exact

    assert_exact(org, clock.now() - H, endpoints=('completions',))


def test_a_price_change_mid_month_is_picked_up(org, clock, sim, make_check, dd_run_check, aggregator, state):
    item = 'gpt-4o-2024-08-06, output'
    costs = org.traffic['costs']
    change_day = org.traffic_start + 2 * D
    costs.price_changes[item] = (change_day, 5000)  # from $10 to $5 per million
    check = make_check(usage_endpoints=['completions'])
    run_for(check, clock, dd_run_check, hours=36, step=2 * H)
    import json

    [key] = [k for k in state if k.endswith('estimates')]

    def learned():
        rows = json.loads(state[key])['prices']
        return {tuple(r[:3]): r[3] for r in rows}

    assert learned()[('', 'gpt-4o-2024-08-06', 'output')] == pytest.approx(10 / 1e6)
    run_for(check, clock, dd_run_check, hours=24, step=2 * H)
    # Today's lines at the new price are the most recent: the estimate prices with them hours into the day.
    assert learned()[('', 'gpt-4o-2024-08-06', 'output')] == pytest.approx(5 / 1e6)


def test_usage_without_a_price_is_counted_not_estimated(org, clock, sim, make_check, dd_run_check, aggregator):
    from datadog_checks.base.stubs import aggregator as stub
    from datadog_checks.dev.utils import get_metadata_metrics

    model = 'gpt-4o-2024-08-06'
    check = make_check(usage_endpoints=['completions'], collect_costs=False, prices=uniform_prices(model, 1000))
    run_for(check, clock, dd_run_check, hours=10, step=H)
    stub.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)
    unpriced = by_tags(aggregator, 'openai.api.usage.unpriced_tokens', 'model', 'kind')
    priced = {k[1] for k in by_tags(aggregator, 'openai.api.usage.estimated_cost', 'project_id', 'model')}
    assert priced == {model}
    # Its batch and priority series have no configured price either (tiers are priced apart): counted too.
    assert unpriced
    # Every other model's output is counted as unpriced, to the token.
    output = by_tags(aggregator, 'openai.api.usage.completions.output_tokens', 'model')
    audio = by_tags(aggregator, 'openai.api.usage.completions.output_audio_tokens', 'model')
    for (m,), tokens in output.items():
        if m != model:
            assert unpriced[(m, 'output')] == tokens - audio.get((m,), 0)


def test_batch_and_flex_save_what_the_bill_prices_apart(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(usage_endpoints=['completions'])
    run_for(check, clock, dd_run_check, hours=30, step=2 * H)
    dims = ('project_id', 'model', 'batch', 'service_tier')
    estimated = by_tags(aggregator, 'openai.api.usage.estimated_cost', *dims)
    saved = by_tags(aggregator, 'openai.api.usage.tier_savings', *dims)
    assert {k[2] for k in saved} >= {'true'} and {k[3] for k in saved} >= {'flex'}
    # The simulator bills batch and flex at half the standard price: what they saved is what they cost.
    for key, value in saved.items():
        assert key[2] == 'true' or key[3] == 'flex', key
        assert value == pytest.approx(estimated[key], rel=1e-6), key
    cached = by_tags(aggregator, 'openai.api.usage.cached_savings', *dims)
    assert cached and all(v > 0 for v in cached.values())


def test_an_unreadable_estimate_state_is_said_and_replaced(org, clock, sim, make_check, dd_run_check, state):
    check = make_check(usage_endpoints=['completions'])
    run_for(check, clock, dd_run_check, hours=2)
    [key] = [k for k in state if k.endswith('estimates')]
    state[key] = '{"v": 1, "since": "yesterday"}'
    again = make_check(usage_endpoints=['completions'])
    dd_run_check(again)
    assert any(w.startswith('estimates: the saved state is unreadable (bad start time)') for w in again.warnings)
    assert '"since":"yesterday"' not in state[key] and '"prices":[[' in state[key]


def test_costs_without_line_items_say_the_estimate_cannot_learn(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(usage_endpoints=['completions'], group_by={'costs': ['project_id']})
    run_for(check, clock, dd_run_check, hours=3)
    said = [w for w in check.warnings if 'group_by.costs has no line_item' in w]
    assert len(said) == 1
    assert not aggregator.metrics('openai.api.usage.estimated_cost')
    assert aggregator.metrics('openai.api.usage.unpriced_tokens')


def test_learned_prices_survive_a_restart_while_costs_cannot_be_read(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    options = dict(usage_endpoints=['completions'])
    run_for(make_check(**options), clock, dd_run_check, hours=6)
    aggregator.reset()
    sim.faults.add('costs', 403, count=None)
    restarted = make_check(**options)
    run_for(restarted, clock, dd_run_check, hours=3)
    assert any(w.startswith('costs:') for w in restarted.warnings)
    assert aggregator.metrics('openai.api.usage.estimated_cost')
    # Without a complete reading of the bill, nothing is said of its line items.
    assert not aggregator.metrics('openai.api.costs.unpriced_line_items')
