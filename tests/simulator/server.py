"""The HTTP face of the simulator: OpenAI's Administration API on 127.0.0.1, with faults on demand.

Requests go through what OpenAI's front end does, in its order: the URL, the key, the spec (unknown
or malformed parameters), then the endpoint's own rules (group_by per endpoint, `limit` per bucket
width, the reporting lookback). Every request is recorded for the tests to assert on.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from datadog_checks.openai.catalogue import BUCKET_SECONDS, COSTS, ENDPOINTS, Endpoint

from .audit import AuditLog
from .limits import LIMIT_ROUTES, Limits
from .openapi import OpenAPISpec, RequestError, load_spec
from .organization import Organization, floor_to

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(',', ':')).encode()


DEFAULT_ADMIN_KEY = 'sk-admin-test'
# OpenAI keeps about a year of usage and costs; further back is refused.
DEFAULT_LOOKBACK_SECONDS = 365 * 86400
# What the reference gives when the spec's prose cannot be read (see OpenAPISpec.limit_rules).
FALLBACK_DEFAULT_LIMIT = {'1m': 60, '1h': 24, '1d': 7}
ORGANIZATION_ID = 'org-simulator000000000000'

USAGE_SCOPE = 'api.usage.read'
MANAGEMENT_SCOPE = 'api.management.read'
# The scope a key without the permission to read spend limits is told it misses (the simulator's wording).
LIMITS_SCOPE = 'api.organization.limits.read'

# Listing routes of the spec this server answers, by spec path template; usage and costs routes come
# from the catalogue.
LIST_ROUTES = {
    '/organization/projects': 'projects',
    '/organization/projects/{project_id}': 'project',
    '/organization/projects/{project_id}/api_keys': 'api_keys',
    '/organization/projects/{project_id}/api_keys/{api_key_id}': 'api_key',
    '/organization/projects/{project_id}/rate_limits': 'rate_limits',
    '/organization/users': 'users',
    '/organization/users/{user_id}': 'user',
    **LIMIT_ROUTES,
    '/organization/audit_logs': 'audit_logs',
}

# What the simulator answers when the organization has not turned audit logging on (the live wording is not
# published; the check must not depend on it).
AUDIT_LOG_DISABLED = (
    'Audit logging is not enabled for this organization. An organization owner can enable it in the data controls '
    'settings.'
)

FAULT_KINDS = ('status', 'timeout', 'truncated', 'non_json', 'empty_body', 'disconnect')

HTML_ERROR = """<html>
<head><title>{status} {reason}</title></head>
<body>
<center><h1>{status} {reason}</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""


def error_body(
    message: str, type_: str = 'invalid_request_error', param: str | None = None, code: str | None = None
) -> dict:
    return {'error': {'message': message, 'type': type_, 'param': param, 'code': code}}


def mask_key(key: str) -> str:
    # OpenAI echoes a key with its middle hidden; never echo a secret whole, even in a simulator.
    if len(key) <= 12:
        return '****' + key[-2:]
    return key[:8] + '*' * (len(key) - 12) + key[-4:]


def _status_error(status: int, message: str | None = None) -> dict:
    """The body OpenAI (or the Cloudflare front of it) sends with each error status."""
    if status == 400:
        return error_body(message or 'Invalid request.', 'invalid_request_error')
    if status == 401:
        return error_body(
            message
            or 'Incorrect API key provided: sk-admin********************test. You can find your API key at '
            'https://platform.openai.com/account/api-keys.',
            'invalid_request_error',
            None,
            'invalid_api_key',
        )
    if status == 403:
        return error_body(message or _insufficient(USAGE_SCOPE), 'invalid_request_error')
    if status == 404:
        return error_body(message or 'Not found.', 'invalid_request_error')
    if status == 429:
        return error_body(
            message or 'Rate limit reached for requests to the usage API. Please try again later.',
            'requests',
            None,
            'rate_limit_exceeded',
        )
    if status == 500:
        return error_body(
            message or 'The server had an error while processing your request. Sorry about that!', 'server_error'
        )
    if status == 502:
        return error_body(message or 'Bad gateway.', 'cf_bad_gateway')
    if status == 503:
        return error_body(message or 'The server is overloaded or not ready yet.', 'server_error')
    if status == 504:
        return error_body(message or 'Gateway timeout.', 'cf_gateway_timeout')
    return error_body(message or f'HTTP {status}.', 'server_error' if status >= 500 else 'invalid_request_error')


def _insufficient(scope: str) -> str:
    return (
        f'You have insufficient permissions for this operation. Missing scopes: {scope}. Check that you have the '
        f"correct role in your organization (Owner), and if you're using a restricted API key, that it has the "
        f'necessary scopes.'
    )


# -- records and faults -----------------------------------------------------------------------------


@dataclass
class RequestRecord:
    method: str
    path: str
    # The query as sent, each name with the list of its values (parse_qs).
    query: dict[str, list[str]]
    # Simulated clock time when the request arrived; wall_time is time.time().
    time: float
    wall_time: float
    endpoint: str | None = None
    status: int | None = None
    # Size of the response body sent, in bytes (a truncated body counts what was sent).
    bytes: int = 0
    fault: str | None = None
    error: dict | None = None
    duration: float = 0.0
    # The body itself, kept only when the server was made with keep_bodies=True (pages can be large).
    body: bytes | None = None

    def param(self, name: str) -> str | None:
        values = self.query.get(name) or self.query.get(name + '[]')
        return values[-1] if values else None


@dataclass
class ValidationFailure:
    method: str
    path: str
    query: dict[str, list[str]]
    message: str
    param: str | None
    code: str | None


@dataclass
class Fault:
    match: str
    kind: str
    # None: forever.
    remaining: int | None
    options: dict = field(default_factory=dict)
    hits: int = 0

    @property
    def status(self) -> int | None:
        return self.options.get('status')


class Faults:
    """Faults injected per endpoint, each consumed by the next `count` matching requests.

    `match` is an endpoint name (a catalogue name such as `completions` or `costs`, or one of the
    listing routes: projects, project, api_keys, api_key, rate_limits, users, user), `*` for every
    request, or else a substring of the request path (`usage/` for every usage endpoint).
    """

    def __init__(self, route_names: Iterable[str]):
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._names = set(route_names)

    def add(self, match: str, kind: str | int, count: int | None = 1, **options) -> Fault:
        """Add a fault. kind: an HTTP status (429, 500, 502, 503, 504, 400, 401, 403...; options
        `retry_after` seconds for the Retry-After header, `message`, `body`), or `timeout` (option
        `delay` seconds, default 10, then the normal answer), `truncated` (a 200 cut at `fraction`, default
        0.5, of its body; `declared_length='full'` keeps the full Content-Length so the client sees the
        connection drop, `'sent'` declares only what is sent so the client gets invalid JSON),
        `non_json` (an HTML error page, `status` default 502), `empty_body` (`status` default 200),
        `disconnect` (the socket is closed without a response). With `on_later_pages=True` the fault only
        hits requests for a next page (those with a `page` cursor), so a query's first page is answered; with
        `bucket_width='1m'` only requests for that bucket width (the per-minute reads of the headroom)."""
        if isinstance(kind, int) or (isinstance(kind, str) and kind.isdigit()):
            options['status'] = int(kind)
            kind = 'status'
        if kind not in FAULT_KINDS:
            raise ValueError(f'unknown fault kind {kind!r}; use an HTTP status or one of {", ".join(FAULT_KINDS)}')
        if count is not None and count < 1:
            raise ValueError('count must be at least 1 (or None for a permanent fault)')
        if kind == 'non_json':
            options.setdefault('status', 502)
        if kind == 'empty_body':
            options.setdefault('status', 200)
        fault = Fault(match, kind, count, options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.remaining is None or f.remaining > 0]

    def __len__(self) -> int:
        return len(self.pending())

    def matches(self, fault: Fault, route: str | None, path: str, query: dict | None = None) -> bool:
        if fault.options.get('on_later_pages') and not (query or {}).get('page'):
            return False
        width = fault.options.get('bucket_width')
        if width is not None and (query or {}).get('bucket_width', [None])[-1] != width:
            return False
        if fault.match == '*':
            return True
        if fault.match in self._names:
            return fault.match == route
        return fault.match in path

    def take(self, route: str | None, path: str, query: dict | None = None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if self.matches(fault, route, path, query):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    return fault
        return None


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)
    content_type: str = 'application/json'
    error: dict | None = None


def _error(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(status, dumps(body), headers or {}, error=body.get('error'))


# -- the server -------------------------------------------------------------------------------------


class SimulatorServer:
    """OpenAI's Administration API for `org`, at the time of `clock`.

    Switches (constructor arguments, also attributes that can be changed while running):
    refuse_costs_api_key_group_by (default True: costs answers group_by=api_key_id with a 400, as the
    live API was reported to), costs_cursor_on_last_page (costs sends a next_page with has_more false on
    its last page), costs_amount_as_string (amount.value as a string), restricted_keys (keys answered
    with a 403 for a missing scope), limits_denied_keys (keys that read everything but the spend limits, which
    they are answered with a 403), lookback_seconds. `limits` (limits.Limits) holds the rate and spend limits.
    """

    def __init__(
        self,
        org: Organization,
        clock,
        admin_key: str = DEFAULT_ADMIN_KEY,
        *,
        host: str = '127.0.0.1',
        port: int = 0,
        spec: OpenAPISpec | None = None,
        restricted_keys: Iterable[str] = (),
        limits_denied_keys: Iterable[str] = (),
        refuse_costs_api_key_group_by: bool = True,
        costs_cursor_on_last_page: bool = False,
        costs_amount_as_string: bool = False,
        lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS,
        validate_responses: bool = False,
        keep_bodies: bool = False,
        page_cache_bytes: int = 256_000_000,
        audit_log: AuditLog | None = None,
    ):
        self.org = org
        # The organization's audit log (tests/simulator/audit.py): empty unless a test gives one.
        self.audit_log = audit_log if audit_log is not None else AuditLog(org)
        self.clock = clock
        self._now: Callable[[], float] = clock.now if hasattr(clock, 'now') else clock
        self.admin_key = admin_key
        self.host = host
        self.port = port
        self.spec = spec or load_spec()
        self.restricted_keys = set(restricted_keys)
        self.limits_denied_keys = set(limits_denied_keys)
        self.limits = Limits(org)
        self.refuse_costs_api_key_group_by = refuse_costs_api_key_group_by
        self.costs_cursor_on_last_page = costs_cursor_on_last_page
        self.costs_amount_as_string = costs_amount_as_string
        self.lookback_seconds = lookback_seconds
        # Check each 200 body against the spec as it is sent (slow on big pages; for tests).
        self.validate_responses = validate_responses
        self.response_errors: list[tuple[str, list[str]]] = []
        self.keep_bodies = keep_bodies
        self.endpoints: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
        self.route_names = {**{e.path: e.name for e in ENDPOINTS}, **LIST_ROUTES}
        self.faults = Faults(self.route_names.values())
        self.requests: list[RequestRecord] = []
        self.validation_errors: list[ValidationFailure] = []
        self._log_lock = threading.Lock()
        self._compute_lock = threading.Lock()
        self._page_cache: OrderedDict = OrderedDict()
        self._page_cache_bytes = 0
        self._page_cache_limit = page_cache_bytes
        self._request_ids = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.base_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            return self.base_url
        handler = type('Handler', (_Handler,), {'sim': self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f'http://{self.host}:{self.port}{self.spec.base_path}'
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={'poll_interval': 0.05}, name='openai-simulator', daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> 'SimulatorServer':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- log ---------------------------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)

    def requests_to(self, endpoint: str) -> list[RequestRecord]:
        """The recorded requests of one endpoint or listing route name."""
        with self._log_lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def clear_log(self) -> None:
        with self._log_lock:
            self.requests.clear()
            self.validation_errors.clear()
            self.response_errors.clear()

    # -- answering ---------------------------------------------------------------------------------

    def route_of(self, method: str, path: str):
        found = self.spec.find(method, path)
        if found is None:
            return None, None, {}
        op, path_params = found
        return self.route_names.get(op.template), op, path_params

    def handle(self, method: str, path: str, query: dict[str, list[str]], authorization: str | None) -> Response:
        """The response to one request, faults aside (the HTTP handler applies those)."""
        route, op, path_params = self.route_of(method, path)
        if route is None:
            return _error(404, error_body(f'Invalid URL ({method} {path})'))
        endpoint = self.endpoints.get(op.template)
        denied = self._authorize(authorization, USAGE_SCOPE if endpoint is not None else MANAGEMENT_SCOPE)
        if denied is not None:
            return denied
        if route in LIMIT_ROUTES.values() and self._key(authorization) in self.limits_denied_keys:
            return _error(403, error_body(_insufficient(LIMITS_SCOPE)))
        try:
            valid = self.spec.validate_request(method, path, query)
        except RequestError as e:
            with self._log_lock:
                self.validation_errors.append(ValidationFailure(method, path, query, e.message, e.param, e.code))
            return _error(e.status, e.body())
        now = self._now()
        try:
            if endpoint is not None:
                return self._page(endpoint, path, query, valid.params, now)
            return self._listing(route, valid.path_params, valid.params, now)
        except RequestError as e:
            return _error(e.status, e.body())

    @staticmethod
    def _key(authorization: str | None) -> str:
        return (authorization or '').partition(' ')[2].strip()

    def _authorize(self, authorization: str | None, scope: str) -> Response | None:
        scheme, _, key = (authorization or '').partition(' ')
        key = key.strip()
        if scheme.lower() != 'bearer' or not key:
            return _error(
                401,
                error_body(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                    'Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from '
                    'https://platform.openai.com/account/api-keys.'
                ),
            )
        if key == self.admin_key or key in self.limits_denied_keys:
            return None
        if key in self.restricted_keys:
            return _error(403, error_body(_insufficient(scope)))
        if key.startswith(('sk-proj-', 'sk-svcacct-')):
            # A real project key authenticates, but cannot read organization data.
            return _error(401, error_body(_insufficient(scope)))
        return _error(
            401,
            error_body(
                f'Incorrect API key provided: {mask_key(key)}. You can find your API key at '
                f'https://platform.openai.com/account/api-keys.',
                'invalid_request_error',
                None,
                'invalid_api_key',
            ),
        )

    # -- usage and costs ---------------------------------------------------------------------------

    def _filters(self, endpoint: Endpoint, params: dict) -> dict[str, frozenset] | None:
        """Filter parameters of the spec (`project_ids`, `models`, `batch`...) by the dimension they filter."""
        filters = {}
        for name, value in params.items():
            if name in ('group_by', 'start_time', 'end_time', 'bucket_width', 'limit', 'page'):
                continue
            dim = name[:-1] if name.endswith('s') and name[:-1] in endpoint.group_by else name
            if dim not in endpoint.group_by:
                continue
            filters[dim] = frozenset(value if isinstance(value, list) else [value])
        return filters or None

    def _page(self, endpoint: Endpoint, path: str, query: dict, params: dict, now: float) -> Response:
        t = int(now)
        width = params.get('bucket_width') or '1d'
        group_by = list(dict.fromkeys(params.get('group_by') or ()))
        for d in group_by:
            if d not in endpoint.group_by:
                raise RequestError(
                    f"Invalid value for 'group_by': '{d}' is not supported for {endpoint.name}. Supported values "
                    f'are: {", ".join(endpoint.group_by)}.',
                    'group_by',
                    'invalid_value',
                )
        if endpoint.kind == COSTS and self.refuse_costs_api_key_group_by:
            refused = [d for d in group_by if d in endpoint.refused_group_by]
            if refused:
                raise RequestError(
                    f"Invalid value for 'group_by': grouping costs by '{refused[0]}' is not supported.",
                    'group_by',
                    'invalid_value',
                )
        if width not in endpoint.max_limit:
            raise RequestError(
                f"Invalid value: '{width}'. Supported values are: {', '.join(endpoint.max_limit)}.",
                'bucket_width',
                'invalid_value',
            )
        maximum = endpoint.max_limit[width]
        default = self.spec.limit_rules(path).get(width, (None, None))[0] or FALLBACK_DEFAULT_LIMIT[width]
        limit = params.get('limit', default)
        if limit < 1 or limit > maximum:
            raise RequestError(
                f"Invalid 'limit': integer {'above maximum' if limit > maximum else 'below minimum'} value. Expected a "
                f'value between 1 and {maximum} for bucket_width={width}, but got {limit} instead.',
                'limit',
                'integer_above_max_value' if limit > maximum else 'integer_below_min_value',
            )
        start = params['start_time']
        end_time = params.get('end_time')
        if end_time is not None and end_time <= start:
            raise RequestError('end_time must be greater than start_time.', 'end_time', 'invalid_value')
        if start < t - self.lookback_seconds:
            raise RequestError(
                f'start_time is too far in the past: usage and costs are kept for {self.lookback_seconds // 86400} '
                f'days.',
                'start_time',
                'reporting_lookback_exceeded',
            )

        switches = (self.costs_cursor_on_last_page, self.costs_amount_as_string) if endpoint.kind == COSTS else ()
        cache_key = (path, tuple(sorted((k, tuple(v)) for k, v in query.items())), t, switches)
        cached = self._page_cache.get(cache_key)
        if cached is not None:
            return Response(200, cached)

        seconds = BUCKET_SECONDS[width]
        end = t if end_time is None else min(end_time, t)
        position = start
        if params.get('page') is not None:
            position = self._decode_cursor(params['page'], start)
        buckets = []
        a = position
        while a < end and len(buckets) < limit:
            b = min(floor_to(a, seconds) + seconds, end)
            buckets.append((a, b))
            a = b
        has_more = a < end
        next_page = self._cursor(a, start) if has_more else None
        if endpoint.kind == COSTS and self.costs_cursor_on_last_page and not has_more:
            next_page = self._cursor(a, start)
        filters = self._filters(endpoint, params)
        group = tuple(group_by)
        amount_as_string = endpoint.kind == COSTS and self.costs_amount_as_string
        with self._compute_lock:
            parts = [
                f'{{"object":"bucket","start_time":{a},"end_time":{b},"results":['
                f'{self.org.render_results(endpoint.name, a, b, t, group, filters, amount_as_string)}]}}'
                for a, b in buckets
            ]
        body = (
            f'{{"object":"page","data":[{",".join(parts)}],"has_more":{"true" if has_more else "false"},'
            f'"next_page":{json.dumps(next_page)}}}'
        ).encode()
        self._cache_page(cache_key, body)
        return Response(200, body)

    def _cache_page(self, key, body: bytes) -> None:
        if len(body) > self._page_cache_limit:
            return
        with self._log_lock:
            self._page_cache[key] = body
            self._page_cache_bytes += len(body)
            while self._page_cache_bytes > self._page_cache_limit:
                _, old = self._page_cache.popitem(last=False)
                self._page_cache_bytes -= len(old)

    @staticmethod
    def _cursor(position: int, start: int) -> str:
        return 'page_' + base64.b64encode(struct.pack('>qq', position, start)).decode()

    @staticmethod
    def _decode_cursor(cursor: str, start: int) -> int:
        try:
            if not cursor.startswith('page_'):
                raise ValueError
            position, origin = struct.unpack('>qq', base64.b64decode(cursor[5:], validate=True))
        except (ValueError, struct.error, binascii.Error):
            raise RequestError(
                f"Invalid 'page': '{cursor}' is not a page cursor of this API.", 'page', 'invalid_value'
            ) from None
        if origin != start or position < start:
            # A cursor belongs to the query that produced it: same parameters, page added.
            raise RequestError(
                "Invalid 'page': the cursor belongs to a query with another start_time.", 'page', 'invalid_value'
            )
        return position

    # -- listings ----------------------------------------------------------------------------------

    @staticmethod
    def _list(items: list[dict], params: dict, max_limit: int = 100) -> dict:
        limit = params.get('limit', 20)
        if limit < 1 or limit > max_limit:
            raise RequestError(
                f"Invalid 'limit': expected a value between 1 and {max_limit}, but got {limit} instead.",
                'limit',
                'invalid_value',
            )
        after = params.get('after')
        before = params.get('before')
        if after is not None:
            ids = [i['id'] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        if before is not None:
            ids = [i['id'] for i in items]
            items = items[: ids.index(before)] if before in ids else []
        page = items[:limit]
        return {
            'object': 'list',
            'data': page,
            'first_id': page[0]['id'] if page else None,
            'last_id': page[-1]['id'] if page else None,
            'has_more': len(items) > limit,
        }

    def _listing(self, route: str, path_params: dict, params: dict, now: float) -> Response:
        org = self.org
        if 'project_id' in path_params:
            project = org.project(path_params['project_id'])
            if project is None or not project.exists_at(now):
                return _error(404, error_body(f"No such project: '{path_params['project_id']}'."))
        if route == 'projects':
            projects = org.projects_at(now, include_archived=bool(params.get('include_archived')))
            return Response(200, dumps(self._list([p.to_api(now) for p in projects], params)))
        if route == 'project':
            return Response(200, dumps(project.to_api(now)))
        if route in ('api_keys', 'api_key'):
            keys = org.api_keys_at(project.id, now)
            if params.get('owner_project_access') == 'inactive':
                keys = []
            items = [org.api_key_to_api(k, now) for k in keys]
            if route == 'api_keys':
                return Response(200, dumps(self._list(items, params)))
            item = next((i for i in items if i['id'] == path_params['api_key_id']), None)
            if item is None:
                return _error(404, error_body(f"No such API key: '{path_params['api_key_id']}'."))
            return Response(200, dumps(item))
        if route == 'rate_limits':
            return Response(200, dumps(self._list(self.limits.rate_limits(project.id), {'limit': 100, **params}, 1000)))
        if route in LIMIT_ROUTES.values():
            limit = self.limits.spend_limit(path_params.get('project_id'))
            if limit is None:
                return _error(404, error_body('No hard spend limit is configured.'))
            return Response(200, dumps(limit))
        if route == 'audit_logs':
            if not self.audit_log.enabled:
                return _error(403, error_body(AUDIT_LOG_DISABLED, 'invalid_request_error'))
            return Response(200, dumps(self.audit_log.listing(params, now)))
        if route in ('users', 'user'):
            users = [u.to_api() for u in org.users_at(now)]
            if route == 'users':
                emails = params.get('emails')
                if emails:
                    users = [u for u in users if u['email'] in emails]
                return Response(200, dumps(self._list(users, params)))
            item = next((u for u in users if u['id'] == path_params['user_id']), None)
            if item is None:
                return _error(404, error_body(f"No such user: '{path_params['user_id']}'."))
            return Response(200, dumps(item))
        return _error(404, error_body(f'Invalid URL (GET {route})'))

    def next_request_id(self) -> str:
        with self._log_lock:
            self._request_ids += 1
            return f'req_{self._request_ids:024x}'


class _Handler(BaseHTTPRequestHandler):
    sim: SimulatorServer
    protocol_version = 'HTTP/1.1'
    # Idle keep-alive connections are dropped after this, so stopped servers do not keep threads.
    timeout = 30
    server_version = 'cloudflare'
    sys_version = ''
    # Headers and body leave in one segment: a separate small write would wait on the client's
    # delayed ACK (about 40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def do_GET(self):
        self._serve('GET')

    def do_POST(self):
        self._serve('POST')

    def do_DELETE(self):
        self._serve('DELETE')

    def _serve(self, method: str) -> None:
        sim = self.sim
        started = time.perf_counter()
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        route, _, _ = sim.route_of(method, url.path)
        record = RequestRecord(method, url.path, query, sim._now(), time.time(), route)
        # Logged before anything is sent, and completed before the last byte leaves: a client that has
        # its answer always finds the request in the log.
        sim._record(record)
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        try:
            fault = sim.faults.take(route, url.path, query)
            if fault is not None:
                record.fault = fault.kind
                if self._fault(fault, record, method, url.path, query):
                    return
            response = sim.handle(method, url.path, query, self.headers.get('Authorization'))
            record.error = response.error
            self._send(response, record)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout); nothing to answer.
            self.close_connection = True
        finally:
            record.duration = time.perf_counter() - started

    def _send(
        self, response: Response, record: RequestRecord, body: bytes | None = None, declared: int | None = None
    ) -> None:
        sim = self.sim
        body = response.body if body is None else body
        self.send_response(response.status)
        self.send_header('Content-Type', response.content_type)
        self.send_header('Content-Length', str(len(body) if declared is None else declared))
        self.send_header('openai-organization', ORGANIZATION_ID)
        self.send_header('openai-version', '2020-10-01')
        self.send_header('x-request-id', sim.next_request_id())
        for name, value in response.headers.items():
            self.send_header(name, str(value))
        record.status = response.status
        record.bytes = len(body)
        if sim.keep_bodies:
            record.body = body
        if (
            sim.validate_responses
            and response.status == 200
            and response.content_type == 'application/json'
            and record.fault is None
        ):
            errors = sim.spec.validate_response(record.path, json.loads(body))
            if errors:
                with sim._log_lock:
                    sim.response_errors.append((self.path, errors))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _fault(self, fault: Fault, record: RequestRecord, method: str, path: str, query: dict) -> bool:
        """Apply a fault; True when it produced the whole answer."""
        options = fault.options
        if fault.kind == 'status':
            status = options['status']
            body = options.get('body')
            if body is None:
                body = _status_error(status, options.get('message'))
            headers = dict(options.get('headers') or {})
            if options.get('retry_after') is not None:
                headers['Retry-After'] = options['retry_after']
            payload = body if isinstance(body, bytes) else dumps(body)
            record.error = body.get('error') if isinstance(body, dict) else None
            self._send(Response(status, payload, headers), record)
            return True
        if fault.kind == 'timeout':
            # Hold the answer (the client's read timeout should fire first), then answer normally.
            self.sim._stopping.wait(options.get('delay', 10))
            return False
        if fault.kind == 'truncated':
            response = self.sim.handle(method, path, query, self.headers.get('Authorization'))
            full = response.body
            cut = full[: max(1, int(len(full) * options.get('fraction', 0.5)))] if full else b''
            declared = len(full) if options.get('declared_length', 'full') == 'full' else len(cut)
            self._send(Response(200, full, response.headers), record, body=cut, declared=declared)
            if declared > len(cut):
                # The client waits for bytes that will never come: the connection dies, as under a dropped proxy.
                # A cut body whose length was declared as sent is a whole HTTP answer: the connection goes on (a
                # close here would race the client's next request on it, and the tests with it).
                self.close_connection = True
                self._close_now()
            return True
        if fault.kind == 'non_json':
            status = options['status']
            reason = self.responses.get(status, ('Error',))[0]
            html = HTML_ERROR.format(status=status, reason=reason).encode()
            self._send(Response(status, html, content_type='text/html'), record)
            return True
        if fault.kind == 'empty_body':
            self._send(Response(options['status'], b''), record)
            return True
        if fault.kind == 'disconnect':
            self.close_connection = True
            self._close_now()
            return True
        return False

    def _close_now(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
