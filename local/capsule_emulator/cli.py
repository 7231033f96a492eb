"""``python -m local.capsule_emulator``: serve the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence

from local.capsule_emulator.server import CapsuleEmulator
from local.capsule_emulator.store import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_RATE_LIMIT,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.capsule_emulator",
        description="Serve a local emulator of Capsule CRM's OAuth 2.0 server and API v2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901, help="0 picks a free port")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument(
        "--expires-in", type=int, default=DEFAULT_ACCESS_TOKEN_LIFETIME, help="access token life"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=DEFAULT_RATE_LIMIT,
        help="API calls per user per hour before 429",
    )
    parser.add_argument("--quiet", action="store_true", help="don't log method, path, status")
    parser.add_argument(
        "--hook-retry-scale",
        type=float,
        default=1.0,
        help="multiply REST hook retry waits (5 s, 1 min, 5, 15, 15 min) by this; 0.01 for demos",
    )
    args = parser.parse_args(argv)
    try:
        emulator = CapsuleEmulator(
            client_id=args.client_id,
            client_secret=args.client_secret,
            host=args.host,
            port=args.port,
            access_token_lifetime=args.expires_in,
            rate_limit=args.rate_limit,
            log_requests=not args.quiet,
            hook_retry_scale=args.hook_retry_scale,
        )
    except ValueError as exc:
        parser.error(str(exc))
    emulator.start()
    forever = threading.Event()
    try:  # Ctrl-C right after the first line (a script that read the URL) stops cleanly too
        print(f"Capsule emulator listening on {emulator.url}", flush=True)
        print(f"  client_id: {emulator.client_id}", flush=True)
        accounts = ", ".join(f"{a.subdomain} ({a.username})" for a in emulator.accounts)
        print(f"  accounts: {accounts}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not forever.wait(1.0):
            pass
    except KeyboardInterrupt:
        print("\nStopping.", flush=True)
    finally:
        emulator.stop()
    return 0
