"""The OpenAI Administration API client: auth, pagination, retries and the per-run time budget.

The Agent's RequestsWrapper (`self.http`) brings proxies, TLS, timeouts and `auth_token` readers but
no retries, so they live here. Every request of a run draws on one time budget: a run that is rate
limited gives up cleanly before the next run is due instead of piling up behind it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import requests
from datadog_checks.base.utils.format import json

ADMIN_KEY_HELP = (
    'The usage and costs endpoints need an organization admin key (sk-admin-...). Project keys and '
    'restricted keys are refused. An organization owner creates one at '
    'https://platform.openai.com/settings/organization/admin-keys; put it in admin_api_key.'
)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0


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
    ):
        self.http = http
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
        try:
            response = self.http.get(f'{self.base_url}{path}', params=params, timeout=timeout, persist=True)
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
        content = response.content
        self._record(endpoint, str(status), started)
        self.stats.bytes += len(content)
        if status == 200:
            return self._decode(content, path, endpoint)

        body = self._try_decode(content)
        detail = _error_message(body) or _snippet(content)
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
                f'OpenAI sent a body that is not JSON for {path} ({_snippet(content)}); a proxy or gateway '
                f'in between may be answering instead of OpenAI, or the response was cut off.',
                200,
                endpoint,
            ) from e
        if not isinstance(body, dict):
            raise BadResponse(f'OpenAI sent an unexpected body for {path}: {_snippet(content)}', 200, endpoint)
        return body

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


def _snippet(content: bytes, size: int = 120) -> str:
    text = content[:size].decode('utf-8', 'replace').strip().replace('\n', ' ')
    if not text:
        return 'empty body'
    return text + ('...' if len(content) > size else '')
