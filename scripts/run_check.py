"""Run the `openai` check the way `agent check openai` does, without an Agent.

    python scripts/run_check.py                      # against the built-in OpenAI API simulator
    OPENAI_ADMIN_KEY=sk-admin-... python scripts/run_check.py --times 1   # against OpenAI itself
    python scripts/run_check.py -c conf.d/openai.d/conf.yaml --times 3 --json

It reads a conf.yaml in the Agent's format (init_config + instances), runs every instance once or
`--times` times, and prints per account a summary of what the check sent (verdict, month-to-date spend,
usage by model and project, the check's health; `--metrics` adds every metric, tag and service check,
`--json` prints them as JSON), then one verdict line per account. The check's saved state goes to
`--state-dir` (never the Agent's).
With no admin key anywhere, it starts the project's OpenAI Admin API simulator on localhost, whose
simulated clock moves `--interval` seconds between runs so that traffic grows and late revisions land.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from datadog_checks.base import AgentCheck  # noqa: E402
from datadog_checks.base.stubs import aggregator, datadog_agent  # noqa: E402

from datadog_checks.openai import OpenAICheck  # noqa: E402

sys.path.insert(0, str(REPO / 'scripts'))
from summary import summarize  # noqa: E402

STATUS = {
    AgentCheck.OK: 'OK',
    AgentCheck.WARNING: 'WARNING',
    AgentCheck.CRITICAL: 'CRITICAL',
    AgentCheck.UNKNOWN: 'UNKNOWN',
}
DEMO_KEY = 'sk-admin-demo-simulator'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-c', '--config', help='a conf.yaml in the Agent format (default: one demo account)')
    p.add_argument('--times', type=int, default=3, help='runs per instance (default 3)')
    p.add_argument('--interval', type=float, default=300, help='seconds between runs (simulated with the simulator)')
    p.add_argument('--json', action='store_true', help='print every metric and service check as JSON')
    p.add_argument(
        '--metrics', action='store_true', help='print every metric, tag and service check before the summary'
    )
    p.add_argument('--state-dir', default=str(REPO / '.demo-state'), help='where the check keeps its state')
    p.add_argument('--reset', action='store_true', help='forget the saved state first (a new baseline)')
    p.add_argument('--simulator', action='store_true', help='use the simulator even if a key is configured')
    p.add_argument(
        '--all-runs', action='store_true', help='with --metrics or --json: every run\'s metrics, not just the last'
    )
    return p.parse_args(argv)


def load_config(args) -> dict:
    if args.config:
        with open(args.config) as f:
            config = yaml.safe_load(f) or {}
    else:
        key = os.environ.get('OPENAI_ADMIN_KEY')
        instance = {'account_name': 'demo' if not key else 'default', 'min_collection_interval': 300}
        if key:
            instance['admin_api_key'] = key
        config = {'init_config': {}, 'instances': [instance]}
    config.setdefault('init_config', {})
    config['init_config'] = config['init_config'] or {}
    if not config.get('instances'):
        sys.exit('The configuration has no instances: add one under `instances:` with account_name and admin_api_key.')
    return config


class StateDir:
    """The persistent cache of the local runs, one JSON file, loaded into the Agent stub."""

    def __init__(self, path: str, reset: bool):
        self.file = Path(path) / 'persistent_cache.json'
        if reset:
            for f in (self.file, self.clock_file):
                if f.exists():
                    f.unlink()

    def load(self):
        datadog_agent._cache.clear()
        if self.file.exists():
            datadog_agent._cache.update(json.loads(self.file.read_text()))

    def save(self):
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix('.tmp')
        tmp.write_text(json.dumps(datadog_agent._cache))
        tmp.replace(self.file)

    # The simulator's clock goes on from where the previous demo left it: starting it again from the
    # beginning would show the check an organization whose past usage shrank.
    @property
    def clock_file(self) -> Path:
        return self.file.with_name('simulator_clock.json')

    def simulated_time(self) -> float | None:
        return json.loads(self.clock_file.read_text())['now'] if self.clock_file.exists() else None

    def save_simulated_time(self, now: float) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.clock_file.write_text(json.dumps({'now': now}))


def start_simulator(state: StateDir, interval: float):
    from tests.simulator import Clock, Organization, SimulatorServer

    # A first demo starts a day and a half into the organization's life, so the first run has history
    # to baseline and the costs month has a few days.
    org = Organization()
    resumed = state.simulated_time()
    clock = Clock(resumed + interval if resumed else org.traffic_start + 36 * 3600)
    server = SimulatorServer(org, clock, admin_key=DEMO_KEY)
    base_url = server.start()
    return server, clock, base_url


def collect_run() -> dict:
    metrics = []
    for name, stubs in aggregator._metrics.items():
        per_context = defaultdict(float)
        types = {}
        for m in stubs:
            context = (name, tuple(sorted(m.tags)))
            types[context] = m.type
            if m.type == aggregator.GAUGE:
                per_context[context] = m.value
            else:
                per_context[context] += m.value
        for (metric, tags), value in per_context.items():
            metrics.append(
                {
                    'metric': metric,
                    'type': aggregator.METRIC_ENUM_MAP_REV[types[(metric, tags)]],
                    'value': value,
                    'tags': list(tags),
                }
            )
    checks = [
        {'check': name, 'status': STATUS.get(sc.status, sc.status), 'tags': sc.tags, 'message': sc.message}
        for name, scs in aggregator._service_checks.items()
        for sc in scs
    ]
    return {'metrics': sorted(metrics, key=lambda m: (m['metric'], m['tags'])), 'service_checks': checks}


def print_table(run: dict, out=None):
    out = out or sys.stdout
    rows = [(m['metric'], m['type'], _fmt(m['value']), ','.join(m['tags'])) for m in run['metrics']]
    widths = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(('metric', 'type', 'value', 'tags'))]
    widths[3] = 0
    header = ('metric', 'type', 'value', 'tags')
    out.write('  '.join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + '\n')
    for r in rows:
        out.write(f'{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}  {r[3]}\n')
    for sc in run['service_checks']:
        message = f'  {sc["message"]}' if sc['message'] else ''
        out.write(f'service check {sc["check"]}: {sc["status"]} [{",".join(sc["tags"])}]{message}\n')


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f'{v:.6f}'.rstrip('0')


def verdict(account: str, run: dict, errors: list[str]) -> str:
    if errors:
        return f'{account}: ERROR {errors[-1]}'
    status = next((sc for sc in run['service_checks'] if sc['check'] == 'openai.can_connect'), None)
    usage_points = sum(1 for m in run['metrics'] if m['metric'].startswith('openai.api.'))
    if status is None:
        return f'{account}: UNKNOWN (no service check was sent)'
    detail = f' - {status["message"]}' if status['message'] else ''
    return f'{account}: {status["status"]}, {usage_points} usage and cost points in the last run{detail}'


def main(argv=None) -> int:
    args = parse_args(argv)
    config = load_config(args)
    state = StateDir(args.state_dir, args.reset)
    server = clock = None
    needs_simulator = args.simulator or not any(
        i.get('admin_api_key') or i.get('auth_token') for i in config['instances']
    )
    if needs_simulator:
        server, clock, base_url = start_simulator(state, args.interval)
        for instance in config['instances']:
            instance.update({'admin_api_key': DEMO_KEY, 'api_base_url': base_url})
        sys.stderr.write(f'No admin key given: running against the OpenAI API simulator at {base_url}\n')

    verdicts = []
    report = []
    try:
        for instance in config['instances']:
            account = str(instance.get('account_name', '?'))
            errors = []
            warnings = []
            runs = []
            state.load()
            check = OpenAICheck('openai', config['init_config'], [instance])
            if clock is not None:
                check.clock = clock.now
            for i in range(args.times):
                aggregator.reset()
                if i and clock is not None:
                    clock.advance(args.interval)
                elif i:
                    time.sleep(args.interval)
                error = check.run()
                if error:
                    errors.append(json.loads(error)[0]['message'])
                # What the Agent shows in `agent status` after each run, and then forgets.
                warnings.extend(check.get_warnings())
                run = collect_run()
                runs.append(run)
                state.save()
                if clock is not None:
                    state.save_simulated_time(clock.now())
            shown = runs if args.all_runs else runs[-1:]
            for n, run in enumerate(shown, start=len(runs) - len(shown) + 1):
                report.append({'account': account, 'run': n, **run})
                if args.metrics and not args.json:
                    print(f'\n== account {account}, run {n} of {len(runs)} ==')
                    print_table(run)
            if runs and not args.json:
                endpoints = [s.name for s in getattr(check, 'sources', ()) if not s.derived]
                print()
                period = f', {args.interval:g} s apart' + (' (simulated time)' if clock is not None else '')
                period = period if len(runs) > 1 else ''
                print(summarize(account, runs, warnings, list(dict.fromkeys(errors)), endpoints, period))
            verdicts.append(verdict(account, runs[-1] if runs else {'metrics': [], 'service_checks': []}, errors))
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps({'runs': report, 'verdicts': verdicts}, indent=2))
    else:
        print()
        for line in verdicts:
            print(line)
    return 0 if all(' OK' in v or 'WARNING' in v for v in verdicts) else 1


if __name__ == '__main__':
    sys.exit(main())
