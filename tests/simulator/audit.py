"""The organization's audit log (`GET /organization/audit_logs`), as the spec extract describes it.

Events are listed newest first (by `effective_at`, then id), `limit` 1..100 (default 20) per page, the
next page `after` the id of the last event of the previous one, filtered by `effective_at[gt|gte|lt|lte]`,
`event_types[]`, `project_ids[]` and `actor_ids[]`. Each event appears in the list at its `visible_at`:
most a few seconds after their `effective_at`, some (late events) up to `max_delay` seconds after, and so
land behind events listed before them. Actors of every kind: a session (user, IP, user agent), a user's
API key, a service account's API key, and none. Tests add events of their own with `add`, at any time,
also between two page requests (`on_request`).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .openapi import RequestError

HOUR = 3600
# Event types the generator draws from, with how often; each with a details object of the spec's shape.
WEIGHTS = {
    'login.succeeded': 20,
    'login.failed': 6,
    'logout.succeeded': 4,
    'api_key.created': 5,
    'api_key.updated': 2,
    'api_key.deleted': 3,
    'invite.sent': 2,
    'invite.accepted': 1,
    'user.updated': 2,
    'project.created': 1,
    'project.updated': 1,
    'rate_limit.updated': 2,
    'service_account.created': 1,
    'organization.updated': 1,
}
USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36'


@dataclass
class Entry:
    visible_at: float
    # Where the event sits in the list (its effective_at, kept apart so that a test may send a malformed one).
    at: int
    event: dict


class AuditLog:
    def __init__(
        self,
        org,
        seed: int = 0,
        per_hour: float = 10.0,
        late_fraction: float = 0.1,
        max_delay: int = 2400,
        start: int | None = None,
        hours: int = 0,
    ):
        self.org = org
        self.rng = random.Random(seed * 7919 + 13)
        self.per_hour = per_hour
        self.late_fraction = late_fraction
        self.max_delay = max_delay
        self.entries: list[Entry] = []
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        # When False, the organization has not turned audit logging on: every request is refused.
        self.enabled = True
        # Called with the request's params before each page is computed (a test's way to change the log
        # between two page requests).
        self.on_request: Callable[[dict], None] | None = None
        if hours:
            self.generate(start if start is not None else org.traffic_start, hours)

    # -- events ------------------------------------------------------------------------------------

    def generate(self, start: int, hours: int) -> None:
        rng = self.rng
        for h in range(hours):
            n = max(0, int(rng.gauss(self.per_hour, self.per_hour**0.5)))
            for _ in range(n):
                at = start + h * HOUR + rng.randrange(HOUR)
                late = rng.random() < self.late_fraction
                delay = rng.randrange(300, self.max_delay) if late else rng.randrange(0, 30)
                self.add(self._pick_type(), at, at + delay)

    def _pick_type(self) -> str:
        return self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]

    def new_id(self) -> str:
        while True:
            candidate = 'audit_log-' + ''.join(self.rng.choice('0123456789abcdef') for _ in range(24))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def add(self, event_type: str, at: int, visible_at: float | None = None, actor: Any = 'random', **fields) -> dict:
        """Add an event effective `at` (visible from `visible_at`, default `at`); returns it as the API lists it.
        `fields` replace the event's own (a malformed `id` or `effective_at` for instance)."""
        rng = self.rng
        project = rng.choice(self.org.projects)
        event: dict[str, Any] = {'id': self.new_id(), 'type': event_type, 'effective_at': int(at)}
        if not event_type.startswith(('login.', 'logout.', 'organization.', 'invite.')):
            event['project'] = {'id': project.id, 'name': project.name}
        event['actor'] = self._actor(event_type) if actor == 'random' else actor
        event[event_type] = self._details(event_type, project)
        event.update(fields)
        with self._lock:
            self.entries.append(Entry(at if visible_at is None else visible_at, int(at), event))
        return event

    def _actor(self, event_type: str) -> dict | None:
        rng = self.rng
        user = rng.choice(self.org.users)
        person = {'id': user.id, 'email': user.email}
        if event_type.startswith(('login.', 'logout.')) or rng.random() < 0.5:
            ip = f'203.0.113.{rng.randrange(1, 255)}'
            return {'type': 'session', 'session': {'user': person, 'ip_address': ip, 'user_agent': USER_AGENT}}
        if rng.random() < 0.6 or not self.org.service_accounts:
            return {'type': 'api_key', 'api_key': {'id': f'key_{user.id[-8:]}', 'type': 'user', 'user': person}}
        if rng.random() < 0.9:
            sa = rng.choice(self.org.service_accounts)
            return {
                'type': 'api_key',
                'api_key': {'id': f'key_{sa.id[-8:]}', 'type': 'service_account', 'service_account': {'id': sa.id}},
            }
        return None  # the spec allows an event without an actor

    def _details(self, event_type: str, project) -> dict:
        rng = self.rng
        user = rng.choice(self.org.users)
        if event_type.startswith('api_key.'):
            details: dict[str, Any] = {'id': f'key_{rng.randrange(10**8):08d}'}
            if event_type != 'api_key.deleted':
                details['data' if event_type == 'api_key.created' else 'changes_requested'] = {
                    'scopes': ['api.model.request']
                }
            return details
        if event_type == 'login.failed':
            return {'error_code': 'invalid_credentials', 'error_message': 'Wrong email or password.'}
        if event_type == 'invite.sent':
            return {'id': f'invite-{rng.randrange(10**6)}', 'data': {'email': 'new@example.com', 'role': 'owner'}}
        if event_type == 'invite.accepted':
            return {'id': f'invite-{rng.randrange(10**6)}'}
        if event_type == 'user.updated':
            return {'id': user.id, 'changes_requested': {'role': rng.choice(['owner', 'member'])}}
        if event_type.startswith('project.'):
            return {'id': project.id, 'data': {'name': project.name, 'title': project.name}}
        if event_type == 'rate_limit.updated':
            return {'id': f'rl-{rng.randrange(10**6)}', 'changes_requested': {'max_requests_per_1_minute': 500}}
        if event_type == 'service_account.created':
            return {'id': f'svc_acct_{rng.randrange(10**6)}', 'data': {'role': 'member'}}
        if event_type == 'organization.updated':
            return {'id': 'org-simulator000000000000', 'changes_requested': {'title': 'Simulated'}}
        return {}

    # -- what the API shows ------------------------------------------------------------------------

    def visible(self, t: float) -> list[dict]:
        """Every event listed at time t, newest first."""
        return [e.event for e in self._visible(t)]

    def _visible(self, t: float) -> list[Entry]:
        with self._lock:
            entries = [e for e in self.entries if e.visible_at <= t]
        return sorted(entries, key=lambda e: (e.at, str(e.event.get('id'))), reverse=True)

    def all_events(self) -> list[dict]:
        with self._lock:
            return [e.event for e in self.entries]

    def listing(self, params: dict, t: float) -> dict:
        if self.on_request is not None:
            self.on_request(params)
        limit = params.get('limit', 20)
        if limit < 1 or limit > 100:
            raise RequestError(
                f"Invalid 'limit': expected a value between 1 and 100, but got {limit} instead.",
                'limit',
                'invalid_value',
            )
        entries = self._visible(t)
        window = params.get('effective_at') or {}
        tests = {
            'gt': lambda a, b: a > b,
            'gte': lambda a, b: a >= b,
            'lt': lambda a, b: a < b,
            'lte': lambda a, b: a <= b,
        }
        for op, bound in window.items():
            entries = [e for e in entries if tests[op](e.at, bound)]
        events = [e.event for e in entries]
        if params.get('event_types'):
            events = [e for e in events if e['type'] in params['event_types']]
        if params.get('project_ids'):
            events = [e for e in events if (e.get('project') or {}).get('id') in params['project_ids']]
        after, before = params.get('after'), params.get('before')
        ids = [e.get('id') for e in events]
        if after is not None:
            if after not in ids:
                raise RequestError(f"Invalid 'after': no audit log '{after}' in this list.", 'after', 'invalid_value')
            events = events[ids.index(after) + 1 :]
        if before is not None:
            ids = [e.get('id') for e in events]
            events = events[: ids.index(before)] if before in ids else []
        page = events[:limit]
        return {
            'object': 'list',
            'data': page,
            'first_id': page[0].get('id') if page else None,
            'last_id': page[-1].get('id') if page else None,
            'has_more': len(events) > limit,
        }
