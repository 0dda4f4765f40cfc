"""The admin key the check sends: from `admin_api_key`, or read from the `auth_token` file at every run.

Whatever way it comes, the key is registered with the Agent's scrubbing and with the check's own
(scrub.py) before it is ever sent.
"""

from __future__ import annotations

from typing import Callable

from .config_models.validators import key_problem
from .scrub import Scrubber


class AdminKey:
    def __init__(self, http, key: str | None, auth_token: dict | None, scrubber: Scrubber, register: Callable):
        self.http = http
        self.scrubber = scrubber
        self.register = register
        self.path = ((auth_token or {}).get('reader') or {}).get('path')
        self.file = self._take_auth_token() if auth_token else None
        self.known = False
        if key:
            self.use(key)

    def _take_auth_token(self):
        """Take the `auth_token` option away from the HTTP wrapper, to read the key here at every run.

        Left to the wrapper, the file is read once and again only after a failed request, which the wrapper
        then sends a second time at once: a 429 is repeated before the check can honour its Retry-After, and
        every error costs two requests. And the key it reads is never registered, so it is not scrubbed."""
        handler = getattr(self.http, 'auth_token_handler', None)
        # The configuration validators made sure of a file reader and a header writer.
        self.http.auth_token_handler = None
        return handler

    def use(self, key: str) -> None:
        self.known = True
        self.register(key)
        self.scrubber.add(key)
        if self.file is not None:
            self.file.writer.write(key, default_options=self.http.options)
        else:
            self.http.options['headers']['Authorization'] = f'Bearer {key}'

    def refresh(self) -> str | None:
        """Read the `auth_token` file (a key rotated by a sidecar is used from the next run on). Returns what
        went wrong, or None; after a failure the last key read goes on being sent."""
        if self.file is None:
            return None
        try:
            # `error` makes the base reader read the file again instead of returning its cached key.
            key = self.file.reader.read(error='the check reads the key at every run')
        except Exception as e:
            return f'Cannot read the admin key from the auth_token file {self.path}: {self.scrubber.detail(e)}'
        key = (key or '').strip()
        if not key:
            return f'The auth_token file {self.path} holds no key: it must contain the admin key (sk-admin-...) alone.'
        problem = key_problem(key)
        if problem:
            return f'The key in the auth_token file {self.path} {problem}'
        self.use(key)
        return None
