"""A misbehaving HTTP server on 127.0.0.1, for the tests of hostile and broken inputs.

Unlike the simulator (tests/simulator), which follows OpenAI's API, this server answers whatever the
test tells it to: `server.respond` is called with each request and returns a `Reply`, whose body may be
bytes or an iterable of chunks (sent without a length, optionally a chunk every `drip` seconds). It
records every request it receives, headers included, and also answers requests addressed to it as a
plain HTTP proxy (absolute URLs), so that a test can point `api_base_url` at another host without DNS.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    # The path without the query; for a request sent through the server as a proxy, the URL's host too.
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    host: str
    time: float

    @property
    def authorization(self) -> str | None:
        return self.headers.get('authorization')


@dataclass
class Reply:
    status: int = 200
    body: bytes | Iterable[bytes] = b''
    headers: dict = field(default_factory=dict)
    # Seconds between two chunks of an iterable body.
    drip: float = 0.0


class HostileServer:
    def __init__(self, respond: Callable[[Request], Reply] | None = None):
        self.respond = respond or (lambda request: Reply(404, b'{"error": {"message": "no reply set"}}'))
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.base_url = ''
        self.port = 0

    def start(self) -> str:
        handler = type('Handler', (_Handler,), {'server_ref': self})
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f'http://127.0.0.1:{self.port}/v1'
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> 'HostileServer':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server_ref: HostileServer
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(
            'GET',
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            headers,
            url.hostname or headers.get('host', ''),
            time.time(),
        )
        self.server_ref.record(request)
        reply = self.server_ref.respond(request)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if isinstance(reply.body, (bytes, bytearray)):
                if not any(k.lower() == 'content-length' for k in reply.headers):
                    self.send_header('Content-Length', str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            # No length: the body ends when the connection closes.
            self.send_header('Connection', 'close')
            self.end_headers()
            self.close_connection = True
            for chunk in reply.body:
                if self.server_ref.stopping.is_set():
                    return
                self.wfile.write(chunk)
                self.wfile.flush()
                if reply.drip:
                    time.sleep(reply.drip)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up on the body, as it should.
            self.close_connection = True


# -- bodies ----------------------------------------------------------------------------------------


def dumps(value) -> bytes:
    # allow_nan: some tests send what a lenient encoder would (NaN, Infinity).
    return json.dumps(value, allow_nan=True).encode()


def page(*buckets, has_more=False, next_page=None) -> bytes:
    return dumps({'object': 'page', 'data': list(buckets), 'has_more': has_more, 'next_page': next_page})


def bucket(start: int, *rows, width: int = 3600) -> dict:
    return {'object': 'bucket', 'start_time': start, 'end_time': start + width, 'results': list(rows)}


def completions_row(input_tokens=0, output_tokens=0, requests=1, **dims) -> dict:
    return {
        'object': 'organization.usage.completions.result',
        'input_tokens': input_tokens,
        'output_tokens': output_tokens,
        'num_model_requests': requests,
        **dims,
    }


def cost_row(value, project_id='proj_a', line_item='gpt-4o, input', currency='usd') -> dict:
    return {
        'object': 'organization.costs.result',
        'amount': {'value': value, 'currency': currency},
        'line_item': line_item,
        'project_id': project_id,
    }


def listing(*items, has_more=False) -> bytes:
    return dumps({'object': 'list', 'data': list(items), 'has_more': has_more, 'first_id': None, 'last_id': None})


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def gzip_bomb(size: int) -> bytes:
    """A small gzip body that expands to `size` bytes of zeros."""
    return gzip.compress(bytes(size), compresslevel=9)
