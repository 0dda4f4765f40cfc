"""Benchmark of the `openai` check against a large simulated OpenAI organization.

    .venvs/py3.12/bin/python scripts/benchmark.py            # the full benchmark (about 10 minutes on 2 cores)
    .venvs/py3.12/bin/python scripts/benchmark.py --quick    # smaller sizes, about a minute: a smoke run
    .venvs/py3.12/bin/python scripts/benchmark.py --json out.json   # also write every figure as JSON
    .venvs/py3.12/bin/python scripts/benchmark.py --profile  # also print a cProfile of one steady run (stderr)

What it does. The project's OpenAI Admin API simulator serves a large organization from a SEPARATE
process (this script started with --serve), so that the CPU time measured in this process is the
check's alone. Simulated time is driven from here: before each run, the simulator's clock is set to
the check's clock through the subprocess's stdin, and it moves 300 s per run, as with the Agent's
min_collection_interval. The check runs with its defaults except group_by, set to every dimension of all
ten usage endpoints (the scenario of the first measurements; the default group_by is narrower): 1h buckets,
revision_window_hours 6, costs by project and line item in 1d buckets from the month start or 3 days back,
project and API key names resolved hourly.

For each run it records wall and CPU time (time.process_time of this process), the peak resident
memory of this process during the run (Linux VmHWM, reset before the run through
/proc/self/clear_refs), the API requests, bytes and rows, the points submitted, the size of the saved
state and the time to save and load it (Ledger.dumps/Ledger.loads). For the reported runs it also
measures the floor: decoding the same response bytes with the JSON decoder the check uses plus
submitting the same points (same names, values and tag lists) through an AgentCheck's count/gauge, and
the loaded ledgers' memory per cell (tracemalloc). Points reach an aggregator that keeps nothing
(NullAggregator), as inside the Agent, where they leave Python for the Go aggregator. Then it scales
the completions endpoint (other endpoints small) to show that a run's cost is linear in the number of
series.

The Markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import MutableMapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from datadog_checks.openai.catalogue import ENDPOINTS_BY_NAME, USAGE_ENDPOINTS  # noqa: E402

HOUR = 3600
DAY = 86400
INTERVAL = 300
# The floor is measured this many times per reported run; its median is used.
FLOOR_REPEATS = 3
ADMIN_KEY = 'sk-admin-benchmark'
# 2026-01-15T08:00:00Z: two weeks into the simulated organization's traffic (it starts on 2026-01-01),
# so costs, read from the first of the month, span 15 daily buckets. 100 runs end the same day.
START_OFFSET = 14 * DAY + 8 * HOUR

# Every usage endpoint of the catalogue but completions, which the benchmark sizes on its own.
OTHER_USAGE = tuple(name for name in USAGE_ENDPOINTS if name != 'completions')
# The scenario measured since 0.1.0: every usage endpoint grouped by every dimension OpenAI allows (the defaults
# were narrowed since, which would shrink the organization's series and make the figures incomparable).
GROUP_BY = {name: list(ENDPOINTS_BY_NAME[name].group_by) for name in USAGE_ENDPOINTS}

# name: (completions series, series of every other endpoint, projects, runs, scaling sizes, scaling runs)
PROFILES = {
    # vector_stores and code_interpreter_sessions group by project_id only: 1,450 projects give about a
    # thousand series each (a project has vector stores with probability 0.7 in the simulator).
    'full': dict(
        series=20_000, other=1_000, projects=1_450, runs=100, scaling=(1_000, 10_000, 100_000), scaling_runs=1
    ),
    'quick': dict(series=2_000, other=200, projects=290, runs=12, scaling=(500, 1_000, 2_000), scaling_runs=2),
    # For the smoke test: seconds, not minutes.
    'tiny': dict(series=60, other=10, projects=6, runs=3, scaling=(20, 40), scaling_runs=1),
}


# -- the simulator, in its own process ---------------------------------------------------------------


def serve(spec: dict) -> int:
    """Subprocess side: build the organization, serve it, obey commands on stdin (one JSON per line).

    Commands: {"set": t} sets the clock; {"log": true} returns and clears the request log;
    {"cpu": true} returns this process's CPU time; {"quit": true}. Each gets one JSON line back.
    """
    from tests.simulator import Clock, Organization, SimulatorServer

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write on the command channel
    org = Organization(
        seed=spec['seed'],
        projects=spec['projects'],
        series_per_bucket=spec['series'],
    )
    # Settled buckets are rendered once and kept: the benchmark has the memory, and the check's wall
    # time should not be the simulator re-rendering a bucket that cannot change.
    org._results_cache_limit = 4_000_000_000
    clock = Clock(spec['start'])
    server = SimulatorServer(org, clock, admin_key=spec['admin_key'], page_cache_bytes=2_000_000_000)
    base_url = server.start()
    counts = {name: traffic.n for name, traffic in org.traffic.items()}
    out.write(json.dumps({'base_url': base_url, 'series': counts, 'describe': org.describe()}) + '\n')
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        if 'set' in command:
            clock.set(command['set'])
            reply = {'ok': True}
        elif 'log' in command:
            with server._log_lock:
                records = list(server.requests)
                server.requests.clear()
            reply = {
                'requests': [
                    {
                        'endpoint': r.endpoint,
                        'path': r.path,
                        'query': urlencode([(k, v) for k, vs in r.query.items() for v in vs]),
                        'status': r.status,
                        'bytes': r.bytes,
                        'start_time': r.param('start_time'),
                        'bucket_width': r.param('bucket_width'),
                        'limit': r.param('limit'),
                        'page': r.param('page'),
                    }
                    for r in records
                ]
            }
        elif 'cpu' in command:
            reply = {'cpu': time.process_time()}
        elif 'quit' in command:
            break
        else:
            reply = {'error': f'unknown command {command!r}'}
        out.write(json.dumps(reply) + '\n')
        out.flush()
    server.stop()
    return 0


class Simulator:
    """The benchmark side of the simulator subprocess."""

    def __init__(self, series: dict, projects: int, start: int, seed: int = 11):
        spec = {'seed': seed, 'projects': projects, 'series': series, 'start': start, 'admin_key': ADMIN_KEY}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), '--serve', json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(REPO),
            env=env,
            text=True,
        )
        hello = self._read()
        self.base_url = hello['base_url']
        self.series = hello['series']
        self.describe = hello['describe']

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f'the simulator process exited ({self.proc.poll()}); see its stderr above')
        return json.loads(line)

    def command(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + '\n')
        self.proc.stdin.flush()
        return self._read()

    def set_time(self, t: float) -> None:
        self.command(set=t)

    def take_log(self) -> list[dict]:
        return self.command(log=True)['requests']

    def cpu(self) -> float:
        return self.command(cpu=True)['cpu']

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({'quit': True}) + '\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> 'Simulator':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- memory -------------------------------------------------------------------------------------------


def _read_file(path: str) -> bytes:
    """A file's bytes, read with the os module's calls. The benchmark's own `open()` calls (the state written as the
    Agent would write it, /proc/self/status read around every run) left a block or a few behind each time (tracemalloc):
    made during a run, each held one of Python's arenas as a long-lived object of the check would, so the memory held
    between runs climbed with the number of runs, and the check was charged for it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b''.join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf'^{field}:\s+(\d+) kB', _read_file('/proc/self/status').decode(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False where that is not possible."""
    try:
        _write_file('/proc/self/clear_refs', b'5')
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak resident memory of this process during a block: VmHWM reset at the start (Linux), else
    the lifetime maximum from getrusage (then only an upper bound for runs after a bigger one)."""

    def __enter__(self):
        self.exact = _reset_peak() and _status_kb('VmHWM') is not None
        self.rss_before = _status_kb('VmRSS')
        return self

    def __exit__(self, *exc):
        if self.exact:
            self.peak_kb = _status_kb('VmHWM')
        else:
            import resource

            self.peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.method = 'VmHWM reset per run' if self.exact else 'ru_maxrss (lifetime)'


class GarbageCollection:
    """CPU time spent in Python's cyclic garbage collector during a block, and its full collections."""

    def __enter__(self):
        self.cpu = 0.0
        self.full = 0
        self._started = 0.0
        gc.callbacks.append(self._callback)
        return self

    def _callback(self, phase: str, info: dict) -> None:
        if phase == 'start':
            self._started = time.process_time()
        else:
            self.cpu += time.process_time() - self._started
            self.full += info['generation'] == 2

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)


class NullAggregator:
    """The aggregator as the check sees it inside the Agent: each point goes to the Agent's Go side, and
    nothing of it stays in Python memory. The test stub (datadog_checks.base.stubs.aggregator) keeps a
    MetricStub per point instead, which would charge the check hundreds of MB and most of its garbage
    collection. The check's count/gauge calls still run whole (names, tags, types); only the stub's storage
    is replaced by a counter. The floor goes through the same sink, so the ratio stays fair.

    For the runs whose floor is measured, the points are also captured, compactly (four flat columns, about
    25 bytes a point), to be submitted again by the floor: that capture is in those runs' memory figures."""

    def __init__(self):
        self.points = 0
        self.capture = False
        self.clear()

    def clear(self) -> None:
        self.names, self.types, self.values, self.tags = [], bytearray(), array('d'), []

    def submit_metric(self, check, check_id, mtype, name, value, tags, hostname, flush_first_value):
        self.points += 1
        if self.capture:
            self.names.append(name)
            self.types.append(mtype)
            self.values.append(value)
            self.tags.append(tags)

    def captured(self) -> list[tuple]:
        return list(zip(self.names, self.types, self.values, self.tags))


SINK = NullAggregator()


@contextmanager
def null_aggregator():
    """The stub's submit_metric replaced by SINK's for the benchmark's duration (the tests' stub is restored)."""
    from datadog_checks.base.stubs import aggregator

    aggregator.submit_metric = SINK.submit_metric
    try:
        yield SINK
    finally:
        del aggregator.submit_metric


# -- the check, instrumented lightly -------------------------------------------------------------------


def json_implementation() -> str:
    from datadog_checks.base.utils.format import json as ddjson

    ddjson.decode(b'{}')  # loads the lazily imported implementation
    module = sys.modules.get('datadog_checks.base.utils.format._json')
    orjson = getattr(module, 'orjson', None)
    return f'orjson {orjson.__version__}' if orjson is not None else 'stdlib json (orjson not installed)'


def apart(measure: Callable[[], dict]) -> dict:
    """What `measure()` returns, measured in a child process (a fork) where the platform has one. The benchmark's own
    measurements (the floor's bodies fetched again and decoded, every saved state loaded and saved again) take
    hundreds of MB of the process's heap; done in the check's process, they left its heap laid out otherwise than
    the check leaves it, and the next runs peaked some 40 MB higher (a cost of the benchmark, not of the check).
    The child's CPU time is measured in the child, as it was in the process."""
    if not hasattr(os, 'fork'):
        return measure()
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, answer, leave without running the parent's exit handlers
        os.close(read_end)
        try:
            payload = pickle.dumps((True, measure()))
        except BaseException as e:  # noqa: BLE001 - reported by the parent
            payload = pickle.dumps((False, f'{type(e).__name__}: {e}'))
        with os.fdopen(write_end, 'wb') as answer:
            answer.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, 'rb') as answer:
        payload = answer.read()
    os.waitpid(pid, 0)
    if not payload:
        raise RuntimeError('the measurement in a child process ended without an answer')
    ok, value = pickle.loads(payload)
    if not ok:
        raise RuntimeError(f'the measurement in a child process failed: {value}')
    return value


class DiskCache(MutableMapping):
    """The Agent's persistent cache as the Agent keeps it: a file per key, in a temporary folder."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix='openai-benchmark-cache-')
        atexit.register(shutil.rmtree, self.folder, True)

    def _path(self, key: str) -> str:
        return os.path.join(self.folder, hashlib.sha256(key.encode()).hexdigest())

    def __getitem__(self, key: str) -> str:
        try:
            return _read_file(self._path(key)).decode('utf-8')
        except FileNotFoundError:
            raise KeyError(key) from None

    def __setitem__(self, key: str, value: str) -> None:
        _write_file(self._path(key), value.encode('utf-8'))
        _write_file(self._path(key) + '.key', key.encode('utf-8'))

    def __delitem__(self, key: str) -> None:
        for path in (self._path(key), self._path(key) + '.key'):
            os.unlink(path)

    def __iter__(self):
        for name in sorted(os.listdir(self.folder)):
            if name.endswith('.key'):
                yield _read_file(os.path.join(self.folder, name)).decode('utf-8')

    def __len__(self) -> int:
        return sum(1 for name in os.listdir(self.folder) if name.endswith('.key'))


class Bench:
    """One check instance against one simulator, run after run on a simulated clock."""

    def __init__(self, sim: Simulator, start: int, timeout: float = 600):
        from datadog_checks.base.stubs import aggregator, datadog_agent

        from datadog_checks.openai import OpenAICheck
        from tests.simulator import Clock

        self.sim = sim
        self.aggregator = aggregator
        self.sink = SINK
        # On disk, as the Agent's persistent cache is: the Agent takes the saved text into Go and writes a file, so
        # the check's process does not hold it between runs (the test stub's dict would, some 36 MB here).
        self.cache = datadog_agent._cache = DiskCache()
        aggregator.reset()
        self.clock = Clock(start)
        instance = {
            'account_name': 'benchmark',
            'admin_api_key': ADMIN_KEY,
            'api_base_url': sim.base_url,
            'min_collection_interval': INTERVAL,
            # A page of 100k series is hundreds of MB: give the simulator time to render it.
            'timeout': timeout,
            'group_by': GROUP_BY,
            # The usage and costs pipeline alone, comparable from one report to the next: the headroom's reads (limits
            # at the names refresh, one per-minute page per endpoint with per-minute limits) are counted by
            # tests/test_headroom.py.
            'collect_headroom': False,
        }
        check = OpenAICheck('openai', {}, [instance])
        check.clock = self.clock.now
        check.monotonic = self.clock.now
        check.sleep = self._sleep
        self.check = check
        self.results = []
        self.names_cpu = 0.0
        # Cells of each ledger at the last run, and the CPU spent counting them (not the check's).
        self.cells: dict[str, int] = {}
        self.bookkeeping_cpu = 0.0
        self.names_wall = 0.0
        # Observation only: what each source's run gave, and the time spent resolving names.
        collect = check.collect
        build = check.build

        def observed_collect(source, run):
            outcome = collect(source, run)
            if outcome is None:
                return None
            ledger = getattr(source, 'ledger', None)
            if ledger is not None and not source.derived:
                # Counted here, while the ledger is in memory (the check packs it at the end of a large run), and
                # left out of the run's CPU time.
                cpu = time.process_time()
                self.cells[source.name] = ledger.cells()
                self.bookkeeping_cpu += time.process_time() - cpu
            # Figures, not the outcome: holding its points past the run would keep their memory from the check's
            # release at the end of the run, and count it as held between runs.
            self.results.append(
                SimpleNamespace(
                    source=outcome.source,
                    rows=outcome.rows,
                    counts=len(outcome.counts),
                    complete=outcome.complete,
                    baseline=outcome.baseline,
                )
            )
            return outcome

        def observed_build():
            build()
            names = check.names.collect

            def observed_names(run):
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    return names(run)
                finally:
                    self.names_wall += time.perf_counter() - wall
                    self.names_cpu += time.process_time() - cpu

            check.names.collect = observed_names

        check.collect = observed_collect
        check.build = observed_build
        check.check_initializations[-1] = observed_build
        # Every run's record, as JSON text: held as dicts, the objects of a record made after each run stayed in the
        # heap's arenas among the check's and kept some from being given back (see _read_file).
        self._records: list[str] = []

    @property
    def runs(self) -> list[dict]:
        return [json.loads(text) for text in self._records]

    def _sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sim.set_time(self.clock.now())

    def start_run(self, capture: bool, at: float | None = None) -> None:
        """Before a run at the clock's time (or `at`): nothing submitted or recorded yet, the simulator at that time and
        its request log empty; with `capture`, the run's points kept for the floor."""
        self.aggregator.reset()
        self.sink.points = 0
        self.sink.capture = capture
        self.results = []
        self.bookkeeping_cpu = 0.0
        self.sim.set_time(self.clock.now() if at is None else at)
        self.sim.take_log()

    def run_once(self, with_floor: bool = False) -> dict:
        """One run of the check at the current time; the clock then moves INTERVAL seconds. With
        `with_floor`, the record also holds the run's floor, its pages and the state's load and save times."""
        self.start_run(capture=with_floor)
        self.names_cpu = self.names_wall = 0.0
        sim_cpu = self.sim.cpu()
        gc.collect()
        # Memory blocks held by Python objects between runs: flat unless something accumulates.
        blocks = sys.getallocatedblocks()
        with PeakMemory() as memory, GarbageCollection() as collections:
            wall, cpu = time.perf_counter(), time.process_time()
            error = self.check.run()
            cpu = time.process_time() - cpu - self.bookkeeping_cpu
            wall = time.perf_counter() - wall
        self.sink.capture = False
        gc.collect()
        # What the run left behind, before the benchmark's own bookkeeping.
        rss_after = _status_kb('VmRSS')
        if error:
            raise RuntimeError(f'the check failed: {error}')
        sim_cpu = self.sim.cpu() - sim_cpu
        log = self.sim.take_log()
        points = self.sink.captured()
        self.sink.clear()
        flows = sum(r.counts for r in self.results)
        record = {
            'run': len(self._records) + 1,
            'time': self.clock.now(),
            'wall_s': wall,
            'cpu_s': cpu,
            'names_cpu_s': self.names_cpu,
            'gc_cpu_s': collections.cpu,
            'gc_full': collections.full,
            'names_wall_s': self.names_wall,
            'simulator_cpu_s': sim_cpu,
            'peak_rss_mb': memory.peak_kb / 1024,
            'rss_before_mb': (memory.rss_before or 0) / 1024,
            'rss_after_mb': (rss_after or 0) / 1024,
            'allocated_blocks_before': blocks,
            'memory_method': memory.method,
            # The floor's points, captured during the run, are in its peak: not a steady run's memory.
            'captured_points': with_floor,
            'requests': len(log),
            'requests_by_endpoint': dict(Counter(r['endpoint'] for r in log)),
            'usage_costs_requests': sum(1 for r in log if r['start_time'] is not None),
            'listing_requests': sum(1 for r in log if r['start_time'] is None),
            'non_200': sum(1 for r in log if r['status'] != 200),
            'bytes': sum(r['bytes'] for r in log),
            'rows': sum(r.rows for r in self.results),
            # The estimate of spend reads no rows of its own (it prices the others' increases).
            'rows_by_endpoint': {
                r.source: r.rows for r in self.results if not self.check.sources_by_name[r.source].derived
            },
            'count_points': flows,
            'points': self.sink.points,
            'complete': all(r.complete for r in self.results),
            'baseline': any(r.baseline for r in self.results),
        }
        if not with_floor:
            record.update(self.state(timed=False))
        record['state_cells_by_endpoint'] = dict(self.cells)
        record['state_cells'] = sum(record['state_cells_by_endpoint'].values())
        if with_floor:
            record['pages'] = [r for r in log if r['start_time'] is not None]
            record.update(apart(functools.partial(self.measured_apart, record, log, points)))
        del points, log
        self._records.append(json.dumps(record, default=str))
        self.results = []  # the check keeps none of them: neither should the benchmark, between runs
        self.aggregator.reset()
        # The benchmark's own bookkeeping (the saved state read back, the cells counted, a floor's bodies and points)
        # is not the check's: give its memory back before the next run (as the check does after a large read), so
        # that it does not count as held between runs.
        from datadog_checks.openai.memory import release_freed_memory

        gc.collect()
        release_freed_memory()
        self.clock.advance(INTERVAL)
        return record

    def measured_apart(self, record: dict, log: list[dict], points: list[tuple]) -> dict:
        """What a run with its floor measures beyond the run: the state loaded and saved again, the ledgers'
        memory, the floor (see apart())."""
        figures = self.state(timed=True)
        figures.update(self.ledger_memory())
        figures.update(self.floor(record, log, points))
        return figures

    def state(self, timed: bool) -> dict:
        """Size of the saved state and, when timed, the time to load it and save it again (every endpoint)."""
        from datadog_checks.openai.ledger import Ledger

        size = 0
        load = save = resave = 0.0
        for key, text in self.cache.items():
            if '_ledger_' not in key:
                continue
            size += len(text)
            if not timed:
                continue
            t0 = time.perf_counter()
            ledger = Ledger.loads(text)
            t1 = time.perf_counter()
            ledger.dumps()
            t2 = time.perf_counter()
            # Saved again unchanged, as a run that changed nothing of it would (the compact ledger reuses the
            # saved form of each bucket it did not write to; 0.2.0's ledger did not).
            ledger.dumps()
            t3 = time.perf_counter()
            load += t1 - t0
            save += t2 - t1
            resave += t3 - t2
        if not timed:
            return {'state_bytes': size}
        return {'state_bytes': size, 'state_load_s': load, 'state_save_s': save, 'state_resave_s': resave}

    def ledger_memory(self) -> dict:
        """Bytes a ledger holds in memory per (bucket, series) cell, measured with tracemalloc: each saved state
        loaded again (as the check does once per start; afterwards it applies each run's change to it), with
        what the loading allocated and freed left out."""
        import tracemalloc

        from datadog_checks.openai.ledger import Ledger

        held = kept = cells = 0
        for key, text in self.cache.items():
            if '_ledger_' not in key:
                continue
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                ledger = Ledger.loads(text)
                gc.collect()
                loaded = tracemalloc.get_traced_memory()[0]
                # What saving it keeps for the next save, if anything (the compact ledger's saved parts).
                ledger.dumps()
                gc.collect()
                kept += tracemalloc.get_traced_memory()[0] - loaded
                held += loaded - before
            finally:
                tracemalloc.stop()
            cells += sum(len(b) for b in ledger.buckets.values())
            del ledger
        return {
            'ledger_bytes': held,
            'ledger_cells': cells,
            'ledger_bytes_per_cell': held / cells if cells else 0.0,
            'ledger_save_cache_bytes_per_cell': kept / cells if cells else 0.0,
        }

    def floor(self, record: dict, log: list[dict], points: list[tuple]) -> dict:
        """The floor for a run: decode its response bytes, submit its points, nothing else (the median of
        FLOOR_REPEATS times each)."""
        floor = self.floor_work(record, log, points)
        decode_cpu, decode_wall = _median_of(FLOOR_REPEATS, floor.decode)
        floor.bodies.clear()  # hundreds of MB at the largest sizes
        submit_cpu, submit_wall = _median_of(FLOOR_REPEATS, floor.submit)
        floor_cpu = decode_cpu + submit_cpu
        return {
            'floor_decode_cpu_s': decode_cpu,
            'floor_decode_wall_s': decode_wall,
            'floor_submit_cpu_s': submit_cpu,
            'floor_submit_wall_s': submit_wall,
            'floor_cpu_s': floor_cpu,
            'floor_points': len(points),
            'floor_bytes': floor.bytes,
            'http_client_cpu_s': floor.http_cpu,
            'ratio': record['cpu_s'] / floor_cpu if floor_cpu else None,
            'ratio_without_names': (record['cpu_s'] - record['names_cpu_s']) / floor_cpu if floor_cpu else None,
        }

    def floor_work(self, record: dict, log: list[dict], points: list[tuple]) -> SimpleNamespace:
        """What the floor of a run does, ready to be timed: `decode()` decodes the run's response bytes (fetched again
        at the run's time), `submit()` submits its points (same names, values and tag lists) through an AgentCheck's
        count/gauge; each checks it did all of it."""
        import requests
        from datadog_checks.base import AgentCheck
        from datadog_checks.base.utils.format import json as ddjson

        # The same bytes: pages depend only on the clock, so they are fetched again at the run's time.
        self.sim.set_time(record['time'])
        session = requests.Session()
        session.headers['Authorization'] = f'Bearer {ADMIN_KEY}'
        base = self.sim.base_url.rsplit('/v1', 1)[0]
        bodies = []
        http_cpu = 0.0
        for r in log:
            t = time.process_time()
            response = session.get(f'{base}{r["path"]}?{r["query"]}', timeout=600)
            http_cpu += time.process_time() - t
            bodies.append(response.content)
        session.close()
        self.sim.set_time(self.clock.now())
        self.sim.take_log()
        replayed = sum(len(b) for b in bodies)
        if replayed != record['bytes']:
            raise RuntimeError(f'replayed {replayed} bytes, the run received {record["bytes"]}')
        decode_body = ddjson.decode

        def decode():
            for body in bodies:
                decode_body(body)

        class Floor(AgentCheck):
            __NAMESPACE__ = ''

            def check(self, _):
                pass

        floor_check = Floor('openai', {}, [{}])
        send = {
            self.aggregator.COUNT: floor_check.count,
            self.aggregator.GAUGE: floor_check.gauge,
            self.aggregator.MONOTONIC_COUNT: floor_check.monotonic_count,
            self.aggregator.RATE: floor_check.rate,
        }
        sends = [(send[mtype], name, value, tags) for name, mtype, value, tags in points]
        sink = self.sink

        def submit():
            sink.points = 0
            for submit_point, name, value, tags in sends:
                submit_point(name, value, tags=tags)
            if sink.points != len(sends):
                raise RuntimeError(f'the floor submitted {sink.points} points, the run {len(sends)}')

        return SimpleNamespace(decode=decode, submit=submit, bodies=bodies, bytes=replayed, http_cpu=http_cpu)


def _median_of(times: int, work) -> tuple[float, float]:
    """Median CPU and wall time of `work()` over `times` calls, each after a full garbage collection."""
    cpus, walls = [], []
    for _ in range(times):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(cpus), statistics.median(walls)


def _cpu_of(work) -> float:
    """CPU time of `work()`, after a full garbage collection."""
    gc.collect()
    cpu = time.process_time()
    work()
    return time.process_time() - cpu


def minimum_requests(pages: list[dict]) -> list[dict]:
    """Per endpoint: buckets in the window, the API's page limit, the fewest requests, the requests made."""
    from datadog_checks.openai.catalogue import ENDPOINTS_BY_NAME

    by_endpoint = defaultdict(list)
    for p in pages:
        by_endpoint[p['endpoint']].append(p)
    rows = []
    for name, requests in by_endpoint.items():
        endpoint = ENDPOINTS_BY_NAME[name]
        first = requests[0]
        width = first['bucket_width']
        start = int(first['start_time'])
        rows.append(
            {
                'endpoint': name,
                'width': width,
                'start_time': start,
                'limit': int(first['limit']),
                'max_limit': endpoint.max_limit[width],
                'made': len(requests),
            }
        )
    return rows


def describe_window(rows: list[dict], now: float) -> list[dict]:
    from datadog_checks.openai.catalogue import BUCKET_SECONDS

    for row in rows:
        seconds = BUCKET_SECONDS[row['width']]
        row['buckets'] = math.ceil((now - row['start_time']) / seconds)
        row['fewest'] = math.ceil(row['buckets'] / row['max_limit'])
    return rows


# -- scenarios ------------------------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(message + '\n')
    sys.stderr.flush()


def large_org(p: dict, profile: bool, replays: int = 0) -> dict:
    from tests.simulator import DEFAULT_TRAFFIC_START

    series = {name: p['other'] for name in OTHER_USAGE + ('costs',)}
    series['completions'] = p['series']
    start = DEFAULT_TRAFFIC_START + START_OFFSET
    runs = p['runs']
    reported = sorted({1, min(10, runs), runs})
    log(
        f'large organization: completions {p["series"]} series, others {p["other"]}, {p["projects"]} projects; '
        f'{runs} runs'
    )
    t0 = time.perf_counter()
    with Simulator(series, p['projects'], start) as sim:
        log(f'  simulator ready in {time.perf_counter() - t0:.1f}s: {sim.describe}')
        bench = Bench(sim, start)
        for i in range(1, runs + 1):
            record = bench.run_once(with_floor=i in reported)
            if i in reported or i % 10 == 0:
                log(
                    f'  run {i}: cpu {record["cpu_s"]:.2f}s wall {record["wall_s"]:.2f}s, '
                    f'{record["requests"]} requests, {record["rows"]} rows, '
                    f'{record["points"]} points, state {record["state_bytes"] / 1e6:.1f} MB'
                )
        profile_text = None
        if profile:
            profile_text = profile_run(bench)
        replayed = replay(bench, replays) if replays else None
        records = bench.runs
        last = records[reported[-1] - 1]
        window = describe_window(minimum_requests(last['pages']), last['time'])
        simulator = {'series': sim.series, 'describe': sim.describe}
    for r in records:
        r.pop('pages', None)
    return {
        'sizes': {'completions': p['series'], 'other': p['other'], 'projects': p['projects'], 'runs': runs},
        'simulator': simulator,
        'start': start,
        'reported_runs': reported,
        'runs': records,
        'window': window,
        'profile': profile_text,
        'replay': replayed,
    }


def profile_run(bench: Bench) -> str:
    import cProfile
    import io
    import pstats

    bench.aggregator.reset()
    bench.sim.set_time(bench.clock.now())
    profiler = cProfile.Profile()
    profiler.enable()
    bench.check.run()
    profiler.disable()
    bench.aggregator.reset()
    bench.clock.advance(INTERVAL)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats('tottime').print_stats(25)
    stats.sort_stats('cumulative').print_stats(30)
    return out.getvalue()


@contextmanager
def changes_not_applied(sources: list):
    """The sources' changes saved but not applied for the block's duration: each run of it then finds the ledgers as
    the one before did, and does the same work."""
    for source in sources:
        source.apply = lambda outcome: None
    try:
        yield
    finally:
        for source in sources:
            source.__dict__.pop('apply', None)


def replay(bench: Bench, times: int) -> dict:
    """The next run's sources, each run `times` times over at the same clock, the same pages and the same ledger (its
    change is saved but not applied): the CPU of a source's run without the run-to-run differences of the simulated
    traffic, nor most of the machine's noise (the least of the times). For measuring a change to the check's work on
    rows and points; what it says of a whole run is in the runs above."""
    from datadog_checks.openai.sources.base import Run

    check = bench.check
    # The check's own, not the benchmark's observer (which counts the ledger's cells after each source).
    collect = type(check).collect
    now = bench.clock.now()
    bench.sim.set_time(now)
    report = {}
    for source in check.sources:
        if source.derived:
            continue
        source.unpack()
        times_s, figures = [], None
        with changes_not_applied([source]):
            for _ in range(times):
                gc.collect()
                run = Run(check.new_client(), now)
                cpu = time.process_time()
                outcome = collect(check, source, run)
                times_s.append(time.process_time() - cpu)
                check.tags.forget()
                if outcome is not None:
                    figures = {'rows': outcome.rows, 'points': len(outcome.counts) + len(outcome.gauges)}
                del outcome, run
        times_s.sort()
        report[source.name] = {'min_s': times_s[0], 'median_s': times_s[len(times_s) // 2], **(figures or {})}
    bench.aggregator.reset()
    return {'times': times, 'time': now, 'sources': report, 'run': replay_run(bench, times)}


def replay_run(bench: Bench, times: int) -> dict:
    """The next run whole, `times` times at the same clock (every source's change saved but not applied, as in
    replay()), each time followed by its floor for the same bytes and points: the least CPU of each and their ratio.
    A single run over a single floor, as the runs above measure it, moved by 15 to 28% from one measurement to the
    next on this machine, and the least of several runs over the least of several floors measured minutes later by
    as much between processes: interleaved, the run and its floor share the machine's moments. A first time, not
    timed, captures the points and the requests the floor replays."""
    check = bench.check
    now = bench.clock.now()
    runs, decodes, submits, counted, errors = [], [], [], [], []
    floor = None
    try:
        with changes_not_applied(check.sources + check.headroom):
            for i in range(times + 1):
                check.last_run_at = None  # the same clock again: not a run that comes too soon
                bench.start_run(capture=i == 0, at=now)
                cpu = _cpu_of(lambda: errors.append(check.run())) - bench.bookkeeping_cpu
                if errors[-1]:
                    raise RuntimeError(f'the check failed: {errors[-1]}')
                counted.append(bench.sink.points)
                if floor is None:
                    log, points = bench.sim.take_log(), bench.sink.captured()
                    bench.sink.capture = False
                    bench.sink.clear()
                    record = {'time': now, 'bytes': sum(r['bytes'] for r in log)}
                    floor = bench.floor_work(record, log, points)
                    del log
                    continue
                runs.append(cpu)
                decodes.append(_cpu_of(floor.decode))
                submits.append(_cpu_of(floor.submit))
    finally:
        bench.sink.capture = False
        bench.sink.clear()
    bench.aggregator.reset()
    least = min(decodes) + min(submits)
    return {
        'least_s': min(runs),
        'median_s': statistics.median(runs),
        'points': len(points),
        # Points submitted at each time: the same each time, since no change was applied.
        'points_each': counted,
        'bytes': floor.bytes,
        'floor_least_decode_s': min(decodes),
        'floor_least_submit_s': min(submits),
        'floor_least_s': least,
        'floor_median_s': statistics.median(decodes) + statistics.median(submits),
        'ratio_least': min(runs) / least if least else None,
        # Each run over the floor measured right after it: their median, and their spread.
        'ratios': sorted(r / (d + s) for r, d, s in zip(runs, decodes, submits)),
    }


def scaling(p: dict) -> list[dict]:
    from datadog_checks.openai import client

    # At 100,000 completions series per bucket a page is about 410 MB, above the response size the check
    # accepts (client.MAX_RESPONSE_BYTES): the scaling part measures the cost per series beyond it, so it
    # lifts that limit for its own runs.
    limit = client.MAX_RESPONSE_BYTES
    client.MAX_RESPONSE_BYTES = max(limit, 2**30)
    try:
        return _scaling(p)
    finally:
        client.MAX_RESPONSE_BYTES = limit


def _scaling(p: dict) -> list[dict]:
    from tests.simulator import DEFAULT_TRAFFIC_START

    start = DEFAULT_TRAFFIC_START + START_OFFSET
    rows = []
    for n in p['scaling']:
        log(f'scaling: completions {n} series per bucket, other endpoints small')
        with Simulator({'completions': n}, 6, start) as sim:
            bench = Bench(sim, start)
            bench.run_once()  # the baseline
            steady = []
            for i in range(p['scaling_runs']):
                steady.append(bench.run_once(with_floor=i == p['scaling_runs'] - 1))
            last = steady[-1]
            cpu = statistics.median(r['cpu_s'] for r in steady)
            row = {
                'series': n,
                'runs': len(steady),
                'cpu_s': cpu,
                'wall_s': statistics.median(r['wall_s'] for r in steady),
                'rows': last['rows'],
                'completions_rows': last['rows_by_endpoint'].get('completions', 0),
                'bytes': last['bytes'],
                'points': last['points'],
                'peak_rss_mb': max(r['peak_rss_mb'] for r in steady),
                'rss_before_mb': last['rss_before_mb'],
                'ledger_bytes_per_cell': last['ledger_bytes_per_cell'],
                'requests': last['usage_costs_requests'],
                'state_bytes': last['state_bytes'],
                'floor_cpu_s': last['floor_cpu_s'],
                'ratio': cpu / last['floor_cpu_s'] if last['floor_cpu_s'] else None,
                'cpu_per_series_us': cpu / n * 1e6,
                'cpu_per_row_us': cpu / last['rows'] * 1e6 if last['rows'] else None,
            }
            rows.append(row)
            log(f'  {n}: cpu {cpu:.2f}s per run, {row["rows"]} rows, {row["cpu_per_series_us"]:.1f} us per series')
    for a, b in zip(rows, rows[1:]):
        b['marginal_us_per_series'] = (b['cpu_s'] - a['cpu_s']) / (b['series'] - a['series']) * 1e6
    return rows


def _least_squares(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Coefficients c minimising |X c - y| (normal equations, Gauss-Jordan with partial pivoting)."""
    n = len(rows[0])
    a = [
        [sum(r[i] * r[j] for r in rows) for j in range(n)] + [sum(r[i] * y for r, y in zip(rows, ys))] for i in range(n)
    ]
    for i in range(n):
        pivot = max(range(i, n), key=lambda k: abs(a[k][i]))
        a[i], a[pivot] = a[pivot], a[i]
        if not a[i][i]:
            return [0.0] * n
        for k in range(n):
            if k != i:
                f = a[k][i] / a[i][i]
                a[k] = [x - f * y for x, y in zip(a[k], a[i])]
    return [a[i][n] / a[i][i] for i in range(n)]


def growth(runs: list[dict]) -> dict:
    """Does a run's cost or the state grow with the number of runs? The first and last tenth of the steady
    runs (the baseline and the hourly name refreshes left out), and the trend per run at equal work."""
    steady = [r for r in runs if not r['baseline'] and not r['listing_requests']]
    if len(steady) < 2:
        return {}
    k = max(1, len(steady) // 10)
    first, last = steady[:k], steady[-k:]

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    out = {'window_runs': k, 'first_runs': [r['run'] for r in first], 'last_runs': [r['run'] for r in last]}
    for r in steady:
        r['state_bytes_per_cell'] = r['state_bytes'] / r['state_cells'] if r['state_cells'] else 0.0
    for key in (
        'cpu_s',
        'wall_s',
        'state_bytes',
        'state_cells',
        'state_bytes_per_cell',
        'rows',
        'points',
        'peak_rss_mb',
        'rss_before_mb',
        'allocated_blocks_before',
        'requests',
    ):
        out[key] = (med(first, key), med(last, key))
    # The simulated traffic follows the time of day (100 runs span 8 hours), so rows and points change
    # from run to run. The run number's coefficient in CPU ~ rows + points + run is the growth with the
    # number of runs at equal work.
    mean_cpu = statistics.fmean(r['cpu_s'] for r in steady)
    if len(steady) >= 8 and mean_cpu:
        c = _least_squares([[1.0, r['rows'], r['points'], r['run']] for r in steady], [r['cpu_s'] for r in steady])
        out['cpu_us_per_row'] = c[1] * 1e6
        out['cpu_us_per_point'] = c[2] * 1e6
        out['cpu_pct_per_100_runs_at_equal_work'] = c[3] * 100 / mean_cpu * 100
        c = _least_squares([[1.0, r['run']] for r in steady], [r['cpu_s'] for r in steady])
        out['cpu_pct_per_100_runs_raw'] = c[1] * 100 / mean_cpu * 100
    quiet = [r['peak_rss_mb'] for r in steady if not r.get('captured_points')]
    if quiet:
        out['quiet_peak_rss_mb'] = (statistics.median(quiet), min(quiet), max(quiet), len(quiet))
    refresh = [r for r in runs if not r['baseline'] and r['listing_requests']]
    if refresh:
        out['names_refresh_runs'] = [r['run'] for r in refresh]
        out['names_refresh_cpu_s'] = statistics.median(r['names_cpu_s'] for r in refresh)
        out['names_refresh_requests'] = statistics.median(r['listing_requests'] for r in refresh)
    return out


# -- the report -----------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f'{n / 1e6:,.1f} MB'


def _ms(s: float) -> str:
    return f'{s * 1000:,.0f} ms'


def _s(s: float) -> str:
    return f'{s:,.2f} s'


def markdown(report: dict) -> str:
    env = report['environment']
    big = report['large_org']
    sizes = big['sizes']
    series = big['simulator']['series']
    runs = {r['run']: r for r in big['runs']}
    reported = big['reported_runs']
    lines = []
    add = lines.append
    add(
        f'Measured with `scripts/benchmark.py{" --quick" if report["profile"] == "quick" else ""}` on '
        f'{env["cpus"]} CPU(s), Python {env["python"]}, JSON decoder: {env["json"]}; '
        f'the simulator runs in a separate process.'
    )
    add('')
    start_day = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(big['start']))
    cost_buckets = next((w['buckets'] for w in big['window'] if w['endpoint'] == 'costs'), '?')
    others = ', '.join(f'{n} {series.get(n, 0):,}' for n in OTHER_USAGE)
    add(
        f'**Organization**: completions grouped by project_id, user_id, api_key_id, model, batch and service_tier with '
        f'{series["completions"]:,} series per hourly bucket; {others} series per bucket (vector_stores and '
        f'code_interpreter_sessions group by project_id only, hence {sizes["projects"]:,} projects); costs by project '
        f'and line item ({series["costs"]:,} simulated cost series). Usage group_by: every dimension (set explicitly; '
        f'the default is narrower). Check defaults otherwise: 1h buckets, '
        f'revision_window_hours 6, costs in 1d buckets from the month start ({start_day}: {cost_buckets} buckets), '
        f'names of projects and API keys refreshed hourly. The simulated clock advances {INTERVAL} s per run; '
        f'{sizes["runs"]} runs.'
    )
    add('')
    add('| Per run | ' + ' | '.join(f'run {i}{" (baseline)" if runs[i]["baseline"] else ""}' for i in reported) + ' |')
    add('|---|' + '---:|' * len(reported))

    def row(label, fn):
        add(f'| {label} | ' + ' | '.join(fn(runs[i]) for i in reported) + ' |')

    row('Wall time (check; includes waiting for the simulator)', lambda r: _s(r['wall_s']))
    row('CPU time of the check process', lambda r: _s(r['cpu_s']))
    row('  of which name resolution (hourly)', lambda r: _s(r['names_cpu_s']))
    row('  of which garbage collection (full collections)', lambda r: f'{_s(r["gc_cpu_s"])} ({r["gc_full"]} full)')
    row(f'Floor: JSON decode of the same bytes (median of {FLOOR_REPEATS})', lambda r: _s(r['floor_decode_cpu_s']))
    row(
        f'Floor: submit the same points via count/gauge (median of {FLOOR_REPEATS})',
        lambda r: _s(r['floor_submit_cpu_s']),
    )
    row('**Run CPU / floor** (issue 16: at most 1.5)', lambda r: f'**{r["ratio"]:.2f}**')
    row('  the same, name resolution left out', lambda r: f'{r["ratio_without_names"]:.2f}')
    row('HTTP client CPU to receive the bytes (not in the floor)', lambda r: _s(r['http_client_cpu_s']))
    row(
        f'Peak RSS of the check process ({runs[reported[0]]["memory_method"]}; with the points kept for the floor)',
        lambda r: f'{r["peak_rss_mb"]:,.0f} MB',
    )
    row('  RSS when the run started (held between runs)', lambda r: f'{r["rss_before_mb"]:,.0f} MB')
    row('  RSS when the run ended', lambda r: f'{r["rss_after_mb"]:,.0f} MB')
    row(
        'Ledgers in memory, bytes per (bucket, series) cell (tracemalloc)',
        lambda r: f'{r["ledger_bytes_per_cell"]:,.0f} B ({_mb(r["ledger_bytes"])})',
    )
    row('  kept by saving for the next save, per cell', lambda r: f'{r["ledger_save_cache_bytes_per_cell"]:,.0f} B')
    row('API requests: usage and costs pages', lambda r: f'{r["usage_costs_requests"]}')
    row('API requests: project and key listings (names)', lambda r: f'{r["listing_requests"]:,}')
    row('Bytes received', lambda r: _mb(r['bytes']))
    row('Rows parsed', lambda r: f'{r["rows"]:,}')
    row('Points submitted (counts + gauges)', lambda r: f'{r["points"]:,}')
    row('Saved state (all endpoints)', lambda r: _mb(r['state_bytes']))
    row('  (bucket, series) cells in the state', lambda r: f'{r["state_cells"]:,}')
    row('Save state (Ledger.dumps, after a load)', lambda r: _ms(r['state_save_s']))
    row('  saved again, unchanged', lambda r: _ms(r['state_resave_s']))
    row('Load state (Ledger.loads)', lambda r: _ms(r['state_load_s']))
    row('Simulator CPU (other process, not counted above)', lambda r: _s(r['simulator_cpu_s']))
    add('')

    add(
        f'**Requests are the fewest the API allows** (run {reported[-1]}): one request per endpoint, as every '
        f'window fits in one page.'
    )
    add('')
    add('| Endpoint | Bucket width | Buckets in window | Max buckets per page | Fewest requests | Requests made |')
    add('|---|---|---:|---:|---:|---:|')
    for w in big['window']:
        add(f'| {w["endpoint"]} | {w["width"]} | {w["buckets"]} | {w["max_limit"]} | {w["fewest"]} | {w["made"]} |')
    add('')

    g = report['growth']
    if g:
        add(
            f'**No growth with the number of runs**: median of steady runs {g["first_runs"][0]}-{g["first_runs"][-1]} '
            f'against runs {g["last_runs"][0]}-{g["last_runs"][-1]} (the baseline and the hourly name refreshes left '
            f'out). The simulated traffic follows the time of day, so the work per run changes over the '
            f'{sizes["runs"] * INTERVAL / 3600:.0f} hours the runs span.'
        )
        add('')
        add('| Steady run | first runs | last runs |')
        add('|---|---:|---:|')
        add(f'| CPU time | {_s(g["cpu_s"][0])} | {_s(g["cpu_s"][1])} |')
        add(f'| Wall time | {_s(g["wall_s"][0])} | {_s(g["wall_s"][1])} |')
        add(f'| Rows parsed | {g["rows"][0]:,.0f} | {g["rows"][1]:,.0f} |')
        add(f'| Points submitted | {g["points"][0]:,.0f} | {g["points"][1]:,.0f} |')
        add(f'| API requests | {g["requests"][0]:,.0f} | {g["requests"][1]:,.0f} |')
        add(f'| Saved state | {_mb(g["state_bytes"][0])} | {_mb(g["state_bytes"][1])} |')
        add(f'| (bucket, series) cells in the state | {g["state_cells"][0]:,.0f} | {g["state_cells"][1]:,.0f} |')
        add(f'| State bytes per cell | {g["state_bytes_per_cell"][0]:.1f} | {g["state_bytes_per_cell"][1]:.1f} |')
        add(
            f'| Python memory blocks held between runs | {g["allocated_blocks_before"][0]:,.0f} | '
            f'{g["allocated_blocks_before"][1]:,.0f} |'
        )
        add(f'| RSS when the run starts | {g["rss_before_mb"][0]:,.0f} MB | {g["rss_before_mb"][1]:,.0f} MB |')
        add(f'| Peak RSS | {g["peak_rss_mb"][0]:,.0f} MB | {g["peak_rss_mb"][1]:,.0f} MB |')
        add('')
        if 'quiet_peak_rss_mb' in g:
            median, low, high, count = g['quiet_peak_rss_mb']
            add(
                f'Peak RSS of a steady run, the runs measured with their floor left out (they also hold their points '
                f'for it): median {median:,.0f} MB, {low:,.0f} to {high:,.0f} MB over {count} runs.'
            )
        if 'cpu_pct_per_100_runs_at_equal_work' in g:
            add(
                f'Trend of the CPU time per 100 runs: {g["cpu_pct_per_100_runs_raw"]:+.1f}% as measured, '
                f'{g["cpu_pct_per_100_runs_at_equal_work"]:+.1f}% at equal rows and points (least squares of CPU on '
                f'rows, points and the run number: {g["cpu_us_per_row"]:.1f} us per row, '
                f'{g["cpu_us_per_point"]:.1f} us per point).'
            )
        if 'names_refresh_runs' in g:
            add(
                f'Name refreshes (runs {", ".join(map(str, g["names_refresh_runs"][:4]))}...) add '
                f'{g["names_refresh_cpu_s"]:.2f} s CPU and {g["names_refresh_requests"]:,.0f} listing requests once '
                f'an hour.'
            )
        add('')

    add(
        '**Scaling** (completions only grows; other endpoints at the simulator\'s small defaults; median of the '
        'steady runs after the baseline):'
    )
    add('')
    add(
        '| Completions series per bucket | Rows per run | Bytes | Points | CPU per run | Floor | Ratio '
        '| CPU per series | Marginal CPU per added series | Peak RSS | RSS between runs | Ledger per cell '
        '| Usage and costs requests | State |'
    )
    add('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for s in report['scaling']:
        marginal = f'{s["marginal_us_per_series"]:,.0f} us' if 'marginal_us_per_series' in s else '-'
        add(
            f'| {s["series"]:,} | {s["rows"]:,} | {_mb(s["bytes"])} | {s["points"]:,} | {_s(s["cpu_s"])} | '
            f'{_s(s["floor_cpu_s"])} | {s["ratio"]:.2f} | {s["cpu_per_series_us"]:,.0f} us | {marginal} | '
            f'{s["peak_rss_mb"]:,.0f} MB | {s["rss_before_mb"]:,.0f} MB | {s["ledger_bytes_per_cell"]:,.0f} B | '
            f'{s["requests"]} | {_mb(s["state_bytes"])} |'
        )
    replayed = big.get('replay')
    if replayed:
        add('')
        add(
            f'**Replayed** (the run after the last, each source run {replayed["times"]} times at the same clock, '
            f'pages and ledger; CPU):'
        )
        add('')
        add('| Source | Rows | Points | Least | Median |')
        add('|---|---:|---:|---:|---:|')
        for name, r in replayed['sources'].items():
            add(f'| {name} | {r.get("rows", 0):,} | {r.get("points", 0):,} | {_s(r["min_s"])} | {_s(r["median_s"])} |')
        whole = replayed['run']
        add('')
        add(
            f'The same run whole, {replayed["times"]} times at its clock: CPU {_s(whole["least_s"])} least '
            f'({_s(whole["median_s"])} median); its floor, {replayed["times"]} times for the same '
            f'{_mb(whole["bytes"])} and {whole["points"]:,} points: {_s(whole["floor_least_s"])} least (decode '
            f'{_s(whole["floor_least_decode_s"])}; submit {_s(whole["floor_least_submit_s"])}), '
            f'{_s(whole["floor_median_s"])} median. **Run CPU / floor, least over least: {whole["ratio_least"]:.2f}** '
            f'(issue 16: at most 1.5); each time over the floor measured right after it: '
            f'{statistics.median(whole["ratios"]):.2f} median ({whole["ratios"][0]:.2f} to {whole["ratios"][-1]:.2f}).'
        )
    add('')
    add(f'Benchmark duration: {report["duration_s"]:.0f} s.')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='smaller sizes and 12 runs: about a minute')
    parser.add_argument('--tiny', action='store_true', help='the smallest sizes (for the smoke test)')
    parser.add_argument(
        '--json',
        metavar='FILE',
        help='also write the whole report as JSON to FILE (- for stdout, instead of the Markdown)',
    )
    parser.add_argument('--profile', action='store_true', help='print a cProfile of one steady run to stderr')
    parser.add_argument('--runs', type=int, help='runs of the large organization (default 100, quick 12)')
    parser.add_argument('--series', type=int, help='completions series per bucket of the large organization')
    parser.add_argument('--no-scaling', action='store_true', help='skip the scaling part')
    parser.add_argument('--scaling', help='completions series per bucket of the scaling part, comma-separated')
    parser.add_argument(
        '--replay',
        type=int,
        metavar='N',
        help='after the runs, run each source of the next run N times at the same clock (see replay())',
    )
    parser.add_argument('--serve', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        sys.exit(serve(json.loads(args.serve)))

    # The aggregator stub checks every tag of every point against a list of generic tag names, which the
    # Agent's own aggregator does not do: skip it so that the stub's cost is closer to the Agent's. Both
    # the check and the floor go through the same stub either way.
    saved = os.environ.get('DDEV_SKIP_GENERIC_TAGS_CHECK')
    os.environ['DDEV_SKIP_GENERIC_TAGS_CHECK'] = '1'
    try:
        return _main(args)
    finally:
        if saved is None:
            os.environ.pop('DDEV_SKIP_GENERIC_TAGS_CHECK', None)
        else:
            os.environ['DDEV_SKIP_GENERIC_TAGS_CHECK'] = saved


def _main(args) -> dict:
    from datadog_checks.base.stubs import datadog_agent

    cache = datadog_agent._cache  # each Bench puts a DiskCache in its place: the caller's comes back after
    try:
        with null_aggregator():
            return _report(args)
    finally:
        datadog_agent._cache = cache


def _report(args) -> dict:
    name = 'tiny' if args.tiny else 'quick' if args.quick else 'full'
    p = dict(PROFILES[name])
    if args.runs:
        p['runs'] = args.runs
    if args.series:
        p['series'] = args.series
    if args.scaling:
        p['scaling'] = tuple(int(n) for n in args.scaling.split(','))
    started = time.perf_counter()
    big = large_org(p, args.profile, args.replay or 0)
    report = {
        'profile': name,
        'environment': {
            'python': platform.python_version(),
            'cpus': os.cpu_count(),
            'json': json_implementation(),
            'platform': platform.platform(),
        },
        'large_org': big,
        'growth': growth(big['runs']),
        'scaling': [] if args.no_scaling else scaling(p),
    }
    report['duration_s'] = time.perf_counter() - started
    if big.get('profile'):
        log(big['profile'])
    text = markdown(report)
    if args.json == '-':
        sys.stdout.write(json.dumps(report, indent=1, default=str) + '\n')
    else:
        sys.stdout.write(text)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str) + '\n')
    sys.stdout.flush()
    report['markdown'] = text
    return report


if __name__ == '__main__':
    main()
