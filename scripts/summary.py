"""What a user wants to know first after running the check, computed from the points it submitted.

Every figure below is a sum or a last value of the metrics the check handed to the aggregator during the
runs (the same points `--metrics` and `--json` print), so the summary can never say more than the check sent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

COMPLETIONS = 'openai.api.usage.completions.'
# The columns of the usage tables: (header, completions field).
USAGE_COLUMNS = (
    ('requests', 'num_model_requests'),
    ('input tokens', 'input_tokens'),
    ('cached input', 'input_cached_tokens'),
    ('output tokens', 'output_tokens'),
)
TOP = 5


def _tags(point: dict) -> dict[str, str]:
    return dict(t.split(':', 1) for t in point['tags'] if ':' in t)


def _points(runs: Iterable[dict], metric: str) -> Iterable[tuple[dict, float]]:
    for run in runs:
        for point in run['metrics']:
            if point['metric'] == metric:
                yield _tags(point), point['value']


def _last(runs: list[dict], metric: str) -> list[tuple[dict, float]]:
    """The gauge's values of the last run that submitted it."""
    for run in reversed(runs):
        found = list(_points([run], metric))
        if found:
            return found
    return []


def _n(v: float) -> str:
    return f'{v:,.0f}' if float(v).is_integer() else f'{v:,.2f}'


def _money(v: float, currency: str) -> str:
    return f'${v:,.2f}' if currency == 'usd' else f'{v:,.2f} {currency.upper()}'


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [title]
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.append('  ' + '  '.join(cells).rstrip())
    return out


def project_label(tags: dict) -> str:
    # Two projects can share a name: the id stays next to it.
    project_id = tags.get('project_id')
    if not project_id:
        return '(no project)'
    return f'{tags["project_name"]} ({project_id})' if tags.get('project_name') else project_id


def usage_by(runs: list[dict], dimension: str) -> dict[str, dict[str, float]]:
    """Completions usage summed over every run, by the value of one tag."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for _, field in USAGE_COLUMNS:
        for tags, value in _points(runs, COMPLETIONS + field):
            key = project_label(tags) if dimension == 'project_id' else tags.get(dimension, '(not grouped)')
            totals[key][field] += value
    return totals


def _usage_rows(totals: dict[str, dict[str, float]]) -> list[tuple[str, ...]]:
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1]['input_tokens'] - kv[1]['output_tokens'], kv[0]))
    return [(label, *(_n(fields[f]) for _, f in USAGE_COLUMNS)) for label, fields in ordered]


def other_usage(runs: list[dict]) -> dict[str, dict[str, float]]:
    """The other usage endpoints' counts, summed over every run: {endpoint: {field: total}}."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for run in runs:
        for point in run['metrics']:
            name = point['metric']
            if point['type'] != 'count' or not name.startswith('openai.api.usage.') or name.startswith(COMPLETIONS):
                continue
            endpoint, _, field = name[len('openai.api.usage.') :].partition('.')
            if not field:
                continue  # the estimate of spend (openai.api.usage.estimated_cost...), not an endpoint's figure
            totals[endpoint][field] += point['value']
    return totals


def health(runs: list[dict]) -> dict[str, float]:
    last = runs[-1:]
    requests = sum(v for _, v in _points(runs, 'openai.check.api.requests'))
    failed = sum(v for t, v in _points(runs, 'openai.check.api.requests') if t.get('status_code') != '200')
    lags = [v for _, v in _points(last, 'openai.check.data_lag')]
    durations = [v for _, v in _points(last, 'openai.check.run.duration')]
    return {
        'requests': requests,
        'failed_requests': failed,
        'retries': sum(v for _, v in _points(runs, 'openai.check.api.retries')),
        'data_lag': max(lags) if lags else 0.0,
        'run_duration': durations[-1] if durations else 0.0,
    }


def endpoints_read(run: dict) -> list[str]:
    # data_lag is 0 exactly for the endpoints the run read to their newest bucket.
    return sorted(t['endpoint'] for t, v in _points([run], 'openai.check.data_lag') if v == 0)


def summarize(
    account: str, runs: list[dict], warnings: list[str], errors: list[str], endpoints: list[str], period: str
) -> str:
    out = [f'== account {account}: {len(runs)} run{"s" if len(runs) != 1 else ""}{period} ==']
    status = next((sc for sc in runs[-1]['service_checks'] if sc['check'] == 'openai.can_connect'), None)
    connected = [v for _, v in _last(runs[-1:], 'openai.check.can_connect')]
    read = endpoints_read(runs[-1])
    verdict = status['status'] if status else 'UNKNOWN'
    out.append(
        f'Verdict: {verdict}. Connected: {"yes" if connected and connected[-1] == 1 else "no"}. '
        f'Read {len(read)} of {len(endpoints)} endpoints in the last run'
        + (f'; not read: {", ".join(e for e in endpoints if e not in read)}.' if len(read) < len(endpoints) else '.')
    )
    if status and status['message']:
        out.append(f'  {status["message"]}')
    for line in errors:
        out.append(f'  Error: {line}')
    distinct = list(dict.fromkeys(warnings))
    out.append(f'Warnings: {len(distinct) or "none"}')
    out.extend(f'  - {w}' for w in distinct)

    out.append('')
    month = _last(runs, 'openai.api.costs.month_to_date')
    if month:
        for tags, value in sorted(month, key=lambda tv: tv[0].get('currency', '')):
            out.append(f'Month-to-date spend (OpenAI\'s own figure): {_money(value, tags.get("currency", "usd"))}')
        projects = sorted(_last(runs, 'openai.api.costs.project_month_to_date'), key=lambda tv: -tv[1])
        rows = [(project_label(tags), _money(v, tags.get('currency', 'usd'))) for tags, v in projects[:TOP]]
        if rows:
            out.extend(_table(f'Top {len(rows)} projects this month:', ('project', 'spend'), rows))
        reported = defaultdict(float)
        for tags, value in _points(runs, 'openai.api.costs.amount'):
            reported[tags.get('currency', 'usd')] += value
        for currency, value in sorted(reported.items()):
            out.append(
                f'Costs OpenAI added during these runs: {_money(value, currency)} (a day\'s cost arrives hours late).'
            )
    else:
        out.append('Month-to-date spend: not read (costs are off or could not be read).')

    out.append('')
    by_model = usage_by(runs, 'model')
    if by_model:
        header = ('model', *(h for h, _ in USAGE_COLUMNS))
        out.extend(_table('Completions usage submitted during these runs, by model:', header, _usage_rows(by_model)))
        header = ('project', *(h for h, _ in USAGE_COLUMNS))
        out.extend(_table('... by project:', header, _usage_rows(usage_by(runs, 'project_id'))))
    else:
        out.append(
            'No completions usage was submitted during these runs (the first run of an account records a baseline '
            'and submits no usage: run it again a few minutes later).'
        )
    others = other_usage(runs)
    if others:
        out.append('Other endpoints, submitted during these runs:')
        for endpoint, fields in sorted(others.items()):
            out.append(f'  {endpoint}: ' + ', '.join(f'{_n(v)} {f}' for f, v in fields.items()))
    storage = _last(runs, 'openai.api.usage.vector_stores.usage_bytes')
    if storage:
        total = sum(v for _, v in storage)
        out.append(f'Vector store storage now: {_n(total)} bytes ({total / 1e9:,.2f} GB) in {len(storage)} projects')

    out.append('')
    h = health(runs)
    out.append(
        f'Check health: {_n(h["requests"])} API requests during these runs ({_n(h["failed_requests"])} not '
        f'answered 200), {_n(h["retries"])} retries; last run: data lag {_n(h["data_lag"])} s, '
        f'run time {h["run_duration"]:.2f} s.'
    )
    return '\n'.join(out)
