"""The OpenAI Administration API client: auth, pagination, retries and the per-run time budget.

The Agent's RequestsWrapper (`self.http`) brings proxies, TLS, timeouts and `auth_token` readers but
no retries, so they live here. Every request of a run draws on one time budget: a run that is rate
limited gives up cleanly before the next run is due instead of piling up behind it.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
import urllib3
from datadog_checks.base.utils.format import json

from .scrub import Scrubber, printable

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
# (the benchmark's 100,000-series page: 410.6 MB for 7 buckets). 256 MiB is then a steady page (7 hourly
# buckets) of some 60,000 series per bucket, three times the benchmark's large organization, and its
# decoded rows take about 2 GB: beyond that the page would threaten the Agent rather than feed it.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# An error answer is read for its message only.
MAX_ERROR_BODY_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
# The encodings the check decodes itself, with a bound on what one compressed chunk may expand to.
ACCEPT_ENCODING = 'gzip, deflate'


class ApiError(Exception):
    """A request that did not produce usable data. `message` is meant for the operator."""

    retryable = False

    def __init__(self, message: str, status: int | None = None, endpoint: str = '', body: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.endpoint = endpoint
        self.body = body


class AuthError(ApiError):
    """401/403: the key is not an organization admin key, or lacks a scope. Fatal for the account."""


class RequestRefused(ApiError):
    """400 and other 4xx: the request itself is wrong; repeating it cannot help."""

    @property
    def error(self) -> dict:
        body = self.body if isinstance(self.body, dict) else {}
        err = body.get('error')
        return err if isinstance(err, dict) else {}


class TransientError(ApiError):
    """429, 5xx, timeouts and network errors that outlasted the retries or the time budget."""

    retryable = True


class BadResponse(ApiError):
    """A 200 whose body is not the JSON page the API describes (truncated, an HTML error page...)."""

    retryable = True


class UnusableResponse(BadResponse):
    """A response that would be the same if asked again: too large, echoing the key, a redirect."""

    retryable = False


class DeadlineExceeded(TransientError):
    """The response did not arrive whole before the run's time budget ran out."""


class TimeBudget:
    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self.deadline = monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._monotonic())


@dataclass
class RequestStats:
    """What the run's requests did, for the check's own health metrics."""

    calls: dict = field(default_factory=lambda: defaultdict(int))  # (endpoint, status) -> n
    latency: dict = field(default_factory=lambda: defaultdict(list))  # endpoint -> [seconds]
    retries: dict = field(default_factory=lambda: defaultdict(int))  # (endpoint, reason) -> n
    bytes: int = 0
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

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
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

    def finish(self, out: bytearray, limit: int) -> None:
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
        log,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        scrubber: Scrubber | None = None,
    ):
        self.http = http
        self.scrubber = scrubber or Scrubber()
        self.max_response_bytes = MAX_RESPONSE_BYTES
        self.base_url = base_url.rstrip('/')
        self.budget = budget
        self.max_retries = max_retries
        self.log = log
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = RequestStats()

    # -- one request ---------------------------------------------------------------------------

    def get_json(self, path: str, params: list[tuple[str, Any]], endpoint: str) -> dict:
        """GET with retries on 429, 5xx, timeouts and unusable bodies, within the run's budget."""
        attempt = 0
        while True:
            try:
                return self._get_once(path, params, endpoint)
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
                        endpoint,
                    ) from e
                attempt += 1
                self.stats.retries[(endpoint, _reason(e))] += 1
                self.log.debug('Retrying %s in %.1fs after: %s', path, wait, e.message)
                self.sleep(wait)

    def _get_once(self, path: str, params: list[tuple[str, Any]], endpoint: str) -> dict:
        remaining = self.budget.remaining()
        if remaining <= 0:
            raise TransientError('The run\'s time budget is spent; the next run resumes.', None, endpoint)
        connect, read = self.http.options.get('timeout') or (10, 10)
        timeout = (min(connect or remaining, remaining), min(read or remaining, remaining))
        started = self.monotonic()
        # `timeout` bounds each wait for bytes; the deadline bounds the whole response, so that a server
        # sending a byte now and then cannot hold the run past its budget.
        deadline = started + remaining
        try:
            # Streamed, to bound what is read; never redirected: the Admin API does not redirect, and the
            # other host's answer is not OpenAI's data.
            response = self.http.get(
                f'{self.base_url}{path}',
                params=params,
                timeout=timeout,
                persist=True,
                stream=True,
                allow_redirects=False,
            )
        except requests.Timeout as e:
            self._record(endpoint, 'timeout', started)
            raise TransientError(f'OpenAI did not answer {path} within {timeout[1]:.0f}s.', None, endpoint) from e
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
            self._record(endpoint, 'truncated', started)
            raise BadResponse(
                f'The response from {path} was cut off before its end; a proxy or the network dropped it.',
                None,
                endpoint,
            ) from e
        except requests.RequestException as e:
            self._record(endpoint, 'network_error', started)
            raise TransientError(
                f'Cannot reach {self.base_url}: {type(e).__name__}. Check api_base_url, DNS, the proxy '
                f'settings and that the Agent host may reach it.',
                None,
                endpoint,
            ) from e

        status = response.status_code
        try:
            if 300 <= status < 400:
                location = urlsplit(self.scrubber.detail(response.headers.get('Location') or '', 200))
                target = f'{location.scheme}://{location.netloc}' if location.netloc else 'another address'
                raise UnusableResponse(
                    f'{path} was redirected ({status}) to {target}; the check does not follow redirects, since '
                    f'the OpenAI Administration API never sends one: point api_base_url at the final address, or '
                    f'check the proxy or gateway in between.',
                    status,
                    endpoint,
                )
            content = self._read_body(response, path, endpoint, status, deadline, timeout[1])
        except ApiError as e:
            self._record(endpoint, getattr(e, 'recorded_as', None) or str(status), started)
            raise
        finally:
            response.close()
        self._record(endpoint, str(status), started)
        self.stats.bytes += len(content)
        if status == 200:
            return self._decode(content, path, endpoint)

        body = self._try_decode(content)
        detail = self.scrubber.detail(_error_message(body)) or self._snippet(content)
        if status in (401, 403):
            raise AuthError(
                f'OpenAI refused the key with {status} on {path} ({detail}). {ADMIN_KEY_HELP}',
                status,
                endpoint,
                body,
            )
        if status == 429:
            self.stats.rate_limited = True
            err = TransientError(f'OpenAI rate limited {path} (429: {detail}).', status, endpoint, body)
            err.retry_after = _retry_after(response)
            raise err
        if status >= 500:
            raise TransientError(f'OpenAI answered {status} on {path} ({detail}).', status, endpoint, body)
        raise RequestRefused(f'OpenAI refused the request to {path} with {status}: {detail}', status, endpoint, body)

    def _read_body(
        self, response, path: str, endpoint: str, status: int, deadline: float, read_timeout: float
    ) -> bytearray:
        """The body, decompressed, read a piece at a time within the deadline and the size limit.

        A 200 over the limit is refused whole; an error answer is cut at MAX_ERROR_BODY_BYTES, which
        keeps its message."""
        page = status == 200
        limit = self.max_response_bytes if page else MAX_ERROR_BODY_BYTES
        too_large = UnusableResponse(
            f'The response to {path} is larger than the {limit / 2**20:.0f} MiB the check reads from one '
            f'response; it was not used. A page that large holds too many series per bucket: narrow group_by '
            f'for {endpoint}, or, after an outage, lower max_catch_up_hours (fewer buckets per page).',
            status,
            endpoint,
        )
        declared = response.headers.get('Content-Length') or ''
        if page and declared.isdigit() and int(declared) > limit:
            raise too_large
        try:
            inflater = _inflater(response.headers.get('Content-Encoding'))
        except ValueError:
            raise UnusableResponse(
                f'OpenAI sent {path} in an encoding the check does not read '
                f'({self.scrubber.detail(response.headers.get("Content-Encoding"), 40)}); it asks for '
                f'{ACCEPT_ENCODING}. A proxy in between may be re-encoding responses.',
                status,
                endpoint,
            ) from None
        raw = response.raw
        read = getattr(raw, 'read1', None) or raw.read
        sock = _socket_of(raw)
        body = bytearray()
        received = 0
        try:
            while True:
                left = deadline - self.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(
                        f'OpenAI was still sending {path} when the run\'s time budget ran out ({received} bytes '
                        f'received); the next run resumes.',
                        status,
                        endpoint,
                    )
                if sock is not None:
                    sock.settimeout(max(0.01, min(read_timeout or left, left)))
                chunk = read(READ_CHUNK, decode_content=False)
                if not chunk:
                    break
                received += len(chunk)
                if inflater is None:
                    body += chunk
                else:
                    inflater.feed(chunk, body, limit)
                if len(body) > limit or received > limit:
                    if page:
                        raise too_large
                    break
            if inflater is not None and len(body) <= limit:
                inflater.finish(body, limit)
        except (urllib3.exceptions.TimeoutError, TimeoutError) as e:
            if deadline - self.monotonic() <= 0:
                raise DeadlineExceeded(
                    f'OpenAI was still sending {path} when the run\'s time budget ran out ({received} bytes '
                    f'received); the next run resumes.',
                    status,
                    endpoint,
                ) from e
            err = TransientError(f'OpenAI did not answer {path} within {read_timeout:.0f}s.', None, endpoint)
            err.recorded_as = 'timeout'
            raise err from e
        except (urllib3.exceptions.HTTPError, OSError, zlib.error) as e:
            if not page:
                return body  # what arrived of an error answer still tells its status
            err = BadResponse(
                f'The response from {path} was cut off before its end; a proxy or the network dropped it.',
                None,
                endpoint,
            )
            err.recorded_as = 'truncated'
            raise err from e
        if page and self.scrubber.contains_secret(body):
            raise UnusableResponse(
                f'The response to {path} contains the admin key the check sent, so something between the Agent '
                f'and OpenAI echoes request headers; it was not used. Check api_base_url and the proxy.',
                status,
                endpoint,
            )
        return body

    def _record(self, endpoint: str, status: str, started: float) -> None:
        self.stats.calls[(endpoint, status)] += 1
        self.stats.latency[endpoint].append(self.monotonic() - started)

    @staticmethod
    def _try_decode(content: bytes) -> Any:
        try:
            return json.decode(content)
        except Exception:
            return None

    def _decode(self, content: bytes, path: str, endpoint: str) -> dict:
        try:
            body = json.decode(content)
        except Exception as e:
            raise BadResponse(
                f'OpenAI sent a body that is not JSON for {path} ({self._snippet(content)}); a proxy or gateway '
                f'in between may be answering instead of OpenAI, or the response was cut off.',
                200,
                endpoint,
            ) from e
        if not isinstance(body, dict):
            raise BadResponse(f'OpenAI sent an unexpected body for {path}: {self._snippet(content)}', 200, endpoint)
        return body

    def _snippet(self, content: bytes, size: int = 120) -> str:
        """The start of a body for a message, scrubbed: a gateway may echo the request's headers."""
        window = size * 4
        words = content[:window].decode('utf-8', 'replace').split()
        if len(content) > window and len(words) > 1:
            words.pop()  # the window may have cut a key in two, and half a key is not recognised
        text = self.scrubber.text(printable(' '.join(words)))
        if not text:
            return 'empty body'
        if len(text) <= size and len(content) <= window:
            return text
        return self.scrubber.text(text[:size]) + '...'

    # -- pagination ----------------------------------------------------------------------------

    def iter_buckets_pages(self, path: str, params: list[tuple[str, Any]], endpoint: str) -> Iterator[list]:
        """Yield the buckets of each page of a usage or costs query, oldest first.

        A page always holds whole buckets (`limit` counts buckets), so a caller may act on each page
        as it comes and still never see half a bucket.
        """
        seen = set()
        page = None
        while True:
            query = params if page is None else params + [('page', page)]
            body = self.get_json(path, query, endpoint)
            data = body.get('data')
            if not isinstance(data, list) or 'has_more' not in body:
                raise BadResponse(
                    f'OpenAI sent a page without data/has_more for {path}; the response was not a usage page.',
                    200,
                    endpoint,
                )
            yield data
            next_page = body.get('next_page')
            # Defensive stops: the costs endpoint has been seen to return a cursor after its last page.
            if not body.get('has_more') or not next_page or not data or next_page in seen:
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
                raise BadResponse(f'OpenAI sent a list without data for {path}.', 200, endpoint)
            yield from data
            last = body.get('last_id') or (data[-1].get('id') if data and isinstance(data[-1], dict) else None)
            if not body.get('has_more') or not last or last == after:
                return
            after = last


def _reason(error: ApiError) -> str:
    if isinstance(error, BadResponse):
        return 'bad_response'
    if error.status is None:
        return 'network'
    if error.status == 429:
        return 'rate_limited'
    return 'server_error'
