"""Result rows of a usage or costs page, read into series keys and tuples of field values.

This runs for every row of every page, so the common case (plain keys, numbers or nulls) costs a few
C-level calls and no Python call per field; the rest falls back to the careful path.
"""

from __future__ import annotations

import hashlib
from itertools import chain
from operator import itemgetter
from typing import Any, Callable, Iterable

from datadog_checks.base.utils.format import json

from ..catalogue import Field
from ..ledger import MAX_VALUE, Key, Values

# A dimension OpenAI did not group by (a null value) is this in a key, and no tag.
NULL = ''
# Dimensions OpenAI's usage results give as JSON booleans (completions' `batch`), and their text in a key.
BOOLEAN_DIMS = frozenset({'batch'})
_FLAG_TEXT = {True: 'true', False: 'false'}


# Rows encoded at a time for a digest: a large bucket's whole text would be megabytes held at once.
DIGEST_ROWS = 2_000


def digest(results: list) -> bytes | None:
    """A digest of a bucket's rows as they were decoded, None for rows the encoder cannot write back. Encoding
    decoded JSON gives equal texts for equal rows (same keys in the same order, same values) and different ones
    otherwise, and costs a fraction of reading the rows into keys and comparing them with the ledger. (Written back
    by the JSON module that decoded them, as the Agent has it: orjson, which would write a NaN as null, never decodes
    one.)"""
    h = hashlib.sha256()
    try:
        for i in range(0, len(results), DIGEST_ROWS):
            h.update(json.encode_bytes(results[i : i + DIGEST_ROWS]))
    except (TypeError, ValueError, OverflowError):
        return None
    return h.digest()


def encode(value: Any) -> str:
    """A dimension value as it stands in a series key: `batch` can be a boolean, any value a null."""
    if value is None:
        return NULL
    if value is True:
        return 'true'
    if value is False:
        return 'false'
    return str(value)


def number(value: Any) -> float | int | None:
    """A numeric field, tolerant of strings (costs' amount.value); None when absent or unusable."""
    if value is None or value is True or value is False:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def path_reader(path: tuple[str, ...]) -> Callable[[dict], Any]:
    """row -> the value at `path` (an entry of an object in the row, as costs' `amount.value` and `amount.currency`),
    None where the row has no such object or entry. OpenAI nests no field deeper: a catalogue entry that did would
    fail here, when the check starts, rather than be read wrong."""
    outer, inner = path

    def read(row: dict) -> Any:
        value = row.get(outer)
        return value.get(inner) if isinstance(value, dict) else None

    return read


def _aliased_value(row: dict, f: Field) -> float | int | None:
    """A field older responses name otherwise (`sessions` before `num_sessions`): the first name present."""
    for key in f.keys:
        value = row.get(key)
        if value is not None:
            return number(value)
    return None


# The types a field's value usually has: taken as they are. Anything else (a string amount, a boolean,
# a nested object) goes through number().
_PLAIN = frozenset({int, float, type(None)})
_STRINGS = frozenset({str})
# The dimension values a key may hold other than strings, and their text in it (as encode() writes them).
_TEXTUAL = frozenset({str, bool, type(None)})
_TEXT = {None: NULL, True: 'true', False: 'false'}


def all_text(values: Iterable[Any]) -> bool:
    """Whether every one of `values` is a string, with C-level calls."""
    return _STRINGS.issuperset(map(type, values))


def _getter(names: tuple[str, ...]) -> Callable[[dict], tuple]:
    """row -> the tuple of those entries, raising KeyError if one is absent: a single allocation per row, which
    matters on pages of 100,000 rows (each tracked object allocated brings the next garbage collection closer)."""
    if len(names) == 1:
        (name,) = names
        return lambda row: (row[name],)
    if not names:
        return lambda row: ()
    return itemgetter(*names)


def values_reader(fields: Iterable[Field]) -> Callable[[dict], Values]:
    """row -> (value of each field,).

    Tuples, not lists: the ledger keeps one per (bucket, series), and the garbage collector stops
    tracking a tuple of numbers, where it would walk every list at each full collection."""
    fields = tuple(fields)
    keys = tuple(f.name for f in fields)
    # Per field read apart (nested, or named otherwise in older responses): its slot and its reader.
    special = tuple(
        (i, path_reader(f.path) if f.path else (lambda row, f=f: _aliased_value(row, f)))
        for i, f in enumerate(fields)
        if f.path or f.aliases
    )
    plain = _PLAIN.issuperset

    get_all = _getter(keys)

    def read(row: dict) -> Values:
        try:
            values = get_all(row)
        except KeyError:
            values = tuple(map(row.get, keys))
        if special:
            fixed = list(values)
            for i, read_field in special:
                fixed[i] = read_field(row)
            values = tuple(fixed)
        if plain(map(type, values)):
            return values
        return tuple(map(number, values))

    # One field nested in the entry of its own name, as costs' amount.value: read in place, without a Python call.
    nested = [(i, f.path[1]) for i, f in enumerate(fields) if f.path and f.path[0] == f.name]
    if len(special) != 1 or len(nested) != 1:
        return read
    ((slot, inner),) = nested
    after = slot + 1

    def read_nested(row: dict) -> Values:
        try:
            values = get_all(row)
            values = values[:slot] + (values[slot][inner],) + values[after:]
        except (KeyError, TypeError):
            return read(row)
        if plain(map(type, values)):
            return values
        return tuple(map(number, values))

    return read_nested


def valid_values(values: Values) -> bool:
    """Every value reported is a finite number from 0 to MAX_VALUE (NaN fails every comparison).

    OpenAI's figures are counts and amounts: a negative, infinite or NaN one (`"NaN"`, `1e999`) is a
    malformed row, never a metric, and never saved."""
    for v in values:
        if v is not None and not 0 <= v <= MAX_VALUE:
            return False
    return True


def _as_text(values: Iterable[Any]) -> Key:
    """A series key from dimension values as a row has them: strings as they are, anything else encoded."""
    return tuple([v if v.__class__ is str else encode(v) for v in values])


def key_reader(group_by: tuple[str, ...], fixed_dims: tuple[tuple[str, tuple[str, ...]], ...]) -> Callable[[dict], Key]:
    """row -> series key: the value of each group_by dimension, then of each fixed one (the currency).

    The common case (every entry present) takes the values with C-level calls and checks that they are all strings
    without raising an error per row: completions' `batch` is a boolean in every row."""
    readers = tuple(path_reader(path) for _, path in fixed_dims)
    get_group = _getter(group_by)
    strings = _STRINGS.issuperset

    def careful(row: dict) -> Key:
        return _as_text([*map(row.get, group_by), *(read(row) for read in readers)])

    # Where a boolean is expected (completions' `batch`, in every row), it is written as text in place: through the
    # careful path, it was half of reading a completions key.
    flags = tuple(i for i, dim in enumerate(group_by) if dim in BOOLEAN_DIMS)
    if not readers:

        def key(row: dict) -> Key:
            try:
                plain = get_group(row)
            except KeyError:
                return careful(row)
            for i in flags:
                flag = plain[i]
                if flag is True or flag is False:
                    plain = plain[:i] + (_FLAG_TEXT[flag],) + plain[i + 1 :]
            return plain if strings(map(type, plain)) else _as_text(plain)

        return key

    if not group_by or len(readers) != 1:
        return careful
    # One fixed dimension nested in the row, as costs' amount.currency.
    ((_, (outer, inner)),) = fixed_dims

    def key_one_fixed(row: dict) -> Key:
        try:
            plain = get_group(row) + (row[outer][inner],)
        except (KeyError, TypeError):  # no such entry, or no object where the entry would be
            return careful(row)
        return plain if strings(map(type, plain)) else _as_text(plain)

    return key_one_fixed


def part_reader(
    group_by: tuple[str, ...],
    fixed_dims: tuple[tuple[str, tuple[str, ...]], ...],
    fields: Iterable[Field],
    key_of: Callable[[dict], Key],
    read_values: Callable[[dict], Values],
) -> Callable[[list], dict[Key, Values] | None] | None:
    """rows -> {series key: values} for a part of a bucket in the common layouts, read in one loop of a few C-level
    calls a row; None for a part that is not all plain (a row that is not an object, a value that is not a string or
    a number, two rows of one series): the readers `key_of` and `read_values` then read it row by row, the careful
    way. A row without an entry (an optional figure) is read by them in the loop. The checks are made once a part,
    over every key and value at once, not a Python call per row.

    Two layouts: every field and dimension an entry of the row (usage), and costs', whose currency and first field
    are entries of one object (`amount`) and whose other field is an entry of the row. None for any other."""
    fields = tuple(fields)
    if any(f.aliases for f in fields):
        return None
    get_group = _getter(group_by)
    if not fixed_dims and not any(f.path for f in fields):
        get_values = _getter(tuple(f.name for f in fields))

        def read_flat(rows: list) -> dict | None:
            part = {}
            try:
                for row in rows:
                    try:
                        part[get_group(row)] = get_values(row)
                    except KeyError:
                        part[key_of(row)] = read_values(row)
            except TypeError:  # a row that is not an object
                return None
            return _checked(part, len(rows))

        return read_flat
    nested = fields[0].path if fields else None
    if len(fixed_dims) != 1 or not nested or len(fields) != 2 or fields[1].path or fixed_dims[0][1][0] != nested[0]:
        return None
    ((_, (outer, inner_dim)),) = fixed_dims
    inner_value, other = nested[1], fields[1].name

    def read_nested(rows: list) -> dict | None:
        part = {}
        try:
            for row in rows:
                try:
                    obj = row[outer]
                    part[get_group(row) + (obj[inner_dim],)] = (obj[inner_value], row[other])
                except KeyError:
                    part[key_of(row)] = read_values(row)
        except TypeError:  # a row that is not an object, or no object where the entry would be
            return None
        return _checked(part, len(rows))

    return read_nested


def _checked(part: dict, size: int) -> dict | None:
    """A part as part_reader read it, if its `size` rows are of as many series, every value a number or null and
    every dimension a string (or a null or a boolean, then written as encode() writes them); None otherwise."""
    if len(part) != size or not _PLAIN.issuperset(map(type, chain.from_iterable(part.values()))):
        return None  # two rows of one series (to be added up), or a value to make a number of
    if all_text(chain.from_iterable(part)):
        return part
    # Completions' `batch` is a boolean in every row, and a `user_id` often null: written a dimension at a time, with
    # C-level calls. Only those three are looked up: an integer 1 would find True's text.
    columns: list = list(zip(*part))
    for i, column in enumerate(columns):
        if not all_text(column):
            if not _TEXTUAL.issuperset(map(type, column)):
                return None
            columns[i] = map(_TEXT.get, column, column)
    part = dict(zip(zip(*columns), part.values()))
    return part if len(part) == size else None


def aggregate(
    results: list, key_of: Callable[[dict], Key], read_values, current: dict[Key, Values] | None = None
) -> tuple[dict[Key, Values], int]:
    """Rows of one bucket by series key (added to `current`), and how many were not rows; rows sharing a key
    (should not happen) are added up."""
    if current is None:
        current = {}
    malformed = 0
    for row in results:
        if row.__class__ is not dict:
            malformed += 1
            continue
        values = read_values(row)
        key = key_of(row)
        seen = current.get(key)
        if seen is None:
            current[key] = values
        else:
            current[key] = tuple(a if b is None else b if a is None else a + b for a, b in zip(seen, values))
    return current, malformed


class Tally:
    """A bucket's rows added up by series a part at a time (sources/pages.py): its flows and its levels, each as
    aggregate() reads them (a plain part's flows read at once by `read_part`), how many rows it was given and how
    many of them were not rows."""

    __slots__ = ('key_of', 'read_flows', 'read_levels', 'read_part', 'flows', 'levels', 'rows', 'malformed')

    def __init__(self, key_of: Callable[[dict], Key], read_flows=None, read_levels=None, read_part=None):
        self.key_of = key_of
        self.read_flows = read_flows
        self.read_levels = read_levels
        # A part_reader, for a source of flows only.
        self.read_part = read_part
        self.flows: dict[Key, Values] = {}
        self.levels: dict[Key, Values] = {}
        self.rows = 0
        self.malformed = 0

    def add(self, rows: list) -> None:
        self.rows += len(rows)
        if self.read_part is not None:
            part = self.read_part(rows)
            if part is not None:
                if not self.flows:
                    self.flows = part
                    return
                if self.flows.keys().isdisjoint(part):
                    self.flows.update(part)
                    return
                # A series in two parts (should not happen): its rows added up the careful way.
        if self.read_flows is not None:
            self.malformed += aggregate(rows, self.key_of, self.read_flows, self.flows)[1]
        if self.read_levels is not None:
            malformed = aggregate(rows, self.key_of, self.read_levels, self.levels)[1]
            if self.read_flows is None:
                self.malformed += malformed  # otherwise counted with the flows: the same rows
