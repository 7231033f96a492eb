"""What API Gateway would never send, and what a client should not decide, change nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from local.lambda_container import Invoke
from local.stack import Stack, load_event


def _states(stack: Stack) -> int:
    return int(boto3.client("dynamodb").scan(TableName=stack.state_table)["Count"])


def _without_context(event: dict[str, Any]) -> dict[str, Any]:
    event.pop("requestContext")
    return event


def _query_not_a_dict(event: dict[str, Any]) -> dict[str, Any]:
    event["queryStringParameters"] = ["state", "code"]
    return event


def _lone_surrogate(event: dict[str, Any]) -> dict[str, Any]:
    event["queryStringParameters"] = {"state": "\ud800", "code": "x"}
    return event


def _cookies_not_strings(event: dict[str, Any]) -> dict[str, Any]:
    event["cookies"] = [{"name": "x"}]
    return event


@pytest.mark.parametrize("function", ["StartFunction", "CallbackFunction"])
@pytest.mark.parametrize(
    "spoil", [_without_context, _query_not_a_dict, _lone_surrogate, _cookies_not_strings]
)
def test_a_malformed_event_gets_a_400_page_and_writes_nothing(
    stack: Stack, invoke: Invoke, function: str, spoil: Any
) -> None:
    event = spoil(load_event("callback.json" if function == "CallbackFunction" else "start.json"))

    response = invoke(function, event)

    assert response["statusCode"] == 400
    assert "not one a browser following a link sends" in response["body"]
    assert _states(stack) == 0


def test_a_clients_x_forwarded_proto_does_not_make_the_callback_url_http(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")
    event = load_event("start.json")
    event["headers"]["x-forwarded-proto"] = "http"

    response = invoke("StartFunction", event)

    query = parse_qs(urlsplit(response["headers"]["Location"]).query)
    assert query["redirect_uri"][0].startswith("https://")


def test_the_binding_cookie_carries_the_secure_prefix(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")
    response = invoke("StartFunction", load_event("start.json"))

    assert response["cookies"][0].startswith("__Secure-")
    assert "; Secure" in response["cookies"][0]
