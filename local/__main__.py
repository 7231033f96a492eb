"""``make local``: the whole stack on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.capsule_emulator.store import DEFAULT_RATE_LIMIT
from local.deployment import LOCAL_CALLER, LocalDeployment, PortBusy, Ports
from local.logs import LOG_DIR, route_function_output
from local.parameters import InvalidParameter, parse_overrides
from local.stack import REGION, ROOT, Template


def export_lines(url: str) -> list[str]:
    """What a shell needs for the README's signed calls to reach this stack."""
    return [
        f"export AWS_ACCESS_KEY_ID={LOCAL_CALLER.access_key}",
        f"export AWS_SECRET_ACCESS_KEY={LOCAL_CALLER.secret_key}",
        f"export AWS_REGION={REGION}",
        f"export AWS_DEFAULT_REGION={REGION}",
        f"export API={url}",
    ]


def add_parameter_overrides(parser: argparse.ArgumentParser) -> None:
    """SAM CLI's --parameter-overrides, for make local, make demo and make invoke."""
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="Name=Value",
        help="set template.yaml parameters, as sam deploy does"
        " (make ... PARAMETERS='AllowedReturnOrigins=https://app.example.com LogLevel=DEBUG')",
    )


def overrides_or_exit(prog: str, arguments: list[str]) -> dict[str, str]:
    try:
        return parse_overrides(Template.load(), arguments)
    except InvalidParameter as error:
        print(f"{prog}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


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
        "--verbose",
        action="store_true",
        help="every function's log lines and metrics in this terminal too",
    )
    add_parameter_overrides(parser)
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=LOG_DIR,
        help="where each function's log file goes (default: .local/logs)",
    )
    parser.add_argument(
        "--no-state-file",
        action="store_true",
        help="do not write .local/stack.json (which make invoke reads to find this stack)",
    )
    args = parser.parse_args(argv)
    overrides = overrides_or_exit("make local", args.parameter_overrides)

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
        parameter_overrides=overrides,
    )
    try:
        stack.check_parameters()
    except InvalidParameter as error:
        print(f"make local: {error}", file=sys.stderr)
        return 2
    route_function_output(verbose=args.verbose, directory=args.log_dir.resolve())
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
        exports = "".join(f"    {line}\n" for line in export_lines(stack.url))
        overridden = " ".join(f"{name}={value}" for name, value in overrides.items())
        logs = args.log_dir.resolve()
        logs = logs.relative_to(ROOT) if logs.is_relative_to(ROOT) else logs
        print(
            f"\n  Capsule connector running locally (AWS on moto, {capsule} at"
            f" {stack.capsule_base_url}).\n\n  Open {stack.url}\n\n"
            "  Signed calls to the AWS_IAM routes (the README's curl and Python examples)"
            f" work after:\n\n{exports}\n"
            + (f"  Parameters: {overridden}\n\n" if overridden else "")
            + "  One line per request below; each function's logs are in"
            f" {logs}/<function>.log\n  (LOCAL_ARGS=--verbose shows them here too)."
            " Ctrl-C stops everything.\n",
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
