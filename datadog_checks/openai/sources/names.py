"""Name resolution: the readable names behind project, API key and user ids.

Ids are what the usage API groups by; names are what people read on a dashboard. Projects can share a
name and be renamed, so names are added next to the ids, never instead of them. Names are refreshed
on an interval, and a failure to refresh keeps the names already known: metrics never wait for names.
"""

from __future__ import annotations

from typing import Callable, Iterable

from ..client import ApiError, OpenAIClient, project_path
from ..scrub import MAX_DETAIL, cap
from .base import Outcome, Run, Source

LIST_LIMIT = 100
# The share of a run's time budget a refresh may take: listing the keys of many projects must not leave
# the usage endpoints without the time to be read.
BUDGET_SHARE = 0.25


class NameSource(Source):
    name = 'names'

    def __init__(
        self,
        projects: bool,
        api_keys: bool,
        users: bool,
        refresh_interval: float,
        clock: Callable,
        list_projects: bool = False,
    ):
        self.enabled = {'project_id': projects, 'api_key_id': api_keys, 'user_id': users}
        # The projects are listed for the sources that read something per project (the headroom's limits) even when
        # no metric is tagged with their names.
        self.list_projects = list_projects
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.names: dict[str, dict[str, str]] = {dim: {} for dim in self.enabled}
        # The projects of the last listing, for the sources that read something per project.
        self.projects: list[dict] = []
        self._refreshed_at: float | None = None

    @property
    def any_enabled(self) -> bool:
        return any(self.enabled.values())

    @property
    def refreshed_at(self) -> float | None:
        """When the names (and the project listing) were last refreshed, successfully or not."""
        return self._refreshed_at

    def due(self) -> bool:
        return (self.any_enabled or self.list_projects) and (
            self._refreshed_at is None or self.clock() - self._refreshed_at >= self.refresh_interval
        )

    def collect(self, run: Run) -> Outcome:
        outcome = Outcome(self.name, complete=True)
        if self.due():
            outcome.warnings = self.refresh(run.client.within(BUDGET_SHARE))
            outcome.complete = not outcome.warnings
        return outcome

    def refresh(self, client: OpenAIClient) -> list[str]:
        """Reload the names; return a message for each part that failed (names known so far stay)."""
        problems: list[str] = []
        if self.enabled['project_id'] or self.enabled['api_key_id'] or self.list_projects:
            params = [('limit', LIST_LIMIT), ('include_archived', 'true')]
            listed = self._list(client, '/organization/projects', params, 'projects', problems)
            if listed is not None:
                self.projects = listed
                self.names['project_id'].update(self._names(listed, 'name'))
        if self.enabled['api_key_id']:
            for project in self.projects:
                self._refresh_keys(client, project, problems)
        if self.enabled['user_id']:
            users = self._list(client, '/organization/users', [('limit', LIST_LIMIT)], 'users', problems)
            if users is not None:
                self.names['user_id'].update(self._names(users, 'email'))
        self._refreshed_at = self.clock()
        return [f'{p} Metrics keep their ids; names follow at the next refresh.' for p in problems]

    def _refresh_keys(self, client: OpenAIClient, project: dict, problems: list[str]) -> None:
        if project.get('status') == 'archived':
            return
        project_id = str(project['id'])
        path = project_path(project_id, 'api_keys')
        what = f'API key names of project {cap(project_id, MAX_DETAIL)}'
        if path is None:
            problems.append(f'{what} not refreshed: not an id.')
            return
        keys = self._list(client, path, [('limit', LIST_LIMIT)], 'api_keys', problems, what)
        if keys is not None:
            self.names['api_key_id'].update(self._names(keys, 'name'))

    @staticmethod
    def _list(client, path, params, endpoint, problems, what=None) -> list[dict] | None:
        what = what or {'projects': 'Project names', 'users': 'User emails'}[endpoint]
        try:
            return [
                item for item in client.iter_list(path, params, endpoint) if isinstance(item, dict) and item.get('id')
            ]
        except ApiError as e:
            problems.append(f'{what} not refreshed: {e.message}')
            return None

    @staticmethod
    def _names(items: Iterable[dict], label: str) -> dict[str, str]:
        return {item['id']: item[label] for item in items if item.get(label)}

    def lookup(self, dim: str, value: str) -> str | None:
        table = self.names.get(dim)
        return table.get(value) if table else None
