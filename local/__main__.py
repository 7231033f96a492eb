"""``make local``: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from local.capsule_emulator.store import DEFAULT_RATE_LIMIT
from local.deployment import LocalDeployment, PortBusy, Ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make local", description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="gateway port (0: any free)")
    parser.add_argument("--aws-port", type=int, default=5055, help="moto server port")
    parser.add_argument("--capsule-port", type=int, default=8901, help="Capsule emulator port")
    parser.add_argument(
        "--expires-in",
        type=int,
        default=604799,
        help="access-token lifetime the emulator grants, in seconds (short for demos)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=DEFAULT_RATE_LIMIT,
        help="API calls per Capsule user per hour the emulator allows (low for demos)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the stack's addresses as one JSON line"
    )
    parser.add_argument(
        "--no-state-file",
        action="store_true",
        help="do not write .local/stack.json (which make invoke reads to find this stack)",
    )
    args = parser.parse_args(argv)

    ports = Ports(args.port, args.aws_port, args.capsule_port)
    if 0 in (ports.gateway, ports.aws, ports.capsule):
        free = Ports.any_free()
        ports = Ports(
            ports.gateway or free.gateway, ports.aws or free.aws, ports.capsule or free.capsule
        )
    stack = LocalDeployment(
        ports=ports,
        access_token_lifetime=args.expires_in,
        rate_limit=args.rate_limit,
        write_state_file=not args.no_state_file,
    )
    try:
        stack.start()
    except PortBusy as error:
        print(f"make local: {error}", file=sys.stderr)
        return 2

    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if args.json:
        print(json.dumps(stack.describe()), flush=True)
    else:
        capsule = "the Capsule emulator" if stack.emulator else "Capsule"
        print(
            f"\n  Capsule connector running locally (AWS on moto, {capsule} at"
            f" {stack.capsule_base_url}).\n\n  Open {stack.url}\n\n  Ctrl-C stops everything.\n",
            flush=True,
        )
    try:
        stopping.wait()
    finally:
        stack.stop()
        if not args.json:
            print("  Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
