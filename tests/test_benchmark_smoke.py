"""scripts/benchmark.py runs end to end at its smallest sizes, and its figures add up (no timings asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest
from datadog_checks.base.stubs import datadog_agent

from datadog_checks.openai.catalogue import ENDPOINTS, USAGE_ENDPOINTS

SCRIPT = Path(__file__).resolve().parent.parent / 'scripts' / 'benchmark.py'
RUN_KEYS = {
    'wall_s',
    'cpu_s',
    'names_cpu_s',
    'gc_cpu_s',
    'gc_full',
    'peak_rss_mb',
    'requests',
    'usage_costs_requests',
    'listing_requests',
    'bytes',
    'rows',
    'rows_by_endpoint',
    'points',
    'count_points',
    'state_bytes',
    'simulator_cpu_s',
}
REPORTED_KEYS = RUN_KEYS | {
    'floor_decode_cpu_s',
    'floor_submit_cpu_s',
    'floor_cpu_s',
    'floor_bytes',
    'floor_points',
    'ratio',
    'state_load_s',
    'state_save_s',
    'state_cells',
    'http_client_cpu_s',
}
MAX_FIELDS = max(len(e.fields) for e in ENDPOINTS)


@pytest.fixture
def benchmark_module():
    spec = importlib.util.spec_from_file_location('openai_benchmark', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    datadog_agent._cache.clear()


def test_the_benchmark_keeps_its_scenario_whatever_the_defaults(benchmark_module):
    # The README's figures were measured with every usage endpoint grouped by every dimension (0.1.0's default).
    assert benchmark_module.GROUP_BY['completions'] == [
        'project_id',
        'user_id',
        'api_key_id',
        'model',
        'batch',
        'service_tier',
    ]
    assert set(benchmark_module.GROUP_BY) == set(USAGE_ENDPOINTS)


def test_the_benchmark_runs_and_its_figures_add_up(benchmark_module, tmp_path, capsys, aggregator):
    out = tmp_path / 'report.json'
    report = benchmark_module.main(['--tiny', '--json', str(out)])
    markdown = capsys.readouterr().out
    assert '| Per run |' in markdown and '**Scaling**' in markdown and 'Fewest requests' in markdown
    assert json.loads(out.read_text())['large_org']['reported_runs'] == report['large_org']['reported_runs']

    big = report['large_org']
    runs = big['runs']
    assert [r['run'] for r in runs] == list(range(1, big['sizes']['runs'] + 1))
    reported = {r['run'] for r in runs} & set(big['reported_runs'])
    assert reported == set(big['reported_runs']) and 1 in reported
    endpoints = len(USAGE_ENDPOINTS) + 1
    for r in runs:
        assert RUN_KEYS <= r.keys()
        if r['run'] in reported:
            assert REPORTED_KEYS <= r.keys()
        assert r['complete'] and r['non_200'] == 0
        # One page per endpoint: the whole window fits in one page of the API's limit (the baseline reads its
        # first bucket alone, then the rest).
        per_endpoint = 2 if r['baseline'] else 1
        assert r['usage_costs_requests'] == per_endpoint * endpoints
        assert all(r['requests_by_endpoint'][name] == per_endpoint for name in (*USAGE_ENDPOINTS, 'costs'))
        assert set(r['rows_by_endpoint']) == set(USAGE_ENDPOINTS) | {'costs'}
        assert min(r['rows_by_endpoint'].values()) > 0
        assert 50 < r['bytes'] / r['rows'] < 2000
        assert r['count_points'] <= r['rows'] * MAX_FIELDS
        # Every run also sends health gauges (can_connect, run.duration...) next to its counts.
        assert r['count_points'] < r['points']
        assert r['state_bytes'] > 0
        assert r['cpu_s'] > 0 and r['wall_s'] > 0 and r['peak_rss_mb'] > 0
        assert 0 <= r['gc_cpu_s'] <= r['cpu_s'] + 0.05
    first, last = runs[0], runs[-1]
    # Runs between whole readings of the costs read only their re-read window.
    assert any(r['state_cells_by_endpoint']['costs'] > r['rows_by_endpoint']['costs'] for r in runs)
    assert first['baseline'] and first['count_points'] == 0, 'the first run records a baseline and submits no count'
    assert first['listing_requests'] > 0, 'names are resolved on the first run'
    assert not last['baseline'] and last['listing_requests'] == 0 and last['count_points'] > 0
    for n in reported:
        r = runs[n - 1]
        # That the floor replays exactly the run's bytes and points is checked by the benchmark itself (it stops
        # otherwise); its figures are the sum they are by construction. What can be wrong is a floor left empty.
        assert r['floor_decode_cpu_s'] > 0 and r['ratio'] > 0
        # The state holds one cell per (bucket, series) read, levels (vector_stores) aside; costs also the days before
        # their re-read window, read whole once an hour only (sources/costs.py).
        cells, rows = r['state_cells_by_endpoint'], r['rows_by_endpoint']
        assert all(cells[name] == rows[name] for name in USAGE_ENDPOINTS if name != 'vector_stores')
        assert cells['costs'] >= rows['costs'] and sum(cells.values()) == r['state_cells']

    window = {w['endpoint']: w for w in big['window']}
    assert set(window) == set(USAGE_ENDPOINTS) | {'costs'}
    for w in window.values():
        assert w['made'] == w['fewest'] == 1 and w['buckets'] <= w['max_limit']
    assert window['completions']['buckets'] == 7  # 6 h of 1h buckets and the bucket in progress

    assert report['growth']['rows'][0] > 0
    scaling = report['scaling']
    assert [s['series'] for s in scaling] == sorted(s['series'] for s in scaling) and len(scaling) >= 2
    assert scaling[0]['completions_rows'] < scaling[-1]['completions_rows']
    for s in scaling:
        assert s['rows'] > 0 and s['cpu_per_series_us'] > 0 and s['floor_cpu_s'] > 0


def test_the_benchmark_replays_the_next_run_of_each_source_at_one_clock(benchmark_module, tmp_path, capsys, aggregator):
    report = benchmark_module.main(['--tiny', '--no-scaling', '--replay', '2', '--json', str(tmp_path / 'r.json')])
    assert '**Replayed**' in capsys.readouterr().out
    big = report['large_org']
    replayed = big['replay']
    assert replayed['times'] == 2 and set(replayed['sources']) == set(USAGE_ENDPOINTS) | {'costs'}
    # The run after the last: later than it, and reading what a steady run reads.
    last = big['runs'][-1]
    assert replayed['time'] > last['time']
    for name, r in replayed['sources'].items():
        assert 0 < r['min_s'] <= r['median_s'] and r['rows'] > 0, name
    assert replayed['sources']['completions']['points'] > 0
    # The whole run, replayed: each time the same points (no change applied in between, so each time the same work;
    # once more first, to capture them), and after each time its floor for those bytes and points.
    whole = replayed['run']
    assert whole['points_each'] == [whole['points']] * 3 and whole['points'] > 0
    assert len(whole['ratios']) == 2 and all(r > 0 for r in whole['ratios'])
    assert 0 < whole['least_s'] <= whole['median_s'] and whole['bytes'] > 0
    assert whole['floor_least_decode_s'] > 0 and whole['floor_least_submit_s'] > 0
    assert whole['floor_least_s'] <= whole['floor_median_s'] + 1e-9
    assert whole['ratio_least'] == whole['least_s'] / whole['floor_least_s']
