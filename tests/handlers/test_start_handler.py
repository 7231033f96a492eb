"""GET /auth/start, through the handler template.yaml names for StartFunction."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from capsule_oauth.web import binding
from capsule_oauth.web.binding import binding_cookie_name
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import CLIENT_ID
from tests.support.stacks import CAPSULE_URL

CALLBACK = "https://abc123.execute-api.us-east-1.amazonaws.com/auth/callback"


def state_items(stack: Stack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=stack.state_table)[
        "Items"
    ]
    return items


def authorise_query(response: dict[str, Any]) -> dict[str, str]:
    location = urlsplit(response["headers"]["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{CAPSULE_URL}/oauth/authorise"
    )
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def binding_nonce(response: dict[str, Any]) -> str:
    (cookie,) = response["cookies"]
    return str(cookie.split(";")[0].split("=", 1)[1])


@pytest.fixture(autouse=True)
def _sessionless(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about what start does with a request; with or without a connect
    session it does the same, and the session rules have tests of their own
    (test_connect_sessions.py). REQUIRE_CONNECT_SESSION=false is the sessionless mode."""
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")


def test_start_redirects_to_capsule_with_every_authorise_parameter(
    stack: Stack, invoke: Invoke
) -> None:
    response = invoke("StartFunction", load_event("start.json"))

    assert response["statusCode"] == 302
    query = authorise_query(response)
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == CALLBACK
    assert query["scope"] == "read write"
    assert query["code_challenge_method"] == "S256"
    assert set(query) == {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    }


def test_start_stores_the_state_with_verifier_binding_and_expiry(
    stack: Stack, invoke: Invoke
) -> None:
    response = invoke("StartFunction", load_event("start.json"))

    query = authorise_query(response)
    (item,) = state_items(stack)
    assert item["state"]["S"] == "state#" + hashlib.sha256(query["state"].encode()).hexdigest()
    assert item["redirect_uri"]["S"] == CALLBACK
    assert binding.pkce_challenge(item["code_verifier"]["S"]) == query["code_challenge"]
    assert item["binding"]["S"] == hashlib.sha256(binding_nonce(response).encode()).hexdigest()
    assert int(item["expires_at"]["N"]) - int(item["created_at"]["N"]) == 600
    assert "return_to" not in item


def test_state_and_nonce_carry_256_bits_and_differ_every_time(stack: Stack, invoke: Invoke) -> None:
    first = invoke("StartFunction", load_event("start.json"))
    second = invoke("StartFunction", load_event("start.json"))

    state_a, state_b = authorise_query(first)["state"], authorise_query(second)["state"]
    assert len(state_a) >= 43  # 32 bytes, base64url
    assert state_a != state_b
    assert binding_nonce(first) != binding_nonce(second)
    assert binding_nonce(first) != state_a


def test_binding_cookie_is_httponly_secure_lax_and_scoped_to_the_callback(
    stack: Stack, invoke: Invoke
) -> None:
    response = invoke("StartFunction", load_event("start.json"))

    name = response["cookies"][0].split("=", 1)[0]
    assert name == binding_cookie_name(authorise_query(response)["state"])
    attributes = [part.strip() for part in response["cookies"][0].split(";")[1:]]
    assert set(attributes) == {
        "Max-Age=600",
        "Path=/auth/callback",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
    }


def test_start_response_is_never_cached_and_leaks_no_referrer(stack: Stack, invoke: Invoke) -> None:
    response = invoke("StartFunction", load_event("start.json"))

    assert response["headers"]["Cache-Control"] == "no-store"
    assert response["headers"]["Referrer-Policy"] == "no-referrer"


def test_return_to_path_is_kept_with_the_state(stack: Stack, invoke: Invoke) -> None:
    invoke("StartFunction", load_event("start-return-to.json"))

    (item,) = state_items(stack)
    assert item["return_to"]["S"] == "/settings/integrations"


def test_bad_return_to_event_is_refused_and_nothing_is_written(
    stack: Stack, invoke: Invoke
) -> None:
    response = invoke("StartFunction", load_event("start-bad-return-to.json"))

    assert response["statusCode"] == 400
    assert "path on this site" in response["body"]
    assert state_items(stack) == []


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "https://evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "evil.example/x",
        "javascript:alert(1)",
        "/ok\r\nSet-Cookie: x=y",
        "/" + "a" * 600,
    ],
)
def test_return_to_other_than_a_same_site_path_is_refused(
    stack: Stack, invoke: Invoke, return_to: str
) -> None:
    event = load_event("start.json")
    event["queryStringParameters"] = {"return_to": return_to}

    response = invoke("StartFunction", event)

    assert response["statusCode"] == 400
    assert state_items(stack) == []


def test_pkce_can_be_turned_off(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKCE_ENABLED", "false")

    response = invoke("StartFunction", load_event("start.json"))

    query = authorise_query(response)
    assert "code_challenge" not in query
    assert "code_verifier" not in state_items(stack)[0]


def test_fixed_redirect_uri_setting_wins_over_the_request_host(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIRECT_URI", "https://connect.example.com/capsule/callback")
    event = load_event("start.json")
    event["requestContext"]["domainName"] = "connect.example.com"  # the custom domain

    response = invoke("StartFunction", event)

    assert authorise_query(response)["redirect_uri"] == (
        "https://connect.example.com/capsule/callback"
    )
    assert "Path=/capsule/callback" in response["cookies"][0]


def test_a_start_on_another_host_than_the_redirect_uri_is_sent_there_before_any_state(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The binding cookie set on the execute-api host would never reach the custom domain's
    # callback: every sign-in would fail as "started in another browser".
    monkeypatch.setenv("REDIRECT_URI", "https://connect.example.com/capsule/callback")
    event = load_event("start.json")
    event["rawQueryString"] = "session=abc"
    event["queryStringParameters"] = {"session": "abc"}

    response = invoke("StartFunction", event)

    assert response["statusCode"] == 302
    assert response["headers"]["Location"] == "https://connect.example.com/auth/start?session=abc"
    assert "cookies" not in response
    assert state_items(stack) == []


def test_unconfigured_client_credentials_give_503_and_write_nothing(
    stack: Stack, invoke: Invoke
) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.secret_id, SecretString=json.dumps({"client_id": "", "client_secret": "x"})
    )

    response = invoke("StartFunction", load_event("start.json"))

    assert response["statusCode"] == 503
    assert "not set up" in response["body"]
    assert state_items(stack) == []


def test_a_missing_setting_gives_503_not_a_crash(
    stack: Stack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_TABLE_NAME")

    response = invoke("StartFunction", load_event("start.json"))

    assert response["statusCode"] == 503


def test_a_missing_secret_gives_503_and_says_what_to_do(
    stack: Stack, invoke: Invoke, log_output: io.StringIO
) -> None:
    boto3.client("secretsmanager").delete_secret(
        SecretId=stack.secret_id, ForceDeleteWithoutRecovery=True
    )

    response = invoke("StartFunction", load_event("start.json"))

    assert response["statusCode"] == 503
    logged = log_output.getvalue()
    assert "cannot read the secret (ResourceNotFoundException); put JSON" in logged
    assert state_items(stack) == []
