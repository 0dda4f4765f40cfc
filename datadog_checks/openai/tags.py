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
