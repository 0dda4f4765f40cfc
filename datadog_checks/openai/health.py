"""The check's own health: what its requests did, how far behind the data is, and the run's verdict.

CRITICAL when no source of data could be read at all, WARNING when some could not or OpenAI rate limited
requests, OK otherwise. The verdict goes to the `openai.can_connect` service check and, as 0 or 1, to the
`openai.check.can_connect` gauge.
"""

from __future__ import annotations

from datadog_checks.base import AgentCheck

from .catalogue import API_LATENCY, API_REQUESTS, API_RETRIES, CAN_CONNECT, DATA_LAG, RUN_DURATION, SERVICE_CHECK
from .client import AuthError, RequestStats
from .sources.base import Outcome


def verdict(outcomes: list[Outcome], expected: list[str], rate_limited: bool) -> tuple[int, str]:
    """The status and message of a run whose data sources gave `outcomes` (of the `expected` ones)."""
    failed = [o for o in outcomes if not o.complete]
    if len(failed) == len(outcomes):
        auth = next((o.error for o in failed if isinstance(o.error, AuthError)), None)
        if auth is not None:
            return AgentCheck.CRITICAL, auth.message
        if failed:
            return AgentCheck.CRITICAL, f'No endpoint could be read: {failed[0].error.message}'
        return (
            AgentCheck.CRITICAL,
            'No endpoint could be read: every endpoint failed with an unexpected error (see the warnings).',
        )
    tried = {o.source for o in outcomes}
    skipped = [name for name in expected if name not in tried]
    if failed or rate_limited or skipped:
        parts = [f'{o.source}: {o.error.message}' for o in failed]
        parts.extend(f'{name}: not read this run (see the warnings)' for name in skipped)
        if rate_limited:
            parts.append('OpenAI rate limited some requests; the check retried within its time budget')
        return AgentCheck.WARNING, '; '.join(parts)
    return AgentCheck.OK, ''


def report(check, stats: RequestStats, lags: dict[str, float], status: int, message: str, duration: float) -> None:
    """Submit the run's health through `check` (its count, gauge and service_check)."""
    tags = check.base_tags
    for (endpoint, code), n in stats.calls.items():
        check.count(API_REQUESTS.name, n, tags=tags + [f'endpoint:{endpoint}', f'status_code:{code}'])
    for endpoint, latencies in stats.latency.items():
        check.gauge(API_LATENCY.name, sum(latencies) / len(latencies), tags=tags + [f'endpoint:{endpoint}'])
    for (endpoint, reason), n in stats.retries.items():
        check.count(API_RETRIES.name, n, tags=tags + [f'endpoint:{endpoint}', f'reason:{reason}'])
    for endpoint, lag in lags.items():
        check.gauge(DATA_LAG.name, lag, tags=tags + [f'endpoint:{endpoint}'])
    check.gauge(CAN_CONNECT.name, 0 if status == AgentCheck.CRITICAL else 1, tags=tags)
    check.service_check(SERVICE_CHECK, status, tags=tags, message=message)
    check.gauge(RUN_DURATION.name, duration, tags=tags)
