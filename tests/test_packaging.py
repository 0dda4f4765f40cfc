"""The package as the Agent receives it: generated files in step with their sources, and a wheel that holds
what `datadog-agent integration install` needs and nothing else."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from datadog_checks.openai.__about__ import __version__
from datadog_checks.openai.agent import MIN_BASE_VERSION
from datadog_checks.openai.catalogue import (
    CAN_CONNECT,
    ENDPOINTS,
    METRIC_NAMESPACE,
    SERVICE_CHECK,
    USAGE_ENDPOINTS,
    render_metadata_csv,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'datadog_checks' / 'openai'
SPEC = ROOT / 'assets' / 'configuration' / 'spec.yaml'
EXAMPLE = PACKAGE / 'data' / 'conf.yaml.example'

# The instance options this check defines itself (the rest come from the http and default templates).
OWN_OPTIONS = [
    'account_name',
    'admin_api_key',
    'api_base_url',
    'usage_endpoints',
    'collect_costs',
    'estimate_spend',
    'prices',
    'group_by',
    'bucket_width',
    'revision_window_hours',
    'costs_revision_window_days',
    'max_catch_up_hours',
    'resolve_project_names',
    'resolve_api_key_names',
    'resolve_user_emails',
    'names_refresh_interval',
    'collect_headroom',
    'utilization_window_minutes',
    'time_budget',
    'max_retries',
    'collect_audit_logs',
    'audit_logs_service',
    'audit_logs_lookback_hours',
    'audit_logs_without_state',
]
SYNC = 'run scripts/sync-generated.sh'


def spec_instance_options() -> list[dict]:
    spec = yaml.safe_load(SPEC.read_text())
    (config_file,) = spec['files']
    (instances,) = [o for o in config_file['options'] if o.get('template') == 'instances']
    return [o for o in instances['options'] if 'name' in o]


# The key read from a file: the model is valid without admin_api_key, whose default the tests then see.
KEY_FILE = {
    'reader': {'type': 'file', 'path': '/etc/datadog-agent/secrets/openai'},
    'writer': {'type': 'header', 'name': 'Authorization', 'value': 'Bearer <TOKEN>'},
}


def instance_model(**instance):
    from datadog_checks.openai.config_models.instance import InstanceConfig

    instance.setdefault('auth_token', KEY_FILE)
    return InstanceConfig.model_validate(instance, context={'configured_fields': frozenset(instance)})


# -- generated files --------------------------------------------------------------------------------


def test_metadata_csv_is_what_the_catalogue_renders():
    assert (ROOT / 'metadata.csv').read_text() == render_metadata_csv(), f'metadata.csv is stale: {SYNC}'


def test_metadata_csv_lists_every_metric_once_with_the_namespace():
    rows = list(csv.DictReader(io.StringIO((ROOT / 'metadata.csv').read_text())))
    names = [r['metric_name'] for r in rows]
    assert len(names) == len(set(names))
    assert all(n.startswith(METRIC_NAMESPACE + '.') for n in names)
    assert CAN_CONNECT.name in names


def test_spec_defines_the_documented_instance_options():
    assert [o['name'] for o in spec_instance_options()] == OWN_OPTIONS


def test_every_spec_option_is_a_field_of_the_generated_model():
    from datadog_checks.openai.config_models.instance import InstanceConfig
    from datadog_checks.openai.config_models.shared import SharedConfig

    fields = set(InstanceConfig.model_fields)
    assert set(OWN_OPTIONS) <= fields, f'config_models/ is stale: {SYNC}'
    try:
        from datadog_checks.dev.tooling.configuration import ConfigSpec
    except ImportError:  # pragma: no cover - datadog-checks-dev is in requirements-dev.txt
        return
    spec = ConfigSpec(SPEC.read_text(), source='openai', version=__version__)
    spec.load()
    assert not spec.errors
    sections = {o['name']: o for o in spec.data['files'][0]['options']}
    assert {o['name'] for o in sections['instances']['options']} == fields, f'config_models/ is stale: {SYNC}'
    assert {o['name'] for o in sections['init_config']['options']} == set(SharedConfig.model_fields)


def test_model_defaults_are_the_documented_ones():
    config = instance_model(account_name='prod')
    assert config.admin_api_key is None
    assert config.api_base_url == 'https://api.openai.com/v1'
    assert tuple(config.usage_endpoints) == USAGE_ENDPOINTS
    assert config.collect_costs is True
    assert config.group_by is None  # each endpoint's default comes from the catalogue
    assert config.bucket_width == '1h'
    assert config.revision_window_hours == 6
    assert config.costs_revision_window_days == 3
    assert config.max_catch_up_hours == 168
    assert config.resolve_project_names is True
    assert config.resolve_api_key_names is True
    assert config.resolve_user_emails is False
    assert config.names_refresh_interval == 3600
    assert config.time_budget == 240
    assert config.max_retries == 4
    assert config.min_collection_interval == 300


def test_model_keeps_group_by_as_a_mapping_of_lists():
    config = instance_model(account_name='prod', group_by={'completions': ['project_id', 'model']})
    assert dict(config.group_by) == {'completions': ('project_id', 'model')}


def test_spec_documents_each_endpoint_group_by_as_the_catalogue_has_it():
    (group_by,) = [o for o in spec_instance_options() if o['name'] == 'group_by']
    documented = {}
    names = []
    for line in group_by['description'].splitlines():
        m = re.match(r'^\s+([a-z_, ]+): ([a-z_, ]+?)(?: \[default: ([a-z_, ]+)\])?$', line)
        if m:
            names = m.group(1).split(', ')
            for name in names:
                documented[name] = (tuple(m.group(2).split(', ')), m.group(3))
            continue
        # The default on a line of its own, under the allowed values (ddev limits a description line's length).
        m = re.match(r'^\s+\[default: ([a-z_, ]+)\]$', line)
        if m:
            for name in names:
                documented[name] = (documented[name][0], m.group(1))
        names = []
    assert set(documented) == {e.name for e in ENDPOINTS}
    for endpoint in ENDPOINTS:
        allowed, default = documented[endpoint.name]
        assert allowed == endpoint.group_by, endpoint.name
        expected_default = None if endpoint.default_group_by == endpoint.group_by else endpoint.default_group_by
        assert (tuple(default.split(', ')) if default else None) == expected_default, endpoint.name


def test_example_config_is_ready_to_fill_in():
    example = yaml.safe_load(EXAMPLE.read_text())
    (instance,) = example['instances']
    assert instance == {
        'account_name': '<ACCOUNT_NAME>',
        'admin_api_key': '<OPENAI_ADMIN_KEY>',
        'min_collection_interval': 300,
    }
    assert 'usage_endpoints' in EXAMPLE.read_text()


# -- manifest and service checks ------------------------------------------------------------------------


def test_manifest_points_at_files_that_exist():
    manifest = json.loads((ROOT / 'manifest.json').read_text())
    assert manifest['manifest_version'] == '2.0.0'
    assert manifest['app_id'] == 'openai'
    integration = manifest['assets']['integration']
    assert integration['metrics']['prefix'] == METRIC_NAMESPACE + '.'
    assert integration['metrics']['check'] == CAN_CONNECT.name
    paths = [
        integration['configuration']['spec'],
        integration['metrics']['metadata_path'],
        integration['service_checks']['metadata_path'],
        *manifest['assets'].get('dashboards', {}).values(),
        *manifest['assets'].get('monitors', {}).values(),
    ]
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, f'manifest.json lists files that do not exist: {missing}'
    for p in paths:
        if p.endswith('.json'):
            json.loads((ROOT / p).read_text())


def test_service_checks_match_the_catalogue_and_the_manifest():
    manifest = json.loads((ROOT / 'manifest.json').read_text())
    (service_check,) = json.loads((ROOT / 'assets' / 'service_checks.json').read_text())
    assert service_check['check'] == SERVICE_CHECK
    assert service_check['integration'] == manifest['assets']['integration']['source_type_name']
    assert service_check['statuses'] == ['ok', 'warning', 'critical']
    assert service_check['groups'] == ['host', 'openai_account']


# -- the built distributions ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    pytest.importorskip('build', reason='`build` is in requirements-dev.txt')
    pytest.importorskip('hatchling', reason='`hatchling` is in requirements-dev.txt')
    if not (ROOT / 'README.md').is_file():
        pytest.skip('pyproject.toml names README.md as the long description, and it does not exist yet')
    out = tmp_path_factory.mktemp('dist')
    # The sdist first, then the wheel built from it, as `python -m build` does: both must be complete.
    proc = subprocess.run(
        [sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob('*.whl')
    (sdist,) = out.glob('*.tar.gz')
    return wheel, sdist


def test_wheel_holds_the_check_and_its_example_config_only(dists):
    wheel, _ = dists
    assert wheel.name == f'datadog_openai-{__version__}-py3-none-any.whl'
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f'datadog_openai-{__version__}.dist-info/METADATA').decode()
    assert 'datadog_checks/openai/data/conf.yaml.example' in names
    assert 'datadog_checks/openai/__init__.py' in names
    assert 'datadog_checks/openai/config_models/instance.py' in names
    assert not [n for n in names if n.startswith('tests/') or '/tests/' in n]
    # The namespace package belongs to datadog-checks-base; shipping it would overwrite the Agent's copy.
    assert 'datadog_checks/__init__.py' not in names
    assert not [n for n in names if not n.startswith(('datadog_checks/openai/', 'datadog_openai-'))]
    # The tests' own dependencies stay out: datadog-api-client validates the assets in the tests only.
    assert not [n for n in names if 'datadog_api_client' in n]
    requires = re.findall(r'^Requires-Dist: ([A-Za-z0-9_.-]+)', metadata, re.M)
    assert 'datadog-api-client' not in requires and 'datadog_api_client' not in requires, requires
    assert 'Requires-Python: >=3.12' in metadata
    # The floor the check enforces at load (agent.MIN_BASE_VERSION), declared where pip and the Agent read it.
    minimum = re.escape('.'.join(map(str, MIN_BASE_VERSION)))
    assert re.search(rf'^Requires-Dist: datadog-checks-base>={minimum}$', metadata, re.M)


def test_the_check_does_not_import_the_tests_dependencies():
    """datadog-api-client is in requirements-dev.txt, not in the Agent: the check must not need it."""
    for source in sorted(PACKAGE.rglob('*.py')):
        text = source.read_text()
        assert not re.search(r'^\s*(?:import|from)\s+datadog_api_client\b', text, re.M), source
    assert 'datadog-api-client' not in (ROOT / 'pyproject.toml').read_text()
    assert re.search(r'^datadog-api-client==\d+\.\d+\.\d+$', (ROOT / 'requirements-dev.txt').read_text(), re.M)


def test_sdist_leaves_the_tests_out(dists):
    _, sdist = dists
    with tarfile.open(sdist) as t:
        names = [n.split('/', 1)[1] for n in t.getnames() if '/' in n]
    assert 'datadog_checks/openai/data/conf.yaml.example' in names
    assert 'pyproject.toml' in names
    assert not [n for n in names if n.startswith('tests/')]


def test_the_repository_carries_the_openapi_extract_and_reads_nothing_beside_it():
    from tests.simulator.openapi import SPEC_PATH, load_spec

    assert SPEC_PATH.is_relative_to(ROOT), SPEC_PATH
    header = SPEC_PATH.read_text().splitlines()[:10]
    assert any(line.startswith('# Source repository: https://github.com/openai/openai-openapi') for line in header)
    assert any(re.match(r'# Source commit: [0-9a-f]{40} ', line) for line in header)
    # The coming sources need these paths: the copy is the regenerated extract, not the older one.
    paths = load_spec().document['paths']
    for path in (
        '/organization/audit_logs',
        '/organization/projects/{project_id}/rate_limits',
        '/organization/spend_limit',
        '/organization/projects/{project_id}/spend_limit',
    ):
        assert path in paths, path
    # A user's clone has nothing beside it: no file of the project may look for the workplace's shared folder.
    tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"shared[/'\", ]+openai-api|\.\./shared")
    offenders = [
        name
        for name in tracked
        if name.endswith(('.py', '.sh', '.toml', '.cfg', '.ini', '.yaml', '.yml', '.json', '/run', '/test', '/demo'))
        and (ROOT / name).is_file()
        and name != 'tests/test_packaging.py'
        and pattern.search((ROOT / name).read_text(errors='replace'))
    ]
    assert not offenders, offenders


# -- versions -------------------------------------------------------------------------------------------

CHANGELOG_HEADING = re.compile(r'^## (\d+)\.(\d+)\.(\d+) / (\d{4}-\d{2}-\d{2}|Unreleased)$', re.M)


def test_the_changelogs_newest_version_is_the_packages():
    # An unchanged version makes `integration install -w` of a rebuilt wheel a silent no-op: every change is versioned.
    text = (ROOT / 'CHANGELOG.md').read_text()
    headings = CHANGELOG_HEADING.findall(text)
    assert headings, 'CHANGELOG.md has no "## X.Y.Z / date" heading'
    versions = [tuple(map(int, h[:3])) for h in headings]
    assert '.'.join(map(str, versions[0])) == __version__
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    # Every other level-2 heading is a version: no loose "Unreleased" section collecting changes with no version.
    assert len(re.findall(r'^## ', text, re.M)) == len(headings)
    assert [h[3] for h in headings[1:]] == [h[3] for h in headings[1:] if h[3] != 'Unreleased'], (
        'only the newest may be unreleased'
    )


def test_no_function_of_the_check_is_longer_than_sixty_lines():
    import ast

    long = []
    for path in PACKAGE.rglob('*.py'):
        if path.parent.name == 'config_models' and path.name != 'validators.py':
            continue  # generated by ddev
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f'{path.relative_to(PACKAGE)}:{node.lineno} {node.name}')
    assert not long, long


def test_the_spec_holds_the_bounds_and_the_model_enforces_them_with_the_checks_messages():
    from datadog_checks.openai.config_models.instance import InstanceConfig

    options = {o['name']: o['value'] for o in spec_instance_options() if 'value' in o}
    # The usage endpoints the spec allows are the catalogue's, in its order.
    assert tuple(options['usage_endpoints']['items']['enum']) == USAGE_ENDPOINTS
    bounds = {
        name: {k: v for k, v in value.items() if k in ('enum', 'minimum', 'maximum', 'exclusiveMinimum')}
        for name, value in options.items()
    }
    bounds = {name: b for name, b in bounds.items() if b}
    assert set(bounds) == {
        'bucket_width',
        'revision_window_hours',
        'costs_revision_window_days',
        'max_catch_up_hours',
        'utilization_window_minutes',
        'time_budget',
        'max_retries',
        'audit_logs_lookback_hours',
        'audit_logs_without_state',
    }
    # Each bound is in the generated model, and a value past it gets the check's own message naming the option.
    metadata = {name: InstanceConfig.model_fields[name].metadata for name in bounds}
    assert metadata['revision_window_hours'][0].ge == bounds['revision_window_hours']['minimum'] == 1
    assert metadata['max_catch_up_hours'][0].le == bounds['max_catch_up_hours']['maximum']
    beyond = {
        'bucket_width': '2h',
        'revision_window_hours': 0,
        'costs_revision_window_days': 0,
        'max_catch_up_hours': bounds['max_catch_up_hours']['maximum'] + 1,
        'utilization_window_minutes': bounds['utilization_window_minutes']['maximum'] + 1,
        'time_budget': 0,
        'max_retries': -1,
        'audit_logs_lookback_hours': 19,
        'audit_logs_without_state': 'never',
    }
    from datadog_checks.base import ConfigurationError

    from datadog_checks.openai import OpenAICheck

    for name, value in beyond.items():
        instance = {'account_name': 'prod', 'admin_api_key': 'sk-admin-abc', name: value}
        check = OpenAICheck('openai', {}, [instance])
        with pytest.raises(ConfigurationError) as e:
            check.load_configuration_models()
        (line,) = str(e.value).splitlines()
        assert line.startswith(f'openai check, account prod: `{name}`'), line
