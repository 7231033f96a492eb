"""Malformed HTTP API v2 events at every handler: nothing crashes, every refusal says why, and
a refused request changes nothing.

For each target (a function of template.yaml with a well-formed sample event of events/)
every mutation below is sent: missing and wrong-typed fields, invalid JSON and UTF-8, base64
bodies, huge and deeply nested bodies, duplicate and huge query parameters, long or odd path
parameters, null bytes. Properties:

- no answer is a 5xx, except 503 (with Retry-After) while AWS is made to fail;
- every 4xx of a JSON route or a page carries a message a person can read;
- a refused request (any 4xx or 5xx) writes nothing to DynamoDB and asks Capsule for nothing.

A route added later joins with one line in TARGETS; a test fails while a route of the
template has none.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from capsule_oauth.config import Settings
from local.lambda_container import Invoke
from local.stack import Stack, Template, load_event
from tests.support.aws_faults import aws_fault
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import CID, seed
from tests.support.sign_in import callback_event, new_session, start, with_session

JSON = "json"  # errors are {"error", "message"}
PAGE = "page"  # errors are an HTML page for a person
STATUS = "status"  # errors are a bare status (a machine's endpoint)


Event = dict[str, Any]
# Makes a sample event live before it is spoilt (a session to start with, a state to finish).
Prepare = Callable[[Event, Invoke, FakeCapsule], Event]


def _with_a_session(event: Event, invoke: Invoke, fake: FakeCapsule) -> Event:
    return with_session(event, new_session("user-42", "/welcome"))


def _of_a_started_sign_in(event: Event, invoke: Invoke, fake: FakeCapsule) -> Event:
    return callback_event(start(invoke, fake, session=new_session("user-42", "/welcome")))


@dataclass(frozen=True)
class Target:
    """One route: its function, a well-formed request to it (an events/ file, made live by
    ``prepare``), how it answers errors, and whether it reads a JSON body."""

    function: str
    event_file: str
    answers: str
    reads_body: bool = False
    prepare: Prepare | None = None

    @property
    def route_key(self) -> str:
        return str(load_event(self.event_file)["routeKey"])

    def sample(self, invoke: Invoke, fake: FakeCapsule) -> Event:
        event = load_event(self.event_file)
        return self.prepare(event, invoke, fake) if self.prepare else event


TARGETS = [
    Target("StartFunction", "start.json", PAGE, prepare=_with_a_session),
    Target("CallbackFunction", "callback.json", PAGE, prepare=_of_a_started_sign_in),
    Target("ConnectSessionsFunction", "connect-session.json", JSON, reads_body=True),
    Target("ConfirmConnectionFunction", "confirm-connection.json", JSON, reads_body=True),
    Target("ConnectionsFunction", "list-connections.json", JSON),
    Target("ConnectionsFunction", "get-connection.json", JSON),
    Target("AccessTokenFunction", "access-token.json", JSON),
    Target("DisconnectFunction", "disconnect.json", JSON),
    Target("CapsuleProxyFunction", "capsule-proxy.json", JSON),  # a body is optional here
    Target("HookIntakeFunction", "hook-delivery.json", STATUS, reads_body=True),
]

Mutation = Callable[[Event], Event]
HUGE = 200_000


def _set(path: str, value: Any) -> Mutation:
    """Set (or, with ``...``, delete) the field at a dotted path of the event."""

    def mutate(event: Event) -> Event:
        *parents, last = path.split(".")
        node = event
        for name in parents:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
        return event

    return mutate


def _query(params: dict[str, Any], raw: str | None = None) -> Mutation:
    def mutate(event: Event) -> Event:
        event["queryStringParameters"] = params
        event["rawQueryString"] = (
            raw
            if raw is not None
            else "&".join(f"{k}={v}" for k, v in params.items() if isinstance(v, str))
        )
        return event

    return mutate


def _body(raw: Any, *, base64_encoded: bool = False) -> Mutation:
    def mutate(event: Event) -> Event:
        event["body"] = raw
        event["isBase64Encoded"] = base64_encoded
        return event

    return mutate


def _b64(data: bytes) -> Mutation:
    return _body(base64.b64encode(data).decode(), base64_encoded=True)


def _json_body(value: Any) -> Mutation:
    return _body(json.dumps(value))


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Mutations every HTTP route gets: the event's own shape, the query, headers, cookies, the
# path and a body where none is expected.
EVENT_MUTATIONS: dict[str, Mutation] = {
    "no requestContext": _set("requestContext", ...),
    "requestContext a string": _set("requestContext", "nonsense"),
    "requestContext a list": _set("requestContext", []),
    "no domainName": _set("requestContext.domainName", ...),
    "domainName a number": _set("requestContext.domainName", 42),
    "domainName a lone surrogate": _set("requestContext.domainName", "\ud800.example"),
    "domainName with a null byte": _set("requestContext.domainName", "api\x00.example"),
    "domainName huge": _set("requestContext.domainName", "a" * HUGE),
    "no routeKey": _set("routeKey", ...),
    "routeKey unknown": _set("routeKey", "PATCH /nowhere"),
    "routeKey a number": _set("routeKey", 7),
    "rawPath a number": _set("rawPath", 7),
    "rawPath huge": _set("rawPath", "/" + "a" * HUGE),
    "rawQueryString a number": _set("rawQueryString", 7),
    "rawQueryString a lone surrogate": _set("rawQueryString", "x=\udc00"),
    "query a list": _set("queryStringParameters", ["state", "code"]),
    "query a string": _set("queryStringParameters", "owner=x"),
    "query value a number": _query({"owner": 1, "state": 1, "session": 1, "force": 1}),
    "query value null": _query({"owner": None, "state": None, "force": None}),
    "query value a lone surrogate": _query({"owner": "\ud800", "state": "\ud800"}),
    "query value with a null byte": _query(
        {"owner": "user\x0042", "state": "a\x00b", "session": "\x00", "return_to": "/\x00"}
    ),
    "query value huge": _query({k: "a" * HUGE for k in ("owner", "state", "session", "code")}),
    "query key huge": _query({"k" * HUGE: "v"}),
    "query duplicated": _query(
        {k: "a,b" for k in ("owner", "state", "code", "session", "force", "return_to")},
        raw="owner=a&owner=b&state=a&state=b&force=true&force=false",
    ),
    "query of a thousand keys": _query({f"k{i}": "v" for i in range(1000)}),
    "query of empty values": _query({k: "" for k in ("owner", "state", "code", "session")}),
    "headers a list": _set("headers", ["host"]),
    "header value a number": _set("headers.host", 7),
    "header value a lone surrogate": _set("headers.x-forwarded-proto", "\udfff"),
    "header value huge": _set("headers.user-agent", "u" * HUGE),
    "cookies a string": _set("cookies", "a=b"),
    "cookies of dicts": _set("cookies", [{"name": "x"}]),
    "cookie huge": _set("cookies", ["c=" + "x" * HUGE]),
    "cookie with a null byte": _set("cookies", ["__Secure-capsule_oauth_binding_0=\x00"]),
    "no pathParameters": _set("pathParameters", ...),
    "pathParameters a list": _set("pathParameters", ["exampleco:1"]),
    "connection id empty": _set("pathParameters.connection_id", ""),
    "connection id a number": _set("pathParameters.connection_id", 1),
    "connection id huge": _set("pathParameters.connection_id", "c" * HUGE),
    "connection id 257 characters": _set("pathParameters.connection_id", "c" * 257),
    "connection id with a null byte": _set("pathParameters.connection_id", "exampleco:1\x00"),
    "connection id climbing": _set("pathParameters.connection_id", "../../etc/passwd"),
    "connection id non-ASCII": _set("pathParameters.connection_id", "exämpleco:1"),
    "connection id a lone surrogate": _set("pathParameters.connection_id", "\ud800"),
    "body not JSON": _body("{not json"),
    "body a number": _body(42),
    "body an object": _body({"owner": "user-42"}),
    "body base64 that is not": _body("%%%", base64_encoded=True),
    "body huge": _body("x" * (2 * 1024 * 1024)),
    "isBase64Encoded a string": _set("isBase64Encoded", "yes"),
    "version 1.0": _set("version", "1.0"),
    "stageVariables a string": _set("stageVariables", "x"),
}

# Mutations of the body, for routes that read one.
BODY_MUTATIONS: dict[str, Mutation] = {
    "body absent": _body(None),
    "body empty": _body(""),
    "body whitespace": _body("   "),
    "body null": _body("null"),
    "body an array": _body("[]"),
    "body a string": _body('"owner"'),
    "body a number": _body("1"),
    "body true": _body("true"),
    "body cut short": _body('{"owner": "user-42"'),
    "body trailing garbage": _body('{"owner": "user-42"} x'),
    "body a single quote JSON": _body("{'owner': 'user-42'}"),
    "body with a BOM": _body('\ufeff{"owner": "user-42"}'),
    "body a null byte": _body("\x00"),
    "body NaN": _body('{"owner": NaN}'),
    "body Infinity": _body('{"owner": "user-42", "n": -Infinity}'),
    "body duplicate field": _body('{"owner": "user-42", "owner": "user-7"}'),
    "body escaped lone surrogate": _body('{"owner": "user-42", "return_url": "/\\ud800"}'),
    "body raw lone surrogate": _body('{"owner": "user-42", "return_url": "/\ud800"}'),
    "body lone surrogate key": _body('{"\\udc00": 1, "owner": "user-42"}'),
    "body lone surrogate owner": _body('{"owner": "\\ud83d"}'),
    "body nested 100,000 deep": _body(_nested(100_000)),
    "body nested 30,000 deep": _body(_nested(30_000)),
    "body nested 30,000 deep in a field": _body(
        '{"owner": "user-42", "x": ' + _nested(30_000) + "}"
    ),
    "body nested 40 objects deep": _body('{"a":' * 40 + "1" + "}" * 40),
    "body over 64 KiB": _json_body({"owner": "user-42", "pad": "x" * 70_000}),
    "body a 60 KiB owner": _json_body({"owner": "u" * 60_000}),
    "body base64 of JSON not UTF-8": _b64('{"owner": "ü"}'.encode("latin-1")),
    "body base64 of invalid UTF-8": _b64(b"\xff\xfe\xfd"),
    "body base64 of a lone surrogate": _b64(b'{"owner": "\xed\xa0\x80"}'),
    "body base64 unpadded": _body("eyJvd25lciI6ICJ1c2VyLTQyIn0", base64_encoded=True),
    "body base64 of a huge body": _b64(b'{"owner": "' + b"x" * 100_000 + b'"}'),
    "owner missing": _json_body({}),
    "owner null": _json_body({"owner": None}),
    "owner a number": _json_body({"owner": 42}),
    "owner a list": _json_body({"owner": ["user-42"]}),
    "owner an object": _json_body({"owner": {"id": "user-42"}}),
    "owner true": _json_body({"owner": True}),
    "owner empty": _json_body({"owner": ""}),
    "owner with a null byte": _json_body({"owner": "user\x0042"}),
    "owner with a newline": _json_body({"owner": "user-42\n"}),
    "owner 129 characters": _json_body({"owner": "u" * 129}),
    "unknown field": _json_body({"owner": "user-42", "admin": True}),
    "return_url a number": _json_body({"owner": "user-42", "return_url": 1}),
    "return_url a list": _json_body({"owner": "user-42", "return_url": ["/x"]}),
    "return_url bracketed host": _json_body(
        {"owner": "user-42", "return_url": "https://[app.example.com]/"}
    ),
    "return_url unclosed bracket": _json_body({"owner": "user-42", "return_url": "https://[::1/"}),
    "return_url bracket after host": _json_body(
        {"owner": "user-42", "return_url": "https://app.example.com]/"}
    ),
    "return_url bad port": _json_body({"owner": "user-42", "return_url": "https://a.test:99999/"}),
    "return_url with a null byte": _json_body({"owner": "user-42", "return_url": "/x\x00"}),
    "return_url javascript": _json_body({"owner": "user-42", "return_url": "javascript:alert(1)"}),
    "return_url huge": _json_body({"owner": "user-42", "return_url": "/" + "a" * 60_000}),
    "return_url empty host": _json_body({"owner": "user-42", "return_url": "https:///x"}),
    "reconnect id a number": _json_body({"owner": "user-42", "reconnect_connection_id": 1}),
    "reconnect id empty": _json_body({"owner": "user-42", "reconnect_connection_id": ""}),
    "reconnect id huge": _json_body({"owner": "user-42", "reconnect_connection_id": "c" * 60_000}),
    "reconnect id with a null byte": _json_body(
        {"owner": "user-42", "reconnect_connection_id": "exampleco:1\x00"}
    ),
    "reconnect id of another owner": _json_body(
        {"owner": "user-42", "reconnect_connection_id": CID}
    ),
}


@dataclass(frozen=True)
class Outcome:
    case: str
    status: int
    problem: str | None


def _json_problem(body: str) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not (isinstance(parsed, dict) and set(parsed) == {"error", "message"}):
        return f"not an error object: {parsed!r:.200}"
    message = parsed["message"]
    return None if isinstance(message, str) and message.strip() else "an empty message"


def _page_problem(answer: dict[str, Any]) -> str | None:
    body = str(answer.get("body") or "")
    if "text/html" not in answer.get("headers", {}).get("Content-Type", ""):
        return "not an HTML page"
    if not re.search(r"<h1>[^<]+</h1>", body) or not re.search(r"<p>[^<]+</p>", body):
        return "a page without a title or a message"
    return None


def _status_problem(answer: dict[str, Any], aws_failing: bool) -> str | None:
    status = answer["statusCode"]
    if status >= 500 and not (aws_failing and status == 503):
        return f"a {status}: {str(answer.get('body'))[:200]}"
    if status == 503 and not answer.get("headers", {}).get("Retry-After"):
        return "a 503 without Retry-After"
    return None


@dataclass
class Fuzz:
    """Sends events to the stack's functions and judges each answer by the properties."""

    invoke: Invoke
    stack: Stack
    fake: FakeCapsule

    def __post_init__(self) -> None:
        self._dynamodb = boto3.client("dynamodb")  # one client: making one costs more than a scan
        self._keys = {
            table: [k["AttributeName"] for k in self._dynamodb.describe_table(TableName=table)[
                "Table"]["KeySchema"]]
            for table in (self.stack.connections_table, self.stack.state_table)
        }  # fmt: skip

    def tables(self, aws_failing: bool) -> dict[str, dict[str, dict[str, Any]]]:
        """Each table's items by key. Under an AWS fault a sign-in's state is still used up
        (it works once, by design): what must not change then is the connections."""
        tables = [self.stack.connections_table]
        if not aws_failing:
            tables.append(self.stack.state_table)
        return {
            table: {
                repr([item[k] for k in self._keys[table]]): item
                for item in self._dynamodb.scan(TableName=table)["Items"]
            }
            for table in tables
        }

    def drop_new_items(self, before: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Delete what was added since ``before`` (accepted requests, samples made live): the
        tables stay small, so the scans stay quick."""
        for table, items in self.tables(aws_failing=False).items():
            for key, item in items.items():
                if key not in before.get(table, {}):
                    self._dynamodb.delete_item(
                        TableName=table, Key={k: item[k] for k in self._keys[table]}
                    )

    def capsule_calls(self) -> int:
        return len(self.fake.token_requests) + len(self.fake.revoke_requests)

    def run(self, target: Target, case: str, event: Event, *, aws_failing: bool = False) -> Outcome:
        before, calls = self.tables(aws_failing), self.capsule_calls()
        try:
            answer = self.invoke(target.function, event)
        except Exception as crash:
            return Outcome(case, 0, f"raised {type(crash).__name__}: {str(crash)[:120]}")
        if not isinstance(answer, dict) or not isinstance(answer.get("statusCode"), int):
            return Outcome(case, 0, f"no status code: {answer!r:.200}")
        status = answer["statusCode"]
        problem = _status_problem(answer, aws_failing)
        if status >= 400 and problem is None:
            if target.answers == JSON:
                problem = _json_problem(str(answer.get("body") or ""))
            elif target.answers == PAGE:
                problem = _page_problem(answer)
        if status >= 400 and problem is None and self.tables(aws_failing) != before:
            problem = "refused, yet something was written"
        if status >= 400 and problem is None and self.capsule_calls() != calls and not aws_failing:
            problem = "refused, yet Capsule was asked"
        return Outcome(case, status, problem)


def _mutations(target: Target) -> dict[str, Mutation]:
    mutations = dict(EVENT_MUTATIONS)
    if target.reads_body:
        mutations |= {f"{name} (body)": mutate for name, mutate in BODY_MUTATIONS.items()}
    return mutations


def _cases(target: Target, invoke: Invoke, fake: FakeCapsule) -> Iterator[tuple[str, Event]]:
    for name, mutate in _mutations(target).items():
        yield name, mutate(target.sample(invoke, fake))


@pytest.fixture
def fuzz(settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, stack: Stack) -> Fuzz:
    """One connection (anonymous, "exampleco:1": what the sample events name) and the fake."""
    seed(settings, fake_capsule)
    return Fuzz(invoke, stack, fake_capsule)


def _report(outcomes: list[Outcome]) -> str:
    return "\n".join(f"{o.case}: {o.status} {o.problem}" for o in outcomes if o.problem)


def _target_id(target: Target) -> str:
    return f"{target.function}:{target.event_file}"


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_malformed_events_are_refused_clearly_and_change_nothing(
    target: Target, fuzz: Fuzz
) -> None:
    baseline, outcomes = fuzz.tables(aws_failing=False), []
    for case, event in _cases(target, fuzz.invoke, fuzz.fake):
        outcomes.append(fuzz.run(target, case, event))
        fuzz.drop_new_items(baseline)

    assert not _report(outcomes), _report(outcomes)
    if target.reads_body:  # the body's own mutations are all refused
        accepted = [(o.case, o.status) for o in outcomes if o.case.endswith("(body)")]
        assert [(case, status) for case, status in accepted if status < 400] == []


def test_malformed_events_reach_every_route_and_number_at_least_250() -> None:
    cases = sum(len(_mutations(target)) for target in TARGETS)

    assert cases >= 250


def test_every_route_of_the_template_is_fuzzed(template: Template) -> None:
    fuzzed = {target.route_key for target in TARGETS}
    routes = {f"{route.method} {route.path}" for route in template.routes()}

    assert routes <= fuzzed, f"add a Target for {sorted(routes - fuzzed)}"


@pytest.mark.parametrize("service", ["dynamodb", "kms"])
@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_an_aws_fault_under_a_well_formed_request_is_a_503_or_a_refusal(
    target: Target, service: str, fuzz: Fuzz
) -> None:
    event = target.sample(fuzz.invoke, fuzz.fake)
    if target.reads_body:
        event["body"] = json.dumps({"owner": "user-42"})

    with aws_fault(service):
        outcome = fuzz.run(target, f"{service} failing", event, aws_failing=True)

    assert outcome.problem is None, outcome


def test_the_scheduled_refresh_takes_any_event_and_writes_nothing_when_none_is_due(
    fuzz: Fuzz,
) -> None:
    before, calls = fuzz.tables(aws_failing=False), fuzz.capsule_calls()
    events: list[Any] = [
        {},
        load_event("scheduled.json") | {"detail": "x" * HUGE},
        load_event("access-token.json"),
        {"Records": "x"},
        {"version": 7, "time": None, "resources": "\ud800"},
    ]

    reports = [fuzz.invoke("RefreshFunction", event) for event in events]

    assert all(isinstance(report, dict) for report in reports)
    assert fuzz.tables(aws_failing=False) == before
    assert fuzz.capsule_calls() == calls
