"""The instance's configuration rules beyond types, with a message that says what to write instead.

Defaults, enums, minimums and maximums live in assets/configuration/spec.yaml, from which ddev generates
the model: the field validators here read those bounds from the model's fields, so that the message names
them without repeating them. What only the catalogue knows (which group_by each endpoint accepts) and how
options relate to each other (cross-field rules) is checked here too. `problems()` turns a failed
validation into one line per problem, every problem at once.
"""

from __future__ import annotations

import ipaddress
import typing
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import urlsplit

from pydantic import ValidationError

from ..catalogue import BUCKET_SECONDS, ENDPOINTS_BY_NAME

# Keys that can never read usage; other shapes are left for OpenAI to judge.
NON_ADMIN_KEY_PREFIXES = ('sk-proj-', 'sk-svcacct-', 'sk-None-')
ADMIN_KEYS_PAGE = 'https://platform.openai.com/settings/organization/admin-keys'
REQUIRED = {'account_name': '`account_name` is required: a short name for this OpenAI organization, e.g. `prod`.'}
# What each bound of the spec is for, in the message that enforces it.
WHY = {
    'revision_window_hours': 'OpenAI revises buckets after they close.',
    'costs_revision_window_days': 'a day\'s cost changes after the day.',
    'max_catch_up_hours': 'OpenAI keeps about a year of history',
}


# -- what the model's fields say -------------------------------------------------------------------------


def _bound(field, name: str):
    return next((getattr(m, name) for m in field.metadata if hasattr(m, name)), None)


def _literals(annotation) -> tuple:
    """The values of the Literal inside Optional[...] or Optional[tuple[Literal[...], ...]]."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = _literals(arg)
        if found:
            return found
    return ()


def _field(name: str):
    from .instance import InstanceConfig

    return InstanceConfig.model_fields[name]


# -- one field at a time (called with the configured value, before pydantic checks its type) ------------


def instance_account_name(value, **kwargs):
    value = value.strip() if isinstance(value, str) else value
    if not value:
        raise ValueError(REQUIRED['account_name'])
    return value


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


def instance_admin_api_key(value, **kwargs):
    if not isinstance(value, str):
        return value
    # A key pasted or read from a file often ends with a newline; one sent that way is refused before it
    # leaves (requests' InvalidHeader), with the key in the error.
    key = value.strip()
    if not key:
        return None
    problem = key_problem(key)
    if problem:
        raise ValueError(f'`admin_api_key` {problem}')
    if key.startswith(NON_ADMIN_KEY_PREFIXES):
        raise ValueError(
            '`admin_api_key` is a project or service account key (sk-proj-/sk-svcacct-). The usage and costs '
            f'endpoints need an organization admin key: create one at {ADMIN_KEYS_PAGE}.'
        )
    return key


def instance_auth_token(value, **kwargs):
    if isinstance(value, Mapping):
        reader, writer = value.get('reader'), value.get('writer')
        if not (
            isinstance(reader, Mapping)
            and isinstance(writer, Mapping)
            and reader.get('type') == 'file'
            and writer.get('type') == 'header'
        ):
            raise ValueError(
                '`auth_token` must have a `file` reader and a `header` writer (name: Authorization, value: '
                'Bearer <TOKEN>): an admin key is a static key, which the check reads from that file at every run.'
            )
    return value


def instance_api_base_url(value, **kwargs):
    url = value.rstrip('/') if isinstance(value, str) else value
    if not isinstance(url, str) or not url.startswith(('http://', 'https://')) or not host_of(url):
        raise ValueError(f'`api_base_url` must be an http(s) URL such as https://api.openai.com/v1, not {url!r}.')
    return url


def instance_usage_endpoints(value, field, **kwargs):
    allowed = _literals(field.annotation)
    names = [value] if isinstance(value, str) else list(value or ())
    unknown = [e for e in names if e not in allowed]
    if unknown:
        raise ValueError(
            f'`usage_endpoints` has unknown endpoints {", ".join(map(str, unknown))}; allowed: {", ".join(allowed)}.'
        )
    # In the catalogue's order, which is also the order the endpoints are read in.
    return [e for e in allowed if e in names]


def instance_group_by(value, **kwargs):
    if not isinstance(value, Mapping):
        return value
    problems = []
    canonical = {}
    for name, dims in value.items():
        endpoint = ENDPOINTS_BY_NAME.get(name)
        if endpoint is None:
            problems.append(f'`group_by` names an unknown endpoint {name!r}; allowed: {", ".join(ENDPOINTS_BY_NAME)}.')
            continue
        dims = [dims] if isinstance(dims, str) else list(dims or ())
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
            canonical[name] = [d for d in endpoint.group_by if d in dims]
    if problems:
        raise ValueError('\n'.join(problems))
    return canonical


def instance_prices(value, **kwargs):
    if not isinstance(value, Mapping):
        return value
    from ..sources.estimates import CONFIG_KINDS, TIERS, configured_price_key

    problems = []
    for model, kinds in value.items():
        if not isinstance(kinds, Mapping):
            problems.append(f'`prices.{model}` must map kinds (input, cached_input, output...) to dollars per million.')
            continue
        for kind, price in kinds.items():
            if configured_price_key(str(model), str(kind)) is None:
                problems.append(
                    f'`prices.{model}.{kind}` is not a kind of price; use one of {", ".join(CONFIG_KINDS)}, '
                    f'optionally prefixed with {"_, ".join(TIERS)}_ (e.g. batch_input).'
                )
            elif isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price < float('inf'):
                problems.append(f'`prices.{model}.{kind}` must be a number of dollars per million, 0 or more.')
    if problems:
        raise ValueError('\n'.join(problems))
    return value


def _one_of(name: str, value, field):
    """An option whose spec gives an enum: the message lists what it may be."""
    allowed = _literals(field.annotation)
    if value not in allowed:
        raise ValueError(f'`{name}` must be one of {", ".join(allowed)}, not {value!r}.')
    return value


def instance_bucket_width(value, field, **kwargs):
    return _one_of('bucket_width', value, field)


def _at_least(name: str, value, field):
    least = _bound(field, 'ge')
    if isinstance(value, (int, float)) and least is not None and value < least:
        raise ValueError(f'`{name}` must be at least {least}: {WHY[name]}')
    return value


def instance_revision_window_hours(value, field, **kwargs):
    return _at_least('revision_window_hours', value, field)


def instance_costs_revision_window_days(value, field, **kwargs):
    return _at_least('costs_revision_window_days', value, field)


def instance_max_catch_up_hours(value, field, **kwargs):
    most = _bound(field, 'le')
    if isinstance(value, (int, float)) and most is not None and value > most:
        raise ValueError(_catch_up_message(_field('revision_window_hours').default or 6, value))
    return value


def instance_utilization_window_minutes(value, field, **kwargs):
    least, most = _bound(field, 'ge'), _bound(field, 'le')
    if isinstance(value, int) and not isinstance(value, bool) and not least <= value <= most:
        raise ValueError(
            f'`utilization_window_minutes` must be between {least} and {most} (a day of minute buckets), not {value}.'
        )
    return value


def instance_time_budget(value, field, **kwargs):
    if isinstance(value, (int, float)) and value <= _bound(field, 'gt'):
        raise ValueError('`time_budget` must be a positive number of seconds.')
    return value


def instance_max_retries(value, field, **kwargs):
    if isinstance(value, int) and value < _bound(field, 'ge'):
        raise ValueError(f'`max_retries` must be {_bound(field, "ge")} or more.')
    return value


def instance_audit_logs_lookback_hours(value, field, **kwargs):
    least, most = _bound(field, 'ge'), _bound(field, 'le')
    if isinstance(value, int) and not least <= value <= most:
        raise ValueError(
            f'`audit_logs_lookback_hours` must be between {least} and {most}: Datadog refuses logs more than 18 hours '
            f'old, not {value}.'
        )
    return value


def instance_audit_logs_without_state(value, field, **kwargs):
    return _one_of('audit_logs_without_state', value, field)


def _catch_up_message(revision_window_hours, value) -> str:
    most = _bound(_field('max_catch_up_hours'), 'le')
    return (
        f'`max_catch_up_hours` must be between revision_window_hours ({revision_window_hours}) and {most} '
        f'({WHY["max_catch_up_hours"]}), not {value}.'
    )


# -- options together -----------------------------------------------------------------------------------


def _key_or_token(c) -> str | None:
    if not c.admin_api_key and not c.auth_token:
        return (
            '`admin_api_key` is required (or an `auth_token` reader): an organization admin key, sk-admin-..., '
            f'created by an organization owner at {ADMIN_KEYS_PAGE}.'
        )
    if c.admin_api_key and c.auth_token:
        return 'Set `admin_api_key` or `auth_token`, not both: the check would not know which key to send.'
    return None


def _something_to_read(c) -> str | None:
    if not c.usage_endpoints and not c.collect_costs and not c.collect_audit_logs:
        return (
            '`usage_endpoints` is empty and `collect_costs` and `collect_audit_logs` are false: the check has '
            'nothing to read. List the usage endpoints to read, or turn costs or the audit log on.'
        )
    return None


def _catch_up_covers_the_window(c) -> str | None:
    if c.max_catch_up_hours < c.revision_window_hours:
        return _catch_up_message(c.revision_window_hours, c.max_catch_up_hours)
    return None


def _window_covers_a_bucket(c) -> str | None:
    # A window shorter than a bucket would stop re-reading the bucket that just closed.
    if BUCKET_SECONDS[c.bucket_width] > c.revision_window_hours * 3600:
        return (
            f'`revision_window_hours` ({c.revision_window_hours}) must cover at least one bucket of '
            f'`bucket_width` {c.bucket_width}: use 24 or more with 1d.'
        )
    return None


def _budget_below_the_interval(c) -> str | None:
    if c.time_budget >= c.min_collection_interval:
        return (
            f'`time_budget` ({c.time_budget:g}s) must be shorter than `min_collection_interval` '
            f'({c.min_collection_interval:g}s), so that a slow run ends before the next one is due.'
        )
    return None


# Each rule with the options it reads: a rule is not judged on an option that is itself wrong.
CROSS_FIELD_RULES: tuple[tuple[tuple[str, ...], Callable[[Any], str | None]], ...] = (
    (('admin_api_key', 'auth_token'), _key_or_token),
    (('usage_endpoints', 'collect_costs', 'collect_audit_logs'), _something_to_read),
    (('max_catch_up_hours', 'revision_window_hours'), _catch_up_covers_the_window),
    (('bucket_width', 'revision_window_hours'), _window_covers_a_bucket),
    (('time_budget', 'min_collection_interval'), _budget_below_the_interval),
)


class CrossFieldProblems(ValueError):
    def __init__(self, problems: list[tuple[tuple[str, ...], str]]):
        super().__init__('\n'.join(message for _, message in problems))
        self.problems = problems


def check_instance(model):
    found = [(options, message) for options, rule in CROSS_FIELD_RULES if (message := rule(model))]
    if found:
        raise CrossFieldProblems(found)
    return model


# -- the operator's message ---------------------------------------------------------------------------


def problems(error: ValidationError, validate_without: Callable[[set[str]], ValidationError | None]) -> list[str]:
    """One line per problem of a configuration that did not validate, field by field first.

    pydantic judges options together only once every option is valid on its own: `validate_without` validates
    the configuration again without the options found wrong, to report the cross-field problems among the
    others at once too."""
    lines, wrong = _field_problems(error)
    if wrong:
        again = validate_without(wrong)
        if again is not None:
            lines += [m for options, m in _cross_field(again) if not wrong.intersection(options)]
    else:
        lines += [m for _, m in _cross_field(error)]
    return lines


def _field_problems(error: ValidationError) -> tuple[list[str], set[str]]:
    lines, wrong = [], set()
    for e in error.errors():
        if not e['loc']:
            continue
        option = str(e['loc'][0])
        wrong.add(option)
        cause = (e.get('ctx') or {}).get('error')
        if isinstance(cause, ValueError) and not isinstance(cause, CrossFieldProblems):
            lines.extend(str(cause).splitlines())
        elif e['type'] == 'missing' and option in REQUIRED:
            lines.append(REQUIRED[option])
        else:
            where = '.'.join(str(part) for part in e['loc'])
            lines.append(f'`{where}`: {e["msg"]}.')
    return lines, wrong


def _cross_field(error: ValidationError) -> list[tuple[tuple[str, ...], str]]:
    found = []
    for e in error.errors():
        cause = (e.get('ctx') or {}).get('error')
        if not e['loc'] and isinstance(cause, CrossFieldProblems):
            found.extend(cause.problems)
    return found


def host_of(url: str) -> str:
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
