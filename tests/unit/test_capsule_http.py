"""capsule.py: what Capsule's answers mean, including the undocumented shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from capsule_oauth import capsule
from capsule_oauth.credentials import ClientCredentials

BASE = "https://capsule.test"
CREDENTIALS = ClientCredentials("id", "secret-value")


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as requests_mock:
        yield requests_mock


def token_reply(mock: responses.RequestsMock, status: int, body: Any, **headers: str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    mock.add(responses.POST, f"{BASE}/oauth/token", body=text, status=status, headers=headers)


def refresh() -> capsule.TokenResponse:
    return capsule.refresh(BASE, CREDENTIALS, refresh_token="r", timeout=1)


def test_token_response_keeps_capsules_subdomain_and_scope(mock: responses.RequestsMock) -> None:
    token_reply(
        mock,
        200,
        {
            "access_token": "a",
            "refresh_token": "r2",
            "token_type": "bearer",
            "expires_in": 604799,
            "scope": "read write",
            "subdomain": "exampleco",
        },
    )

    answer = refresh()

    assert (answer.expires_in, answer.scope, answer.subdomain) == (
        604799,
        "read write",
        "exampleco",
    )
    assert answer.refresh_token == "r2"


def test_refresh_without_refresh_token_is_accepted(mock: responses.RequestsMock) -> None:
    token_reply(mock, 200, {"access_token": "a", "expires_in": 60})

    assert refresh().refresh_token is None


def test_expires_in_as_a_numeric_string_is_accepted(mock: responses.RequestsMock) -> None:
    token_reply(mock, 200, {"access_token": "a", "expires_in": "3600"})

    assert refresh().expires_in == 3600


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "a", "expires_in": 0},
        {"access_token": "a", "expires_in": True},
        {"access_token": "", "expires_in": 60},
        {"access_token": "a", "expires_in": 60, "refresh_token": ""},
        {"access_token": "a", "expires_in": 60, "token_type": "mac"},
        ["not", "an", "object"],
    ],
)
def test_incomplete_token_responses_are_bad_responses(
    mock: responses.RequestsMock, body: Any
) -> None:
    token_reply(mock, 200, body)

    with pytest.raises(capsule.CapsuleBadResponse):
        refresh()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant", "error_description": "expired"}, capsule.InvalidGrant),
        (400, {"message": "invalid_grant"}, capsule.InvalidGrant),
        (401, {"error": "invalid_client"}, capsule.InvalidClient),
        (401, "Unauthorized", capsule.InvalidClient),
        (400, {"error": "invalid_request"}, capsule.OAuthError),
        (400, "<html>", capsule.CapsuleBadResponse),
        (500, {"error": "server_error"}, capsule.CapsuleUnavailable),
        (200, "<html>oops", capsule.CapsuleBadResponse),
    ],
)
def test_token_errors_are_classified(
    mock: responses.RequestsMock, status: int, body: Any, error: type[Exception]
) -> None:
    token_reply(mock, status, body)

    with pytest.raises(error):
        refresh()


def test_429_carries_the_reset_time(mock: responses.RequestsMock) -> None:
    token_reply(mock, 429, {"error": "rate limit reached"}, **{"X-RateLimit-Reset": "1900000000"})

    with pytest.raises(capsule.CapsuleRateLimited) as raised:
        refresh()

    assert raised.value.reset_at == 1_900_000_000


def test_oauth_error_messages_carry_no_secret(mock: responses.RequestsMock) -> None:
    token_reply(mock, 400, {"error": "invalid_grant", "error_description": "token r expired"})

    with pytest.raises(capsule.InvalidGrant) as raised:
        capsule.refresh(BASE, CREDENTIALS, refresh_token="r-secret-token", timeout=1)

    assert "r-secret-token" not in str(raised.value)
    assert "secret-value" not in str(raised.value)


def test_client_credentials_travel_in_the_form_body(mock: responses.RequestsMock) -> None:
    token_reply(mock, 200, {"access_token": "a", "expires_in": 60})

    refresh()

    request = mock.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "client_secret=secret-value" in str(request.body)
    assert "Authorization" not in request.headers


def test_api_request_sends_the_bearer_token_and_reads_rate_limits(
    mock: responses.RequestsMock,
) -> None:
    mock.add(
        responses.GET,
        f"{BASE}/api/v2/parties",
        json={"parties": []},
        headers={
            "X-RateLimit-Limit": "4000",
            "X-RateLimit-Remaining": "12",
            "X-RateLimit-Reset": "1900000000",
        },
    )

    answer = capsule.api_request(BASE, "tok", "GET", "/parties", timeout=1, params={"page": 2})

    assert answer.body == {"parties": []}
    assert answer.rate_limit == capsule.RateLimit(4000, 12, 1_900_000_000)
    assert mock.calls[0].request.headers["Authorization"] == "Bearer tok"
    assert mock.calls[0].request.url == f"{BASE}/api/v2/parties?page=2"


def test_api_422_keeps_capsules_field_errors(mock: responses.RequestsMock) -> None:
    errors = [{"message": "is required", "resource": "party", "field": "name"}]
    mock.add(
        responses.POST,
        f"{BASE}/api/v2/parties",
        json={"message": "Validation failed", "errors": errors},
        status=422,
    )

    with pytest.raises(capsule.CapsuleAPIError) as raised:
        capsule.api_request(BASE, "tok", "POST", "/parties", timeout=1, json={})

    assert (raised.value.status, raised.value.errors) == (422, errors)


def test_api_path_must_stay_under_api_v2() -> None:
    with pytest.raises(ValueError, match="relative"):
        capsule.api_request(BASE, "tok", "GET", "https://evil.example/x", timeout=1)
