"""A usage or costs page decoded a part of each bucket's rows at a time.

Decoded rows are most of a page's memory (about 1 KB a row, against some 600 bytes of its JSON): decoded whole, a
page of 40,000 rows held some 80 MB at once. Here each bucket's `results` array is decoded about PART_BYTES of its
text at a time, each part added up into series (rows.Tally) and dropped before the next is decoded; the rest of the
page (the buckets' other entries, has_more, next_page) is decoded with each `results` array replaced by a
placeholder. An array whose text is the same as one read before (its length and SHA-256, as Ledger.digests holds
them) is not decoded at all: it comes as a Known, which its source reads only if it needs its rows.

Parts are cut where a row object ends and the next begins (`},{`) or where the array may end (a `]` the bucket's
next entry or its end follows), which a string or a nested value may also hold: a cut is kept only when the part
decodes on its own as a list of values, which a cut inside a string or a nested value never does (a quote or a
bracket is left open). Parts that decode, joined by the commas between them, are the array's elements: the rows are
those a decoding of the whole page gives, in the same order. A page whose arrays cannot be cut so (more than
MAX_FALSE_CUTS cuts of a part that did not decode, a layout other than a page of buckets) is decoded whole, as it
was before.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Collection

# Where a bucket's rows start.
RESULTS = re.compile(rb'"results"[ \t\r\n]*:[ \t\r\n]*\[')
# Where the array may end (inside a part, only that cuts it short): a `]` that a bucket's entries follow, as they
# follow its rows (a `]` inside a string seldom is); and where a row object may end before the next (beyond, the
# first of either cuts the part).
END = re.compile(rb'\][ \t\r\n]*[,}]')
CUT = re.compile(rb'\}[ \t\r\n]*,[ \t\r\n]*\{|\][ \t\r\n]*[,}]')
CLOSE = ord(']')

# About 1,700 rows of usage: what a part holds decoded is some 2 MB.
PART_BYTES = 1 << 20
# Cuts of one part that did not decode, before the page is decoded whole: each costs a decoding of part of it.
MAX_FALSE_CUTS = 16

Decode = Callable[[Any], Any]


class Unsplittable(Exception):
    """A page whose arrays of rows were not cut into parts: it is decoded whole."""


class Read:
    """A bucket's rows, added up by series as they were decoded; `digest` tells its text apart (None: not made)."""

    __slots__ = ('tally', 'digest')

    def __init__(self, tally, digest):
        self.tally = tally
        self.digest = digest

    @property
    def rows(self) -> int:
        return self.tally.rows


class Known:
    """A bucket's rows whose text is that of rows read before (same length, same SHA-256): not decoded unless read."""

    __slots__ = ('text', 'start', 'digest', 'decode')

    def __init__(self, text, start: int, digest: tuple[int, bytes], decode: Decode):
        self.text = text
        self.start = start
        self.digest = digest
        self.decode = decode

    def read(self, tally: Callable[[], Any]) -> Read:
        """The rows added up into a `tally()`."""
        sums = tally()
        try:
            _read_array(self.text, self.start, self.decode, sums.add)
        except Unsplittable:
            # The same text cut the same way decodes the same parts; should it not, the array is decoded whole.
            sums = tally()
            with memoryview(self.text) as view:
                sums.add(self.decode(b''.join((b'[', view[self.start : self.start + self.digest[0]], b']'))))
        return Read(sums, self.digest)


def _read_array(text, start: int, decode: Decode, add: Callable[[list], None]) -> int:
    """Decode the array of rows whose text starts at `start` (after its `[`), a part at a time, passing each to
    `add`; return where its `]` is."""
    with memoryview(text) as view:
        return _read_parts(text, view, start, decode, add)


def _read_parts(text, view: memoryview, start: int, decode: Decode, add: Callable[[list], None]) -> int:
    begin = at = start
    false_cuts = 0
    while True:
        # Within a part, only the end of the array cuts it short; beyond, the first place a row ends.
        cut = END.search(text, at, begin + PART_BYTES) or CUT.search(text, max(at, begin + PART_BYTES))
        if cut is None:
            raise Unsplittable('no end of rows')
        last = text[cut.start()] == CLOSE
        end = cut.start() if last else cut.start() + 1
        try:
            # Joined from a view of the text: one copy of the part, where `b'[' + text[begin:end] + b']'` made two
            # (34 ms against 4 ms for 50 MB of parts, a steady run's costs, on the benchmark's machine).
            part = decode(b''.join((b'[', view[begin:end], b']')))
        except ValueError:
            # A `]` or `},{` inside a string or a nested value: look further, but not over megabytes (no row is
            # that long).
            false_cuts += 1
            if false_cuts > MAX_FALSE_CUTS or end - begin > 4 * PART_BYTES:
                raise Unsplittable('too many false cuts') from None
            at = cut.start() + 1
            continue
        add(part)
        del part
        if last:
            return end
        begin = at = cut.end() - 1
        false_cuts = 0


def _known(text, view, start: int, known: Collection[tuple[int, bytes]], decode: Decode) -> Known | None:
    for length, sha in known:
        end = start + length
        if end < len(text) and text[end] == CLOSE and hashlib.sha256(view[start:end]).digest() == sha:
            return Known(text, start, (length, sha), decode)
    return None


def decode_page(text, decode: Decode, tally: Callable[[], Any], known: Collection[tuple[int, bytes]] = ()) -> Any:
    """The page `text` (bytes) decodes to, each bucket's `results` a Read (its rows added up into `tally()`) or a
    Known (text as one of `known`); decoded whole, rows as lists, when its arrays cannot be cut into parts."""
    try:
        return _split(text, decode, tally, known)
    except Unsplittable:
        return decode(text)


def _split(text, decode: Decode, tally: Callable[[], Any], known: Collection[tuple[int, bytes]]) -> Any:
    pieces, spans = [], []
    done = 0
    with memoryview(text) as view:
        while True:
            found = RESULTS.search(text, done)
            if found is None:
                break
            start = found.end()
            span = _known(text, view, start, known, decode)
            if span is not None:
                end = start + span.digest[0]
            else:
                sums = tally()
                end = _read_array(text, start, decode, sums.add)
                span = Read(sums, (end - start, hashlib.sha256(view[start:end]).digest()))
            pieces.append(text[done:start])
            pieces.append(b'-%d' % (len(spans) + 1))
            spans.append(span)
            done = end
    if not spans:
        raise Unsplittable('no rows')
    pieces.append(text[done:])
    body = decode(b''.join(pieces))
    del pieces
    # Each placeholder must stand where a bucket's rows stand, once: otherwise the page is not what it seemed.
    data = body.get('data') if isinstance(body, dict) else None
    placed = 0
    for bucket in data if isinstance(data, list) else ():
        results = bucket.get('results') if isinstance(bucket, dict) else None
        if results.__class__ is list and len(results) == 1 and results[0].__class__ is int:
            k = -results[0] - 1
            if 0 <= k < len(spans) and spans[k] is not None:
                bucket['results'] = spans[k]
                spans[k] = None
                placed += 1
    if placed != len(spans):
        raise Unsplittable('rows outside buckets')
    return body
