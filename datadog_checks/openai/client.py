"""The OpenAI Administration API client: auth, pagination, retries and the per-run time budget.

The Agent's RequestsWrapper (`self.http`) brings proxies, TLS, timeouts and `auth_token` readers but
no retries, so they live here. Every request of a run draws on one time budget: a run that is rate
limited gives up cleanly before the next run is due instead of piling up behind it.
"""

from __future__ import annotations

import copy
import functools
import mmap
import re
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

import requests
import urllib3
from datadog_checks.base.utils.format import json

from .scrub import Scrubber, printable

# The end of a quoted window that may be part of a key or token cut by it: the characters a bearer token may hold.
_CUT_TOKEN = re.compile(r'[^\s"\'<>,;&()\[\]{}]+$')

ADMIN_KEY_HELP = (
    'The usage and costs endpoints need an organization admin key (sk-admin-...). Project keys and '
    'restricted keys are refused. An organization owner creates one at '
    'https://platform.openai.com/settings/organization/admin-keys; put it in admin_api_key.'
)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0

# The most the check reads of one response, decompressed (and of the bytes on the wire). A page holds
# `limit` buckets (the check asks for the most OpenAI allows: 168 hourly, 1,440 minute, 31 daily, 180 cost
# buckets) of one row per group-by combination, which OpenAI does not bound; a row is about 600 bytes
# (the benchmark's 100,000-series page: 410.6 MB for 7 buckets). Once it knows the rows per bucket, a usage
# source asks for fewer buckets per page (sources/usage.py, MAX_PAGE_ROWS), so a steady page stays near
# 30 MB; the limit is for a first page of unknown size: a catch-up or a baseline of some 60,000 series
# per bucket over 7 buckets, whose decoded rows take about 2 GB, beyond which a page would threaten the
# Agent rather than feed it.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# How a caller decodes a body, given the check's JSON decoder (orjson where the Agent has it).
PageDecoder = Callable[[bytes, Callable[[Any], Any]], Any]
# An error answer is read for its message only.
MAX_ERROR_BODY_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
# The encodings the check decodes itself, with a bound on what one compressed chunk may expand to.
ACCEPT_ENCODING = 'gzip, deflate'


class ApiError(Exception):
    """A request that did not produce usable data. `message` is meant for the operator."""

    retryable = False

    def __init__(self, message: str, status: int | None = None, recorded_as: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        # The status the request counts under in openai.check.api.requests when it is not the HTTP one
        # (a timeout, a body cut off).
        self.recorded_as = recorded_as


class AuthError(ApiError):
    """401/403: the key is not an organization admin key, or lacks a scope. Fatal for the account."""


class RequestRefused(ApiError):
    """400 and other 4xx: the request itself is wrong; repeating it cannot help."""


class TransientError(ApiError):
    """429, 5xx, timeouts and network errors that outlasted the retries or the time budget."""

    retryable = True

    def __init__(self, message: str, status: int | None = None, recorded_as: str | None = None, retry_after=None):
        super().__init__(message, status, recorded_as)
        # Seconds OpenAI asked to wait (a 429's Retry-After), else None: the client backs off on its own.
        self.retry_after = retry_after


class BadResponse(ApiError):
    """A 200 whose body is not the JSON page the API describes (truncated, an HTML error page...)."""

    retryable = True


class UnusableResponse(BadResponse):
    """A response that would be the same if asked again: too large, echoing the key, a redirect."""

    retryable = False


class TooLarge(UnusableResponse):
    """A response above max_response_bytes: the same page would be refused again, a smaller one may not."""


class DeadlineExceeded(TransientError):
    """The response did not arrive whole before the run's time budget ran out."""


class TimeBudget:
    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self.deadline = monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._monotonic())

    def share(self, fraction: float) -> 'TimeBudget':
        """A budget of `fraction` of what is left, drawn from this one."""
        return TimeBudget(self.remaining() * fraction, self._monotonic)


@dataclass
class RequestStats:
    """What the run's requests did, for the check's own health metrics."""

    calls: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (endpoint, status)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # endpoint -> seconds
    retries: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (endpoint, reason)
    rate_limited: bool = False


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get('error'), dict):
        return str(body['error'].get('message') or '')
    return ''


class _Inflater:
    """gzip or deflate, decoded a bounded piece at a time: a small body cannot expand past the limit
    in memory (a gzip bomb), since zlib is never asked for more than the room left."""

    def __init__(self, encoding: str):
        self.gzip = encoding in ('gzip', 'x-gzip')
        self.wbits = 16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS
        self.obj = zlib.decompressobj(self.wbits)
        self.started = False

    def feed(self, data: bytes, out: Received, limit: int) -> None:
        while data:
            try:
                piece = self.obj.decompress(data, limit - len(out) + 1)
            except zlib.error:
                if self.gzip or self.started:
                    raise
                # Some servers send raw deflate without the zlib header (urllib3 accepts both too).
                self.wbits = -zlib.MAX_WBITS
                self.obj = zlib.decompressobj(self.wbits)
                piece = self.obj.decompress(data, limit - len(out) + 1)
            self.started = True
            out += piece
            if len(out) > limit:
                return
            data = self.obj.unconsumed_tail
            if self.obj.eof:
                data = self.obj.unused_data
                if not self.gzip:
                    return
                # Concatenated gzip members decode to the concatenation of their contents.
                self.obj = zlib.decompressobj(self.wbits)

    def finish(self, out: Received, limit: int) -> None:
        out += self.obj.flush(limit - len(out) + 1)


def _inflater(encoding: str | None) -> _Inflater | None:
    encoding = (encoding or '').strip().lower()
    if encoding in ('', 'identity'):
        return None
    if encoding in ('gzip', 'x-gzip', 'deflate'):
        return _Inflater(encoding)
    raise ValueError(encoding)


def _socket_of(raw) -> Any:
    """The socket under a streamed urllib3 response, to bound each wait by the deadline."""
    sock = getattr(getattr(raw, 'connection', None), 'sock', None)
    if sock is None:
        # http.client's own reader: HTTPResponse.fp (a BufferedReader) over a SocketIO.
        sock = getattr(getattr(getattr(getattr(raw, '_fp', None), 'fp', None), 'raw', None), '_sock', None)
    return sock if hasattr(sock, 'settimeout') else None


def _retry_after(response) -> float | None:
    value = response.headers.get('Retry-After')
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # An HTTP-date form is allowed by RFC 9110 but OpenAI sends seconds; fall back to backoff.
        return None


class OpenAIClient:
    def __init__(
        self,
        http,
        base_url: str,
        budget: TimeBudget,
        max_retries: int,
        timeouts: tuple[float, float],
        log,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        scrubber: Scrubber | None = None,
        stats: RequestStats | None = None,
    ):
        self.http = http
        self.scrubber = scrubber or Scrubber()
        self.max_response_bytes = MAX_RESPONSE_BYTES
        self.base_url = base_url.rstrip('/')
        self.budget = budget
        self.max_retries = max_retries
        # (connect, read): the configured `connect_timeout`/`read_timeout`, else `timeout`, for each wait.
        self.timeouts = timeouts
        self.log = log
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = stats or RequestStats()
        # The mapping the last page was received in, for the next page once nothing reads it (Received); let go by
        # drop_spare().
        self.spare: mmap.mmap | None = None

    def within(self, fraction: float) -> 'OpenAIClient':
        """This client, limited to `fraction` of what is left of the run's time budget (same statistics)."""
        client = copy.copy(self)
        client.budget = self.budget.share(fraction)
        return client

    # -- one request ---------------------------------------------------------------------------

    def get_json(
        self, path: str, params: list[tuple[str, Any]], endpoint: str, decode: PageDecoder | None = None
    ) -> dict:
        """GET with retries on 429, 5xx, timeouts and unusable bodies, within the run's budget. `decode` decodes the
        body of a 200, given the JSON decoder (default: that decoder)."""
        attempt = 0
        while True:
            try:
                return self._get_once(path, params, endpoint, decode)
            except ApiError as e:
                if not e.retryable or attempt >= self.max_retries:
                    raise
                wait = getattr(e, 'retry_after', None)
                if wait is None:
                    wait = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt)
                # Waiting past the budget would only make the next run late; give the rest to it.
                if wait >= self.budget.remaining():
                    raise TransientError(
                        f'{e.message} Not retried: the wait ({wait:.0f}s) exceeds what is left of the '
                        f'run\'s time budget ({self.budget.remaining():.0f}s); the next run resumes.',
                        e.status,
                    ) from e
                attempt += 1
                self.stats.retries[(endpoint, _reason(e))] += 1
                self.log.debug('Retrying %s in %.1fs after: %s', path, wait, e.message)
                self.sleep(wait)

    def _get_once(self, path: str, params: list[tuple[str, Any]], endpoint: str, decode=None) -> dict:
        remaining = self.budget.remaining()
        if remaining <= 0:
            raise TransientError('The run\'s time budget is spent; the next run resumes.')
        connect, read = self.timeouts
        timeout = (min(connect or remaining, remaining), min(read or remaining, remaining))
        started = self.monotonic()
        # `timeout` bounds each wait for bytes; the deadline bounds the whole response, so that a server
        # sending a byte now and then cannot hold the run past its budget.
        deadline = started + remaining
        response = self._send(path, params, endpoint, timeout, started)
        status = response.status_code
        try:
            if 300 <= status < 400:
                raise self._redirected(path, status, response)
            content = BodyReader(self, response, path, endpoint, status).read(deadline, timeout[1])
        except ApiError as e:
            self._record(endpoint, e.recorded_as or str(status), started)
            raise
        finally:
            response.close()
        self._record(endpoint, str(status), started)
        if status == 200:
            return self._decode(content, path, decode)
        raise self._refusal(path, status, content, response)

    def _send(self, path: str, params, endpoint: str, timeout: tuple[float, float], started: float):
        try:
            # Streamed, to bound what is read; never redirected: the Admin API does not redirect, and the
            # other host's answer is not OpenAI's data.
            return self.http.get(
                f'{self.base_url}{path}', params=params, timeout=timeout, stream=True, allow_redirects=False
            )
        except requests.Timeout as e:
            self._record(endpoint, 'timeout', started)
            raise TransientError(f'OpenAI did not answer {path} within {timeout[1]:.0f}s.') from e
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
            self._record(endpoint, 'truncated', started)
            raise BadResponse(
                f'The response from {path} was cut off before its end; a proxy or the network dropped it.'
            ) from e
        except requests.RequestException as e:
            self._record(endpoint, 'network_error', started)
            raise TransientError(
                f'Cannot reach {self.base_url}: {type(e).__name__}. Check api_base_url, DNS, the proxy '
                f'settings and that the Agent host may reach it.'
            ) from e

    def _redirected(self, path: str, status: int, response) -> ApiError:
        location = urlsplit(self.scrubber.detail(response.headers.get('Location') or '', 200))
        target = f'{location.scheme}://{location.netloc}' if location.netloc else 'another address'
        return UnusableResponse(
            f'{path} was redirected ({status}) to {target}; the check does not follow redirects, since '
            f'the OpenAI Administration API never sends one: point api_base_url at the final address, or '
            f'check the proxy or gateway in between.',
            status,
        )

    def _refusal(self, path: str, status: int, content: bytes, response) -> ApiError:
        """The error an answer other than 200 stands for, with OpenAI's message (scrubbed) when it sent one."""
        body = self._try_decode(content)
        detail = self.scrubber.detail(_error_message(body)) or self._snippet(content)
        if status in (401, 403):
            return AuthError(f'OpenAI refused the key with {status} on {path} ({detail}). {ADMIN_KEY_HELP}', status)
        if status == 429:
            self.stats.rate_limited = True
            return TransientError(
                f'OpenAI rate limited {path} (429: {detail}).', status, retry_after=_retry_after(response)
            )
        if status >= 500:
            return TransientError(f'OpenAI answered {status} on {path} ({detail}).', status)
        return RequestRefused(f'OpenAI refused the request to {path} with {status}: {detail}', status)

    def _record(self, endpoint: str, status: str, started: float) -> None:
        self.stats.calls[(endpoint, status)] += 1
        self.stats.latency[endpoint].append(self.monotonic() - started)

    @staticmethod
    def _try_decode(content: bytes) -> Any:
        try:
            return json.decode(content)
        except Exception:
            return None

    def _decode(self, content: bytes, path: str, decode: PageDecoder | None) -> dict:
        try:
            body = json.decode(content) if decode is None else decode(content, json.decode)
        except Exception as e:
            raise BadResponse(
                f'OpenAI sent a body that is not JSON for {path} ({self._snippet(content)}); a proxy or gateway '
                f'in between may be answering instead of OpenAI, or the response was cut off.',
                200,
            ) from e
        if not isinstance(body, dict):
            raise BadResponse(f'OpenAI sent an unexpected body for {path}: {self._snippet(content)}', 200)
        return body

    def _snippet(self, content: bytes, size: int = 120) -> str:
        """The start of a body for a message, scrubbed: a gateway may echo the request's headers."""
        window = size * 4
        head = bytes(content[:window]).decode('utf-8', 'replace')
        cut = len(content) > window
        if cut:
            # The window may have cut a key or a token in two, and half a key is not recognised: what it kept of the
            # last one goes (a minified page keeps what is before its last delimiter).
            head = _CUT_TOKEN.sub('', head)
        text = self.scrubber.text(printable(' '.join(head.split())))
        if not text:
            return 'a body with no break in its first bytes' if cut else 'empty body'
        if len(text) <= size and not cut:
            return text
        return self.scrubber.text(text[:size]) + '...'

    # -- pagination ----------------------------------------------------------------------------

    def drop_spare(self) -> None:
        """Let go of the mapping kept for the next page: once a source has read its pages, so that its save and the
        next sources do not hold it (its pages took up to the largest of them)."""
        self.spare = None

    def iter_buckets_pages(
        self, path: str, params: list[tuple[str, Any]], endpoint: str, decode: PageDecoder | None = None
    ) -> Iterator[list]:
        """Yield the buckets of each page of a usage or costs query, oldest first, each decoded by `decode` (a
        usage source's reads its rows as they are decoded: sources/pages.py).

        A page always holds whole buckets (`limit` counts buckets), so a caller may act on each page
        as it comes and still never see half a bucket.
        """
        seen = set()
        page = None
        while True:
            query = params if page is None else params + [('page', page)]
            body = self.get_json(path, query, endpoint, decode)
            data = body.get('data')
            if not isinstance(data, list) or 'has_more' not in body:
                raise BadResponse(
                    f'OpenAI sent a page without data/has_more for {path}; the response was not a usage page.', 200
                )
            more, next_page, empty = body.get('has_more'), body.get('next_page'), not data
            # Nothing of this page is kept once the caller is done with it: the next page is never decoded
            # while this one is still in memory. This frame holds the Page the caller drains, not another list
            # of its buckets, which would keep each one alive past its turn.
            del body
            data = Page(data)
            yield data
            del data
            # Defensive stops: the costs endpoint has been seen to return a cursor after its last page.
            if not more or not next_page or empty or next_page in seen:
                return
            seen.add(next_page)
            page = next_page

    def iter_list(self, path: str, params: list[tuple[str, Any]], endpoint: str) -> Iterator[dict]:
        """Yield the objects of a list endpoint (projects, keys, users), following `after` cursors."""
        after = None
        while True:
            query = params if after is None else params + [('after', after)]
            body = self.get_json(path, query, endpoint)
            data = body.get('data')
            if not isinstance(data, list):
                raise BadResponse(f'OpenAI sent a list without data for {path}.', 200)
            yield from data
            last = body.get('last_id') or (data[-1].get('id') if data and isinstance(data[-1], dict) else None)
            if not body.get('has_more') or not last or last == after:
                return
            after = last


class Page(list):
    """The buckets of one page. A caller that reads them through drain() lets go of each bucket as it takes the
    next: the rows of a bucket it compared are freed while it reads the others."""

    def drain(self) -> Iterator[Any]:
        for i in range(len(self)):
            bucket = self[i]
            self[i] = None
            yield bucket
            del bucket


@functools.cache
def _decoder_reads_views() -> bool:
    """Whether the JSON decoder reads a memoryview (orjson, as the Agent ships it, does; the standard library's does
    not)."""
    try:
        json.decode(memoryview(b'{}'))
    except TypeError:
        return False
    return True


def _unread(mapping: mmap.mmap) -> bool:
    """Whether no view of `mapping` is alive: resizing it is refused while one is (CPython's own count of them), and
    a view of a page not read yet must never see the bytes of another."""
    try:
        mapping.resize(len(mapping))
    except Exception:  # BufferError: a view is alive; OSError or SystemError where a mapping cannot be resized
        return False
    return True


class Received:
    """A page's bytes as they arrive, in an anonymous mapping as large as the limit, of which only what is written
    takes memory, given back whole once the last reader of the page lets go of it: a new one, or the one the same
    source's page before was received in, once nothing reads that page (`spare`, see _unread).

    Grown in the C heap (a bytearray), a large page's body moved as it grew, through blocks the heap kept afterwards:
    at 100,000 series some 100 MB stayed resident during completions' read, next to each 63 MB page. A bytearray where
    no such mapping is made (or the JSON decoder reads no view of it)."""

    __slots__ = ('map', 'data', 'size')

    def __init__(self, capacity: int, mapped: bool, spare: mmap.mmap | None = None):
        self.map = None
        if mapped:
            if spare is not None and len(spare) == capacity and _unread(spare):
                # The mapping of a page that nothing reads any more, written over: each page in a mapping of its own
                # took a page fault for every 4 KB it received (on the benchmark's machine 2.5 us each, 90 ms for the
                # 150 MB a steady run receives at 20,000 series), where the memory it reuses is already there.
                spare.seek(0)
                self.map = spare
            else:
                try:
                    self.map = mmap.mmap(-1, capacity)
                except (OSError, ValueError, OverflowError):
                    pass
        self.data = bytearray() if self.map is None else None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __iadd__(self, data) -> 'Received':
        if self.map is None:
            self.data += data
        else:
            self.map.write(data)
        self.size += len(data)
        return self

    def find(self, sub: bytes) -> int:
        return self.data.find(sub) if self.map is None else self.map.find(sub, 0, self.size)

    def value(self):
        """What was received: the bytearray, or a read-only view of the mapping (which the view keeps)."""
        if self.map is None:
            return self.data
        with memoryview(self.map) as whole:
            return whole[: self.size].toreadonly()


class BodyReader:
    """One response's body, decompressed, read a piece at a time within the deadline and the size limit.

    A 200 over the limit is refused whole; an error answer is cut at MAX_ERROR_BODY_BYTES, which keeps
    its message."""

    def __init__(self, client: OpenAIClient, response, path: str, endpoint: str, status: int):
        self.client = client
        self.response = response
        self.path = path
        self.endpoint = endpoint
        self.status = status
        self.page = status == 200
        self.limit = client.max_response_bytes if self.page else MAX_ERROR_BODY_BYTES
        self.received = 0
        # Room for the limit and the chunk that crosses it (what is read past the limit is refused).
        self.body = Received(self.limit + READ_CHUNK + 1, self.page and _decoder_reads_views(), client.spare)
        if self.body.map is not None:
            client.spare = self.body.map

    def read(self, deadline: float, read_timeout: float):
        self._check_declared_length()
        inflater = self._inflater()
        try:
            body = self._read_all(inflater, deadline, read_timeout)
        except (urllib3.exceptions.TimeoutError, TimeoutError) as e:
            if deadline - self.client.monotonic() <= 0:
                raise self._deadline_exceeded() from e
            raise TransientError(
                f'OpenAI did not answer {self.path} within {read_timeout:.0f}s.', recorded_as='timeout'
            ) from e
        except (urllib3.exceptions.HTTPError, OSError, zlib.error) as e:
            if not self.page:
                return self.body.value()  # what arrived of an error answer still tells its status
            raise BadResponse(
                f'The response from {self.path} was cut off before its end; a proxy or the network dropped it.',
                recorded_as='truncated',
            ) from e
        if self.page and self.client.scrubber.contains_secret(body):
            raise UnusableResponse(
                f'The response to {self.path} contains the admin key the check sent, so something between the '
                f'Agent and OpenAI echoes request headers; it was not used. Check api_base_url and the proxy.',
                self.status,
            )
        return body.value()

    def _read_all(self, inflater: _Inflater | None, deadline: float, read_timeout: float) -> Received:
        raw = self.response.raw
        read = getattr(raw, 'read1', None) or raw.read
        sock = _socket_of(raw)
        body = self.body
        limit = self.limit
        while True:
            left = deadline - self.client.monotonic()
            if left <= 0:
                raise self._deadline_exceeded()
            if sock is not None:
                sock.settimeout(max(0.01, min(read_timeout or left, left)))
            chunk = read(READ_CHUNK, decode_content=False)
            if not chunk:
                break
            self.received += len(chunk)
            if inflater is None:
                body += chunk
            else:
                inflater.feed(chunk, body, limit)
            if len(body) > limit or self.received > limit:
                if self.page:
                    raise self._too_large()
                return body
        if inflater is not None:
            inflater.finish(body, limit)
        return body

    def _check_declared_length(self) -> None:
        declared = self.response.headers.get('Content-Length') or ''
        if self.page and declared.isdigit() and int(declared) > self.limit:
            raise self._too_large()

    def _inflater(self) -> _Inflater | None:
        encoding = self.response.headers.get('Content-Encoding')
        try:
            return _inflater(encoding)
        except ValueError:
            raise UnusableResponse(
                f'OpenAI sent {self.path} in an encoding the check does not read '
                f'({self.client.scrubber.detail(encoding, 40)}); it asks for '
                f'{ACCEPT_ENCODING}. A proxy in between may be re-encoding responses.',
                self.status,
            ) from None

    def _too_large(self) -> ApiError:
        return TooLarge(
            f'The response to {self.path} is larger than the {self.limit / 2**20:.0f} MiB the check reads from one '
            f'response; it was not used. A page that large holds too many series per bucket: narrow group_by '
            f'for {self.endpoint}, or, after an outage, lower max_catch_up_hours (fewer buckets per page).',
            self.status,
        )

    def _deadline_exceeded(self) -> ApiError:
        return DeadlineExceeded(
            f'OpenAI was still sending {self.path} when the run\'s time budget ran out ({self.received} bytes '
            f'received); the next run resumes.',
            self.status,
        )


def _reason(error: ApiError) -> str:
    if isinstance(error, BadResponse):
        return 'bad_response'
    if error.status is None:
        return 'network'
    if error.status == 429:
        return 'rate_limited'
    return 'server_error'


def project_path(project_id: str, tail: str) -> str | None:
    """/organization/projects/<id>/<tail>, the id quoted whole: it is OpenAI's data, and `../` or `?` in it
    must not choose the path. None for an id of dots only, which stays a dot segment even quoted (URL
    normalization removes it)."""
    if not project_id.strip('.'):
        return None
    return f'/organization/projects/{quote(project_id, safe="")}/{tail}'
