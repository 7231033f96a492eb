"""``make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json``: sam local invoke, no Docker.

Runs the function's handler, named by template.yaml, in-process with its template environment,
against the stack ``make local`` is running, or against a fresh local stack if none runs.
An HTTP event is delivered as the local gateway would deliver it (its host is the gateway's,
so links in the answer open here), and a start event without a connect session gets a fresh
one, as the app's backend would create it. ``PARAMETERS="Name=Value ..."`` sets template
parameters for this function on top of the running stack's. Prints the handler's result;
cookie values are shown redacted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from local.deployment import LocalDeployment, Ports, port_in_use, read_state_file
from local.lambda_container import invoke
from local.stack import EVENTS, REGION, Stack, Template

SESSION_OWNER = "user-42"


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


def _attach(
    described: dict[str, Any], template: Template, logical_id: str, overrides: dict[str, str]
) -> None:
    """Point this process at the running stack, as its functions are."""
    stack = Stack(template, physical=dict(described["physical"]))
    stack.parameters.update(described.get("parameters", {}))
    stack.parameters.update(overrides)
    stack.parameters["CapsuleBaseUrl"] = described["capsule_base_url"]
    os.environ.update(
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=described["aws_endpoint"],
        # Events are delivered as the local gateway delivers them: plain http, and it says so.
        CAPSULE_CONNECTOR_LOCAL_GATEWAY="true",
        **stack.environment(logical_id),
    )


def as_delivered_to(event: dict[str, Any], gateway_url: str) -> dict[str, Any]:
    """An HTTP API event as the local gateway at ``gateway_url`` would deliver it."""
    if event.get("version") != "2.0" or "requestContext" not in event:
        return event
    host = urlsplit(gateway_url).netloc
    headers = {**event.get("headers", {}), "host": host, "x-forwarded-proto": "http"}
    headers.pop("x-forwarded-port", None)
    context = {**event["requestContext"], "domainName": host, "domainPrefix": "local"}
    return {**event, "headers": headers, "requestContext": context}


def needs_session(event: dict[str, Any]) -> bool:
    """A start event without a connect session, where the start asks for one."""
    if event.get("routeKey") != "GET /auth/start":
        return False
    query = parse_qs(event.get("rawQueryString", ""))
    return "session" not in query and "return_to" not in query


def with_fresh_session(template: Template, event: dict[str, Any], url: str) -> dict[str, Any]:
    """``event`` starting from a connect session just created for SESSION_OWNER."""
    request = as_delivered_to(json.loads((EVENTS / "connect-session.json").read_text()), url)
    request["body"] = json.dumps({"owner": SESSION_OWNER, "return_url": "/"})
    answer = invoke(template, "ConnectSessionsFunction", request)
    if answer.get("statusCode") != 201:
        raise SystemExit(f"make invoke: no connect session for this start: {answer.get('body')}")
    link = json.loads(answer["body"])["connect_url"]
    session = parse_qs(urlsplit(link).query)["session"][0]
    query = {**event.get("queryStringParameters", {}), "session": session}
    print(
        f"The event has no connect session: made one for owner {SESSION_OWNER!r}"
        " (POST /connect-sessions), as the app's backend would",
        file=sys.stderr,
    )
    return {**event, "rawQueryString": urlencode(query), "queryStringParameters": query}


def main(argv: list[str] | None = None) -> int:
    from local.__main__ import add_parameter_overrides, overrides_or_exit

    template = Template.load()
    functions = [spec.logical_id for spec in template.functions()]
    parser = argparse.ArgumentParser(
        prog="make invoke",
        usage="make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json [PARAMETERS=...]",
    )
    parser.add_argument("function", nargs="?")
    parser.add_argument("event", nargs="?")
    add_parameter_overrides(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.function not in functions or not args.event:
        print(
            "usage: make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json\n"
            f"  FUNCTION is one of {', '.join(functions)}",
            file=sys.stderr,
        )
        return 2
    overrides = overrides_or_exit("make invoke", args.parameter_overrides)
    logical_id, event_path = args.function, args.event
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
        _attach(described, template, logical_id, overrides)
        url = str(described["url"])
    else:
        print(
            f"No local stack running: starting one for this invoke of {logical_id}"
            " (links in the answer stop working when it ends: run make local first)",
            file=sys.stderr,
        )
        ephemeral = LocalDeployment(
            ports=Ports.any_free(),
            schedule=False,
            write_state_file=False,
            parameter_overrides=overrides,
        )
        ephemeral.start()
        url = ephemeral.url
    try:
        event = as_delivered_to(event, url)
        require = os.environ.get("REQUIRE_CONNECT_SESSION", "true").lower() == "true"
        if require and needs_session(event):
            event = with_fresh_session(template, event, url)
        result = invoke(template, logical_id, event)
    finally:
        if ephemeral is not None:
            ephemeral.stop()
    print(json.dumps(_redacted(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
