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
    for name in [m for m in sys.modules if m.startswith('datadog_checks.openai.')]:
        if name != 'datadog_checks.openai.agent':
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


# == `agent check` detection ==============================================================================

WIN_AGENT = 'C:\\Program Files\\Datadog\\Datadog Agent\\bin\\agent.exe'


@pytest.mark.parametrize(
    'argv, expected',
    [
        # Linux and macOS: the binary, and the `datadog-agent` link the packages put on PATH.
        (['/opt/datadog-agent/bin/agent/agent', 'check', 'openai'], True),
        (['datadog-agent', 'check', 'openai'], True),
        (['/usr/bin/datadog-agent', 'check', 'openai', '--json'], True),
        (['/usr/local/bin/datadog-agent', 'check', 'openai'], True),
        (['agent', 'check', 'openai', '--check-rate', '--check-times', '2', '-l', 'debug'], True),
        # Global flags before the subcommand, with their values separate or attached.
        (['datadog-agent', '-c', '/etc/datadog-agent', 'check', 'openai'], True),
        (['agent', '--cfgpath', '/etc/datadog-agent', 'check', 'openai'], True),
        (['agent', '--cfgpath=/etc/datadog-agent', 'check', 'openai'], True),
        (['agent', '-c/etc/datadog-agent', 'check', 'openai'], True),
        (['agent', '-E', '/etc/datadog-agent/extra.yaml', '--extracfgpath', '/etc/more.yaml', 'check', 'openai'], True),
        (['agent', '--sysprobecfgpath', '/etc/sp', '--fleetcfgpath', '/etc/fleet', 'check', 'openai'], True),
        (['agent', '-n', '--common-root=/opt/datadog-agent', 'check', 'openai'], True),
        # A flag's value is not the subcommand, even when it reads `check`.
        (['agent', '-c', 'check', 'run'], False),
        (['agent', '--cfgpath', 'check', 'status'], False),
        # Windows: backslashes, agent.exe in any case, a quoted path.
        ([WIN_AGENT, 'check', 'openai'], True),
        ([WIN_AGENT, '-c', 'C:\\ProgramData\\Datadog', 'check', 'openai'], True),
        (['agent.exe', 'check', 'openai'], True),
        (['C:\\PROGRA~1\\Datadog\\DATADO~1\\bin\\Agent.EXE', 'check', 'openai'], True),
        ([f'"{WIN_AGENT}"', 'check', 'openai'], True),
        # The running Agent, and other subcommands.
        (['/opt/datadog-agent/bin/agent/agent', 'run', '-p', '/opt/datadog-agent/run/agent.pid'], False),
        (['agent', 'run'], False),
        ([WIN_AGENT], False),
        ([WIN_AGENT, 'run'], False),
        (['datadog-agent', 'configcheck'], False),
        (['datadog-agent', 'status'], False),
        (['datadog-agent', 'integration', 'install', '-w', 'check'], False),
        # Not the Agent at all.
        (['/opt/datadog-agent/embedded/bin/python3', '-m', 'pytest'], False),
        (['/usr/bin/python3', '/home/me/agent', 'check'], False),
        (['C:\\Tools\\myagent.exe', 'check', 'openai'], False),
        ([], False),
    ],
)
def test_the_agent_check_command_is_recognised_on_every_platform(argv, expected):
    from datadog_checks.openai.agent import is_agent_check_command

    assert is_agent_check_command(argv) is expected


# `command_line` (tests/conftest.py) makes psutil report the Agent's command line.


def test_the_command_line_comes_from_psutil(command_line):
    from datadog_checks.openai.agent import process_command_line

    command_line([WIN_AGENT, 'check', 'openai'])
    assert process_command_line() == [WIN_AGENT, 'check', 'openai']


def test_without_psutil_linux_falls_back_to_proc(monkeypatch):
    from datadog_checks.openai.agent import process_command_line

    proc = Path('/proc/self/cmdline')
    if not proc.exists():
        pytest.skip('no /proc here')
    monkeypatch.setitem(sys.modules, 'psutil', None)  # `import psutil` now raises ImportError
    expected = [a.decode() for a in proc.read_bytes().split(b'\0') if a]
    assert process_command_line() == expected


@pytest.mark.parametrize(
    'argv, saves',
    [
        # `sudo -u dd-agent datadog-agent check openai` on Linux (sudo execs the link), the binary itself.
        (['datadog-agent', 'check', 'openai'], False),
        (['/opt/datadog-agent/bin/agent/agent', 'check', 'openai'], False),
        # macOS: the link in /usr/local/bin, and the configuration directory of its package.
        (['/usr/local/bin/datadog-agent', 'check', 'openai'], False),
        (['datadog-agent', '-c', '/opt/datadog-agent/etc', 'check', 'openai'], False),
        # Windows: the command from an administrator PowerShell.
        ([WIN_AGENT, 'check', 'openai'], False),
        # The running Agent on each of them.
        (['/opt/datadog-agent/bin/agent/agent', 'run', '-p', '/opt/datadog-agent/run/agent.pid'], True),
        (['/opt/datadog-agent/bin/agent/agent', 'run', '-c', '/opt/datadog-agent/etc'], True),
        ([WIN_AGENT], True),
        ([WIN_AGENT, 'run'], True),
    ],
    ids=[
        'linux-link-check',
        'linux-binary-check',
        'macos-link-check',
        'macos-cfgpath-check',
        'windows-check',
        'linux-agent',
        'macos-agent',
        'windows-service',
        'windows-agent-run',
    ],
)
def test_the_check_decides_by_itself_whether_to_save_its_state(
    argv, saves, command_line, clock, sim, make_check, dd_run_check, state, aggregator
):
    command_line(['/opt/datadog-agent/bin/agent/agent', 'run'])
    agent = make_check(usage_endpoints=['completions'], collect_costs=False)
    dd_run_check(agent)
    saved = dict(state)
    assert saved
    clock.advance(3 * 3600)
    command_line(argv)
    second = make_check(usage_endpoints=['completions'], collect_costs=False)  # nothing set by hand
    dd_run_check(second)
    assert aggregator.metrics('openai.api.usage.completions.input_tokens')  # it shows what it would send
    assert (state != saved) is saves
    if not saves:
        # The running Agent, restarted after `agent check`, still sends the usage the command showed.
        shown = sorted(
            (m.value, sorted(m.tags)) for m in aggregator.metrics('openai.api.usage.completions.input_tokens')
        )
        aggregator.reset()
        command_line(['/opt/datadog-agent/bin/agent/agent', 'run'])
        restarted = make_check(usage_endpoints=['completions'], collect_costs=False)
        dd_run_check(restarted)
        sent = sorted(
            (m.value, sorted(m.tags)) for m in aggregator.metrics('openai.api.usage.completions.input_tokens')
        )
        assert sent == shown
