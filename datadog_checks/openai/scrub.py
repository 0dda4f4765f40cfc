"""Keeping the admin key out of everything the check says, and every message to a readable length.

An organization admin key can create keys and invite owners. The Agent's own scrubbing
(`register_secret`) covers service check messages and the check's own log handlers, but not
`check.warnings` (shown by `agent status`) nor the handlers on the root logger, where the Agent's log
records go. So messages are scrubbed where they are made, from what a response or an exception put in
them, and again where they leave the check (warnings, service check, log records), against the keys
the check sent and anything shaped like a key or a bearer token.
"""

from __future__ import annotations

import logging
import re
import weakref

REDACTED = '********'
# Anything after `Bearer ` up to a quote, a space or a delimiter, as echoed by a gateway or a proxy.
_BEARER = re.compile(r'(?i)\b(bearer)(\s+|%20|\+)[^\s"\'<>,;&)\]}]+')
# OpenAI key shapes (sk-admin-..., sk-proj-..., also the masked form OpenAI echoes). Twelve characters
# at least, so that the check's own help texts ("sk-admin-...", "sk-proj-/sk-svcacct-") stay readable.
_KEY_SHAPE = re.compile(r'sk-[A-Za-z0-9_*\-]{12,}')
# A key shorter than this is not registered: redacting every occurrence of a short string would
# mangle the messages, and OpenAI keys are much longer.
MIN_SECRET_LENGTH = 8

# What one message may carry of a response or of an exception (OpenAI's error message, the start of
# a body), and what a whole warning or service check message may be.
MAX_DETAIL = 300
MAX_MESSAGE = 2000


def printable(text: str) -> str:
    if text.isprintable():
        return text
    return ''.join(c if c.isprintable() else '?' for c in text)


def cap(text: str, size: int) -> str:
    if len(text) <= size:
        return text
    return f'{text[:size]}... ({len(text) - size} more characters)'


class Scrubber:
    """The keys one check instance sent, and the redaction of them and of key-shaped strings."""

    def __init__(self):
        self.secrets: set[str] = set()
        self._secret_bytes: tuple[bytes, ...] = ()

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self.secrets:
            return
        self.secrets.add(secret)
        self._secret_bytes = tuple(s.encode() for s in self.secrets)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if 'earer' in text or 'EARER' in text:
            text = _BEARER.sub(lambda m: f'{m.group(1)} {REDACTED}', text)
        if 'sk-' in text:
            text = _KEY_SHAPE.sub(f'sk-{REDACTED}', text)
        return text

    def detail(self, text: str, size: int = MAX_DETAIL) -> str:
        """Untrusted text (a response, an exception) made fit for a message: one line of printable
        characters (no terminal escapes into the Agent log), scrubbed, capped."""
        text = printable(' '.join(str(text).split()))
        # Scrubbed before and after the cut, so that a cut cannot leave half a key unrecognised.
        return self.text(cap(self.text(text), size))

    def message(self, text: str) -> str:
        return self.text(cap(text, MAX_MESSAGE))

    def contains_secret(self, data) -> bool:
        """True when `data` (a response body) holds one of the keys the check sent."""
        return any(data.find(secret) != -1 for secret in self._secret_bytes)


class ScrubbingFilter(logging.Filter):
    """Scrubs the records of the check's logger before they reach any handler, the root's included.

    One filter for the logger, shared by the instances of the check (they share their logger): it
    scrubs with the keys of every live instance.
    """

    def __init__(self):
        super().__init__()
        self.scrubbers: weakref.WeakSet[Scrubber] = weakref.WeakSet()

    def scrub(self, text: str) -> str:
        for scrubber in list(self.scrubbers):
            text = scrubber.text(text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
            # The formatter renders exc_text; without exc_info no handler formats the raw exception again.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


LOG_FILTER = ScrubbingFilter()


def install_log_filter(logger: logging.Logger, scrubber: Scrubber) -> None:
    LOG_FILTER.scrubbers.add(scrubber)
    if LOG_FILTER not in logger.filters:
        logger.addFilter(LOG_FILTER)
