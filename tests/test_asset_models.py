"""Every dashboard and monitor read by Datadog's own typed models (datadog-api-client), strictly.

tests/datadog_models.py deserializes each file as the client deserializes an API response and then reports what
that deserializer lets through silently (unknown keys, widget types and enum values, objects it could not read)
and what it refuses, each with its JSON path. The first tests run it over the repository's assets; the others
prove that it finds each kind of mistake, and where.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.datadog_models import (
    Problem,
    dashboard_problems,
    format_path,
    monitor_problems,
    recommended_monitor_problems,
)

ROOT = Path(__file__).resolve().parent.parent


def load_json(path: Path):
    with open(path) as f:
        return json.load(f)


def asset_files(kind: str) -> list[Path]:
    """The manifest's dashboards or monitors and every file in their directory: one missing from either side is
    still validated (tests/test_assets.py checks that both sides agree)."""
    listed = {ROOT / p for p in load_json(ROOT / 'manifest.json')['assets'].get(kind, {}).values()}
    return sorted(listed | set((ROOT / 'assets' / kind).glob('*.json')))


def report(problems: list[Problem]) -> str:
    return '\n'.join(map(str, problems))


# == the repository's assets ===================================================================================


@pytest.mark.parametrize('path', asset_files('dashboards'), ids=lambda p: p.name)
def test_dashboard_is_a_valid_datadog_dashboard(path):
    problems = dashboard_problems(load_json(path))
    assert not problems, f'{path.relative_to(ROOT)}:\n{report(problems)}'


@pytest.mark.parametrize('path', asset_files('monitors'), ids=lambda p: p.name)
def test_monitor_is_a_valid_recommended_monitor(path):
    """The wrapper's fields by tests/datadog_models.RECOMMENDED_MONITOR_FIELDS, `definition` as a `Monitor`."""
    problems = recommended_monitor_problems(load_json(path))
    assert not problems, f'{path.relative_to(ROOT)}:\n{report(problems)}'


def test_the_assets_are_found():
    # A typo in the manifest or an empty directory must not make the two tests above pass on nothing.
    for kind in ('dashboards', 'monitors'):
        files = asset_files(kind)
        assert files and all(p.is_file() for p in files), kind


def object_paths(node, path=()):
    """The path of every JSON object in `node`."""
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from object_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from object_paths(value, (*path, i))


def at(node, path):
    for part in path:
        node = node[part]
    return node


@pytest.mark.parametrize('path', [*asset_files('dashboards'), *asset_files('monitors')], ids=lambda p: p.name)
def test_the_walker_reaches_every_object_of_the_asset(path):
    """A key added to every object of the file is reported once per object, at that object's path: no part of the
    file (a group's widgets, a request's formulas, a monitor's thresholds) escapes the walk."""
    document = load_json(path)
    paths = list(object_paths(document))
    for p in paths:
        at(document, p)['not_a_datadog_key'] = 1
    check = recommended_monitor_problems if path.parent.name == 'monitors' else dashboard_problems
    problems = check(document)
    assert {p.path for p in problems} == {(*p, 'not_a_datadog_key') for p in paths}
    assert len(problems) == len(paths)
    assert all("unknown key 'not_a_datadog_key'" in p.message for p in problems)


# == the walker finds each kind of mistake ======================================================================


def dashboard():
    """A small dashboard of the kinds of widgets the assets use; valid, as the first test asserts."""
    query = {'data_source': 'metrics', 'name': 'query1', 'query': 'sum:openai.api.costs.amount{$account}.as_count()'}
    return {
        'title': 'A dashboard',
        'description': '',
        'layout_type': 'ordered',
        'template_variables': [{'name': 'account', 'prefix': 'openai_account', 'default': '*'}],
        'widgets': [
            {
                'id': 1,
                'definition': {
                    'type': 'group',
                    'title': 'Spend',
                    'layout_type': 'ordered',
                    'widgets': [
                        {
                            'id': 2,
                            'definition': {'type': 'note', 'content': 'Costs, as OpenAI bills them.'},
                            'layout': {'x': 0, 'y': 0, 'width': 4, 'height': 2},
                        },
                        {
                            'id': 3,
                            'definition': {
                                'type': 'timeseries',
                                'title': 'Cost',
                                'requests': [
                                    {
                                        'response_format': 'timeseries',
                                        'display_type': 'bars',
                                        'queries': [query],
                                        'formulas': [{'formula': 'query1', 'alias': 'cost'}],
                                    }
                                ],
                            },
                            'layout': {'x': 4, 'y': 0, 'width': 8, 'height': 2},
                        },
                    ],
                },
                'layout': {'x': 0, 'y': 0, 'width': 12, 'height': 3},
            }
        ],
    }


GROUP = ('widgets', 0, 'definition')
TIMESERIES = (*GROUP, 'widgets', 1, 'definition')
REQUEST = (*TIMESERIES, 'requests', 0)


def problems_after(change) -> list[Problem]:
    board = dashboard()
    change(board)
    return dashboard_problems(board)


def the_one_problem(change) -> Problem:
    problems = problems_after(change)
    assert len(problems) == 1, report(problems)
    return problems[0]


def test_the_sample_dashboard_is_valid():
    assert dashboard_problems(dashboard()) == []


def test_an_unknown_top_level_key():
    problem = the_one_problem(lambda b: b.update(theme='dark'))
    assert problem.path == ('theme',)
    assert str(problem) == "$.theme: unknown key 'theme' in Dashboard"


def test_an_unknown_widget_type():
    def change(board):
        at(board, TIMESERIES)['type'] = 'sparkline'

    problem = the_one_problem(change)
    assert problem.path == (*TIMESERIES, 'type')
    assert format_path(problem.path) == '$.widgets[0].definition.widgets[1].definition.type'
    assert "unknown WidgetDefinition type 'sparkline'" in problem.message
    assert 'timeseries' in problem.message  # the known types are listed


def test_an_unknown_enum_value():
    def change(board):
        at(board, REQUEST)['display_type'] = 'bar'

    problem = the_one_problem(change)
    assert format_path(problem.path) == '$.widgets[0].definition.widgets[1].definition.requests[0].display_type'
    assert problem.message.startswith("'bar' is not a WidgetDisplayType value")
    assert "'bars'" in problem.message


def test_a_misspelled_nested_key():
    def change(board):
        formula = at(board, (*REQUEST, 'formulas', 0))
        formula['alais'] = formula.pop('alias')

    problem = the_one_problem(change)
    assert format_path(problem.path) == '$.widgets[0].definition.widgets[1].definition.requests[0].formulas[0].alais'
    assert problem.message == "unknown key 'alais' in WidgetFormula (did you mean 'alias'?)"


def test_a_misspelled_key_in_a_widget_definition():
    def change(board):
        at(board, TIMESERIES)['titel'] = at(board, TIMESERIES).pop('title')

    problem = the_one_problem(change)
    assert problem.path == (*TIMESERIES, 'titel')
    assert "did you mean 'title'?" in problem.message


def test_a_key_of_another_widget_type():
    # `viz_type` belongs to alert graphs: the client keeps it as an additional property of the timeseries.
    problem = the_one_problem(lambda b: at(b, TIMESERIES).update(viz_type='timeseries'))
    assert problem.path == (*TIMESERIES, 'viz_type')
    assert problem.message == "unknown key 'viz_type' in TimeseriesWidgetDefinition"


def test_a_misspelled_required_key_is_named_where_it_is():
    # Without `data_source` the query matches none of the query schemas: the client gives up on the whole
    # timeseries (and its group); the walker names the query and the key.
    def change(board):
        query = at(board, (*REQUEST, 'queries', 0))
        query['data_sorce'] = query.pop('data_source')

    problems = problems_after(change)
    assert [format_path(p.path) for p in problems] == [
        '$.widgets[0].definition.widgets[1].definition.requests[0].queries[0]',
        '$.widgets[0].definition.widgets[1].definition.requests[0].queries[0].data_sorce',
    ], report(problems)
    assert 'lacks the `data_source`' in problems[0].message
    assert "did you mean 'data_source'?" in problems[1].message


def test_an_unknown_enum_value_deep_inside_an_unreadable_widget():
    # A wrong aggregator makes the query, the request, the timeseries and its group unreadable to the client.
    def change(board):
        at(board, (*REQUEST, 'queries', 0))['aggregator'] = 'average'

    problem = the_one_problem(change)
    assert problem.path == (*REQUEST, 'queries', 0, 'aggregator')
    assert "'average' is not a FormulaAndFunctionMetricAggregation value" in problem.message


def test_type_errors_and_missing_keys_are_placed():
    def wrong_type(board):
        at(board, TIMESERIES)['show_legend'] = 'true'

    problem = the_one_problem(wrong_type)
    assert problem.path == (*TIMESERIES, 'show_legend') and 'bool' in problem.message

    def no_height(board):
        del at(board, (*GROUP, 'widgets', 0, 'layout'))['height']

    problem = the_one_problem(no_height)
    assert problem.path == (*GROUP, 'widgets', 0, 'layout')
    assert problem.message == 'WidgetLayout lacks required key(s): height'

    def no_requests(board):
        at(board, TIMESERIES)['requests'] = []

    problem = the_one_problem(no_requests)
    assert problem.path == (*TIMESERIES, 'requests') and 'number of items' in problem.message

    def null_title(board):
        at(board, TIMESERIES)['title'] = None

    problem = the_one_problem(null_title)
    assert problem.path == (*TIMESERIES, 'title') and problem.message.startswith('null')

    def string_widget(board):
        at(board, GROUP)['widgets'][0] = 'note'

    problem = the_one_problem(string_widget)
    assert problem.path == (*GROUP, 'widgets', 0)
    assert problem.message == 'must be an object (Widget), not a string'


def test_every_mistake_is_reported_at_once():
    def change(board):
        board['theme'] = 'dark'
        at(board, REQUEST)['display_type'] = 'bar'
        at(board, (*GROUP, 'widgets', 0, 'definition'))['type'] = 'sticky_note'

    assert [format_path(p.path) for p in problems_after(change)] == [
        '$.theme',
        '$.widgets[0].definition.widgets[0].definition.type',
        '$.widgets[0].definition.widgets[1].definition.requests[0].display_type',
    ]


def monitor():
    return {
        'version': 2,
        'created_at': '2026-11-23',
        'last_updated_at': '2026-11-23',
        'title': 'Usage data stale',
        'description': 'An endpoint has not been read for an hour.',
        'definition': {
            'name': 'Stale',
            'type': 'query alert',
            'query': 'min(last_10m):max:openai.check.data_lag{*} by {openai_account} > 3600',
            'message': 'Stale.',
            'tags': ['integration:openai'],
            'options': {'thresholds': {'critical': 3600, 'warning': 1800}, 'notify_no_data': False},
            'priority': None,
        },
        'tags': ['integration:openai'],
    }


def test_monitor_mistakes():
    assert recommended_monitor_problems(monitor()) == []
    assert monitor_problems(monitor()['definition']) == []
    m = monitor()
    m['definition']['type'] = 'metric_alert'
    m['definition']['options']['thresholds']['critcal'] = m['definition']['options']['thresholds'].pop('critical')
    m['definition']['options']['notify_no_data'] = 'no'
    problems = recommended_monitor_problems(m)
    assert [(format_path(p.path), p.message.split(' (')[0]) for p in problems] == [
        ('$.definition.options.notify_no_data', problems[0].message.split(' (')[0]),
        ('$.definition.options.thresholds.critcal', "unknown key 'critcal' in MonitorThresholds"),
        ('$.definition.type', "'metric_alert' is not a MonitorType value"),
    ], report(problems)
    assert 'bool' in problems[0].message
    assert "did you mean 'critical'?" in problems[1].message


def test_recommended_monitor_wrapper_mistakes():
    m = monitor()
    m['id'] = 123
    m['version'] = '2'
    del m['description']
    m['tags'].append(7)
    assert [str(p) for p in recommended_monitor_problems(m)] == [
        "$: missing required key 'description'",
        "$.id: unknown key 'id' in a recommended monitor",
        '$.tags[1]: must be a string, not a number',
        '$.version: must be a number, not a string',
    ]
    assert [str(p) for p in recommended_monitor_problems([m])] == [
        '$: must be an object (a recommended monitor), not an array'
    ]


def test_format_path():
    assert format_path(()) == '$'
    assert format_path(('widgets', 0, 'definition')) == '$.widgets[0].definition'
    assert format_path(('template_variable_presets', 'odd key', 2)) == '$.template_variable_presets["odd key"][2]'
