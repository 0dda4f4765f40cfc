"""Tag values as Datadog stores them, decided here rather than by Datadog's intake.

Datadog lowercases tags, turns every character other than letters, digits, `_`, `-`, `:`, `.` and `/`
into `_`, and keeps 200 characters of a tag (Getting Started with Tags, "Define tags"; the Agent's
`normalizeTag` does the same). Left to Datadog, that can merge two different values into one tag:
a 300-character name cut at 200, or an id with a character Datadog replaces. So the check normalizes
each value itself, once per distinct value and run (the check caches the fragments), and when
normalizing loses more than the letter case of an id, or cuts a value short, it appends a short hash
of the original value, which keeps different values apart.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

from .catalogue import NAME_TAGS

MAX_TAG_LENGTH = 200
# Ids must stay distinct: two series of different projects must never share a tag value.
ID_DIMENSIONS = frozenset({'project_id', 'api_key_id', 'user_id', 'vector_store_id'})
_ALREADY_NORMAL = re.compile(r'_?[a-z0-9:./-]+(?:_[a-z0-9:./-]+)*')
_INVALID = re.compile(r'[^\w:./-]+')
_UNDERSCORES = re.compile(r'_{2,}')
HASH_LENGTH = 8


def short_hash(value: str) -> str:
    return hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:HASH_LENGTH]


def tag_value(dim: str, value: str) -> str:
    """The value part of `dim:value` as the check sends it ('' stays '': a dimension not grouped by)."""
    if not value:
        return value
    lowered = value.lower()
    if _ALREADY_NORMAL.fullmatch(lowered):
        normal = lowered
    else:
        normal = _UNDERSCORES.sub('_', _INVALID.sub('_', lowered)).rstrip('_')
    room = MAX_TAG_LENGTH - len(dim) - 1
    if len(normal) <= room and normal and (normal == lowered or dim not in ID_DIMENSIONS):
        return normal
    suffix = short_hash(value)
    head = normal[: room - HASH_LENGTH - 1].rstrip('_')
    return f'{head}-{suffix}' if head else suffix


def tag(dim: str, value: str) -> str:
    return f'{dim}:{tag_value(dim, value)}'


class LookedUp:
    """The dimensions of points whose series key lacks the last one: its value is looked up from the key with
    `value_of` (None or '': not tagged). Costs' quantity_unit, noted per series as the rows are read (sources/costs.py),
    is so: its points share the amount's key, and their tags are the amount's and the unit's."""

    __slots__ = ('dims', 'dim', 'value_of')

    def __init__(self, dims: tuple[str, ...], dim: str, value_of: Callable[[tuple[str, ...]], str | None]):
        self.dims = dims
        self.dim = dim
        self.value_of = value_of


class TagBuilder:
    """The tags of every series a run submits: the account's, then each dimension's, with the name next to
    an id when it is known. Built once per series and run: kept between runs, they would hold some 350 bytes per
    series (31.5 MB for one run's 89,059 series at 20,000 completions series, against 0.3-0.5 s of CPU a run to
    build them), and names refreshed meanwhile would not reach them."""

    def __init__(self, base_tags: list[str], names, normalize: Callable[[list[str]], list[str]] | None = None):
        self.base_tags = base_tags
        self.names = names
        # The base class's checks of a point's tags (submit.Sender.normalize), which go tag by tag: applied once to the
        # account's tags and to each dimension value's, the tags of every series come out as the base class sends them.
        self.normalize = normalize or list
        self._series: dict[tuple[str, ...], dict[tuple[str, ...], list[str]]] = {}
        self._tag_sets: dict[tuple[str, ...], list[str]] = {}
        # dimension -> value -> its tags
        self._fragments: dict[str, dict[str, list[str]]] = {}
        self._readers: dict[tuple[str, ...], Callable[[tuple[str, ...]], list[str]]] = {}

    def of(self, dims: tuple[str, ...]) -> Callable[[tuple[str, ...]], list[str]]:
        """key -> the tags of that series of `dims`. Series whose tags come out the same share one list: the Agent
        keys a context on the metric name and the set of tags, so they make one context (one custom metric), which
        the check counts by the identity of these lists."""
        # One reader per dims and run: costs' points alternate between two dims (the quantity's has its unit), and a
        # reader made anew at each point cost more than its tags.
        reader = self._readers.get(dims)
        if reader is None:
            reader = self._readers[dims] = self._reader(dims)
        return reader

    def _reader(self, dims: tuple[str, ...] | LookedUp) -> Callable[[tuple[str, ...]], list[str]]:
        if isinstance(dims, LookedUp):
            return self._looked_up(dims)
        series = self._series.setdefault(dims, {})
        per_dim = tuple(self._fragments.setdefault(dim, {}) for dim in dims)
        tag_sets = self._tag_sets
        base = tuple(self.normalize(list(self.base_tags)))
        normalize, dimension_tags = self.normalize, self.dimension_tags

        def tags_of(key: tuple[str, ...]) -> list[str]:
            tags = series.get(key)
            if tags is None:
                tags = list(base)
                for fragments, dim, value in zip(per_dim, dims, key):
                    if not value:
                        continue  # a dimension OpenAI did not group by (null) is left out, not tagged `none`
                    fragment = fragments.get(value)
                    if fragment is None:
                        fragment = fragments[value] = normalize(list(dimension_tags(dim, value)))
                    tags += fragment
                tags = series[key] = tag_sets.setdefault(tuple(tags), tags)
            return tags

        return tags_of

    def _looked_up(self, dims: LookedUp) -> Callable[[tuple[str, ...]], list[str]]:
        """key -> the tags of the series of `dims.dims` with that key, then those of the value looked up, made as the
        reader of _reader would make them for the key with that value appended (the same lists, shared alike)."""
        parent, value_of, dim = self.of(dims.dims), dims.value_of, dims.dim
        fragments = self._fragments.setdefault(dim, {})
        series: dict[tuple[str, ...], list[str]] = {}
        tag_sets, normalize, dimension_tags = self._tag_sets, self.normalize, self.dimension_tags

        def tags_of(key: tuple[str, ...]) -> list[str]:
            tags = series.get(key)
            if tags is None:
                tags = parent(key)
                value = value_of(key)
                if value:
                    fragment = fragments.get(value)
                    if fragment is None:
                        fragment = fragments[value] = normalize(list(dimension_tags(dim, value)))
                    tags = tags + fragment
                    tags = tag_sets.setdefault(tuple(tags), tags)
                series[key] = tags
            return tags

        return tags_of

    def dimension_tags(self, dim: str, value: str) -> tuple[str, ...]:
        """`dim:value`, and the name next to an id when it is known, normalized as Datadog would."""
        name_tag = NAME_TAGS.get(dim)
        if name_tag and self.names.enabled.get(dim):
            resolved = self.names.lookup(dim, value)
            if resolved:
                return (tag(dim, value), tag(name_tag, resolved))
        return (tag(dim, value),)

    def forget(self) -> None:
        self._readers.clear()
        self._series.clear()
        self._tag_sets.clear()
        self._fragments.clear()
