"""The organization's audit log, sent to Datadog Logs with each event once.

OpenAI lists audit events newest first, `limit` (1..100) per page, the next page after the id of the
last event read (`after`), filtered by `effective_at[gte|lte]`. A run reads:

1. the head: every event from `head - LATE_SECONDS` (the previous complete head read, minus a margin
   for events that appear after their `effective_at`) up to now;
2. then the gaps: ranges of `effective_at` a previous run left unread (its page allowance or its slice
   of the time budget ran out), newest first. The head always comes first, so a backlog is paced over
   runs and new events are never starved by old ones.

The state (saved in the persistent cache) holds the head, the gaps and the ids of the events sent whose
`effective_at` lies where a later run reads again (the head's margin, a gap's upper bound): an event
read twice, because a page moved between two requests, a run was retried or its events came late, is
sent once. The state is saved before the events are sent (see check.commit), so a failure between the
two loses those events rather than duplicating them.

Nothing older than `audit_logs_lookback_hours` (Datadog refuses logs older than 18 hours) is ever read.
A run without a state (the first, or after the state was lost) cannot know what was sent before; it does
what `audit_logs_without_state` says. `lookback` reads the lookback whole and sends it: nothing is lost,
and after a lost state the events of the lookback already sent are sent again (same `id`). `now` records
a baseline instead: it reads the head's margin and marks its events as seen without sending them, as
the usage ledger does after a lost state: nothing is sent twice, and what appeared since the last run
before the loss is not sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datadog_checks.base.utils.format import json

from ..client import ADMIN_KEY_HELP, ApiError, AuthError, RequestRefused
from ..scrub import Scrubber
from .base import Outcome, Run, Source, StateStore
from .usage import iso

PATH = '/organization/audit_logs'
NAME = 'audit_logs'
PAGE_LIMIT = 100
# How long after its effective_at an event may still appear in the log and be sent. Re-read by every
# run, so it also absorbs a clock difference between the Agent host and OpenAI.
LATE_SECONDS = 3600
# Pages one run reads at most (100 events each): a backlog goes over several runs instead of holding one.
MAX_PAGES_PER_RUN = 20
# The share of what is left of the run's time budget the audit log may take.
BUDGET_SHARE = 0.25
STATE_VERSION = 1

ENABLE_HELP = (
    'Audit logging must be turned on for the organization: an organization owner enables it at '
    'https://platform.openai.com/settings/organization/data-controls/data-retention (Audit logging; it cannot '
    'be turned off again without OpenAI support), and the admin key must be allowed to read the audit log '
    '(an admin key with all permissions, or one whose permissions include audit logs). Metrics are collected '
    'regardless; set collect_audit_logs: false to stop reading the audit log.'
)
FAILURE_TYPES = ('login.failed', 'logout.failed')


class AuditLogUnavailable(ApiError):
    """The audit log cannot be read with this key in this organization (off, or not allowed)."""


@dataclass
class AuditState:
    # Every event with effective_at in [head - LATE_SECONDS, ...) is re-read each run.
    head: int | None = None
    # [lo, hi] ranges of effective_at (both inclusive) not read yet, newest first.
    gaps: list[list[int]] = field(default_factory=list)
    # id -> effective_at of the events sent where a later run reads again.
    seen: dict[str, int] = field(default_factory=dict)
    read_at: float | None = None

    def dumps(self) -> str:
        return json.encode(
            {'v': STATE_VERSION, 'head': self.head, 'gaps': self.gaps, 'seen': self.seen, 'read_at': self.read_at}
        )

    @classmethod
    def loads(cls, text: str) -> AuditState:
        data = json.decode(text)
        if not isinstance(data, dict) or data.get('v') != STATE_VERSION:
            raise ValueError('not an audit log state of this version')
        head, gaps, seen, read_at = data['head'], data['gaps'], data['seen'], data.get('read_at')
        if head is not None and not isinstance(head, int):
            raise ValueError('head is not a time')
        if not all(isinstance(g, list) and len(g) == 2 and all(isinstance(t, int) for t in g) for g in gaps):
            raise ValueError('a gap is not a pair of times')
        if not isinstance(seen, dict) or not all(isinstance(t, int) for t in seen.values()):
            raise ValueError('the ids seen are not a mapping of ids to times')
        return cls(head, [list(g) for g in gaps], dict(seen), read_at)


@dataclass
class Read:
    """One query of the run: [lo, hi] (hi None: up to now)."""

    lo: int
    hi: int | None
    # The oldest effective_at of the last page read (None: no page read), and whether the range was read whole.
    stopped_at: int | None = None
    done: bool = False


class AuditSource(Source):
    name = NAME
    submits_metrics = False

    def __init__(
        self,
        state: StateStore,
        log,
        scrubber: Scrubber,
        tags: list[str],
        service: str,
        lookback_hours: int,
        without_state: str = 'lookback',
        stale_after: float | None = None,
    ):
        self.state = state
        self.without_state = without_state
        # A cluster check's state older than this is another runner's past: treated as no state (see _load).
        self.stale_after = stale_after
        self.log = log
        self.scrubber = scrubber
        self.ddtags = ','.join(tags)
        self.service = service
        self.lookback = lookback_hours * 3600
        self.state_key = 'audit_log'
        self.max_pages = MAX_PAGES_PER_RUN
        self.saved: AuditState | None = None
        self._loaded = False
        self.notes: list[str] = []

    @property
    def read_at(self) -> float | None:
        return self.saved.read_at if self.saved is not None else None

    # -- a run ---------------------------------------------------------------------------------

    def collect(self, run: Run) -> Outcome:
        outcome = Outcome(self.name)
        now = int(run.now)
        floor = now - self.lookback
        old = self._state(run.now)
        # What loading the state had to say comes first.
        outcome.warnings.extend(self.notes)
        self.notes = []
        if old is None and self.without_state == 'now':
            return self._baseline(run, outcome, now)
        if old is None:
            old = AuditState()
            self.log.info(
                'audit_logs: no saved state for this account; sending the audit events of the last %s hours.',
                self.lookback // 3600,
            )
        reads = [Read(floor if old.head is None else max(floor, old.head - LATE_SECONDS), None)]
        lost = [(old.head, floor)] if old.head is not None and old.head < floor else []
        for lo, hi in old.gaps:
            if lo < floor:
                lost.append((lo, min(hi, floor)))
            if hi >= floor:
                reads.append(Read(max(lo, floor), hi))
        for lo, hi in _merged([list(r) for r in lost]):
            outcome.warnings.append(
                f'audit_logs: audit events from {iso(lo)} to {iso(hi)} were not sent: they were not read within '
                f'audit_logs_lookback_hours ({self.lookback // 3600}) of their time (the check was away, or a backlog '
                f'outran the runs), and Datadog refuses logs more than 18 hours old.'
            )
        client = run.client.within(BUDGET_SHARE)
        seen = dict(old.seen)
        logs: list[dict] = []
        pages = 0
        try:
            for read in reads:
                if pages >= self.max_pages:
                    break
                pages = self._read(client, read, seen, logs, floor, pages, outcome)
            outcome.complete = True
        except ApiError as e:
            outcome.error = self._explain(e)
            outcome.warnings.append(f'audit_logs: {outcome.error.message}')
        if outcome.malformed:
            outcome.warnings.append(f'audit_logs: {outcome.malformed} malformed audit events were skipped.')
        new = self._next_state(old, reads, seen, floor, now)
        if new is not None:
            outcome.change = new
            outcome.logs = logs
        outcome.rows = len(logs)
        return outcome

    def _baseline(self, run: Run, outcome: Outcome, now: int) -> Outcome:
        """Mark the events of the head's margin as seen without sending them; saved only once read whole."""
        read = Read(max(now - LATE_SECONDS, now - self.lookback), None)
        seen: dict[str, int] = {}
        try:
            self._read(run.client.within(BUDGET_SHARE), read, seen, [], now - self.lookback, 0, outcome)
        except ApiError as e:
            outcome.error = self._explain(e)
            outcome.warnings.append(f'audit_logs: {outcome.error.message}')
            return outcome
        outcome.baseline = True
        outcome.complete = True
        if not read.done:
            outcome.warnings.append(
                f'audit_logs: more than {self.max_pages * PAGE_LIMIT} audit events in the last hour; the baseline '
                f'could not be read in one run and is read again by the next one.'
            )
            return outcome
        self.log.info(
            'audit_logs: no saved state for this account (audit_logs_without_state: now); recorded %s recent events '
            'as a baseline without sending them. From the next run on, every new event is sent.',
            len(seen),
        )
        outcome.change = AuditState(now, [], seen, float(now))
        return outcome

    def _read(self, client, read: Read, seen: dict, logs: list, floor: int, pages: int, outcome: Outcome) -> int:
        params: list[tuple[str, Any]] = [('limit', PAGE_LIMIT), ('effective_at[gte]', read.lo)]
        if read.hi is not None:
            params.append(('effective_at[lte]', read.hi))
        after = None
        cursors = set()
        while pages < self.max_pages:
            query = params if after is None else params + [('after', after)]
            body = client.get_json(PATH, query, NAME)
            pages += 1
            data = body.get('data')
            if not isinstance(data, list) or not isinstance(body.get('has_more'), bool):
                raise BadPage(f'OpenAI sent a page without data/has_more for {PATH}; it was not used.', 200)
            last_id = None
            for event in data:
                event_id, at = _identity(event)
                if event_id is None:
                    outcome.malformed += 1
                    continue
                last_id = event_id
                read.stopped_at = at if read.stopped_at is None else min(read.stopped_at, at)
                if event_id in seen or at < floor:
                    continue  # sent before (a page that moved, an overlap), or too old for Datadog
                seen[event_id] = at
                logs.append(self.payload(event))
            if not body['has_more'] or not data:
                read.done = True
                return pages
            # The last event's id is the place in the list; OpenAI's last_id when that event was malformed.
            tail = _identity(data[-1])[0]
            after = tail or (body.get('last_id') if isinstance(body.get('last_id'), str) else None) or last_id
            if not after or after in cursors:
                # A cursor that does not move would read the same page forever: what was read stands.
                read.done = True
                return pages
            cursors.add(after)
        return pages

    def _next_state(self, old: AuditState, reads: list[Read], seen: dict, floor: int, now: int) -> AuditState | None:
        """The state after this run's reads: None when no read got a page (nothing to save)."""
        if not any(r.done or r.stopped_at is not None for r in reads):
            return None
        head_read = reads[0]
        gaps: list[list[int]] = []
        head = old.head
        if head_read.done or head_read.stopped_at is not None:
            head = now
            if not head_read.done:
                # Read from now down to stopped_at: the events below it (and the rest at it) are still to read.
                gaps.append([head_read.lo, head_read.stopped_at])
        # (No page of the head read: the next run starts the head from the same place.)
        for read in reads[1:]:
            if not read.done:
                # A gap partly read keeps its lower part; one not reached (no pages left) stays whole.
                gaps.append([read.lo, read.hi if read.stopped_at is None else read.stopped_at])
        gaps = _merged(g for g in gaps if g[0] <= g[1] and g[1] >= floor)
        # Only ids where a later run reads again are kept: the head's margin and the gaps' bounds.
        keep_from = max(floor, head - LATE_SECONDS) if head is not None else floor
        kept = {i: t for i, t in seen.items() if t >= keep_from or any(lo <= t <= hi for lo, hi in gaps)}
        return AuditState(head, gaps, kept, float(now) if head_read.done else old.read_at)

    def _explain(self, error: ApiError) -> ApiError:
        if isinstance(error, (AuthError, RequestRefused)) and error.status in (400, 403, 404):
            return AuditLogUnavailable(
                f'OpenAI refused to list the audit log ({error.status}: {_detail(error.message)}). {ENABLE_HELP}',
                error.status,
            )
        if error.status == 401:
            return error
        return ApiError(f'{error.message} The audit events not read yet are read by the next run.', error.status)

    # -- the events as logs --------------------------------------------------------------------

    def payload(self, event: dict) -> dict:
        """The log of one event: its fields as they came, and Datadog's standard attributes next to them."""
        kind = str(event.get('type') or 'unknown')
        actor = event.get('actor') if isinstance(event.get('actor'), dict) else None
        project = event.get('project') if isinstance(event.get('project'), dict) else None
        details = event.get(kind)
        user, session, service_account = _actor_parts(actor)
        log: dict[str, Any] = {
            'timestamp': event['effective_at'],
            'message': _sentence(kind, actor, user, service_account, project),
            'ddsource': 'openai',
            'service': self.service,
            'ddtags': self.ddtags,
            'status': 'warn' if kind in FAILURE_TYPES else 'info',
            'id': event['id'],
            'evt': {'name': kind, 'outcome': 'failure' if kind.endswith('.failed') else 'success'},
        }
        usr = {}
        if user:
            usr.update({k: user[k] for k in ('id', 'email') if isinstance(user.get(k), str)})
        elif service_account and isinstance(service_account.get('id'), str):
            usr['id'] = service_account['id']
        if usr:
            log['usr'] = usr
        if session:
            if isinstance(session.get('ip_address'), str):
                log['network'] = {'client': {'ip': session['ip_address']}}
            if isinstance(session.get('user_agent'), str):
                log['http'] = {'useragent': session['user_agent']}
        if project:
            if isinstance(project.get('id'), str):
                log['project_id'] = project['id']
            if isinstance(project.get('name'), str):
                log['project_name'] = project['name']
        if actor is not None:
            log['actor'] = actor
        if details is not None:
            log['details'] = details
        return _scrubbed(log, self.scrubber)

    # -- state ---------------------------------------------------------------------------------

    def save(self, outcome: Outcome) -> int | None:
        text = outcome.change.dumps()
        self.state.write(self.state_key, text)
        return len(text)

    def apply(self, outcome: Outcome) -> None:
        self.saved = outcome.change

    def forget(self) -> None:
        self.saved = None
        self._loaded = False

    def _state(self, now: float) -> AuditState | None:
        if not self._loaded:
            self._loaded = True
            self.saved = self._load(now)
        return self.saved

    def _load(self, now: float) -> AuditState | None:
        text = self.state.read(self.state_key)
        if not text:
            return None
        try:
            state = AuditState.loads(text)
        except Exception as e:
            self.notes.append(
                f'audit_logs: the saved state is unreadable ({type(e).__name__}: {e}); starting without it '
                f'(audit_logs_without_state: {self.without_state}).'
            )
            return None
        if self.stale_after is not None and state.read_at is not None and now - state.read_at > self.stale_after:
            # As for usage: another runner most likely had this cluster check meanwhile and sent what came since.
            self.notes.append(
                f'audit_logs: this cluster check\'s saved state is {int(now - state.read_at) // 60} minutes old; '
                f'another runner probably sent the events since, so it starts without it '
                f'(audit_logs_without_state: {self.without_state}).'
            )
            return None
        return state


class BadPage(ApiError):
    retryable = False


def _identity(event: Any) -> tuple[str | None, int]:
    if not isinstance(event, dict):
        return None, 0
    event_id, at = event.get('id'), event.get('effective_at')
    if not isinstance(event_id, str) or not event_id or not isinstance(at, int) or isinstance(at, bool):
        return None, 0
    if not isinstance(event.get('type'), str):
        return None, 0
    return event_id, at


def _actor_parts(actor: dict | None) -> tuple[dict | None, dict | None, dict | None]:
    """(user, session, service account) of an actor, each None when absent."""
    if actor is None:
        return None, None, None
    session = actor.get('session') if isinstance(actor.get('session'), dict) else None
    api_key = actor.get('api_key') if isinstance(actor.get('api_key'), dict) else None
    holder = session or api_key or {}
    user = holder.get('user') if isinstance(holder.get('user'), dict) else None
    service_account = None
    if api_key and isinstance(api_key.get('service_account'), dict):
        service_account = api_key['service_account']
    return user, session, service_account


def _sentence(kind: str, actor, user, service_account, project) -> str:
    """ "api_key.created by alice@example.com in project Production"."""
    if user:
        who = str(user.get('email') or user.get('id') or 'a user')
        if actor.get('type') == 'api_key':
            who += ' with an API key'
    elif service_account:
        who = f'service account {service_account.get("id") or "?"}'
    else:
        who = 'an unnamed actor'
    text = f'{kind} by {who}'
    if project:
        text += f' in project {project.get("name") or project.get("id") or "?"}'
    return text


def _scrubbed(value: Any, scrubber: Scrubber) -> Any:
    """The log with any key-shaped text and any key the check sent redacted, in keys and values alike."""
    if isinstance(value, str):
        return scrubber.text(value)
    if isinstance(value, dict):
        return {_scrubbed(str(k), scrubber): _scrubbed(v, scrubber) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, scrubber) for v in value]
    return value


def _merged(gaps) -> list[list[int]]:
    """Overlapping or touching ranges as one, newest first."""
    out: list[list[int]] = []
    for lo, hi in sorted(gaps, key=lambda g: g[1], reverse=True):
        if out and hi >= out[-1][0] - 1:
            out[-1][0] = min(out[-1][0], lo)
        else:
            out.append([lo, hi])
    return out


def _detail(message: str) -> str:
    # The client's message for a 403 carries the usage endpoints' key help; OpenAI's own words are in brackets.
    message = message.replace(ADMIN_KEY_HELP, '').strip()
    start, end = message.find('('), message.rfind(')')
    return message[start + 1 : end] if 0 <= start < end else message
