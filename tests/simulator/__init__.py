"""A test double of OpenAI's Administration API (usage, costs, projects, keys, users).

    from tests.simulator import Clock, Organization, SimulatorServer

    org = Organization()                                  # small, realistic, deterministic
    clock = Clock(org.traffic_start + 36 * 3600)
    with SimulatorServer(org, clock, admin_key='sk-admin-test') as server:
        server.base_url                                   # http://127.0.0.1:PORT/v1
        clock.advance(300)                                # traffic grows, late data lands
        org.final_totals('completions', ('project_id',), start, end)   # what must be collected

`python -m tests.simulator --port 8080` serves the default organization on wall-clock time.
"""

from .audit import AuditLog
from .clock import Clock, RealClock
from .openapi import OpenAPISpec, RequestError, default_spec_path, load_spec, validate_response
from .organization import (
    DEFAULT_SERIES,
    DEFAULT_SETTLE_SECONDS,
    DEFAULT_TRAFFIC_START,
    ApiKey,
    Organization,
    Project,
    User,
    VectorStore,
    bucket_end,
)
from .server import DEFAULT_ADMIN_KEY, Fault, Faults, RequestRecord, SimulatorServer, ValidationFailure

__all__ = [
    'AuditLog',
    'DEFAULT_ADMIN_KEY',
    'DEFAULT_SERIES',
    'DEFAULT_SETTLE_SECONDS',
    'DEFAULT_TRAFFIC_START',
    'ApiKey',
    'Clock',
    'Fault',
    'Faults',
    'OpenAPISpec',
    'Organization',
    'Project',
    'RealClock',
    'RequestError',
    'RequestRecord',
    'SimulatorServer',
    'User',
    'ValidationFailure',
    'VectorStore',
    'bucket_end',
    'default_spec_path',
    'load_spec',
    'validate_response',
]
