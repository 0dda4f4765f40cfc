"""The sources of data the check reads, each one small module with one job (see base.py)."""

from __future__ import annotations

from ..catalogue import COSTS_ENDPOINT, ENDPOINTS_BY_NAME, PER_MINUTE_LIMITS
from .audit import AuditSource
from .base import Outcome, Run, Source, StateStore
from .costs import CostsSource
from .estimates import EstimateSource
from .limits import LimitsSource
from .names import NameSource
from .usage import UsageSource, Windows
from .utilization import UtilizationSource

__all__ = [
    'AuditSource',
    'CostsSource',
    'EstimateSource',
    'LimitsSource',
    'NameSource',
    'Outcome',
    'Run',
    'Source',
    'StateStore',
    'UsageSource',
    'UtilizationSource',
    'build_headroom_sources',
    'build_sources',
]


def build_sources(
    config, state: StateStore, log, stale_after: float | None, scrubber=None, tags=(), audit: bool = False
) -> list[Source]:
    """The data sources of one account, in the order a run reads them, from its validated configuration.

    `audit`: read the audit log (collect_audit_logs, on an Agent that ships logs)."""
    windows = Windows(config.revision_window_hours, config.max_catch_up_hours, config.costs_revision_window_days)
    group_by = config.group_by or {}

    def dims(endpoint) -> tuple[str, ...]:
        # An endpoint absent from group_by keeps the catalogue's default; an empty list means no split at all.
        return tuple(group_by[endpoint.name]) if endpoint.name in group_by else endpoint.default_group_by

    sources: list[Source] = []
    if audit:
        # First, with its own share of the time budget (see audit.BUDGET_SHARE): a slow usage catch-up cannot
        # starve it past the lookback, and it cannot take more than its share from the metrics.
        sources.append(
            AuditSource(
                state,
                log,
                scrubber,
                list(tags),
                config.audit_logs_service,
                config.audit_logs_lookback_hours,
                config.audit_logs_without_state,
                stale_after,
            )
        )
    for name in config.usage_endpoints:
        endpoint = ENDPOINTS_BY_NAME[name]
        sources.append(UsageSource(endpoint, config.bucket_width, dims(endpoint), windows, state, log, stale_after))
    if config.collect_costs:
        # Costs come in daily buckets only.
        sources.append(CostsSource(COSTS_ENDPOINT, '1d', dims(COSTS_ENDPOINT), windows, state, log, stale_after))
    if config.estimate_spend and (config.collect_costs or config.prices):
        # Last: it prices the increases the usage sources submitted, with what the costs source read of the bill.
        usage = [s for s in sources if isinstance(s, UsageSource) and not isinstance(s, CostsSource)]
        sources.append(EstimateSource(usage, config.costs_revision_window_days, config.prices, state, log))
    return sources


def build_headroom_sources(config, names: NameSource, log) -> list[Source]:
    """The headroom reads of one account, to run after the data sources (the limits build on the costs of the run).

    The limits first (read at the names refresh), then one per-minute read per usage endpoint with per-minute
    limits among those collected."""
    if not config.collect_headroom:
        return []
    limits = LimitsSource(names, log)
    sources: list[Source] = [limits]
    for name in config.usage_endpoints:
        if name in PER_MINUTE_LIMITS:
            sources.append(UtilizationSource(ENDPOINTS_BY_NAME[name], limits, config.utilization_window_minutes, log))
    return sources
