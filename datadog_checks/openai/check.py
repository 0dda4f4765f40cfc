"""The `openai` Agent check: one instance is one OpenAI organization (an "account")."""

from __future__ import annotations

import hashlib
import time

from datadog_checks.base import AgentCheck
from datadog_checks.base.errors import CheckException
from datadog_checks.base.utils.common import to_native_string

from .agent import running_under_agent_check_command
from .catalogue import (
    API_LATENCY,
    API_REQUESTS,
    API_RETRIES,
    CAN_CONNECT,
    CONTEXTS,
    DATA_LAG,
    ENDPOINTS_BY_NAME,
    MONTH_TO_DATE,
    NAME_TAGS,
    PROJECT_MONTH_TO_DATE,
    RUN_DURATION,
    SERIES,
    SERVICE_CHECK,
    STATE_SIZE,
)
from .client import ACCEPT_ENCODING, AuthError, OpenAIClient, RequestRefused, TimeBudget
from .collector import SEP, EndpointCollector, EndpointResult
from .config_models import ConfigMixin
from .ledger import Ledger
from .names import NameResolver
from .scrub import Scrubber, install_log_filter
from .settings import build_settings, key_problem
from .tags import tag

# A cluster check's state older than this many collection intervals is not caught up from.
STALE_CLUSTER_STATE_RUNS = 3


class OpenAICheck(AgentCheck, ConfigMixin):
    __NAMESPACE__ = ''

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        # Injectable so that tests and the local runner can drive time.
        self.clock = time.time
        self.monotonic = time.monotonic
        self.sleep = time.sleep
        self.settings = None
        self.base_tags: list[str] = []
        self.names: NameResolver | None = None
        # Group-bys the live API refused, dropped for the life of the check (see catalogue.refused_group_by).
        self.refused_group_by: dict[str, tuple[str, ...]] = {}
        self.last_run_at: float | None = None
        # The ledgers as last saved, kept between runs so a run does not parse its own state back.
        self.ledgers: dict[str, Ledger] = {}
        # Within a run: tags by (dims, series key), and by (dimension, value).
        self._tag_cache: dict[tuple, list[str]] = {}
        self._dim_tags: dict[tuple[str, str], tuple[str, ...]] = {}
        # `agent check openai` shares the running Agent's state but sends nothing: saving the state
        # there would mark as submitted usage that never reached Datadog.
        self.save_state = not running_under_agent_check_command()
        # Every key the check sent, for scrubbing what it says; see scrub.py.
        self.scrubber = Scrubber()
        # The standard `auth_token` option, read by the check itself at every run (see take_auth_token).
        self.key_file = None
        self.has_key = False
        self.check_initializations.append(self.load_settings)

    def persistent_cache_id(self) -> str:
        # The saved state follows the account, not the whole config: rotating the admin key or changing
        # tags must not reset it (that would re-baseline and drop the usage in between).
        account = str(self.instance.get('account_name', ''))
        return 'openai_' + hashlib.sha256(account.encode()).hexdigest()[:16]

    def load_settings(self) -> None:
        self.settings = build_settings(self.config, self.instance)
        install_log_filter(self.log.logger, self.scrubber)
        # The check decodes responses itself, with a bound on their size: only encodings it can bound.
        self.http.options['headers']['Accept-Encoding'] = ACCEPT_ENCODING
        self.key_file = self.take_auth_token()
        if self.settings.admin_api_key:
            self.use_key(self.settings.admin_api_key)
        self.base_tags = [f'openai_account:{self.settings.account_name}', *self.settings.tags]
        # Names only for ids some endpoint is grouped by: listing every project's API keys for no tag would
        # cost a request per project and hour.
        grouped = {dim for dims in self.settings.group_by.values() for dim in dims}
        self.names = NameResolver(
            self.settings.resolve_project_names and 'project_id' in grouped,
            self.settings.resolve_api_key_names and 'api_key_id' in grouped,
            self.settings.resolve_user_emails and 'user_id' in grouped,
            self.settings.names_refresh_interval,
            self.clock,
        )

    def take_auth_token(self):
        """Take the `auth_token` option away from the HTTP wrapper, to read the key here at every run.

        Left to the wrapper, the file is read once and again only after a failed request, which the
        wrapper then sends a second time at once: a 429 is repeated before the check can honour its
        Retry-After, and every error costs two requests. And the key it reads is never registered, so
        it is not scrubbed."""
        handler = getattr(self.http, 'auth_token_handler', None)
        # build_settings made sure of a file reader and a header writer.
        self.http.auth_token_handler = None
        return handler

    def use_key(self, key: str) -> None:
        self.has_key = True
        self.register_secret(key)
        self.scrubber.add(key)
        if self.key_file is not None:
            self.key_file.writer.write(key, default_options=self.http.options)
        else:
            self.http.options['headers']['Authorization'] = f'Bearer {key}'

    def refresh_key(self) -> str | None:
        """Read the `auth_token` file (a key rotated by a sidecar is used from the next run on). Returns
        what went wrong, or None."""
        if self.key_file is None:
            return None
        path = (self.instance.get('auth_token') or {}).get('reader', {}).get('path')
        try:
            # `error` makes the base reader read the file again instead of returning its cached key.
            key = self.key_file.reader.read(error='the check reads the key at every run')
        except Exception as e:
            return f'Cannot read the admin key from the auth_token file {path}: {self.scrubber.detail(e)}'
        key = (key or '').strip()
        if not key:
            return f'The auth_token file {path} holds no key: it must contain the admin key (sk-admin-...) alone.'
        problem = key_problem(key)
        if problem:
            return f'The key in the auth_token file {path} {problem}'
        self.use_key(key)
        return None

    def warning(self, warning_message, *args, **kwargs):
        # Warnings reach `agent status` and `agent check` unscrubbed by the base class: scrub them here.
        message = to_native_string(warning_message)
        if args:
            message = message % args
        super().warning('%s', self.scrubber.message(message))

    # -- a run ---------------------------------------------------------------------------------

    def check(self, _):
        started = self.monotonic()
        now = self.clock()
        if self.paced(now):
            return
        if self.settings.sends_key_in_clear:
            self.warning(
                'api_base_url %s is plain http to another host: the admin key crosses the network unencrypted. '
                'Use https://; plain http is for a proxy or a simulator on this host.',
                self.settings.api_base_url,
            )
        problem = self.refresh_key()
        if problem:
            self.warning(problem)
            if not self.has_key:
                # No key was ever read: there is nothing to send. Otherwise the last key read goes on.
                self.gauge(CAN_CONNECT.name, 0, tags=self.base_tags)
                message = self.scrubber.message(problem)
                self.service_check(SERVICE_CHECK, AgentCheck.CRITICAL, tags=self.base_tags, message=message)
                raise CheckException(message)
        client = OpenAIClient(
            self.http,
            self.settings.api_base_url,
            TimeBudget(self.settings.time_budget, self.monotonic),
            self.settings.max_retries,
            self.log,
            sleep=self.sleep,
            monotonic=self.monotonic,
            scrubber=self.scrubber,
        )
        self.refresh_names(client)
        results = []
        try:
            for endpoint in self.settings.endpoints:
                result = self.collect_or_skip(endpoint, client, now)
                if result is None:
                    continue
                results.append(result)
                if isinstance(result.error, AuthError) and result.error.status == 401:
                    break  # a rejected key is rejected everywhere: do not hammer the other endpoints
        finally:
            # Tags are built once per series and run: kept between runs, they would hold a list per series
            # for nothing, and names refreshed meanwhile would not reach them.
            self._tag_cache.clear()
            self._dim_tags.clear()
        self.report_health(client, results, now, started)

    def collect_or_skip(self, endpoint: str, client: OpenAIClient, now: float) -> EndpointResult | None:
        try:
            return self.collect(endpoint, client, now)
        except Exception as e:
            # A bug or a response shape nobody foresaw must not cost the other endpoints their run.
            self.ledgers.pop(endpoint, None)
            self.log.debug('Unexpected error collecting %s', endpoint, exc_info=True)
            self.warning(
                '%s: unexpected error (%s: %s); skipped this run, the other endpoints go on. Please report it '
                'with the Agent log at debug level.',
                endpoint,
                type(e).__name__,
                self.scrubber.detail(e),
            )
            return None

    def paced(self, now: float) -> bool:
        """Skip a run that comes too soon after the previous one.

        Without `min_collection_interval` in conf.yaml the Agent runs a check every 15 seconds, which
        would poll OpenAI 20 times as often as its data changes and invite rate limiting. The slack
        keeps the Agent's own scheduling jitter from skipping every other run.
        """
        interval = self.settings.min_collection_interval
        if self.last_run_at is not None and now - self.last_run_at < 0.9 * interval:
            self.log.debug(
                'Skipping this run: the previous one was %.0fs ago (interval %ss)', now - self.last_run_at, interval
            )
            return True
        self.last_run_at = now
        return False

    def refresh_names(self, client: OpenAIClient) -> None:
        if self.names.due():
            for problem in self.names.refresh(client):
                self.log.warning(
                    '%s Metrics keep their ids; names follow at the next refresh.', self.scrubber.message(problem)
                )

    def collect(self, name: str, client: OpenAIClient, now: float) -> EndpointResult:
        endpoint = ENDPOINTS_BY_NAME[name]
        result = self.run_collector(name, client, now)
        refused = [d for d in endpoint.refused_group_by if d in result.dims]
        if isinstance(result.error, RequestRefused) and refused:
            self.refused_group_by[name] = tuple(refused)
            self.warning(
                'OpenAI refused group_by %s for %s (%s). Collecting %s without it; remove it from group_by.%s.',
                ', '.join(refused),
                name,
                result.error.message,
                name,
                name,
            )
            result = self.run_collector(name, client, now)
        self.commit(result, now)
        return result

    def run_collector(self, name: str, client: OpenAIClient, now: float) -> EndpointResult:
        endpoint = ENDPOINTS_BY_NAME[name]
        refused = self.refused_group_by.get(name, ())
        group_by = tuple(d for d in self.settings.group_by[name] if d not in refused)
        collector = EndpointCollector(endpoint, self.settings.width_of(name), group_by, self.settings)
        return collector.run(client, self.load_ledger(name, now), now)

    def commit(self, result: EndpointResult, now: float) -> None:
        """Save the ledger, then submit what it records as submitted: never the other way round."""
        name = result.endpoint.name
        window = result.window
        if result.error is not None:
            self.warning('%s: %s', name, result.error.message)
        if window.lost:
            self.warning(
                '%s: usage from %s to %s was not collected: the check was away longer than max_catch_up_hours '
                '(%s). Raise it to catch up further after an outage.',
                name,
                _iso(window.lost[0]),
                _iso(window.lost[1]),
                self.settings.max_catch_up_hours,
            )
        if result.malformed:
            self.warning('%s: %s malformed rows or buckets were skipped.', name, result.malformed)
        if window.baseline:
            if not result.complete:
                # Half a baseline would make the next run submit the unread buckets' past usage.
                self.report_contexts(result, self.submit_levels(result))
                return
            self.log.info(
                '%s: no saved state for this account; recorded a baseline of the last %s buckets, so usage from '
                'before now is not submitted. From the next run on, every increase is.',
                name,
                len(result.ledger.buckets),
            )
        try:
            state = result.ledger.dumps()
            if self.save_state:
                self.write_persistent_cache(f'ledger_{name}', state)
        except Exception as e:
            # The ledger in memory already counts this run's increases as submitted: forget it, so the
            # next run starts again from the last state that was saved.
            self.ledgers.pop(name, None)
            self.warning(
                '%s: could not save the state (%s); nothing submitted this run, the next run retries.',
                name,
                self.scrubber.detail(e),
            )
            return
        self.ledgers[name] = result.ledger
        self.gauge(STATE_SIZE.name, len(state), tags=self.base_tags + [f'endpoint:{name}'])
        # The ledger tracks flows only: an endpoint of levels (vector store bytes) has its series in the gauges.
        series = result.ledger.distinct_series if result.endpoint.flows else len({key for _, _, key in result.gauges})
        self.gauge(SERIES.name, series, tags=self.base_tags + [f'endpoint:{name}'])
        tags_of = self.series_tags
        dims = result.dims
        for metric, value, key in result.counts:
            self.count(metric, value, tags=tags_of(dims, key))
        # Metric names differ between counts, levels and month-to-date gauges: their contexts add up.
        contexts = self.contexts_of(dims, {(metric, key) for metric, _, key in result.counts})
        contexts += self.submit_levels(result)
        if result.complete and result.endpoint.kind == 'costs':
            contexts += self.submit_month_to_date(result)
        self.report_contexts(result, contexts)

    def submit_levels(self, result: EndpointResult) -> int:
        for metric, value, key in result.gauges:
            self.gauge(metric, value, tags=self.series_tags(result.dims, key))
        return self.contexts_of(result.dims, {(metric, key) for metric, _, key in result.gauges})

    def submit_month_to_date(self, result: EndpointResult) -> int:
        for currency, total in result.month_totals.items():
            self.gauge(MONTH_TO_DATE.name, total, tags=self.base_tags + [tag('currency', currency)])
        dims = ('project_id', 'currency')
        submitted = set()
        for (currency, project_id), total in result.project_month_totals.items():
            key = SEP.join((project_id, currency))
            self.gauge(PROJECT_MONTH_TO_DATE.name, total, tags=self.series_tags(dims, key))
            submitted.add((PROJECT_MONTH_TO_DATE.name, key))
        return len(result.month_totals) + self.contexts_of(dims, submitted)

    def contexts_of(self, dims: tuple[str, ...], submitted: set) -> int:
        """How many metric contexts the (metric, series key) pairs submitted make: the Agent keys a context on the
        metric name and the set of tags, so series whose tags come out the same share one (and one custom metric)."""
        tags_of = self.series_tags
        keys = {key for _, key in submitted}
        if len({frozenset(tags_of(dims, key)) for key in keys}) == len(keys):
            return len(submitted)  # the usual case: one tag set per series
        return len({(metric, frozenset(tags_of(dims, key))) for metric, key in submitted})

    def report_contexts(self, result: EndpointResult, contexts: int) -> None:
        self.gauge(CONTEXTS.name, contexts, tags=self.base_tags + [f'endpoint:{result.endpoint.name}'])

    def load_ledger(self, name: str, now: float) -> Ledger | None:
        if name in self.ledgers:
            return self.ledgers[name]
        text = self.read_persistent_cache(f'ledger_{name}')
        if not text:
            return None
        try:
            ledger = Ledger.loads(text)
        except Exception as e:
            self.warning(
                '%s: the saved state is unreadable (%s); recording a new baseline.', name, self.scrubber.detail(e)
            )
            return None
        if (
            self.is_cluster_check
            and now - ledger.read_at > STALE_CLUSTER_STATE_RUNS * self.settings.min_collection_interval
        ):
            # A cluster check that finds an old state of its own has most likely been on another runner
            # meanwhile, which submitted that period already: catching up would count it twice.
            self.warning(
                '%s: this cluster check\'s saved state is %s old; another runner probably collected the period '
                'since, so a new baseline is recorded instead of catching up (nothing is counted twice; usage not '
                'collected by the other runner in that period is not counted).',
                name,
                _duration(now - ledger.read_at),
            )
            return None
        return ledger

    @property
    def is_cluster_check(self) -> bool:
        # The Cluster Agent injects empty_default_hostname into every cluster check it dispatches.
        return bool(self.instance.get('empty_default_hostname'))

    def series_tags(self, dims: tuple[str, ...], key: str) -> list[str]:
        cache_key = (dims, key)
        tags = self._tag_cache.get(cache_key)
        if tags is None:
            tags = list(self.base_tags)
            fragments = self._dim_tags
            for dim_value in zip(dims, key.split(SEP)):
                if not dim_value[1]:
                    continue  # a dimension OpenAI did not group by (null) is left out, not tagged `none`
                fragment = fragments.get(dim_value)
                if fragment is None:
                    fragment = fragments[dim_value] = self.dimension_tags(*dim_value)
                tags.extend(fragment)
            self._tag_cache[cache_key] = tags
        return tags

    def dimension_tags(self, dim: str, value: str) -> tuple[str, ...]:
        """`dim:value`, and the name next to an id when it is known, normalized as Datadog would (tags.py).
        Computed once per distinct value and run (series_tags caches it)."""
        name_tag = NAME_TAGS.get(dim)
        if name_tag and self.names.enabled.get(dim):
            resolved = self.names.lookup(dim, value)
            if resolved:
                return (tag(dim, value), tag(name_tag, resolved))
        return (tag(dim, value),)

    # -- the check's own health ----------------------------------------------------------------

    def report_health(self, client: OpenAIClient, results: list[EndpointResult], now: float, started: float) -> None:
        stats = client.stats
        tags = self.base_tags
        for (endpoint, status), n in stats.calls.items():
            self.count(API_REQUESTS.name, n, tags=tags + [f'endpoint:{endpoint}', f'status_code:{status}'])
        for endpoint, latencies in stats.latency.items():
            self.gauge(API_LATENCY.name, sum(latencies) / len(latencies), tags=tags + [f'endpoint:{endpoint}'])
        for (endpoint, reason), n in stats.retries.items():
            self.count(API_RETRIES.name, n, tags=tags + [f'endpoint:{endpoint}', f'reason:{reason}'])
        for result in results:
            if result.ledger.read_at and not (result.window.baseline and not result.complete):
                self.gauge(
                    DATA_LAG.name,
                    max(0.0, now - result.ledger.read_at),
                    tags=tags + [f'endpoint:{result.endpoint.name}'],
                )

        status, message = self.connection_status(results, stats.rate_limited)
        self.gauge(CAN_CONNECT.name, 0 if status == AgentCheck.CRITICAL else 1, tags=tags)
        self.service_check(SERVICE_CHECK, status, tags=tags, message=self.scrubber.message(message))
        self.gauge(RUN_DURATION.name, self.monotonic() - started, tags=tags)
        if status == AgentCheck.CRITICAL:
            # Health first, then the error: a run that read nothing must show as failed in `agent status`
            # and `agent check`, not as an OK instance with a CRITICAL service check nobody looks at.
            raise CheckException(message)

    def connection_status(self, results: list[EndpointResult], rate_limited: bool) -> tuple[int, str]:
        """CRITICAL when no endpoint was read; WARNING when some were not, or OpenAI rate limited; else OK."""
        failed = [r for r in results if not r.complete]
        if len(failed) == len(results):
            auth = next((r.error for r in failed if isinstance(r.error, AuthError)), None)
            if auth is not None:
                return AgentCheck.CRITICAL, auth.message
            if failed:
                return AgentCheck.CRITICAL, f'No endpoint could be read: {failed[0].error.message}'
            return AgentCheck.CRITICAL, (
                'No endpoint could be read: every endpoint failed with an unexpected error (see the warnings).'
            )
        tried = {r.endpoint.name for r in results}
        skipped = [name for name in self.settings.endpoints if name not in tried]
        if failed or rate_limited or skipped:
            parts = [f'{r.endpoint.name}: {r.error.message}' for r in failed]
            parts.extend(f'{name}: not read this run (see the warnings)' for name in skipped)
            if rate_limited:
                parts.append('OpenAI rate limited some requests; the check retried within its time budget')
            return AgentCheck.WARNING, '; '.join(parts)
        return AgentCheck.OK, ''


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f'{minutes // 60}h{minutes % 60:02d}m'


def _iso(t: float) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))
