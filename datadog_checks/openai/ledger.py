"""The ledger: what the check already submitted for each (bucket, series) of one endpoint.

An Agent check cannot stamp a point in the past, and OpenAI keeps revising a bucket after it closes.
So each run re-reads a trailing window, and for every (bucket, series, field) submits only the
difference between what OpenAI now reports and what the ledger says was already submitted. Summed in
Datadog, those differences telescope to OpenAI's current figure: nothing is counted twice, and a
revision inside the window is never missed.

Invariant: for every bucket at or after `horizon`, the ledger holds exactly what was submitted for it
(a bucket or series absent from the ledger had nothing submitted). Buckets before `horizon` left the
re-read window and are final as far as the check is concerned.

A run never edits the ledger: it produces a `Change` (the cells it read that differ, the new horizon).
The ledger with that change applied is saved first; only then is the change applied in memory and are
the points handed to the aggregator. A failure before that leaves the ledger as it was: that run's
points are lost rather than ever submitted twice.
"""

from __future__ import annotations

import base64
import binascii
import math
import pickle
import sys
import zlib
from array import array
from collections.abc import Mapping
from functools import partial
from itertools import chain, compress, repeat
from operator import eq, is_not, lt, ne
from typing import Any, Iterable, Iterator

from datadog_checks.base.utils.format import json

# 5: each bucket is saved as the array the ledger holds it in (its type code, then its bytes, little-endian; integers
# compressed with zlib's fastest level, costs' doubles as they are, which hardly compress): a save no longer turns a
# changed bucket's figures into JSON numbers, which with their compression were most of the cost of saving.
# 4: each bucket's columns as JSON, compressed (zlib, in base64). 3: the same columns uncompressed; the series table
# holds each key as a list of its dimension values. 2 joined them with a separator (\x1f), which a value could
# contain. States of formats 2, 3 and 4 are still read; other formats are not, and the check records a new baseline.
FORMAT_VERSION = 5
_READ_FORMATS = (2, 3, 4, FORMAT_VERSION)
# The most a bucket may take once decompressed (formats 4 and 5): a damaged or hostile state is refused rather than
# decompressed without bound. A bucket of 100,000 completions series takes some 10 MB.
MAX_BUCKET_BYTES = 256 * 1024 * 1024
LEGACY_SEPARATOR = '\x1f'
# The largest figure a cell may hold: beyond 2**53 a float no longer holds every integer, and no bucket
# of one series comes near it. A source refuses larger or negative figures as malformed, so a saved
# state never holds one: a state that does was damaged, and trusting it would submit a huge difference.
MAX_VALUE = float(2**53)
_NUMBER = (int, float)
_LIST = frozenset({list})
_INT = frozenset({int})
_STR = frozenset({str})
_not_none = partial(is_not, None)

# A series key: the value of each dimension ('' for a dimension OpenAI did not group by).
Key = tuple[str, ...]
# What was submitted for one series of one bucket, per flow field (None: never reported by OpenAI).
Values = tuple
Cells = dict[int, dict[Key, Values]]

# In memory a bucket is one flat array of numbers, `stride` slots per series of the ledger's table (the
# series' index in the table gives its place in every bucket): 8 bytes per figure instead of a dict entry, a
# tuple and an int object per cell (some 430 bytes). Figures are never negative (a source refuses them), so
# two negative numbers mark what a tuple of values says with None or by its absence.
ABSENT = -2  # the first slot of a series the bucket does not hold (every slot of it, in fact)
UNREPORTED = -1  # a field OpenAI did not report (None in Values)
# The narrowest array that holds a bucket's figures: 32-bit integers (4 bytes a figure; token and request counts
# of one series in one bucket stay far below 2**31), 64-bit integers beyond, floats from the first non-integer
# figure (costs). Integers come back as ints, and the saved state keeps them as such. A bucket only widens.
_SMALL, _INTS, _FLOATS = 'i', 'q', 'd'
_WIDTH = {_SMALL: 0, _INTS: 1, _FLOATS: 2}


def _flat(values: Values) -> Values:
    """The slots of one row: its values, UNREPORTED for a None."""
    if None in values:
        return tuple([UNREPORTED if v is None else v for v in values])
    return values


def _column(numbers) -> array:
    for typecode in (_SMALL, _INTS):
        try:
            return array(typecode, numbers)
        except OverflowError:  # an integer too large for it
            continue
        except TypeError:  # a float among them
            break
    return array(_FLOATS, numbers)


# A figure of UNREPORTED as each type of array holds it, to find it in the array's bytes.
_UNREPORTED_BYTES = {typecode: array(typecode, [UNREPORTED]).tobytes() for typecode in _WIDTH}


def holds_unreported(column: array) -> bool:
    """Whether an array holds UNREPORTED: searched for in its bytes, where `UNREPORTED in column` makes a number
    object of each figure to compare it (some 50 ms a steady run over completions' buckets, which seldom hold one).
    Only a match at a figure's start counts: the end of one figure and the start of the next may spell it too."""
    data, mark, size = column.tobytes(), _UNREPORTED_BYTES[column.typecode], column.itemsize
    at = data.find(mark)
    while at > 0 and at % size:
        at = data.find(mark, at + 1)
    return at >= 0


class Change:
    """What one run read that differs from the ledger, and where the ledger stands after it.

    Kept as compactly as the ledger: per bucket, the table indices of the series that changed and their new
    figures, flat. Series the ledger does not know yet are numbered after its table (`new_keys`), so a
    change belongs to the ledger it was read against."""

    def __init__(self, horizon: int, read_at: float, base: 'Ledger | None' = None):
        self.horizon = horizon
        self.read_at = read_at
        self.first_new = len(base.keys) if base is not None else 0
        # Keys of series new to the ledger, by index (from first_new on), and the reverse.
        self.new_keys: list[Key] = []
        self.new_index: dict[Key, int] = {}
        # bucket start -> (series indices, their slots: `width` numbers each, UNREPORTED for None).
        self.cells: dict[int, tuple[array, array]] = {}
        # The saved form of each bucket once the change is applied, when dumps() made it (see Ledger._fragments).
        self.fragments: dict[int, str] | None = None
        # The buckets the change writes to, as dumps() wrote them into copies, for apply() to take as they are rather
        # than write every changed series again; with the ledger they belong to and its count of writes then.
        self.columns: dict[int, array] | None = None
        self.columns_of: tuple[Ledger, int] | None = None
        # bucket start -> the digest of the rows read, how many of them were malformed, how many rows (Ledger.digests).
        self.digests: dict[int, tuple[Any, int, int]] = {}

    def index_of_new(self, key: Key) -> int:
        g = self.new_index.get(key)
        if g is None:
            g = self.new_index[key] = self.first_new + len(self.new_keys)
            self.new_keys.append(key)
        return g

    def add(self, start: int, indices: list[int], slots: list) -> None:
        """The changed series of one bucket (each bucket once per run)."""
        if indices:
            self.cells[start] = (array(_SMALL, indices), _column(slots))

    def bucket(self, start: int, width: int, key_of) -> dict[Key, Values]:
        """The cells changed in one bucket, as a dict (for hooks and tests; a run never needs it)."""
        if start not in self.cells:
            return {}
        indices, slots = self.cells[start]
        rows = _rows(slots.tolist(), width, holds_unreported(slots))
        return {key_of(g): row for g, row in zip(indices, rows)}


class LazyCells(Mapping):
    """A mapping built on first use: what a hook may read of a bucket, at no cost when it reads nothing."""

    def __init__(self, build):
        self._build = build
        self._cells = None

    def _get(self) -> dict:
        if self._cells is None:
            self._cells = self._build()
        return self._cells

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _rows(numbers: list, width: int, unreported: bool) -> list[Values]:
    """Flat slots -> one tuple per series (None for UNREPORTED): C-level calls, no Python call per cell."""
    if unreported:
        numbers = [None if v == UNREPORTED else v for v in numbers]
    if width == 0:
        return [()] * len(numbers)
    if width == 1:
        return list(zip(numbers))
    return list(zip(*[iter(numbers)] * width))


class BucketView(Mapping):
    """One bucket of the ledger as a read-only mapping of series key -> Values (materialized on demand)."""

    def __init__(self, ledger: 'Ledger', start: int):
        self._ledger = ledger
        self._start = start

    def _slots(self) -> array:
        return self._ledger._columns[self._start]

    def __getitem__(self, key: Key) -> Values:
        ledger = self._ledger
        g = ledger.index.get(key)
        row = None if g is None else ledger.row(self._start, g)
        if row is None:
            raise KeyError(key)
        return row

    def __iter__(self) -> Iterator[Key]:
        ledger = self._ledger
        keys = ledger.keys
        return (keys[g] for g in ledger.present(self._start))

    def __len__(self) -> int:
        ledger = self._ledger
        slots = self._slots()
        return len(slots) // ledger.stride - slots[:: ledger.stride].count(ABSENT)

    def __repr__(self) -> str:
        return f'BucketView({dict(self.items())!r})'


class BucketsView(Mapping):
    """The ledger's buckets as a read-only mapping of start -> BucketView, oldest first."""

    def __init__(self, ledger: 'Ledger'):
        self._ledger = ledger

    def __getitem__(self, start: int) -> BucketView:
        if start not in self._ledger._columns:
            raise KeyError(start)
        return BucketView(self._ledger, start)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._ledger._columns))

    def __len__(self) -> int:
        return len(self._ledger._columns)


class Ledger:
    """What was submitted per (bucket, series) of one endpoint, from `horizon` on.

    A table of series keys (`keys`, and `index` from key to place) shared by every bucket, and per bucket one
    array of `stride` slots per series of the table: see ABSENT and UNREPORTED."""

    def __init__(self, shape: str, horizon: int, read_at: float, buckets: Mapping | None = None):
        # What the series keys and value slots mean: bucket width, group_by, field names. A ledger of
        # another shape cannot be compared with today's rows (its series keys mean something else).
        self.shape = shape
        # Start of the oldest bucket still compared; everything earlier is final for the check.
        self.horizon = horizon
        # Clock time of the last run that read the endpoint to its newest bucket.
        self.read_at = read_at
        _, width = _dims_and_width(shape)
        if width is None:  # a shape that does not parse: as wide as its widest row
            width = max((len(v) for cells in (buckets or {}).values() for v in cells.values()), default=0)
        self.width = width
        # A series of no field still takes a slot: it tells whether the bucket holds the series.
        self.stride = width or 1
        self.keys: list[Key] = []
        self.index: dict[Key, int] = {}
        self._columns: dict[int, array] = {}
        # One string object per distinct dimension value: each row of a page brings its own copy.
        self._values: dict[str, str] = {}
        # Per bucket, its member of the saved state's buckets (`"start":"<base64 of its saved array>"`): a run changes
        # few buckets (mostly the one in progress), and a save then only joins the others' text (2 ms for costs' 17 MB
        # at 20,000 series, against 35 ms encoding them again). Held as bytes instead, a third smaller, the process held
        # some 9 MB less between runs there but peaked higher while saving (every part encoded anew beside them).
        # Dropped when the bucket is written to or the table renumbered.
        self._fragments: dict[int, str] = {}
        # Per bucket, a digest of the rows it was last compared with (of their text, sources/pages.py), how many of
        # them were malformed and how many rows: rows equal to those change nothing (comparing them again records
        # what the bucket holds already), so a run skips most of its window, which stopped changing. Not saved:
        # after a restart every bucket is compared.
        self.digests: dict[int, tuple[Any, int, int]] = {}
        # Between runs, what pack() holds (None: the ledger is in memory).
        self._packed: tuple | None = None
        # How many times a bucket was written or the table renumbered: a change's columns made by dumps() are taken by
        # apply() only from the ledger as dumps() found it.
        self._writes = 0
        for start, cells in (buckets or {}).items():
            self._fill(start, [self._intern(key) for key in cells], [_flat(self._pad(v)) for v in cells.values()])

    def _pad(self, values: Values) -> Values:
        return values if len(values) == self.width else tuple(values) + (None,) * (self.width - len(values))

    # -- the table of series ------------------------------------------------------------------------

    def _intern(self, key: Key) -> int:
        g = self.index.get(key)
        if g is None:
            value = self._values.setdefault
            key = tuple([value(v, v) for v in key])
            g = self.index[key] = len(self.keys)
            self.keys.append(key)
        return g

    def _fill(self, start: int, indices: list[int], rows: Iterable[Values]) -> None:
        """Write rows (slots, flat per row) into a bucket, growing or converting its array as needed."""
        rows = list(rows)
        if self.width == 0:
            rows = [(0,)] * len(rows)
        self._write(start, indices, _column(list(chain.from_iterable(rows))) if rows else array(_SMALL))

    def _write(self, start: int, indices: Iterable[int], slots: array) -> None:
        stride = self.stride
        self._writes += 1
        self._fragments.pop(start, None)
        column = self._columns.get(start)
        if column is None:
            column = self._columns[start] = array(slots.typecode)
        elif column.typecode != slots.typecode:
            if _WIDTH[column.typecode] < _WIDTH[slots.typecode]:
                column = self._columns[start] = array(slots.typecode, column)
            else:
                slots = array(column.typecode, slots)
        indices = list(indices)
        if not indices:
            return
        needed = (max(indices) + 1) * stride - len(column)
        if needed > 0:
            column.extend(array(column.typecode, [ABSENT]) * needed)
        if indices == list(range(indices[0], indices[0] + len(indices))):
            first = indices[0] * stride
            column[first : first + len(slots)] = slots
            return
        for i, g in enumerate(indices):
            at = g * stride
            column[at : at + stride] = slots[i * stride : i * stride + stride]

    def row(self, start: int, g: int) -> Values | None:
        """What was submitted for series `g` in a bucket (None: nothing)."""
        column = self._columns.get(start)
        at = g * self.stride
        if column is None or at >= len(column) or column[at] == ABSENT:
            return None
        if not self.width:
            return ()
        slots = column[at : at + self.width].tolist()
        return tuple([None if v == UNREPORTED else v for v in slots])

    def rows(self, start: int) -> list[Values]:
        """Every row of a bucket by series index, for one pass of comparisons: a row the bucket does not hold
        starts with ABSENT (and never equals a row read, whose figures are not negative)."""
        column = self._columns.get(start)
        if column is None:
            return []
        return _rows(column.tolist(), self.stride, holds_unreported(column))

    def column(self, start: int) -> array | None:
        return self._columns.get(start)

    def present(self, start: int) -> list[int]:
        """Indices of the series a bucket holds."""
        column = self._columns.get(start)
        if column is None:
            return []
        firsts = column[:: self.stride]
        return list(compress(range(len(firsts)), map(ne, firsts, repeat(ABSENT))))

    @property
    def buckets(self) -> BucketsView:
        self._in_memory()
        return BucketsView(self)

    def cells(self) -> int:
        return sum(map(len, self.buckets.values()))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        return (self.shape, self.horizon, self.read_at, self._materialized()) == (
            other.shape,
            other.horizon,
            other.read_at,
            other._materialized(),
        )

    def _materialized(self) -> dict[int, dict[Key, Values]]:
        return {start: dict(bucket.items()) for start, bucket in self.buckets.items()}

    def __repr__(self) -> str:
        return f'Ledger({self.shape!r}, {self.horizon!r}, {self.read_at!r}, {self._materialized()!r})'

    # -- a run's change -----------------------------------------------------------------------------

    def key_of(self, change: Change | None) -> callable:
        keys = self.keys
        if change is None or not change.new_keys:
            return keys.__getitem__
        first, new = change.first_new, change.new_keys
        return lambda g: keys[g] if g < first else new[g - first]

    def merged(self, change: Change) -> Cells:
        """The buckets as they are once `change` is applied, without applying it (as dicts: for tests)."""
        copy = self._copy(self._columns)
        copy.apply(change, prune=False)
        return {s: dict(b.items()) for s, b in copy.buckets.items() if s >= change.horizon}

    def _copy(self, copied) -> 'Ledger':
        """A ledger to apply a change to without touching this one: the buckets in `copied` are copies."""
        copy = Ledger(self.shape, self.horizon, self.read_at)
        copy.width, copy.stride = self.width, self.stride
        copy.keys, copy.index = list(self.keys), dict(self.index)
        copy._columns = {s: array(c.typecode, c) if s in copied else c for s, c in self._columns.items()}
        return copy

    def apply(self, change: Change, prune: bool = True) -> None:
        """Take `change` in: call it only once the ledger with the change was saved."""
        self._in_memory()
        made_for = change.columns_of
        columns = change.columns if made_for is not None and made_for[0] is self and made_for[1] == self._writes else {}
        change.columns = change.columns_of = None
        if change.new_keys:
            if change.first_new != len(self.keys):
                raise ValueError('a change applied to another ledger than the one it was read against')
            for key in change.new_keys:
                self._intern(key)
        for start, (indices, slots) in change.cells.items():
            column = columns.get(start)
            if column is not None:
                self._columns[start] = column  # this bucket with the change written, made by dumps()
                self._fragments.pop(start, None)
                self._writes += 1
            else:
                self._write(start, indices, slots)
            self.digests.pop(start, None)  # written from rows of no known digest
        self.digests.update(change.digests)
        self.horizon = max(self.horizon, change.horizon)
        self.read_at = change.read_at
        if prune:
            pruned = [s for s in self._columns if s < self.horizon]
            for start in pruned:
                del self._columns[start]
                self._fragments.pop(start, None)
            if pruned:
                self._reindex()
            # Also of buckets that held no series (no column to prune).
            for start in [s for s in self.digests if s < self.horizon]:
                del self.digests[start]
            if change.fragments is not None:
                # dumps(change) made them from this very ledger with this change applied: they hold as they are.
                self._fragments = change.fragments
                change.fragments = None

    def _reindex(self) -> None:
        """Forget the series no bucket holds any more (they left the window with the pruned buckets)."""
        stride = self.stride
        live = bytearray(len(self.keys))
        for start in self._columns:
            for g in self.present(start):
                live[g] = 1
        if all(live):
            return
        self._fragments = {}
        keep = [g for g, alive in enumerate(live) if alive]
        moved = {g: new for new, g in enumerate(keep)}
        old_keys = self.keys
        self.keys, self.index, self._values = [], {}, {}
        for g in keep:
            self._intern(old_keys[g])
        for start, column in list(self._columns.items()):
            present = self.present(start)
            fresh = array(column.typecode)
            self._columns[start] = fresh
            if present:
                slots = array(column.typecode)
                for g in present:
                    slots.extend(column[g * stride : g * stride + stride])
                self._write(start, [moved[g] for g in present], slots)

    # -- between runs -------------------------------------------------------------------------------

    def pack(self) -> None:
        """Hold the ledger's small objects (series keys and their strings, bucket starts, digests) as one block
        until unpack(), the arrays and saved parts as they are. See memory.pack: made during a large read, those
        objects are scattered over the heap's arenas among the read's freed objects, and keep them all."""
        if self._packed is not None:
            return  # a source that did not run since (a run cut short) is packed already
        block = pickle.dumps(
            (self.keys, self._values, list(self._columns), list(self._fragments), list(self.digests.items())),
            pickle.HIGHEST_PROTOCOL,
        )
        self._packed = (block, list(self._columns.values()), list(self._fragments.values()))
        self.keys, self.index, self._values, self.digests = [], {}, {}, {}
        self._columns, self._fragments = {}, {}

    @property
    def packed(self) -> bool:
        return self._packed is not None

    def unpack(self) -> None:
        """The ledger as it was before pack(), in objects made anew."""
        block, columns, fragments = self._packed
        keys, values, starts, fragment_starts, digests = pickle.loads(block)
        self.keys, self._values = keys, values
        self.index = dict(zip(keys, range(len(keys))))
        self._columns = dict(zip(starts, columns))
        self._fragments = dict(zip(fragment_starts, fragments))
        self.digests = dict(digests)
        self._packed = None

    def _in_memory(self) -> None:
        # A packed ledger reads as empty: compared or saved so, every series would be submitted again.
        if self._packed is not None:
            raise RuntimeError('the ledger is packed: unpack() it first')

    # -- the saved state ----------------------------------------------------------------------------

    def dumps(self, change: Change | None = None) -> tuple[str, int]:
        """The ledger with `change` applied, serialized, and its number of distinct series.

        Series keys repeat in every bucket: a table of them keeps the saved state small. Each bucket is then
        its array as it is held (format 5): a copy of its bytes, not a Python object per cell; the state of a
        large organization is saved every run."""
        self._in_memory()
        if change is not None:
            # Only the buckets the change writes to are copied (a memcpy each); the others are shared, read only.
            ledger = self._copy(change.cells)
            ledger._fragments = dict(self._fragments)
            table = ledger.keys
            ledger.apply(change)
            if ledger.keys is table:  # not renumbered (_reindex): the copy's buckets are numbered as this ledger's
                change.columns = {s: ledger._columns[s] for s in change.cells if s in ledger._columns}
                change.columns_of = (self, self._writes)
        else:
            ledger = self
        # Every key of the table is held by a bucket (apply() forgets the others), in the table's order: a
        # bucket's places are then the table's own, and its saved part stays valid until it changes.
        header = json.encode(
            {
                'v': FORMAT_VERSION,
                'shape': self.shape,
                'width': self.width,
                'horizon': ledger.horizon if change else self.horizon,
                'read_at': change.read_at if change else self.read_at,
            }
        )
        # The text is joined once from its parts: each `+` of texts of megabytes would copy all of it again, and a
        # large organization's save peaked at three times its text.
        parts = [header[:-1], ',"buckets":{']
        fragments = ledger._fragments
        for start in sorted(ledger._columns):
            fragment = fragments.get(start)
            if fragment is None:
                fragment = fragments[start] = _member(start, base64.b64encode(_saved(ledger._columns[start])).decode())
            parts.append(fragment)
            parts.append(',')
        if parts[-1] == ',':
            parts.pop()
        parts.append('},"series":')
        parts.append(json.encode(ledger.keys))
        parts.append('}')
        if ledger is not self:
            change.fragments = fragments
        return ''.join(parts), len(ledger.keys)

    @classmethod
    def loads(cls, text: str) -> 'Ledger':
        """Read a saved state, checking all of it: a damaged state raises ValueError (the check records a
        new baseline) instead of failing every run later or submitting a difference from a wrong figure."""
        data = json.decode(text)
        if not isinstance(data, dict):
            raise ValueError('not a ledger')
        version = data.get('v')
        if version not in _READ_FORMATS:
            raise ValueError(f'unknown ledger format {repr(version)[:40]}')
        shape, horizon, read_at = data.get('shape'), data.get('horizon'), data.get('read_at')
        if not isinstance(shape, str):
            raise ValueError('no shape')
        if type(horizon) is not int or type(read_at) not in _NUMBER or not math.isfinite(read_at) or read_at < 0:
            raise ValueError('bad horizon or read time')
        dims, width = _dims_and_width(shape)
        keys = _series_keys(data.get('series'), version, dims)
        raw_buckets = data.get('buckets')
        if not isinstance(raw_buckets, dict):
            raise ValueError('no buckets')
        ledger = cls(shape, horizon, float(read_at))
        if version == FORMAT_VERSION:
            return ledger._loaded(data.get('width'), width, keys, raw_buckets)
        checked = []
        for start, columns in raw_buckets.items():
            if version == 4:
                columns = _inflated(start, columns)
            indices, rows = _bucket(start, columns, keys, width)
            if int(start) >= horizon:  # older buckets left the window before the state was saved
                checked.append((int(start), indices, rows))
        if width is None:
            ledger.width = max((len(r) for _, _, rows in checked for r in rows), default=0)
            ledger.stride = ledger.width or 1
        # The file's table becomes the ledger's; series no bucket kept are dropped by _reindex.
        for key in keys:
            ledger._intern(key)
        for start, indices, rows in checked:
            ledger._fill(start, indices, [_flat(ledger._pad(tuple(r))) for r in rows])
        ledger._reindex()
        return ledger

    def _loaded(self, width, shape_width: int | None, keys: list[Key], buckets: dict) -> 'Ledger':
        """This new ledger holding a state of format 5: each bucket's array as saved, checked whole."""
        # Saved for a shape that does not parse (as wide as its widest row); for one that does, the shape's own.
        if type(width) is not int or width < 0 or shape_width not in (None, width):
            raise ValueError('bad width')
        self.width, self.stride = width, width or 1
        for key in keys:
            self._intern(key)
        for start, text in buckets.items():
            if not start.isdigit():
                raise ValueError('bad bucket')
            column = _unsaved(start, text, self.stride, width, len(keys))
            if int(start) >= self.horizon:  # older buckets left the window before the state was saved
                self._columns[int(start)] = column
                # The part read is the part this bucket saves (the table is the file's) until _reindex renumbers it.
                self._fragments[int(start)] = _member(int(start), text)
        self._reindex()
        return self


def _dims_and_width(shape: str) -> tuple[int | None, int | None]:
    """How many dimensions a key has and how many fields a row holds, by the shape. One that does not
    parse matches no endpoint's shape, so its source starts afresh from such a ledger anyway."""
    if shape.count('|') != 2:
        return None, None
    _, dims, fields = shape.split('|')
    return (dims.count(',') + 1 if dims else 0), (fields.count(',') + 1 if fields else 0)


def _series_keys(series, version: int, dims: int | None) -> list[Key]:
    if not isinstance(series, list):
        raise ValueError('bad series keys')
    if version == 2:
        if not _STR.issuperset(map(type, series)):
            raise ValueError('bad series keys')
        # A key of no dimension was saved as ''.
        keys = [tuple(key.split(LEGACY_SEPARATOR)) if dims != 0 else () for key in series]
    else:
        if not _LIST.issuperset(map(type, series)) or not all(_STR.issuperset(map(type, k)) for k in series):
            raise ValueError('bad series keys')
        keys = list(map(tuple, series))
    if len(set(keys)) != len(keys) or (dims is not None and any(len(k) != dims for k in keys)):
        raise ValueError('bad series keys')
    return keys


def _inflated(start, text) -> list:
    """A bucket's columns saved in format 4, read back: base64 of zlib of their JSON."""
    if not isinstance(text, str):
        raise ValueError('bad bucket')
    try:
        return json.decode(_inflate(base64.b64decode(text, validate=True)))
    except (binascii.Error, zlib.error, ValueError) as e:
        raise ValueError(f'bucket {start[:20]}: unreadable compressed columns') from e


def _inflate(data: bytes) -> bytes:
    """zlib-compressed bytes decompressed, at most MAX_BUCKET_BYTES of them: zlib.error, or ValueError if they stop
    short of the stream's end or would be longer."""
    inflater = zlib.decompressobj()
    plain = inflater.decompress(data, MAX_BUCKET_BYTES)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError('cut short or too large')
    return plain


# A bucket's saved part (format 5) starts with its array's type code, then how its bytes follow: zlib-compressed
# (token and request counts, the ABSENT runs of series a bucket lacks: 30 to 60% smaller) or as they are (costs'
# doubles: compressing them took as long as turning them into JSON had, for a few percent). Always little-endian, and
# of these sizes, so that a state moved to another machine reads the same or is refused.
_ITEM_SIZES = {_SMALL: 4, _INTS: 8, _FLOATS: 8}
_ZLIB, _RAW = b'z', b'r'
_LITTLE = sys.byteorder == 'little'


def _saved(column: array) -> bytes:
    if not _LITTLE:
        column = array(column.typecode, column)
        column.byteswap()
    if column.typecode == _FLOATS:
        return b'd' + _RAW + column.tobytes()
    return column.typecode.encode('ascii') + _ZLIB + zlib.compress(column.tobytes(), 1)


def _member(start: int, text: str) -> str:
    return f'"{start}":"{text}"'


def _unsaved(start: str, text, stride: int, width: int, series: int) -> array:
    """A bucket's array read back from its saved part (format 5); ValueError if it is not one a ledger of `series`
    keys and `stride` slots a series could have saved."""
    if not isinstance(text, str):
        raise ValueError('bad bucket')
    try:
        fragment = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f'bucket {start[:20]}: unreadable array') from e
    typecode, how, data = chr(fragment[0]) if fragment else '', fragment[1:2], fragment[2:]
    if typecode not in _ITEM_SIZES or how not in (_ZLIB, _RAW) or array(typecode).itemsize != _ITEM_SIZES[typecode]:
        raise ValueError(f'bucket {start[:20]}: unreadable array')
    if how == _ZLIB:
        try:
            data = _inflate(data)
        except zlib.error as e:
            raise ValueError(f'bucket {start[:20]}: unreadable array') from e
        except ValueError as e:
            raise ValueError(f'bucket {start[:20]}: unreadable array: {e}') from e
    if len(data) % (_ITEM_SIZES[typecode] * stride) or len(data) // (_ITEM_SIZES[typecode] * stride) > series:
        raise ValueError(f'bucket {start[:20]}: bad array size')
    column = array(typecode)
    column.frombytes(data)
    if not _LITTLE:
        column.byteswap()
    if not _valid_column(column, stride, width):
        raise ValueError(f'bucket {start[:20]}: bad value row')
    return column


def _valid_column(column: array, stride: int, width: int) -> bool:
    """Every series of the array ABSENT in all its slots, or each slot UNREPORTED or a figure from 0 to MAX_VALUE (a
    series of no field: 0), checked with C-level calls a slot, not a Python call (a state holds millions of them)."""
    if not column:
        return True
    if column.typecode == _FLOATS and not all(map(math.isfinite, column)):
        return False
    if min(column) < ABSENT or max(column) > MAX_VALUE:
        return False
    absent = list(map(eq, column[::stride], repeat(ABSENT)))
    for slot in range(1, stride):
        if list(map(eq, column[slot::stride], repeat(ABSENT))) != absent:
            return False
    held = len(absent) - absent.count(True)
    if width == 0:
        return column.count(0) == held
    # The only negative figures are the markers, whole: no -0.5, and no ABSENT in a row held.
    return sum(map(lt, column, repeat(0))) == column.count(UNREPORTED) + stride * (len(absent) - held)


def _bucket(start, columns, keys: list[Key], width: int | None) -> tuple[list[int], list]:
    if not start.isdigit() or not isinstance(columns, list) or len(columns) != 2:
        raise ValueError('bad bucket')
    indices, values = columns
    if not isinstance(indices, list) or not isinstance(values, list):
        raise ValueError('bad bucket')
    if len(indices) != len(values):
        raise ValueError(f'bucket {start[:20]} has {len(indices)} series and {len(values)} value rows')
    if indices and (
        not _INT.issuperset(map(type, indices))
        or min(indices) < 0
        or max(indices) >= len(keys)
        or len(set(indices)) != len(indices)
    ):
        raise ValueError(f'bucket {start[:20]}: bad series index')
    if not _valid_rows(values, width):
        raise ValueError(f'bucket {start[:20]}: bad value row')
    return indices, values


def _valid_rows(rows: list, width: int | None) -> bool:
    """Every row a list of `width` numbers or nulls, each from 0 to MAX_VALUE, checked a bucket at a time
    without a Python call per cell (a state holds hundreds of thousands of them)."""
    if not _LIST.issuperset(map(type, rows)):
        return False
    if width is not None and not {width}.issuperset(map(len, rows)):
        return False
    numbers = list(filter(_not_none, chain.from_iterable(rows)))
    if not numbers:
        return True
    try:
        # A string or a list raises; NaN and infinities carry through; an int beyond floats raises.
        total = math.fsum(numbers)
    except (TypeError, OverflowError, ValueError):
        return False
    return total == total and min(numbers) >= 0 and max(numbers) <= MAX_VALUE


def shape_of(bucket_width: str, group_by: Iterable[str], fields: Iterable[str]) -> str:
    return f'{bucket_width}|{",".join(group_by)}|{",".join(fields)}'
