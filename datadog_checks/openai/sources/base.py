"""What every source of data (a usage endpoint, costs, names...) is to the check.

A source is built once, when the check starts, and owns its state: its effective configuration, what it
last saved, and how it loads and saves it. Each run it `collect`s: it reads OpenAI and returns an
`Outcome` (the points to submit and the change to its state) without changing anything. The check then
has the source `save` that change and, only once it is saved, `apply` it and submit the points: a
failure anywhere leaves the source as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..client import ApiError, OpenAIClient
from ..ledger import Key

# (metric name, value, dimensions, series key): the tags are built from the last two.
Point = tuple[str, float, tuple[str, ...], Key]


@dataclass
class Run:
    """One run of the check, as the sources see it."""

    client: OpenAIClient
    now: float
    # The outcomes of the sources that ran before in this run, by name (a source may build on another's).
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class Outcome:
    source: str
    counts: list[Point] = field(default_factory=list)
    gauges: list[Point] = field(default_factory=list)
    # The source read everything it meant to.
    complete: bool = False
    error: ApiError | None = None
    warnings: list[str] = field(default_factory=list)
    # The state change to save before anything is submitted (None: nothing to save), opaque to the check.
    change: Any = None
    # Distinct series the source tracks, once its change is saved.
    series: int | None = None
    # Result rows read, rows or buckets skipped as malformed, and whether the run recorded a baseline.
    rows: int = 0
    malformed: int = 0
    baseline: bool = False
    # (bucket start, first, end): counts[first:end] are increases of the bucket starting then. What derives from
    # usage by the day it belongs to (the estimate of spend) reads it; a source with no buckets leaves it empty.
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    # Set by the check once the change is saved and the points handed to the aggregator: a source that builds on
    # another's counts (the estimate) must only use submitted ones.
    submitted: bool = False
    # What a source read that later sources of the same run build on, by name, opaque to the check (costs: 'bill',
    # the bill by day for the estimate of spend, see costs.Bill; the month-to-date totals and daily rates for headroom).
    facts: dict[str, Any] = field(default_factory=dict)
    # Logs to send once the change is saved (the audit log's events), each a dict for AgentCheck.send_log.
    logs: list[dict] = field(default_factory=list)


class StateStore:
    """The Agent's persistent cache, as the sources use it. `agent check openai` shares the running
    Agent's state but sends nothing, so there the state is read and never written."""

    def __init__(self, read: Callable[[str], str], write: Callable[[str, str], None], writable: bool):
        self.read = read
        self._write = write
        self.writable = writable

    def write(self, key: str, text: str) -> None:
        if self.writable:
            self._write(key, text)


class Source:
    """A kind of data the check collects. Subclasses implement collect, and save/apply if they keep state."""

    name: str
    # The dimensions the source's series are split by (the tags of its points).
    group_by: tuple[str, ...] = ()
    # When the source's data was last read in full, as far as its saved state goes (None: never, or no data).
    read_at: float | None = None
    # Builds only on what other sources read this run (the estimate of spend): it reads nothing from OpenAI, so
    # it has no say in the run's health (a run whose endpoints all failed must still fail).
    derived: bool = False
    # False for a source that sends logs only: no series or contexts gauges for it.
    submits_metrics: bool = True

    def collect(self, run: Run) -> Outcome:
        raise NotImplementedError

    def save(self, outcome: Outcome) -> int | None:
        """Persist outcome.change; return the size of the saved state in bytes (None: the source keeps none)."""
        return None

    def apply(self, outcome: Outcome) -> None:
        """Take outcome.change in memory, once save() succeeded."""

    def forget(self) -> None:
        """Drop what the source holds in memory, so that the next run starts again from the saved state."""

    def pack(self) -> None:
        """Hold what the source keeps between runs in many small objects as one block until its next run, which
        unpacks it first (see memory.pack)."""

    def unpack(self) -> None:
        """What pack() held, in memory again; called at the start of every run, packed or not."""
