"""The organization's rate limits and hard spend limits, as the Administration API serves them.

Rate limits name models as OpenAI lists them (`gpt-4o`, not the dated `gpt-4o-2024-08-06` that usage reports), one
entry per model, each with the fields the extract's `ProjectRateLimit` gives for that kind of model. Projects differ:
production has high limits, the sandboxes low ones (so that utilizations are not all near 0). Spend limits are in
cents (`threshold_amount`), currency `USD`; the organization has one, some projects have one (enforcing or
inactive), and one project has none (the API answers 404). Tests may change any of it (`Limits.spend`,
`Limits.rate`) while the server runs.
"""

from __future__ import annotations

import copy

from .organization import Organization

# The listing routes of the extract this module answers, by spec path template.
LIMIT_ROUTES = {
    '/organization/spend_limit': 'spend_limit',
    '/organization/projects/{project_id}/spend_limit': 'project_spend_limit',
}

# model -> (requests per minute, tokens per minute, other fields) at a scale of 1 (a production project).
CHAT = {
    'gpt-4o': (10_000, 2_000_000),
    'gpt-4o-mini': (30_000, 10_000_000),
    'gpt-4.1': (10_000, 2_000_000),
    'gpt-4.1-mini': (30_000, 10_000_000),
    'gpt-4': (10_000, 300_000),
    'o3': (10_000, 2_000_000),
    'o4-mini': (30_000, 10_000_000),
    'gpt-5': (15_000, 4_000_000),
    'gpt-4o-realtime-preview': (5_000, 800_000),
    'gpt-4o-audio-preview': (5_000, 800_000),
}
EMBEDDINGS = {'text-embedding-3-small': (10_000, 10_000_000), 'text-embedding-3-large': (10_000, 10_000_000)}
# Listed undated as well: usage reports text-embedding-ada-002-v2.
EMBEDDINGS['text-embedding-ada-002'] = (10_000, 10_000_000)
# text-moderation-latest has no limit of its own here: its usage gets no utilization.
MODERATIONS = {'omni-moderation-latest': (1_000, 500_000)}
IMAGES = {'gpt-image-1': (500, 100_000, 50), 'dall-e-3': (500, 0, 50), 'dall-e-2': (500, 0, 100)}
SPEECH = {'tts-1': (500, 0), 'tts-1-hd': (500, 0), 'gpt-4o-mini-tts': (500, 600_000)}
TRANSCRIPTION = {
    'whisper-1': (500, 0, 100),
    'gpt-4o-transcribe': (500, 100_000, 100),
    'gpt-4o-mini-transcribe': (500, 0, 100),
}

# Project name -> the scale of its limits: Sandbox projects get 1/200 of production's.
SCALE = {'Production': 1.0, 'Staging': 0.02, 'Research': 0.01, 'Sandbox': 0.005}
DEFAULT_SCALE = 0.01


def _scaled(value: int, scale: float) -> int:
    return max(1, int(value * scale)) if value else 0


def rate_limits_for(scale: float) -> list[dict]:
    rows = []

    def add(model: str, rpm: int, tpm: int, **extra) -> None:
        row = {
            'object': 'project.rate_limit',
            'id': f'rl-{model}',
            'model': model,
            'max_requests_per_1_minute': _scaled(rpm, scale),
            'max_tokens_per_1_minute': _scaled(tpm, scale),
        }
        row.update({k: _scaled(v, scale) for k, v in extra.items()})
        rows.append(row)

    for model, (rpm, tpm) in CHAT.items():
        add(model, rpm, tpm, max_requests_per_1_day=rpm * 1000, batch_1_day_max_input_tokens=tpm * 100)
    for table in (EMBEDDINGS, MODERATIONS, SPEECH):
        for model, (rpm, tpm) in table.items():
            add(model, rpm, tpm)
    for model, (rpm, tpm, images) in IMAGES.items():
        add(model, rpm, tpm, max_images_per_1_minute=images)
    for model, (rpm, tpm, megabytes) in TRANSCRIPTION.items():
        add(model, rpm, tpm, max_audio_megabytes_per_1_minute=megabytes)
    return rows


def spend_limit(kind: str, cents: int, status: str = 'enforcing') -> dict:
    return {
        'object': f'{kind}.spend_limit',
        'threshold_amount': cents,
        'currency': 'USD',
        'interval': 'month',
        'enforcement': {'status': status},
    }


class Limits:
    """The limits of one organization. `spend[None]` is the organization's spend limit, `spend[project_id]` a
    project's (absent or None: no limit, a 404); `rate[project_id]` the project's rate limits."""

    def __init__(self, org: Organization):
        self.rate: dict[str, list[dict]] = {}
        self.spend: dict[str | None, dict | None] = {None: spend_limit('organization', 250_000)}
        by_name: dict[str, int] = {}
        for project in org.projects:
            self.rate[project.id] = rate_limits_for(SCALE.get(project.name, DEFAULT_SCALE))
            seen = by_name.get(project.name, 0)
            by_name[project.name] = seen + 1
            if project.name == 'Production':
                self.spend[project.id] = spend_limit('project', 150_000)
            elif project.name == 'Staging':
                self.spend[project.id] = spend_limit('project', 200_000, 'inactive')
            elif project.name == 'Sandbox' and not seen:
                self.spend[project.id] = spend_limit('project', 5_000)
            elif project.name == 'Research':
                pass  # no spend limit: the API answers 404
            else:
                self.spend[project.id] = spend_limit('project', 100_000)

    def rate_limits(self, project_id: str) -> list[dict]:
        return copy.deepcopy(self.rate.get(project_id, []))

    def spend_limit(self, project_id: str | None) -> dict | None:
        return copy.deepcopy(self.spend.get(project_id))
