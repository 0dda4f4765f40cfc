"""What the check needs to know about the Agent that runs it: whether its base is recent enough."""

from __future__ import annotations

import re

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
