"""The one request/answer path of the JSON routes: what API Gateway does deliver, however odd,
gets a 4xx that says what is wrong (or a 503 for an AWS fault), and changes nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.errors import ConfigError
from capsule_oauth.store.connections import ConnectionStore
from capsule_oauth.web import json_api
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.aws_faults import WRITES, aws_fault
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import seed_owned

APP = "https://app.example.com"


@pytest.fixture(autouse=True)
def _app_origin(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_RETURN_ORIGINS", APP)


def items(stack: Stack) -> int:
    dynamodb = boto3.client("dynamodb")
    return sum(
        int(dynamodb.scan(TableName=table)["Count"])
        for table in (stack.state_table, stack.connections_table)
    )


def create_session(invoke: Invoke, raw_body: str, *, base64_encoded: bool = False) -> Any:
    event = load_event("connect-session.json")
    event["body"] = raw_body
    event["isBase64Encoded"] = base64_encoded
    return invoke("ConnectSessionsFunction", event)


def refused(answer: dict[str, Any], status: int = 400, error: str = "invalid_request") -> str:
    """The message of a JSON refusal with this status and error code."""
    assert answer["statusCode"] == status, answer["body"]
    assert answer["headers"]["Content-Type"] == "application/json"
    body = json.loads(answer["body"])
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert body["message"].strip()
    return str(body["message"])


# --- POST /connect-sessions: what used to crash it --------------------------------------------


@pytest.mark.parametrize(
    "return_url", ["https://[app.example.com]/", "https://[::1/", "https://app.example.com]/"]
)
def test_a_return_url_with_a_bracketed_or_unclosed_host_is_a_400(
    stack: Stack, invoke: Invoke, return_url: str
) -> None:
    answer = create_session(invoke, json.dumps({"owner": "user-42", "return_url": return_url}))

    refused(answer, 400, "invalid_return_url")
    assert items(stack) == 0


@pytest.mark.parametrize(
    "raw_body",
    [
        '{"owner": "user-42", "return_url": "/\\ud800"}',  # a lone surrogate, escaped
        '{"owner": "user-42", "return_url": "/\ud800"}',  # and as Lambda's JSON decodes it
        '{"owner": "user-42", "reconnect_connection_id": "\\udfff"}',
        '{"\\ud800": 1, "owner": "user-42"}',
    ],
)
def test_a_string_with_a_lone_surrogate_is_a_400(
    stack: Stack, invoke: Invoke, raw_body: str
) -> None:
    refused(create_session(invoke, raw_body))
    assert items(stack) == 0


def test_deeply_nested_arrays_are_a_400_not_a_recursion_error(stack: Stack, invoke: Invoke) -> None:
    within_the_cap = "[" * 30_000 + "]" * 30_000
    hundred_thousand = "[" * 100_000 + "]" * 100_000
    event = load_event("connect-session.json")
    event["body"] = hundred_thousand

    assert "nests deeper" in refused(create_session(invoke, within_the_cap))
    refused(create_session(invoke, hundred_thousand), 413, "request_too_large")
    bigger_cap = json_api.json_route(max_body_bytes=1024 * 1024)(_parse_only)
    assert "nests deeper" in refused(bigger_cap(event))
    assert items(stack) == 0


def _parse_only(event: dict[str, Any]) -> dict[str, Any]:
    return json_api.answer(200, json_api.body(event))


def test_nesting_past_the_limit_is_a_400_however_it_is_sent(stack: Stack, invoke: Invoke) -> None:
    nested: Any = "x"
    for _ in range(json_api.MAX_BODY_DEPTH + 1):
        nested = {"a": nested}

    message = refused(
        create_session(
            invoke, json.dumps({"owner": "user-42", "return_url": "/welcome", "n": nested})
        )
    )

    assert "nests deeper than 32 levels" in message


def test_a_throttled_dynamodb_write_is_a_503_with_retry_after(stack: Stack, invoke: Invoke) -> None:
    with aws_fault("dynamodb", WRITES) as faults:
        answer = create_session(invoke, json.dumps({"owner": "user-42", "return_url": "/welcome"}))

    assert faults.answered == ["PutItem"]
    refused(answer, 503, "unavailable")
    assert int(answer["headers"]["Retry-After"]) > 0
    assert items(stack) == 0


def test_a_body_over_64_kib_is_a_413_and_one_under_it_is_read(stack: Stack, invoke: Invoke) -> None:
    padding = " " * (64 * 1024 - len('{"owner": "user-42", "return_url": "/welcome"}'))

    under = create_session(invoke, '{"owner": "user-42", "return_url": "/welcome"}' + padding)
    over = create_session(invoke, '{"owner": "user-42", "return_url": "/welcome"}' + padding + " ")

    assert under["statusCode"] == 201
    assert "64 KiB" in refused(over, 413, "request_too_large")
    assert items(stack) == 1  # the one session created under the cap


def test_a_base64_body_is_decoded_and_a_broken_one_refused(stack: Stack, invoke: Invoke) -> None:
    good = base64.b64encode(b'{"owner": "user-42", "return_url": "/welcome"}').decode()

    assert create_session(invoke, good, base64_encoded=True)["statusCode"] == 201
    assert "base64" in refused(create_session(invoke, "%%%not base64", base64_encoded=True))
    latin1 = base64.b64encode('{"owner": "ü"}'.encode("latin-1")).decode()
    assert "UTF-8" in refused(create_session(invoke, latin1, base64_encoded=True))


@pytest.mark.parametrize(
    ("raw_body", "says"),
    [
        ("", "empty"),
        ('{"owner": "a", "owner": "b"}', "twice"),
        ('{"owner": NaN}', "NaN"),
        ('{"owner": "user-42"', "not valid JSON"),
        ('{"owner": null}', "owner is required"),
        ('{"owner": ["user-42"]}', "owner must be a string"),
        ('{"owner": "user-42", "return_url": 1}', "return_url must be a string"),
        ('{"owner": "user-42", "extra": 1}', 'Unknown field(s): "extra"'),
    ],
)
def test_each_malformed_body_says_what_is_wrong(
    stack: Stack, invoke: Invoke, raw_body: str, says: str
) -> None:
    assert says in refused(create_session(invoke, raw_body))
    assert items(stack) == 0


@pytest.mark.parametrize("reconnect", ["", "a b", "x" * 5000, "bad\x00id"])
def test_a_reconnect_id_that_names_no_connection_is_a_400_without_a_lookup(
    stack: Stack, invoke: Invoke, reconnect: str
) -> None:
    with aws_fault("dynamodb") as faults:
        answer = create_session(
            invoke,
            json.dumps(
                {"owner": "user-42", "return_url": "/welcome", "reconnect_connection_id": reconnect}
            ),
        )

    refused(answer)
    assert faults.answered == []


# --- every JSON route ---------------------------------------------------------------------------


def test_an_unforeseen_crash_is_a_json_500_that_says_nothing_inside(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(event: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("secret-looking detail")

    answer = json_api.json_route(crash)(load_event("get-connection.json"))

    assert "secret-looking" not in refused(answer, 500, "internal_error")


def test_a_route_declares_its_own_body_cap_and_error_answers(settings: Settings) -> None:
    class Busy(Exception):
        pass

    @json_api.json_route(
        max_body_bytes=1024 * 1024,
        errors={Busy: lambda _: json_api.error(429, "busy", "Slow down.")},
    )
    def proxy(event: dict[str, Any]) -> dict[str, Any]:
        if json_api.body(event).get("busy"):
            raise Busy
        return json_api.answer(200, {"ok": True})

    event = load_event("access-token.json")
    event["body"] = json.dumps({"data": "x" * 500_000})
    assert proxy(event)["statusCode"] == 200
    event["body"] = json.dumps({"busy": True})
    refused(proxy(event), 429, "busy")
    event["body"] = json.dumps({"data": "x" * (1024 * 1024)})
    assert "1 MiB" in refused(proxy(event), 413, "request_too_large")


def test_raw_body_gives_the_bytes_sent_for_routes_that_pass_a_body_on() -> None:
    binary = bytes(range(256))

    assert (
        json_api.raw_body({"body": base64.b64encode(binary).decode(), "isBase64Encoded": True})
        == binary
    )
    assert json_api.raw_body({"body": "ü", "isBase64Encoded": False}) == "ü".encode()
    assert json_api.raw_body({}) == b""
    with pytest.raises(json_api.BadRequest, match="not UTF-8"):
        json_api.raw_body({"body": "\ud800"})


def test_an_aws_fault_on_a_read_route_is_a_503_too(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    event = load_event("get-connection.json")
    event["pathParameters"] = {"connection_id": cid}

    with aws_fault("dynamodb", code="InternalServerError", status=500):
        answer = invoke("ConnectionsFunction", event)

    refused(answer, 503, "unavailable")
    assert answer["headers"]["Retry-After"] == "2"


# --- ManagementCallerArns ----------------------------------------------------------------------

BACKEND = "arn:aws:iam::123456789012:user/app-backend"  # who signed the events/ files
ROLE = "arn:aws:iam::123456789012:role/service/app-role"


def as_caller(event: dict[str, Any], arn: str | None) -> dict[str, Any]:
    if arn is None:
        del event["requestContext"]["authorizer"]
    else:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = arn
    return event


def allow_callers(monkeypatch: pytest.MonkeyPatch, arns: str) -> None:
    monkeypatch.setenv("MANAGEMENT_CALLER_ARNS", arns)
    config.settings.cache_clear()


@pytest.mark.parametrize(
    "route",
    [
        ("ConnectSessionsFunction", "connect-session.json"),
        ("ConnectionsFunction", "list-connections.json"),
        ("ConnectionsFunction", "get-connection.json"),
        ("AccessTokenFunction", "access-token.json"),
        ("DisconnectFunction", "disconnect-force.json"),
    ],
)
def test_a_caller_outside_management_caller_arns_gets_a_403_and_nothing_happens(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    route: tuple[str, str],
) -> None:
    function, event_file = route
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    before = ConnectionStore(settings).get(cid)
    allow_callers(monkeypatch, ROLE)
    event = as_caller(load_event(event_file), BACKEND)
    if "connection_id" in (event.get("pathParameters") or {}):
        event["pathParameters"] = {"connection_id": cid}

    answer = invoke(function, event)

    assert "ManagementCallerArns" in refused(answer, 403, "caller_not_allowed")
    assert ConnectionStore(settings).get(cid) == before
    assert fake_capsule.revoke_requests == []
    assert items_in_state_table() == 0


def items_in_state_table() -> int:
    table = config.settings().state_table
    return int(boto3.client("dynamodb").scan(TableName=table)["Count"])


@pytest.mark.parametrize(
    ("allowed", "caller", "admitted"),
    [
        ("", BACKEND, True),  # nothing listed: IAM alone decides
        (BACKEND, BACKEND, True),
        (f"{ROLE}, {BACKEND}", BACKEND, True),
        (ROLE, "arn:aws:sts::123456789012:assumed-role/app-role/session-1", True),
        (ROLE, "arn:aws:sts::123456789012:assumed-role/other-role/session-1", False),
        (ROLE, "arn:aws:sts::999999999999:assumed-role/app-role/session-1", False),
        (ROLE, "arn:aws-cn:sts::123456789012:assumed-role/app-role/session-1", False),
        (ROLE, "arn:aws:iam::123456789012:user/app-role", False),
        (BACKEND, "arn:aws:iam::123456789012:user/app-backend-2", False),
        (BACKEND, None, False),  # no IAM identity at all
    ],
)
def test_which_callers_management_caller_arns_admits(
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    allowed: str,
    caller: str | None,
    admitted: bool,
) -> None:
    allow_callers(monkeypatch, allowed)
    event = as_caller(load_event("list-connections.json"), caller)

    answer = invoke("ConnectionsFunction", event)

    assert answer["statusCode"] == (200 if admitted else 403)


@pytest.mark.parametrize("wrong", ["app-backend", "arn:aws:s3:::bucket", "arn:aws:iam::12:user/x"])
def test_a_management_caller_arns_that_is_no_iam_arn_is_refused_when_settings_load(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    monkeypatch.setenv("MANAGEMENT_CALLER_ARNS", f"{BACKEND},{wrong}")

    with pytest.raises(ConfigError, match="MANAGEMENT_CALLER_ARNS"):
        Settings.from_env()
