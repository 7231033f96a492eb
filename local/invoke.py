"""``make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json``: sam local invoke, no Docker.

Runs the function's handler, named by template.yaml, in-process with its template environment,
against the stack ``make local`` is running, or against a fresh local stack if none runs.
Prints the handler's result; cookie values are shown redacted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from local.deployment import LocalDeployment, Ports, port_in_use, read_state_file
from local.lambda_container import invoke
from local.stack import REGION, Stack, Template


def _redacted(result: Any) -> Any:
    if isinstance(result, dict) and result.get("cookies"):
        result = {
            **result,
            "cookies": [
                f"{c.split('=', 1)[0]}=<redacted>;{c.split(';', 1)[1] if ';' in c else ''}"
                for c in result["cookies"]
            ],
        }
    return result


def _attach(described: dict[str, Any], template: Template, logical_id: str) -> None:
    """Point this process at the running stack, as its functions are."""
    stack = Stack(template, physical=dict(described["physical"]))
    stack.parameters["CapsuleBaseUrl"] = described["capsule_base_url"]
    os.environ.update(
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=described["aws_endpoint"],
        **stack.environment(logical_id),
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    template = Template.load()
    functions = [spec.logical_id for spec in template.functions()]
    if len(args) != 2 or args[0] not in functions:
        print(
            "usage: make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json\n"
            f"  FUNCTION is one of {', '.join(functions)}",
            file=sys.stderr,
        )
        return 2
    logical_id, event_path = args
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"make invoke: cannot read {event_path}: {error}", file=sys.stderr)
        return 2

    described = read_state_file()
    running = described is not None and port_in_use(
        "127.0.0.1", int(described["aws_endpoint"].rsplit(":", 1)[1])
    )
    ephemeral: LocalDeployment | None = None
    if running and described is not None:
        print(f"Invoking {logical_id} against the running local stack", file=sys.stderr)
        _attach(described, template, logical_id)
    else:
        print(
            f"No local stack running: starting one for this invoke of {logical_id}", file=sys.stderr
        )
        ephemeral = LocalDeployment(ports=Ports.any_free(), schedule=False, write_state_file=False)
        ephemeral.start()
    try:
        result = invoke(template, logical_id, event)
    finally:
        if ephemeral is not None:
            ephemeral.stop()
    print(json.dumps(_redacted(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
