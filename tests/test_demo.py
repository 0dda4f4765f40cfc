"""`scripts/demo`, the README's first command: its summary says what the check submitted, no more, no less."""

import importlib.util
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_runner():
    spec = importlib.util.spec_from_file_location('run_check', ROOT / 'scripts' / 'run_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def runner(state, monkeypatch):
    module = load_runner()
    captured = []
    collect = module.collect_run

    def recording_collect_run():
        run = collect()
        captured.append(run)
        return run

    monkeypatch.setattr(module, 'collect_run', recording_collect_run)
    module.captured = captured
    return module


def tags_of(point):
    return dict(t.split(':', 1) for t in point['tags'])


def table_after(text: str, title: str) -> dict[str, list[float]]:
    """The rows of the table under `title`: label -> its numbers (the label may hold spaces)."""
    lines = text.split(title + '\n', 1)[1].splitlines()
    rows = {}
    for line in lines[1:]:  # the first line is the header
        if not line.startswith('  '):
            break
        cells = line.split()
        numbers = [float(c.replace(',', '').lstrip('$')) for c in cells[-4:]]
        rows[' '.join(cells[:-4])] = numbers
    return rows


FIELDS = ('num_model_requests', 'input_tokens', 'input_cached_tokens', 'output_tokens')


def test_the_default_demo_prints_a_summary_computed_from_the_submitted_points(runner, tmp_path, capsys):
    assert runner.main(['--state-dir', str(tmp_path), '--times', '3']) == 0
    out = capsys.readouterr().out
    runs = runner.captured
    assert len(runs) == 3
    for section in (
        '== account demo: 3 runs, 300 s apart (simulated time) ==',
        'Verdict: OK. Connected: yes. Read 11 of 11 endpoints in the last run.',
        'Warnings: none',
        "Month-to-date spend (OpenAI's own figure): $",
        'Top 5 projects this month:',
        'Completions usage submitted during these runs, by model:',
        '... by project:',
        'Other endpoints, submitted during these runs:',
        'Vector store storage now:',
        'Check health:',
    ):
        assert section in out, section
    # Not the 300 lines of points: those are behind --metrics.
    assert 'openai.api.usage.completions.input_tokens' not in out
    assert len(out.splitlines()) < 80

    # Usage by model: the sums of the counts the check submitted over the three runs, model by model.
    expected = defaultdict(lambda: [0.0] * 4)
    for run in runs:
        for point in run['metrics']:
            for i, field in enumerate(FIELDS):
                if point['metric'] == f'openai.api.usage.completions.{field}':
                    assert point['type'] == 'count'
                    expected[tags_of(point)['model']][i] += point['value']
    by_model = table_after(out, 'Completions usage submitted during these runs, by model:')
    assert by_model == dict(expected)
    assert sum(v[1] for v in by_model.values()) > 0, 'the demo submitted no input tokens: it proves nothing'

    # By project, the same totals split the other way.
    by_project = table_after(out, '... by project:')
    for i in range(4):
        assert sum(v[i] for v in by_project.values()) == sum(v[i] for v in expected.values())

    # Month to date: the last gauge the check sent, to the cent.
    [month] = [p for p in runs[-1]['metrics'] if p['metric'] == 'openai.api.costs.month_to_date']
    shown = float(re.search(r"Month-to-date spend \(OpenAI's own figure\): \$([\d,.]+)", out)[1].replace(',', ''))
    assert shown == round(month['value'], 2)

    # The check's own health: every request it counted during the runs.
    requests = sum(p['value'] for r in runs for p in r['metrics'] if p['metric'] == 'openai.check.api.requests')
    assert f'Check health: {requests:,.0f} API requests during these runs' in out


def test_metrics_prints_every_point_and_json_is_unchanged(runner, tmp_path, capsys):
    assert runner.main(['--state-dir', str(tmp_path), '--times', '2', '--metrics']) == 0
    out = capsys.readouterr().out
    last = runner.captured[-1]
    assert '== account demo, run 2 of 2 ==' in out
    for point in last['metrics']:
        assert re.search(rf'^{re.escape(point["metric"])}\s', out, re.M), point['metric']
    assert 'service check openai.can_connect: OK' in out
    assert 'Check health:' in out  # the summary follows the table

    assert runner.main(['--state-dir', str(tmp_path), '--times', '1', '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {'runs', 'verdicts'}
    assert set(report['runs'][0]) == {'account', 'run', 'metrics', 'service_checks'}
    assert report['runs'][0]['metrics'] == runner.captured[-1]['metrics']


def test_a_refused_key_shows_as_an_error_in_the_summary(runner, tmp_path, capsys, monkeypatch):
    config = tmp_path / 'conf.yaml'
    config.write_text('instances:\n  - account_name: wrong\n    admin_api_key: sk-admin-not-this-one\n')
    # --simulator replaces the key by the demo key: make the simulator expect another one instead.
    from tests import simulator

    real = simulator.SimulatorServer

    def other_key(org, clock, admin_key):
        return real(org, clock, admin_key='sk-admin-expected-by-the-simulator')

    monkeypatch.setattr(simulator, 'SimulatorServer', other_key)
    assert runner.main(['-c', str(config), '--simulator', '--state-dir', str(tmp_path), '--times', '1']) == 1
    out = capsys.readouterr().out
    assert 'Verdict: CRITICAL. Connected: no. Read 0 of 11 endpoints' in out
    assert 'Error: OpenAI refused the key with 401' in out
    assert out.rstrip().splitlines()[-1].startswith('wrong: ERROR OpenAI refused the key with 401')
