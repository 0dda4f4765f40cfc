"""What the check knows about the Agent that runs it: the oldest base it accepts, and `agent check` detection."""

import importlib
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
from datadog_checks.base import AgentCheck, ConfigurationError
from datadog_checks.base import __about__ as base_about

import datadog_checks.openai as package
from datadog_checks.openai.agent import MIN_AGENT_VERSION, MIN_BASE_VERSION

ROOT = Path(__file__).resolve().parent.parent
MINIMUM = '.'.join(map(str, MIN_BASE_VERSION))
INSTANCE = {'account_name': 'prod', 'admin_api_key': 'sk-admin-x', 'min_collection_interval': 300}


@pytest.fixture
def reload_package(monkeypatch):
    """Reload datadog_checks.openai as the Agent would load it, then restore the real one whatever happened."""
    real = package.OpenAICheck

    def reload(base_version):
        monkeypatch.setattr(base_about, '__version__', base_version)
        return importlib.reload(package)

    yield reload
    monkeypatch.undo()
    importlib.reload(package)
    assert package.OpenAICheck is real


@pytest.mark.parametrize('version', ['37.19.0', '37.0.0', '36.15.2'])
def test_an_older_base_refuses_every_instance_with_what_to_do(reload_package, version):
    loaded = reload_package(version)
    assert issubclass(loaded.OpenAICheck, AgentCheck)  # the Agent's loader still finds a check class
    with pytest.raises(ConfigurationError) as e:
        loaded.OpenAICheck('openai', {}, [INSTANCE])
    message = str(e.value)
    assert f'datadog-checks-base {MINIMUM} or later' in message
    assert f'Agent {MIN_AGENT_VERSION} and later' in message
    assert f'this Agent has datadog-checks-base {version}' in message
    assert 'Upgrade the Agent' in message


def test_a_base_without_the_modules_the_check_imports_still_gets_the_message(reload_package, monkeypatch):
    # Before 37.8.0 there is no datadog_checks.base.utils.format, which the client imports: loading the check's
    # modules would fail with an ImportError that the Agent does not even show.
    monkeypatch.setitem(sys.modules, 'datadog_checks.base.utils.format', None)
    for name in [m for m in sys.modules if m.startswith('datadog_checks.openai.') and m != 'datadog_checks.openai.agent']:
        monkeypatch.delitem(sys.modules, name)
    loaded = reload_package('37.7.0')
    assert 'datadog_checks.openai.check' not in sys.modules
    with pytest.raises(ConfigurationError, match='needs datadog-checks-base 37.20.0 or later'):
        loaded.OpenAICheck('openai', {}, [INSTANCE])


@pytest.mark.parametrize('version', [MINIMUM, '37.21.1', '38.5.0', '40.0.0rc1'])
def test_the_minimum_base_and_newer_load_the_check(reload_package, version):
    loaded = reload_package(version)
    assert loaded.OpenAICheck.__module__ == 'datadog_checks.openai.check'


def test_every_place_that_states_the_minimum_agrees():
    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert f'datadog-checks-base>={MINIMUM}' in pyproject['project']['dependencies']
    assert pyproject['project']['requires-python'] == '>=3.12'  # Agent 7.71 embeds 3.12, 7.72 and later 3.13
    dev = (ROOT / 'requirements-dev.txt').read_text()
    assert re.search(rf'^datadog-checks-base\[deps\]>={re.escape(MINIMUM)}$', dev, re.M)
    service_checks = json.loads((ROOT / 'assets' / 'service_checks.json').read_text())
    assert {s['agent_version'] for s in service_checks} == {f'{MIN_AGENT_VERSION}.0'}
    manifest = json.loads((ROOT / 'manifest.json').read_text())
    assert f'Requires Agent {MIN_AGENT_VERSION} or later' in manifest['tile']['description']
    readme = (ROOT / 'README.md').read_text()
    requirements = readme.split('### Requirements\n', 1)[1].split('\n###', 1)[0]
    assert f'Datadog Agent **{MIN_AGENT_VERSION} or later**' in requirements
    assert f'`datadog-checks-base` {MINIMUM}' in requirements
