"""The instance's configuration, checked as a whole at load time.

The generated pydantic models (`config_models/`) check types and fill in defaults; this module checks
what only the catalogue knows (endpoint names, allowed group_by values, bucket widths) and how options
relate to each other, and reports every problem at once, each with what to write instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from datadog_checks.base import ConfigurationError

from .catalogue import BUCKET_SECONDS, COSTS_ENDPOINT, ENDPOINTS_BY_NAME, USAGE_ENDPOINTS, USAGE_MAX_LIMIT

# OpenAI keeps about a year of usage history; asking further back is a 400 (reporting_lookback_exceeded).
MAX_CATCH_UP_HOURS = 24 * 360
# Keys that can never read usage; other shapes are left for OpenAI to judge.
NON_ADMIN_KEY_PREFIXES = ('sk-proj-', 'sk-svcacct-', 'sk-None-')


@dataclass(frozen=True)
class Settings:
    account_name: str
    # Never in a repr: a settings object printed in a log or a traceback must not carry the key.
    admin_api_key: str | None = field(repr=False)
    api_base_url: str
    endpoints: tuple[str, ...]
    group_by: Mapping[str, tuple[str, ...]]
    bucket_width: str
    revision_window_hours: int
    costs_revision_window_days: int
    max_catch_up_hours: int
    resolve_project_names: bool
    resolve_api_key_names: bool
    resolve_user_emails: bool
    names_refresh_interval: int
    time_budget: float
    min_collection_interval: float
    max_retries: int
    tags: tuple[str, ...]

    @property
    def sends_key_in_clear(self) -> bool:
        """An http:// base URL to another host than this one: the key crosses the network unencrypted."""
        parts = urlsplit(self.api_base_url)
        return parts.scheme == 'http' and not is_loopback(parts.hostname or '')

    def width_of(self, endpoint: str) -> str:
        return '1d' if endpoint == COSTS_ENDPOINT.name else self.bucket_width


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ''
    except ValueError:
        return ''


def is_loopback(host: str) -> bool:
    if host.lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reads_a_file(auth_token: Any) -> bool:
    if not isinstance(auth_token, Mapping):
        return True  # the HTTP wrapper reports the malformed option itself
    reader, writer = auth_token.get('reader'), auth_token.get('writer')
    return (
        isinstance(reader, Mapping)
        and isinstance(writer, Mapping)
        and reader.get('type') == 'file'
        and writer.get('type') == 'header'
    )


def key_problem(key: str) -> str | None:
    """What is wrong with a key's characters (never the key itself), or None."""
    if any(c.isspace() or not c.isprintable() for c in key):
        return (
            'contains spaces, line breaks or control characters: it must be the key alone, as OpenAI shows it '
            '(sk-admin-...).'
        )
    if not key.isascii():
        return 'contains non-ASCII characters: it must be the key alone, as OpenAI shows it (sk-admin-...).'
    return None


def _list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    return list(value)


def build_settings(config: Any, instance: Mapping[str, Any]) -> Settings:
    """Validate the model built from `instance`; raise one ConfigurationError listing every problem."""
    problems: list[str] = []

    account_name = (getattr(config, 'account_name', None) or '').strip()
    if not account_name:
        problems.append('`account_name` is required: a short name for this OpenAI organization, e.g. `prod`.')

    # A key pasted or read from a file often ends with a newline; one sent that way is refused before
    # it leaves (requests' InvalidHeader), with the key in the error.
    admin_api_key = (getattr(config, 'admin_api_key', None) or '').strip() or None
    if not admin_api_key and not instance.get('auth_token'):
        problems.append(
            '`admin_api_key` is required (or an `auth_token` reader): an organization admin key, sk-admin-..., '
            'created by an organization owner at https://platform.openai.com/settings/organization/admin-keys.'
        )
    elif admin_api_key and instance.get('auth_token'):
        problems.append('Set `admin_api_key` or `auth_token`, not both: the check would not know which key to send.')
    elif admin_api_key and key_problem(admin_api_key):
        problems.append(f'`admin_api_key` {key_problem(admin_api_key)}')
    elif admin_api_key and admin_api_key.startswith(NON_ADMIN_KEY_PREFIXES):
        problems.append(
            '`admin_api_key` is a project or service account key (sk-proj-/sk-svcacct-). The usage and '
            'costs endpoints need an organization admin key: create one at '
            'https://platform.openai.com/settings/organization/admin-keys.'
        )

    auth_token = instance.get('auth_token')
    if auth_token and not _reads_a_file(auth_token):
        problems.append(
            '`auth_token` must have a `file` reader and a `header` writer (name: Authorization, value: '
            'Bearer <TOKEN>): an admin key is a static key, which the check reads from that file at every run.'
        )

    api_base_url = (getattr(config, 'api_base_url', None) or '').rstrip('/')
    if not api_base_url.startswith(('http://', 'https://')) or not _host_of(api_base_url):
        problems.append(
            f'`api_base_url` must be an http(s) URL such as https://api.openai.com/v1, not {api_base_url!r}.'
        )

    usage_endpoints = _list(getattr(config, 'usage_endpoints', None))
    unknown = [e for e in usage_endpoints if e not in USAGE_ENDPOINTS]
    if unknown:
        problems.append(
            f'`usage_endpoints` has unknown endpoints {", ".join(map(str, unknown))}; '
            f'allowed: {", ".join(USAGE_ENDPOINTS)}.'
        )
    endpoints = [e for e in USAGE_ENDPOINTS if e in usage_endpoints]
    if getattr(config, 'collect_costs', True):
        endpoints.append(COSTS_ENDPOINT.name)
    if not endpoints and not unknown:
        problems.append(
            '`usage_endpoints` is empty and `collect_costs` is false: the check has nothing to read. '
            'List the usage endpoints to read, or turn costs on.'
        )

    configured_group_by = getattr(config, 'group_by', None) or {}
    group_by = {}
    for name, dims in dict(configured_group_by).items():
        endpoint = ENDPOINTS_BY_NAME.get(name)
        if endpoint is None:
            problems.append(f'`group_by` names an unknown endpoint {name!r}; allowed: {", ".join(ENDPOINTS_BY_NAME)}.')
            continue
        dims = _list(dims)
        bad = [d for d in dims if d not in endpoint.group_by]
        if bad:
            problems.append(
                f'`group_by.{name}` has {", ".join(map(str, bad))}, which OpenAI does not accept for {name} '
                f'(it would refuse every request); allowed: {", ".join(endpoint.group_by)}.'
            )
        elif len(set(dims)) != len(dims):
            problems.append(f'`group_by.{name}` lists a dimension twice: {", ".join(dims)}.')
        else:
            # The API order is canonical, so reordering the option does not reset the saved state.
            group_by[name] = tuple(d for d in endpoint.group_by if d in dims)
    for name in endpoints:
        group_by.setdefault(name, ENDPOINTS_BY_NAME[name].default_group_by)

    bucket_width = getattr(config, 'bucket_width', None) or '1h'
    if bucket_width not in USAGE_MAX_LIMIT:
        problems.append(f'`bucket_width` must be one of {", ".join(USAGE_MAX_LIMIT)}, not {bucket_width!r}.')

    revision_window_hours = int(getattr(config, 'revision_window_hours', 6))
    if revision_window_hours < 1:
        problems.append('`revision_window_hours` must be at least 1: OpenAI revises buckets after they close.')
    costs_revision_window_days = int(getattr(config, 'costs_revision_window_days', 3))
    if costs_revision_window_days < 1:
        problems.append('`costs_revision_window_days` must be at least 1: a day\'s cost changes after the day.')
    max_catch_up_hours = int(getattr(config, 'max_catch_up_hours', 168))
    if not revision_window_hours <= max_catch_up_hours <= MAX_CATCH_UP_HOURS:
        problems.append(
            f'`max_catch_up_hours` must be between revision_window_hours ({revision_window_hours}) and '
            f'{MAX_CATCH_UP_HOURS} (OpenAI keeps about a year of history), not {max_catch_up_hours}.'
        )
    if bucket_width in BUCKET_SECONDS and BUCKET_SECONDS[bucket_width] > revision_window_hours * 3600:
        # A window shorter than a bucket would stop re-reading the bucket that just closed.
        problems.append(
            f'`revision_window_hours` ({revision_window_hours}) must cover at least one bucket of '
            f'`bucket_width` {bucket_width}: use 24 or more with 1d.'
        )

    time_budget = float(getattr(config, 'time_budget', 240))
    interval = float(instance.get('min_collection_interval') or getattr(config, 'min_collection_interval', 300) or 300)
    if time_budget <= 0:
        problems.append('`time_budget` must be a positive number of seconds.')
    elif time_budget >= interval:
        problems.append(
            f'`time_budget` ({time_budget:g}s) must be shorter than `min_collection_interval` ({interval:g}s), '
            f'so that a slow run ends before the next one is due.'
        )
    max_retries = int(getattr(config, 'max_retries', 4))
    if max_retries < 0:
        problems.append('`max_retries` must be 0 or more.')

    if problems:
        raise ConfigurationError('\n'.join(f'openai check, account {account_name or "?"}: {p}' for p in problems))

    return Settings(
        account_name=account_name,
        admin_api_key=admin_api_key,
        api_base_url=api_base_url,
        endpoints=tuple(endpoints),
        group_by=group_by,
        bucket_width=bucket_width,
        revision_window_hours=revision_window_hours,
        costs_revision_window_days=costs_revision_window_days,
        max_catch_up_hours=max_catch_up_hours,
        resolve_project_names=bool(getattr(config, 'resolve_project_names', True)),
        resolve_api_key_names=bool(getattr(config, 'resolve_api_key_names', True)),
        resolve_user_emails=bool(getattr(config, 'resolve_user_emails', False)),
        names_refresh_interval=int(getattr(config, 'names_refresh_interval', 3600)),
        time_budget=time_budget,
        min_collection_interval=interval,
        max_retries=max_retries,
        tags=tuple(_list(getattr(config, 'tags', None))),
    )
