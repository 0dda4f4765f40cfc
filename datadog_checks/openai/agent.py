"""What the check needs to know about the Agent that runs it: whether its base is recent enough, and
whether this process is `agent check openai` rather than the running Agent.
"""

from __future__ import annotations

import os
import re
import sys

# datadog-checks-base honours an overridden `persistent_cache_id()` from 37.20.0 on (37.19.0 still keys the
# cache on the whole-config check id), and `datadog_checks.base.utils.format` only exists from 37.8.0. Agent
# 7.71 ships base 37.20.0 (Python 3.12); 7.72 moved to Python 3.13 and base 37.21.
MIN_BASE_VERSION = (37, 20, 0)
MIN_AGENT_VERSION = '7.71'

OLD_BASE_HELP = (
    'The openai check needs datadog-checks-base %s or later, which Agent %s and later ship; this Agent has '
    'datadog-checks-base %s. Upgrade the Agent. (On an older base the check would run, but rotating the admin key '
    'or changing tags would silently reset its saved state and lose the usage in between.)'
)


def _version_tuple(version: str) -> tuple[int, ...] | None:
    match = re.match(r'(\d+)\.(\d+)\.(\d+)', version.strip())
    return tuple(int(p) for p in match.groups()) if match else None


def base_version() -> str:
    from datadog_checks.base import __about__

    return __about__.__version__


def unsupported_base_message(version: str | None = None) -> str | None:
    """What to tell the operator when datadog-checks-base is too old for the check, else None."""
    version = base_version() if version is None else version
    found = _version_tuple(version)
    if found is None or found >= MIN_BASE_VERSION:
        return None
    return OLD_BASE_HELP % ('.'.join(map(str, MIN_BASE_VERSION)), MIN_AGENT_VERSION, version.strip())


def allow_secure_fields_on_older_bases() -> None:
    """Let the generated config models run on a base older than the ddev that generated them.

    ddev's models check the options it deems secure (auth_token, tls_ca_cert, tls_cert...) with
    `validation.security.check_field_trusted_provider`, which datadog-checks-base has only from 37.33.0:
    on an older base (Agent 7.71 ships 37.20.0) configuring `tls_ca_cert` for a proxy would fail every run.
    Those bases have no trusted-provider setting to enforce, so the check they lack is one that allows
    everything: it is supplied where, and only where, the base has none."""
    from datadog_checks.base.utils.models import validation

    try:
        validation.security  # noqa: B018
    except AttributeError:
        import types

        validation.security = types.SimpleNamespace(check_field_trusted_provider=lambda *args, **kwargs: None)


def unsupported_check_class(message: str) -> type:
    """A stand-in for the check on a base too old for it, which refuses every instance with `message`.

    The Agent's Python loader tries `datadog_checks.openai`, then a top-level `openai` module, and reports only
    the last import error ("No module named 'openai'"): failing the import would hide the reason. A class whose
    instances cannot be created puts the message under "Check Initialization Errors" in `agent status` instead.
    """
    from datadog_checks.base import AgentCheck, ConfigurationError

    class OpenAICheck(AgentCheck):
        def __init__(self, *args, **kwargs):
            raise ConfigurationError(message)

        def check(self, _):  # pragma: no cover - never instantiated
            pass

    return OpenAICheck


# The Agent's executable, by the names it runs under: `agent` (Linux and macOS: /opt/datadog-agent/bin/agent/agent;
# containers), `datadog-agent` (the link Linux and macOS packages put on PATH), `agent.exe` (Windows).
AGENT_EXECUTABLES = ('agent', 'datadog-agent', 'agent.exe', 'datadog-agent.exe')
# The Agent's global flags that take the next argument as their value (cmd/agent/command/command.go). Other flags
# take no value (`-n`, `--no-color`), an attached one (`--cfgpath=/etc/datadog-agent`, `-c/etc/datadog-agent`), or an
# optional one that must be attached (`--common-root=/opt/datadog-agent`).
AGENT_FLAGS_WITH_VALUE = ('-c', '--cfgpath', '-E', '--extracfgpath', '--sysprobecfgpath', '--fleetcfgpath')


def process_command_line() -> list[str]:
    """The command line of this process, which under the Agent is the Agent's (Python checks run inside it).

    psutil (shipped with the Agent) reads it on Linux, macOS and Windows; /proc is the fallback on Linux
    and sys.argv the last resort."""
    try:
        import psutil

        return list(psutil.Process().cmdline())
    except Exception:  # not installed (a bare development venv), or the OS refused
        pass
    try:
        with open(f'/proc/{os.getpid()}/cmdline', 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
    except OSError:
        return list(sys.argv)


def executable_name(path: str) -> str:
    # Windows paths use backslashes, which os.path.basename does not split on Linux and macOS.
    return re.split(r'[\\/]', path.strip().strip('"'))[-1].lower()


def is_agent_check_command(argv: list[str]) -> bool:
    """True for `agent [global flags] check ...`: the subcommand is the first argument that is not a flag or
    a flag's value."""
    if not argv or executable_name(argv[0]) not in AGENT_EXECUTABLES:
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg in AGENT_FLAGS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith('-'):
            return arg == 'check'
    return False


def running_under_agent_check_command(argv: list[str] | None = None) -> bool:
    """True inside `agent check <name>`, whose points go to a no-op forwarder."""
    return is_agent_check_command(process_command_line() if argv is None else argv)
