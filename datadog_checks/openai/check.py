"""The `openai` Agent check: one instance is one OpenAI organization (an "account")."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

from datadog_checks.base import AgentCheck, ConfigurationError, is_affirmative
from datadog_checks.base.agent import datadog_agent
from datadog_checks.base.errors import CheckException
from datadog_checks.base.utils.common import to_native_string
from pydantic import ValidationError

from . import health
from .agent import running_under_agent_check_command
from .auth import AdminKey
from .catalogue import CAN_CONNECT, CONTEXTS, LOGS_SENT, SERIES, SERVICE_CHECK, STATE_SIZE
from .client import ACCEPT_ENCODING, AuthError, OpenAIClient, TimeBudget
from .config_models import ConfigMixin, InstanceConfig
from .config_models import validators as rules
from .memory import RELEASE_AFTER_ROWS, cyclic_collector_paused, pack, release_freed_memory
from .scrub import Scrubber, install_log_filter
from .sources import NameSource, Outcome, Run, Source, StateStore, build_headroom_sources, build_sources
from .submit import COUNT, GAUGE, Sender
from .tags import TagBuilder

# A cluster check's state older than this many collection intervals is not caught up from.
STALE_CLUSTER_STATE_RUNS = 3

# The generated model shows every option in its repr, which a log line or a traceback may print: never the key.
InstanceConfig.model_fields['admin_api_key'].repr = False


class OpenAICheck(AgentCheck, ConfigMixin):
    __NAMESPACE__ = ''
    # One connection for all the requests of a run, unless the operator says otherwise.
    HTTP_CONFIG_REMAPPER = {'persist_connections': {'name': 'persist_connections', 'default': True}}

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        # Injectable so that tests and the local runner can drive time.
        self.clock = time.time
        self.monotonic = time.monotonic
        self.sleep = time.sleep
        # Every key the check sent, for scrubbing what it says; see scrub.py.
        self.scrubber = Scrubber()
        self.last_run_at: float | None = None
        # `agent check openai` shares the running Agent's state but sends nothing: saving the state there
        # would mark as submitted usage that never reached Datadog.
        self.save_state = not running_under_agent_check_command()
        self.check_initializations.append(self.build)

    def persistent_cache_id(self) -> str:
        # The saved state follows the account, not the whole config: rotating the admin key or changing
        # tags must not reset it (that would re-baseline and drop the usage in between).
        account = str(self.instance.get('account_name', ''))
        return 'openai_' + hashlib.sha256(account.encode()).hexdigest()[:16]

    # -- once, at the first run ------------------------------------------------------------------

    def load_configuration_models(self, package_path=None):
        try:
            super().load_configuration_models(package_path)
        except ConfigurationError as e:
            # The base class lists pydantic's errors; the operator gets one line per problem, each saying
            # what to write instead, all at once.
            error = e.__context__
            if not isinstance(error, ValidationError) or error.title != InstanceConfig.__name__:
                raise
            account = str(self.instance.get('account_name') or '').strip() or '?'
            lines = rules.problems(error, self._validate_without)
            raise ConfigurationError('\n'.join(f'openai check, account {account}: {line}' for line in lines)) from None

    def _validate_without(self, wrong: set[str]) -> ValidationError | None:
        values = {k: v for k, v in self.instance.items() if k not in wrong}
        values.setdefault('account_name', '?')  # a stand-in for a required option found wrong
        try:
            InstanceConfig.model_validate(values, context=self._get_config_model_context(values))
        except ValidationError as e:
            return e
        return None

    def build(self) -> None:
        """Everything a run needs that the configuration decides: the key, the tags and the sources."""
        config = self.config
        install_log_filter(self.log.logger, self.scrubber)
        # The check decodes responses itself, with a bound on their size: only encodings it can bound.
        self.http.options['headers']['Accept-Encoding'] = ACCEPT_ENCODING
        self.key = AdminKey(
            self.http, config.admin_api_key, self.instance.get('auth_token'), self.scrubber, self.register_secret
        )
        url = urlsplit(config.api_base_url)
        self.key_in_clear = url.scheme == 'http' and not rules.is_loopback(url.hostname or '')
        self.interval = config.min_collection_interval
        self.base_tags = [f'openai_account:{config.account_name}', *(config.tags or ())]
        state = StateStore(self.read_persistent_cache, self.write_persistent_cache, self.save_state)
        # The Cluster Agent injects empty_default_hostname into every cluster check it dispatches.
        stale_after = STALE_CLUSTER_STATE_RUNS * self.interval if config.empty_default_hostname else None
        audit = config.collect_audit_logs and self.agent_sends_logs()
        self.sources: list[Source] = build_sources(
            config, state, self.log, stale_after, self.scrubber, self.base_tags, audit
        )
        self.sources_by_name = {s.name: s for s in self.sources}
        # Names only for ids some source is grouped by: listing every project's API keys for no tag would cost
        # a request per project and hour.
        grouped = {dim for s in self.sources for dim in s.group_by}
        self.names = NameSource(
            # The headroom's metrics are all per project.
            config.resolve_project_names and ('project_id' in grouped or config.collect_headroom),
            config.resolve_api_key_names and 'api_key_id' in grouped,
            config.resolve_user_emails and 'user_id' in grouped,
            config.names_refresh_interval,
            self.clock,
            list_projects=config.collect_headroom,
        )
        # Read after the data sources (the limits compare the month's costs of the same run with the spend limits), and
        # apart from them: reading limits alone is not a run that read something, and a headroom read that fails
        # warns without counting in the run's verdict.
        self.headroom: list[Source] = build_headroom_sources(config, self.names, self.log)
        self.sources_by_name.update((s.name, s) for s in self.headroom)
        self.sender = Sender(self)
        self.tags = TagBuilder(self.base_tags, self.names, self.sender.normalize)

    def agent_sends_logs(self) -> bool:
        """Whether the Agent ships the logs the check sends; warns (once, at the first run) when it does not."""
        if is_affirmative(datadog_agent.get_config('logs_enabled')):
            return True
        # Reading the audit log would move past events the Agent then drops: not reading it loses nothing, since
        # the first run after logs are enabled sends the lookback.
        self.warning(
            'collect_audit_logs is true but this Agent runs with logs_enabled false, so it would drop the audit '
            'events: the audit log is not read. Set logs_enabled: true in datadog.yaml, add the `logs` section '
            '(type: integration, source: openai) to conf.d/openai.d/conf.yaml and restart the Agent; the events of '
            'the last audit_logs_lookback_hours are then sent.'
        )
        return False

    # -- a run -----------------------------------------------------------------------------------

    def check(self, _):
        started = self.monotonic()
        now = self.clock()
        if self.too_soon(now):
            return
        # What the sources hold packed between runs (memory.pack) is made anew before anything is read, while the heap
        # is at its most compact: made after a read, it would be spread over the arenas the read filled. Costs first:
        # most of it, its objects fill the heap's holes best (20,000 series: 70 arenas held after 12 runs, 85 in the
        # sources' order, which kept growing).
        for source in reversed(self.sources):
            source.unpack()
        self.prepare_key()
        run = Run(self.new_client(), now)
        for problem in self.names.collect(run).warnings:
            self.log.warning('%s', self.scrubber.message(problem))
        try:
            outcomes = self.collect_all(run)
        finally:
            self.tags.forget()
        rows = sum(outcome.rows for outcome in outcomes)
        self.report_health(run, outcomes, started)
        if rows >= RELEASE_AFTER_ROWS:
            # Only once the run's points are dropped too: they are freed after the pages, into the same heap.
            del run, outcomes
            for source in pack(self.sources):
                self.log.warning(
                    '%s: could not pack what it keeps in memory between runs; it reads its saved state again at '
                    'the next run (nothing is lost or counted twice).',
                    source.name,
                )
            release_freed_memory()

    def too_soon(self, now: float) -> bool:
        """Whether to skip a run that comes too soon after the previous one.

        Without `min_collection_interval` in conf.yaml the Agent runs a check every 15 seconds, which would
        poll OpenAI 20 times as often as its data changes and invite rate limiting. The slack keeps the
        Agent's own scheduling jitter from skipping every other run."""
        if self.last_run_at is not None and now - self.last_run_at < 0.9 * self.interval:
            self.log.debug(
                'Skipping this run: the previous one was %.0fs ago (interval %ss)',
                now - self.last_run_at,
                self.interval,
            )
            return True
        self.last_run_at = now
        return False

    def prepare_key(self) -> None:
        if self.key_in_clear:
            self.warning(
                'api_base_url %s is plain http to another host: the admin key crosses the network unencrypted. '
                'Use https://; plain http is for a proxy or a simulator on this host.',
                self.config.api_base_url,
            )
        problem = self.key.refresh()
        if problem:
            self.warning(problem)
            if not self.key.known:
                # No key was ever read: there is nothing to send. Otherwise the last key read goes on.
                message = self.scrubber.message(problem)
                self.gauge(CAN_CONNECT.name, 0, tags=self.base_tags)
                self.service_check(SERVICE_CHECK, AgentCheck.CRITICAL, tags=self.base_tags, message=message)
                raise CheckException(message)

    def new_client(self) -> OpenAIClient:
        config = self.config
        return OpenAIClient(
            self.http,
            config.api_base_url,
            TimeBudget(config.time_budget, self.monotonic),
            config.max_retries,
            (config.connect_timeout or config.timeout, config.read_timeout or config.timeout),
            self.log,
            sleep=self.sleep,
            monotonic=self.monotonic,
            scrubber=self.scrubber,
        )

    def collect_all(self, run: Run) -> list[Outcome]:
        outcomes = []
        for source in self.sources + self.headroom:
            outcome = self.collect(source, run)
            if outcome is None:
                continue
            run.outcomes[source.name] = outcome
            if source.derived:
                continue
            outcomes.append(outcome)
            if isinstance(outcome.error, AuthError) and outcome.error.status == 401:
                break  # a rejected key is rejected everywhere: do not hammer the other endpoints
        return outcomes

    def collect(self, source: Source, run: Run) -> Outcome | None:
        try:
            with cyclic_collector_paused():
                outcome = source.collect(run)
                run.client.drop_spare()
                if outcome.error is not None:
                    # Its traceback holds the frames of the failed read, a refused body among their locals, for the
                    # rest of the run: the message is all the health report needs.
                    outcome.error.__traceback__ = None
                self.commit(source, outcome)
            # The heap is given back at the run's end only: given back after each large source too, what the next
            # source reads and saves in was taken from the system again, a page fault every 4 KB (15,000 a steady run
            # at 20,000 series), for the same peak (tests/test_check.py, the README's benchmark).
            return outcome
        except Exception as e:
            # A bug or a response shape nobody foresaw must not cost the other sources their run. What the
            # source holds in memory may be half changed: it starts again from its saved state.
            source.forget()
            self.log.debug('Unexpected error collecting %s', source.name, exc_info=True)
            self.warning(
                '%s: unexpected error (%s: %s); skipped this run, the other endpoints go on. Please report it '
                'with the Agent log at debug level.',
                source.name,
                type(e).__name__,
                self.scrubber.detail(e),
            )
            return None

    def commit(self, source: Source, outcome: Outcome) -> None:
        """Save the source's new state, then submit what it records as submitted: never the other way round."""
        for warning in outcome.warnings:
            self.warning('%s', warning)
        endpoint = [f'endpoint:{source.name}']
        if outcome.change is not None:
            try:
                size = source.save(outcome)
            except Exception as e:
                self.warning(
                    '%s: could not save the state (%s); nothing submitted this run, the next run retries.',
                    source.name,
                    self.scrubber.detail(e),
                )
                return
            source.apply(outcome)
            self.gauge(STATE_SIZE.name, size, tags=self.base_tags + endpoint)
            if source.submits_metrics:
                self.gauge(SERIES.name, outcome.series, tags=self.base_tags + endpoint)
        outcome.submitted = True
        # Logs, like points, leave only once the state that records them as sent is saved.
        for log in outcome.logs:
            self.send_log(log)
        if outcome.logs:
            self.count(LOGS_SENT.name, len(outcome.logs), tags=self.base_tags + endpoint)
        if not source.submits_metrics:
            return
        # Each distinct (metric, tag set) is a context, a custom metric: series with the same tags share their list.
        # Sets of ints per metric rather than a (metric, tags) tuple per point: no object per point for the garbage
        # collector to track, which on a large organization's run means fewer full collections.
        contexts: dict[str, set[int]] = {}
        self.sender.submit(COUNT, outcome.counts, self.tags.of, contexts)
        self.sender.submit(GAUGE, outcome.gauges, self.tags.of, contexts)
        self.gauge(CONTEXTS.name, sum(map(len, contexts.values())), tags=self.base_tags + endpoint)

    def report_health(self, run: Run, outcomes: list[Outcome], started: float) -> None:
        lags = {}
        for outcome in outcomes:
            read_at = self.sources_by_name[outcome.source].read_at
            if read_at is not None:
                lags[outcome.source] = max(0.0, run.now - read_at)
        expected = [s.name for s in self.sources if not s.derived]
        data = [o for o in outcomes if o.source in expected]
        status, message = health.verdict(data, expected, run.client.stats.rate_limited)
        message = self.scrubber.message(message)
        health.report(self, run.client.stats, lags, status, message, self.monotonic() - started)
        if status == AgentCheck.CRITICAL:
            # Health first, then the error: a run that read nothing must show as failed in `agent status` and
            # `agent check`, not as an OK instance with a CRITICAL service check nobody looks at.
            raise CheckException(message)

    def warning(self, warning_message, *args, **kwargs):
        # Warnings reach `agent status` and `agent check` unscrubbed by the base class: scrub them here.
        message = to_native_string(warning_message)
        if args:
            message = message % args
        super().warning('%s', self.scrubber.message(message))
