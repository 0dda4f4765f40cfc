"""Serve the simulated OpenAI Administration API until killed (for demos and manual tests).

    python -m tests.simulator --port 0 --accelerate 60

The first line on stdout is the base URL (http://127.0.0.1:PORT/v1). Simulated time starts at the
wall clock and runs --accelerate times faster, so traffic visibly grows between two runs of the check.
The organization's history starts --history-days before now.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .clock import RealClock
from .organization import DAY, Organization, floor_to
from .server import DEFAULT_ADMIN_KEY, SimulatorServer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog='python -m tests.simulator', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--port', type=int, default=0, help='port on 127.0.0.1 (0: a free one; default 0)')
    p.add_argument(
        '--admin-key', default=DEFAULT_ADMIN_KEY, help=f'the accepted admin key (default {DEFAULT_ADMIN_KEY})'
    )
    p.add_argument('--accelerate', type=float, default=1.0, help='simulated seconds per real second (default 1)')
    p.add_argument('--seed', type=int, default=0, help='seed of the organization (default 0)')
    p.add_argument('--history-days', type=int, default=7, help='days of traffic before now (default 7)')
    args = p.parse_args(argv)

    now = time.time()
    org = Organization(seed=args.seed, traffic_start=floor_to(now, DAY) - args.history_days * DAY)
    clock = RealClock(factor=args.accelerate)
    server = SimulatorServer(org, clock, admin_key=args.admin_key, port=args.port)
    base_url = server.start()
    sys.stdout.write(base_url + '\n')
    sys.stdout.flush()
    sys.stderr.write(
        f'OpenAI Admin API simulator: {org.describe()}; admin key {args.admin_key}; '
        f'time x{args.accelerate:g}. Ctrl-C to stop.\n'
    )
    sys.stderr.flush()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
