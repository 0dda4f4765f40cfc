"""Name resolution: the readable names behind project, API key and user ids.

Ids are what the usage API groups by; names are what people read on a dashboard. Projects can share a
name and be renamed, so names are added next to the ids, never instead of them. Names are refreshed
on an interval, and a failure to refresh keeps the names already known: metrics never wait for names.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import quote

from .client import ApiError, OpenAIClient
from .scrub import MAX_DETAIL, cap

LIST_LIMIT = 100


class NameResolver:
    def __init__(
        self,
        projects: bool,
        api_keys: bool,
        users: bool,
        refresh_interval: float,
        clock: Callable[[], float],
    ):
        self.enabled = {'project_id': projects, 'api_key_id': api_keys, 'user_id': users}
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.names: dict[str, dict[str, str]] = {dim: {} for dim in self.enabled}
        self._refreshed_at: float | None = None

    @property
    def any_enabled(self) -> bool:
        return any(self.enabled.values())

    def due(self) -> bool:
        return self.any_enabled and (
            self._refreshed_at is None or self.clock() - self._refreshed_at >= self.refresh_interval
        )

    def refresh(self, client: OpenAIClient) -> list[str]:
        """Reload the names; return a message for each part that failed (names known so far stay)."""
        problems = []
        projects = []
        if self.enabled['project_id'] or self.enabled['api_key_id']:
            try:
                projects = list(
                    client.iter_list(
                        '/organization/projects', [('limit', LIST_LIMIT), ('include_archived', 'true')], 'projects'
                    )
                )
                self.names['project_id'].update(
                    {p['id']: p['name'] for p in projects if isinstance(p, dict) and p.get('id') and p.get('name')}
                )
            except ApiError as e:
                problems.append(f'Project names not refreshed: {e.message}')
        if self.enabled['api_key_id']:
            for project in projects:
                if not isinstance(project, dict) or project.get('status') == 'archived' or not project.get('id'):
                    continue
                project_id = str(project['id'])
                if not project_id.strip('.'):
                    # `.` and `..` stay dot segments even quoted (URL normalization removes them).
                    problems.append(f'API key names of project {cap(project_id, MAX_DETAIL)} not refreshed: not an id.')
                    continue
                try:
                    # Quoted whole: an id is OpenAI's data, and `../` or `?` in it must not choose the path.
                    keys = client.iter_list(
                        f'/organization/projects/{quote(project_id, safe="")}/api_keys',
                        [('limit', LIST_LIMIT)],
                        'api_keys',
                    )
                    self.names['api_key_id'].update(
                        {k['id']: k['name'] for k in keys if isinstance(k, dict) and k.get('id') and k.get('name')}
                    )
                except ApiError as e:
                    problems.append(
                        f'API key names of project {cap(project_id, MAX_DETAIL)} not refreshed: {e.message}'
                    )
        if self.enabled['user_id']:
            try:
                users = client.iter_list('/organization/users', [('limit', LIST_LIMIT)], 'users')
                self.names['user_id'].update(
                    {u['id']: u['email'] for u in users if isinstance(u, dict) and u.get('id') and u.get('email')}
                )
            except ApiError as e:
                problems.append(f'User emails not refreshed: {e.message}')
        self._refreshed_at = self.clock()
        return problems

    def lookup(self, dim: str, value: str) -> str | None:
        table = self.names.get(dim)
        return table.get(value) if table else None
