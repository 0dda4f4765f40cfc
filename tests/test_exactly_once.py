"""The proof: what the check submits over many runs sums to what OpenAI reports, series by series.

Every scenario runs the real check against the API simulator (HTTP on localhost) on a simulated
clock, with OpenAI's late revisions, and compares the sum of every count the check submitted with
the simulator's own figures for every series of every endpoint. Metric names, types, tags and
group-bys are the tests' own (tests/conftest.py), not the check's catalogue.
"""

import calendar
import csv
import json
import time
from pathlib import Path

import pytest
from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import datadog_agent

from tests.simulator import Organization

from .conftest import (
    DEFAULT_GROUP_BY,
    FLOW_METRICS,
    LEVEL_METRICS,
    assert_same_totals,
    reported_totals,
    submitted_levels,
    submitted_totals,
)

H = 3600
D = 86400
USAGE = (
    'completions',
    'embeddings',
    'moderations',
    'images',
    'audio_speeches',
    'audio_transcriptions',
    'vector_stores',
    'code_interpreter_sessions',
    'file_search_calls',
    'web_search_calls',
)
ALL = USAGE + ('costs',)


def floor_to(t, seconds):
    return int(t // seconds * seconds)


def month_start(t):
    tm = time.gmtime(t)
    return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))


def expected_for(org, name, t, group_by, start=None):
    return reported_totals(org, name, group_by, start or org.traffic_start, int(t) + D, t)


def assert_exact(org, t, endpoints=ALL, group_by=None):
    """Every flow's sum over all runs is OpenAI's figure at t (the last run's time), and every level's last
    value is OpenAI's level at t."""
    for name in endpoints:
        dims = (group_by or {}).get(name, DEFAULT_GROUP_BY[name])
        expected = expected_for(org, name, t, dims)
        if name in LEVEL_METRICS:
            assert_same_totals(submitted_levels(name, dims), expected, name)
        if name in FLOW_METRICS:
            assert_same_totals(submitted_totals(name, dims), expected, name)


def test_the_expected_metrics_are_the_published_ones():
    # The tests' own names and types are metadata.csv's (which tests/test_assets.py checks against the catalogue):
    # every usage and cost figure, a count for each flow and a gauge for each level.
    with open(Path(__file__).resolve().parent.parent / 'metadata.csv', newline='') as f:
        published = {r['metric_name']: r['metric_type'] for r in csv.DictReader(f)}
    ours = {m: 'count' for metrics in FLOW_METRICS.values() for m in metrics}
    ours.update({m: 'gauge' for metrics in LEVEL_METRICS.values() for m in metrics})
    # The billed quantity carries a tag beyond the costs series' (quantity_unit): tests/test_estimates.py proves it.
    ours['openai.api.costs.quantity'] = 'count'
    derived = {
        'openai.api.costs.month_to_date',
        'openai.api.costs.project_month_to_date',
        'openai.api.usage.estimated_cost',
        'openai.api.usage.unpriced_tokens',
        'openai.api.usage.cached_savings',
        'openai.api.usage.tier_savings',
        'openai.api.costs.estimate_ratio',
        'openai.api.costs.unpriced_line_items',
    }
    # The headroom's gauges (limits, utilizations, projections) are tests/test_headroom.py's.
    derived |= {'openai.api.costs.projected_month_end', 'openai.api.costs.project_projected_month_end'}
    headroom = ('openai.api.rate_limits.', 'openai.api.spend_limit.')
    figures = {
        m: t
        for m, t in published.items()
        if m.startswith('openai.api.') and m not in derived and not m.startswith(headroom)
    }
    assert figures == ours
    assert set(FLOW_METRICS) | set(LEVEL_METRICS) == set(ALL) == set(DEFAULT_GROUP_BY)


def test_every_series_sums_to_openai_figures_over_a_day_of_runs(org, clock, sim, make_check, dd_run_check):
    check = make_check()
    for _ in range(12 * 26):  # every 5 minutes for 26 hours: buckets grow, close, and keep growing
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    assert_exact(org, clock.now())
    assert not sim.validation_errors


def test_costs_revised_for_days_sum_to_the_invoice_figures(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(usage_endpoints=['completions'])
    runs = 2 * 24 * 4  # every 30 minutes for four days: each day's cost changes for 36 h
    for i in range(runs):
        # OpenAI sometimes sends amount.value as a string; on the last day, always, so that the final figures
        # come from strings: a string the check could not read would leave them short.
        sim.costs_amount_as_string = i % 3 == 0 or i >= runs - 48
        dd_run_check(check)
        clock.advance(1800)
    assert any(r.endpoint == 'costs' for r in sim.requests)
    assert sim.costs_amount_as_string
    dd_run_check(check)
    assert_exact(org, clock.now(), endpoints=('costs', 'completions'))
    # Month to date is OpenAI's own month figure.
    now = clock.now()
    month = reported_totals(org, 'costs', (), org.traffic_start, int(now) + 86400, now)
    [(_, fields)] = month.items()
    last = aggregator.metrics('openai.api.costs.month_to_date')[-1]
    assert last.value == pytest.approx(fields['amount'])
    assert 'currency:usd' in last.tags


def test_restarts_rate_limit_storms_errors_and_outages_neither_lose_nor_duplicate(
    org, clock, sim, make_check, dd_run_check, aggregator
):
    check = make_check()
    for i in range(12 * 20):
        if i % 17 == 0:
            check = make_check()  # an Agent restart: the state comes back from the persistent cache
        if i % 11 == 3:
            sim.faults.add('completions', 429, count=3, retry_after=20)
        if i % 13 == 5:
            sim.faults.add('usage', 503, count=2)
        if i % 19 == 7:
            sim.faults.add('embeddings', 'truncated', declared_length='sent')
            sim.faults.add('images', 'non_json')
        if i % 23 == 9:
            # A rate-limit storm: Retry-After longer than the run's budget; the run gives up cleanly.
            sim.faults.add('completions', 429, count=None, retry_after=600)
        if i % 23 == 10:
            sim.faults.clear()
        if 100 <= i < 136:
            # Three hours when OpenAI cannot be reached at all.
            sim.faults.add('organization', 'disconnect', count=None)
        if i == 136:
            sim.faults.clear()
        try:
            dd_run_check(check, extract_message=True)
            failed = False
        except Exception as e:
            assert 'No endpoint could be read' in str(e)
            failed = True
        # Only the runs that read nothing at all fail; a partly read run is a warning.
        assert failed == (100 <= i < 136), i
        clock.advance(300)
    # The scenario did hit every fault it meant to.
    faults = {r.fault for r in sim.requests if r.fault}
    assert {'status', 'truncated', 'non_json', 'disconnect'} <= faults, faults
    assert {429, 503} <= {r.status for r in sim.requests}
    statuses = {sc.status for sc in aggregator.service_checks('openai.can_connect')}
    assert {AgentCheck.OK, AgentCheck.WARNING, AgentCheck.CRITICAL} <= statuses
    sim.faults.clear()
    for _ in range(12):
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    assert_exact(org, clock.now())


def test_lost_state_records_a_new_baseline_and_never_duplicates(org, clock, sim, make_check, dd_run_check, state):
    check = make_check()
    for _ in range(12 * 10):
        dd_run_check(check)
        clock.advance(300)
    t_prev = clock.now() - 300
    # The cluster check moves to a runner without the state: only what grows after the new baseline
    # may be submitted, and nothing submitted before may be submitted again.
    state.clear()
    check = make_check()
    t1 = clock.now()
    dd_run_check(check)
    for _ in range(12 * 4):
        clock.advance(300)
        dd_run_check(check)
    t_final = clock.now()
    for name in FLOW_METRICS:
        width = D if name == 'costs' else H
        group_by = DEFAULT_GROUP_BY[name]
        if name == 'costs':
            w1 = min(month_start(t1), floor_to(t1 - 3 * D, width))
        else:
            w1 = floor_to(t1 - 6 * H, width)
        far = int(t_final) + 86400
        before = reported_totals(org, name, group_by, org.traffic_start, far, t_prev)
        after = reported_totals(org, name, group_by, w1, far, t_final)
        at_baseline = reported_totals(org, name, group_by, w1, far, t1)
        expected = before
        for source, sign in ((after, 1), (at_baseline, -1)):
            for key, fields in source.items():
                for f, v in fields.items():
                    expected[key][f] += sign * v
        # Buckets before the new baseline's window had settled before the state was lost.
        assert_same_totals(submitted_totals(name, group_by), expected, name)


def test_an_outage_longer_than_the_catch_up_bound_warns_and_skips_the_gap(org, clock, sim, make_check, dd_run_check):
    check = make_check(max_catch_up_hours=12, usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(check)
    clock.advance(30 * H)
    dd_run_check(check)
    assert any('was not collected' in w and 'max_catch_up_hours' in w for w in check.warnings)
    # What was submitted is exactly the catch-up window's usage: nothing before it, nothing twice.
    now = clock.now()
    start = floor_to(now - 12 * H, H)
    group_by = DEFAULT_GROUP_BY['completions']
    expected = reported_totals(org, 'completions', group_by, start, int(now) + H, now)
    assert_same_totals(submitted_totals('completions', group_by), expected, 'completions')


def test_a_steady_run_makes_the_fewest_requests_the_api_allows(org, clock, sim, make_check, dd_run_check):
    check = make_check()
    dd_run_check(check)
    clock.advance(300)
    sim.clear_log()
    dd_run_check(check)
    usage = [
        r
        for r in sim.requests
        if ('/usage/' in r.path or r.path.endswith('/costs')) and r.param('bucket_width') != '1m'
    ]
    # One request per endpoint: the 6 h window of hourly buckets fits one page of the largest limit. (The headroom's
    # per-minute reads are tests/test_headroom.py's.)
    assert sorted(r.endpoint for r in usage) == sorted(ALL)
    for r in usage:
        width = r.param('bucket_width')
        assert (width, int(r.param('limit'))) == (('1d', 180) if r.endpoint == 'costs' else ('1h', 168))
        assert int(r.param('start_time')) % (D if width == '1d' else H) == 0
    assert not sim.validation_errors


def test_costs_group_by_api_key_is_degraded_once_with_a_warning(org, clock, sim, make_check, dd_run_check, aggregator):
    check = make_check(group_by={'costs': ['project_id', 'api_key_id']}, usage_endpoints=[])
    dd_run_check(check)
    assert any('refused group_by api_key_id for costs' in w for w in check.warnings)
    clock.advance(300)
    sim.clear_log()
    dd_run_check(check)
    [request] = sim.requests_to('costs')
    assert request.query.get('group_by') == ['project_id']
    aggregator.assert_service_check('openai.can_connect', AgentCheck.OK)


def test_a_cluster_check_back_on_a_runner_with_an_old_state_does_not_submit_again(
    org, clock, sim, make_check, dd_run_check, state
):
    # Runner A collects, the Cluster Agent moves the check to runner B (its own state, a baseline,
    # then B submits the next hour), then back to A, which still holds its old state.
    runner_a = make_check(empty_default_hostname=True, usage_endpoints=['completions'], collect_costs=False)
    for _ in range(6):
        dd_run_check(runner_a)
        clock.advance(300)
    a_state = dict(state)
    state.clear()
    runner_b = make_check(empty_default_hostname=True, usage_endpoints=['completions'], collect_costs=False)
    for _ in range(12):
        dd_run_check(runner_b)
        clock.advance(300)
    b_submitted = submitted_totals('completions', DEFAULT_GROUP_BY['completions'])
    state.clear()
    state.update(a_state)
    runner_a = make_check(empty_default_hostname=True, usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(runner_a)
    assert any('another runner probably collected the period' in w for w in runner_a.warnings)
    # A recorded a baseline: nothing that B already submitted was submitted again.
    assert submitted_totals('completions', DEFAULT_GROUP_BY['completions']) == b_submitted


def test_a_node_agent_catches_up_after_an_outage(org, clock, sim, make_check, dd_run_check):
    check = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(check)
    clock.advance(5 * H)
    dd_run_check(check)
    assert not any('another runner' in w for w in check.warnings)
    assert_exact(org, clock.now(), endpoints=('completions',))


# == The six ways of losing or doubling usage that once passed every test (issue 11) ==========================


def test_a_state_that_cannot_be_saved_submits_nothing_that_run_and_the_totals_stay_exact(
    org, clock, sim, make_check, dd_run_check, aggregator, monkeypatch
):
    check = make_check()
    for _ in range(12):
        dd_run_check(check)
        clock.advance(300)
    write = datadog_agent.write_persistent_cache

    def disk_full_for_completions(key, value):
        # Mid-run: the endpoints before completions were saved, the ones after it are saved too.
        if key.endswith('ledger_completions'):
            raise OSError(28, 'No space left on device')
        return write(key, value)

    before = {m: len(aggregator.metrics(m)) for metrics in FLOW_METRICS.values() for m in metrics}
    monkeypatch.setattr(datadog_agent, 'write_persistent_cache', disk_full_for_completions)
    clock.advance(H)  # an hour of usage for that run to (not) submit
    dd_run_check(check)
    monkeypatch.setattr(datadog_agent, 'write_persistent_cache', write)
    assert any(
        w.startswith('completions: could not save the state') and 'No space left on device' in w for w in check.warnings
    ), check.warnings
    after = {m: len(aggregator.metrics(m)) for m in before}
    # Nothing of completions was submitted that run; the other endpoints were.
    assert all(after[m] == before[m] for m in FLOW_METRICS['completions'])
    assert after['openai.api.usage.embeddings.input_tokens'] > before['openai.api.usage.embeddings.input_tokens']
    assert after['openai.api.costs.amount'] > before['openai.api.costs.amount']
    for _ in range(12):
        clock.advance(300)
        dd_run_check(check)
    assert_exact(org, clock.now())


def test_a_first_run_that_cannot_read_every_page_of_its_history_never_submits_that_history(
    org, clock, sim, make_check, dd_run_check, aggregator, state
):
    # Ten days of history, a window of 200 hourly buckets: two pages (168 buckets a page). The second page
    # fails on the first run, which cannot record half a baseline: the next run would then submit the
    # history of the buckets the first one did not read.
    options = dict(usage_endpoints=['completions'], collect_costs=False, revision_window_hours=200)
    options.update(max_catch_up_hours=240, collect_headroom=False)  # the hourly reads alone
    clock.advance(10 * D + 17 * 60)
    sim.faults.add('completions', 503, count=None, on_later_pages=True)
    check = make_check(**options)
    with pytest.raises(Exception, match='No endpoint could be read: OpenAI answered 503'):
        dd_run_check(check, extract_message=True)  # the only endpoint: the run read nothing
    pages = [r for r in sim.requests_to('completions')]
    assert pages[0].status == 200 and pages[0].param('page') is None
    assert pages[-1].status == 503 and pages[-1].param('page') is not None
    assert not any(aggregator.metrics(m) for m in FLOW_METRICS['completions'])
    assert not any(key.endswith('ledger_completions') for key in state)
    sim.faults.clear()
    check = make_check(**options)  # a restart in between changes nothing
    clock.advance(300)
    t1 = clock.now()
    dd_run_check(check)  # the baseline, read whole: its first bucket alone, then two pages
    assert len([r for r in sim.requests_to('completions') if r.time == t1]) == 3
    assert not any(aggregator.metrics(m) for m in FLOW_METRICS['completions'])
    for _ in range(24):
        clock.advance(300)
        dd_run_check(check)
    t = clock.now()
    group_by = DEFAULT_GROUP_BY['completions']
    w1 = floor_to(t1 - 200 * H, H)
    # Only what grew after the whole baseline: the history before it, never.
    expected = reported_totals(org, 'completions', group_by, w1, int(t) + H, t)
    for key, fields in reported_totals(org, 'completions', group_by, w1, int(t) + H, t1).items():
        for f, v in fields.items():
            expected[key][f] -= v
    assert_same_totals(submitted_totals('completions', group_by), expected, 'completions')


def test_a_catch_up_longer_than_one_page_reads_every_page(org, clock, sim, make_check, dd_run_check):
    check = make_check(
        usage_endpoints=['completions', 'embeddings'],
        collect_costs=False,
        max_catch_up_hours=240,
        collect_headroom=False,
    )
    dd_run_check(check)
    clock.advance(9 * D + 300)  # 217 hourly buckets since the last read: two pages of 168
    sim.clear_log()
    dd_run_check(check)
    for name in ('completions', 'embeddings'):
        requests = sim.requests_to(name)
        assert [r.status for r in requests] == [200, 200], name
        assert requests[0].param('page') is None and requests[1].param('page') is not None
        assert requests[0].param('start_time') == requests[1].param('start_time')
    assert not any('was not collected' in w for w in check.warnings)
    clock.advance(300)
    dd_run_check(check)
    assert_exact(org, clock.now(), endpoints=('completions', 'embeddings'))


def test_after_many_runs_the_state_holds_only_the_re_read_window(org, clock, sim, make_check, dd_run_check, state):
    check = make_check(usage_endpoints=['completions', 'vector_stores'])
    sizes = []
    for i in range(2 * 48):  # two days, every 30 minutes
        dd_run_check(check)
        if i in (47, 95):
            sizes.append(sum(len(v) for k, v in state.items() if k.endswith('ledger_completions')))
        clock.advance(1800)
    now = clock.now() - 1800
    saved = {key.rsplit('ledger_', 1)[1]: json.loads(text) for key, text in state.items() if 'ledger_' in key}
    # vector_stores has no flow to track, but its (empty) ledger moves on too.
    assert set(saved) == {'completions', 'vector_stores', 'costs'}
    horizons = {
        'completions': floor_to(now - 6 * H, H),
        'vector_stores': floor_to(now - 6 * H, H),
        # From the first of the month, and back over 3 days of revisions and the 7 complete days of the projection.
        'costs': min(month_start(now), floor_to(now - 3 * D, D), floor_to(now, D) - 7 * D),
    }
    for name, ledger in saved.items():
        assert ledger['horizon'] == horizons[name], name
        starts = sorted(int(s) for s in ledger['buckets'])
        assert all(horizons[name] <= s <= now for s in starts), name
    assert len(saved['completions']['buckets']) == 7  # 6 h of hourly buckets and the one in progress
    assert len(saved['costs']['buckets']) <= 31 + 3
    # A day more of runs left the completions state no larger (the traffic varies a little).
    assert sizes[1] < sizes[0] * 1.25, sizes
    # What the check keeps in memory is what it saved.
    (completions,) = [s for s in check.sources if s.name == 'completions']
    assert completions.ledger.horizon == horizons['completions']
    assert sorted(completions.ledger.buckets) == sorted(int(s) for s in saved['completions']['buckets'])


def test_a_one_hour_revision_window_still_gets_every_revision(org, clock, sim, make_check, dd_run_check):
    # Buckets settle 20 minutes after they close: a one-hour window must still re-read the previous bucket.
    check = make_check(revision_window_hours=1, collect_costs=False, collect_headroom=False)
    for _ in range(12 * 10):
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    assert_exact(org, clock.now(), endpoints=USAGE)
    # The last run read from the window of the run before it (an hour back, to its hour's start), no more.
    last = [r for r in sim.requests_to('completions') if r.time == clock.now()]
    assert [int(r.param('start_time')) for r in last] == [floor_to(clock.now() - 300 - H, H)]


def test_endpoints_grouped_by_nothing_sum_to_openai_figures_as_one_series(org, clock, sim, make_check, dd_run_check):
    # Found by mutation testing: with an empty group_by every row's key is the empty tuple (one series per bucket,
    # tagged with the account alone), which no other test reads.
    group_by = {'embeddings': [], 'completions': []}
    check = make_check(usage_endpoints=['embeddings', 'completions'], collect_costs=False, group_by=group_by)
    for _ in range(24):
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    assert check.warnings == []
    for name in group_by:
        (key,) = submitted_totals(name, ())  # one series, of no dimension
        assert key == () and submitted_totals(name, ())[()]['num_model_requests'] > 0
    assert_exact(org, clock.now(), endpoints=('embeddings', 'completions'), group_by=group_by)


def test_a_cluster_check_restarted_on_its_runner_goes_on_from_its_state(org, clock, sim, make_check, dd_run_check):
    # Found by mutation testing: only a state older than three collection intervals is another runner's.
    options = dict(empty_default_hostname=True, usage_endpoints=['completions'], collect_costs=False)
    check = make_check(**options)
    for _ in range(6):
        dd_run_check(check)
        clock.advance(300)
    clock.advance(600)  # three intervals (900 s) after the last read: the oldest state that is still its own
    check = make_check(**options)
    dd_run_check(check)
    assert not any('another runner' in w for w in check.warnings)
    assert_exact(org, clock.now(), endpoints=('completions',))


def test_raising_the_revision_window_over_a_saved_state_submits_no_bucket_twice(
    org, clock, sim, make_check, dd_run_check
):
    # The wider window reads buckets the saved state no longer compares: they were final for it, and must not be
    # submitted again (they were, at every run, until the window start passed the old horizon).
    options = dict(usage_endpoints=['completions'], collect_costs=False, collect_headroom=False)
    clock.advance(30 * H)
    first = clock.now()
    check = make_check(**options)
    for _ in range(24):
        dd_run_check(check)
        clock.advance(300)
    check = make_check(revision_window_hours=12, **options)
    for _ in range(24):
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    now = clock.now()
    group_by = DEFAULT_GROUP_BY['completions']
    # The first run recorded a baseline of what OpenAI reported then; every increase since was submitted, once.
    expected = reported_totals(org, 'completions', group_by, org.traffic_start, int(now) + H, now)
    for key, fields in reported_totals(org, 'completions', group_by, org.traffic_start, int(first) + H, first).items():
        for f, v in fields.items():
            expected[key][f] -= v
    assert_same_totals(submitted_totals('completions', group_by), expected, 'completions')


def test_pages_split_for_a_large_organization_still_sum_to_openai_figures(
    org, clock, sim, make_check, dd_run_check, monkeypatch
):
    # A bucket of more rows than a page may hold (MAX_PAGE_ROWS, lowered here to the test organization's size)
    # makes the check read its window in spans of buckets (end_time, a smaller limit) instead of one page; every
    # bucket is still read once per run, through a restart and a catch-up after an outage.
    from datadog_checks.openai.sources import usage

    monkeypatch.setattr(usage, 'MAX_PAGE_ROWS', 3 * max(org.traffic['completions'].n, org.traffic['embeddings'].n))
    # Headroom off: its per-minute reads of the same endpoints are not the window's spans.
    options = dict(usage_endpoints=['completions', 'embeddings'], collect_costs=False, collect_headroom=False)
    check = make_check(**options)
    for i in range(12 * 4):
        dd_run_check(check)
        clock.advance(300)
        if i == 20:
            check = make_check(**options)  # a restart: the rows per bucket come from the saved state
    clock.advance(2 * H)  # an outage: the catch-up window is split too
    sim.clear_log()
    dd_run_check(check)
    requests = sim.requests_to('completions')
    assert len(requests) > 1 and all(r.status == 200 for r in requests)
    spans = [(int(r.param('start_time')), r.param('end_time'), int(r.param('limit'))) for r in requests]
    # Consecutive spans that cover the window once, the last one open-ended (the bucket in progress).
    for (start, end, limit), (following, _, _) in zip(spans, spans[1:]):
        assert end is not None and int(end) == start + limit * H == following
    assert spans[-1][1] is None and spans[-1][0] <= floor_to(clock.now(), H)
    assert all(limit < 168 for _, _, limit in spans)
    assert not sim.validation_errors
    for _ in range(6):
        clock.advance(300)
        dd_run_check(check)
    assert_exact(org, clock.now(), endpoints=('completions', 'embeddings'))


def test_a_baseline_reads_its_first_bucket_alone_and_sizes_the_rest_of_its_window_by_it(
    org, clock, sim, make_check, dd_run_check, monkeypatch
):
    # With no saved state the check knows no bucket's size: the first bucket is read alone, then the rest of the
    # window in spans that keep a page under MAX_PAGE_ROWS (lowered here to 3 buckets of the test organization).
    from datadog_checks.openai.sources import usage

    monkeypatch.setattr(usage, 'MAX_PAGE_ROWS', 3 * org.traffic['completions'].n)
    clock.advance(30 * H)
    options = dict(usage_endpoints=['completions'], collect_headroom=False)
    check = make_check(**options)
    sim.clear_log()
    t1 = clock.now()
    dd_run_check(check)
    spans = [
        (int(r.param('start_time')), r.param('end_time'), int(r.param('limit'))) for r in sim.requests_to('completions')
    ]
    first, *rest = spans
    assert first == (floor_to(clock.now(), H) - 6 * H, str(floor_to(clock.now(), H) - 5 * H), 1)
    assert rest and all(limit <= 3 for _, _, limit in rest)
    for (start, end, limit), (following, _, _) in zip(spans, spans[1:]):
        assert end is not None and int(end) == start + limit * H == following
    assert spans[-1][1] is None
    # Costs: the month's first day alone, then the other days.
    [costs_first, *costs_rest] = sim.requests_to('costs')
    assert (
        costs_first.param('limit') == '1'
        and int(costs_first.param('end_time')) == int(costs_first.param('start_time')) + D
    )
    assert costs_rest and int(costs_rest[0].param('start_time')) == int(costs_first.param('end_time'))
    assert not sim.validation_errors
    # A later run knows the sizes (no lone first bucket), and nothing of the baseline is submitted again.
    sim.clear_log()
    clock.advance(300)
    dd_run_check(check)
    assert all(r.param('limit') != '1' for r in sim.requests_to('completions'))
    for _ in range(12):
        clock.advance(300)
        dd_run_check(check)
    # What grew after the baseline, exactly: OpenAI's figures of its window now, less what they were at it.
    group_by, far = DEFAULT_GROUP_BY['completions'], int(clock.now()) + D
    expected = reported_totals(org, 'completions', group_by, first[0], far, clock.now())
    for key, fields in reported_totals(org, 'completions', group_by, first[0], far, t1).items():
        for f, v in fields.items():
            expected[key][f] -= v
    assert_same_totals(submitted_totals('completions', group_by), expected, 'completions')


@pytest.mark.parametrize('org', [Organization(seed=7, settle_seconds={'costs': 5 * D})])
def test_costs_before_the_re_read_window_are_read_hourly_and_their_late_revisions_counted_once(
    org, clock, sim, make_check, dd_run_check, aggregator, caplog
):
    """Costs that keep changing for 5 days, a re-read window of 3: between the hourly whole readings a run reads
    the last 3 days only, the month to date still adds the older days (as last read), and what changed in them
    meanwhile is counted once, at the next whole reading."""
    check = make_check(usage_endpoints=['completions'], collect_headroom=False)
    starts = []  # (run time, start_time of the run's costs request)
    for _ in range(3 * 8 * 24):  # every 20 minutes for 8 days
        sim.clear_log()
        dd_run_check(check)
        # Where the run's reading starts (the baseline reads its first day alone, then the rest).
        request = sim.requests_to('costs')[0]
        starts.append((clock.now(), int(request.param('start_time'))))
        clock.advance(1200)
    whole_start = lambda t: min(month_start(t), floor_to(t, D) - 7 * D)  # noqa: E731
    partial = [(t, s) for t, s in starts if s == floor_to(t - 3 * D, D) != whole_start(t)]
    # (A whole reading starts a day earlier when the ledger still holds the day that has just left the window.)
    whole = [(t, s) for t, s in starts if s in (whole_start(t), whole_start(t) - D)]
    assert len(partial) + len(whole) == len(starts)
    # One run in three reads the whole window: 20 minutes apart, a whole reading every hour.
    assert len(whole) == len(starts) // 3
    last_whole = {}
    for t, s in starts:
        if (t, s) in whole:
            last_whole['t'] = t
        else:
            assert t - last_whole['t'] < 3600
    # After a partial read: OpenAI's figures for the last 3 days now, and for the days before at the last whole read.
    for _ in range(3):  # the next run between two whole readings
        sim.clear_log()
        dd_run_check(check)
        now = clock.now()
        revised = floor_to(now - 3 * D, D)
        if int(sim.requests_to('costs')[0].param('start_time')) == revised:
            break
        last_whole['t'] = now
        clock.advance(1200)
    else:
        raise AssertionError('no run read the re-read window alone')
    month = month_start(now)
    at_whole = last_whole['t']
    expected = sum(
        fields['amount']
        for start, end, t in ((month, revised, at_whole), (revised, int(now) + D, now))
        for fields in reported_totals(org, 'costs', (), start, end, t).values()
    )
    assert aggregator.metrics('openai.api.costs.month_to_date')[-1].value == pytest.approx(expected)
    assert expected != pytest.approx(
        sum(f['amount'] for f in reported_totals(org, 'costs', (), month, now + D, now).values())
    )
    # The next whole reading counts what the older days gained since: every total is OpenAI's, counted once.
    clock.advance(3600)
    sim.clear_log()
    dd_run_check(check)
    now = clock.now()
    assert int(sim.requests_to('costs')[0].param('start_time')) == whole_start(now)
    assert_exact(org, now, endpoints=('costs', 'completions'))
    month_total = reported_totals(org, 'costs', (), month_start(now), int(now) + D, now)
    assert aggregator.metrics('openai.api.costs.month_to_date')[-1].value == pytest.approx(
        sum(f['amount'] for f in month_total.values())
    )
    # A restart knows no older day: its first run reads the whole window, from the saved state, counting nothing twice.
    clock.advance(1200)
    sim.clear_log()
    check = make_check(usage_endpoints=['completions'], collect_headroom=False)
    dd_run_check(check)
    now = clock.now()
    assert int(sim.requests_to('costs')[0].param('start_time')) == whole_start(now)
    assert_exact(org, now, endpoints=('costs', 'completions'))
    assert not sim.validation_errors
    # A day leaving the window of a check that runs is not usage "not collected" (the first week of a month, when
    # the window starts 7 days back, the catch-up floor).
    assert not [r for r in caplog.records if 'not collected' in r.getMessage()]


def test_what_the_check_keeps_packed_between_runs_changes_no_figure(
    org, clock, sim, make_check, dd_run_check, monkeypatch, caplog
):
    # memory.pack after every run (the benchmark's large organization packs after every run too): the ledgers'
    # series keys, bucket starts and digests, and the costs' kept days, are held as blocks and made anew at the next
    # run. Some runs, two sources cannot take theirs back: they read their saved state again. Either way nothing is
    # lost and nothing counted twice.
    from datadog_checks.openai import check as check_module
    from datadog_checks.openai.sources import CostsSource, UsageSource

    monkeypatch.setattr(check_module, 'RELEASE_AFTER_ROWS', 1)
    unpacked = UsageSource._unpacked
    failing = set()
    taken_back = []

    def unpack_or_fail(self):
        if self.ledger is not None and self.ledger.packed:
            if self.name in failing:
                raise MemoryError('no room')
            taken_back.append(self.name)
        unpacked(self)

    monkeypatch.setattr(UsageSource, '_unpacked', unpack_or_fail)
    # The costs' kept days come back too: without them every run would read the whole month again.
    plan = CostsSource.plan
    whole_readings = []

    def plan_and_note(self, ledger, now):
        window = plan(self, ledger, now)
        whole_readings.append(self.full_read)
        return window

    monkeypatch.setattr(CostsSource, 'plan', plan_and_note)
    check = make_check()
    runs = 12 * 14
    for i in range(runs):
        failing.clear()
        if i % 10 == 4:
            failing.update({'completions', 'costs'})
        dd_run_check(check)
        clock.advance(300)
    dd_run_check(check)
    assert taken_back.count('completions') == taken_back.count('costs') > 100
    # Hourly (every 12th run), and at each run whose costs could not take their days back.
    failures = len([i for i in range(runs) if i % 10 == 4])
    assert runs // 12 <= sum(whole_readings) <= runs // 12 + failures + 1
    failed = [r.getMessage() for r in caplog.records if 'read its saved state again' in r.getMessage()]
    assert sorted(m.split(':')[0] for m in failed) == sorted(['completions', 'costs'] * failures)
    assert_exact(org, clock.now())
    assert not sim.validation_errors
