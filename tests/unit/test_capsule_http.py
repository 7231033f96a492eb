"""The Capsule modules (api, token_endpoint): what its answers mean, undocumented shapes too."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import responses
import time_machine

from capsule_oauth import errors as capsule_errors
from capsule_oauth.capsule import api, credentials, token_endpoint
from capsule_oauth.capsule.credentials import ClientCredentials
from capsule_oauth.config import Settings
from tests.support.slow_server import trickling_server

BASE = "https://capsule.test"
CREDENTIALS = ClientCredentials("id", "secret-value")
SETTINGS = Settings("-", "-", "-", "-", capsule_base_url=BASE, http_timeout_seconds=1)


@pytest.fixture(autouse=True)
def _client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token endpoint signs in with these, not with a secret from Secrets Manager."""
    monkeypatch.setattr(credentials, "get_client_credentials", lambda *_, **__: CREDENTIALS)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as requests_mock:
        yield requests_mock


def token_reply(mock: responses.RequestsMock, status: int, body: Any, **headers: str) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    mock.add(responses.POST, f"{BASE}/oauth/token", body=text, status=status, headers=headers)


def refresh() -> token_endpoint.TokenResponse:
    return token_endpoint.refresh(SETTINGS, refresh_token="r")


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

    with pytest.raises(capsule_errors.CapsuleBadResponse):
        refresh()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "expired"},
            capsule_errors.InvalidGrant,
        ),
        (400, {"message": "invalid_grant"}, capsule_errors.InvalidGrant),
        (401, {"error": "invalid_client"}, capsule_errors.InvalidClient),
        (401, "Unauthorized", capsule_errors.InvalidClient),
        (400, {"error": "invalid_request"}, capsule_errors.OAuthError),
        (400, "<html>", capsule_errors.CapsuleBadResponse),
        (500, {"error": "server_error"}, capsule_errors.CapsuleUnavailable),
        (200, "<html>oops", capsule_errors.CapsuleBadResponse),
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

    with (
        time_machine.travel(1_900_000_000 - 600, tick=False),
        pytest.raises(capsule_errors.CapsuleRateLimited) as raised,
    ):
        refresh()

    assert raised.value.reset_at == 1_900_000_000


@pytest.mark.parametrize(
    "reset",
    [
        str(1_900_000_000 * 1000),  # milliseconds: parked a connection for 56,889 years
        "1e20",
        "²",
        "-5",
        str(1_900_000_000 + 3 * 86_400),
    ],
)
def test_a_rate_limit_reset_that_is_not_a_sane_time_is_a_malformed_answer(
    mock: responses.RequestsMock, reset: str
) -> None:
    token_reply(mock, 429, {"error": "rate limit reached"}, **{"X-RateLimit-Reset": reset})

    with (
        time_machine.travel(1_900_000_000, tick=False),
        pytest.raises(capsule_errors.CapsuleBadResponse),
    ):
        refresh()


@pytest.mark.parametrize("expires_in", ["²", "1e20", 1e40, 10**40, "1_000", -5, 0, True, "٣"])
def test_an_expires_in_that_is_not_a_bounded_whole_number_is_malformed(
    mock: responses.RequestsMock, expires_in: object
) -> None:
    token_reply(mock, 200, {"access_token": "a", "refresh_token": "r", "expires_in": expires_in})

    with pytest.raises(capsule_errors.CapsuleBadResponse):
        refresh()


def test_an_answer_over_the_size_limit_is_refused(mock: responses.RequestsMock) -> None:
    mock.add(responses.POST, f"{BASE}/oauth/token", body=b"x" * (api.MAX_BODY_BYTES + 1))

    with pytest.raises(capsule_errors.CapsuleBadResponse, match="bytes"):
        refresh()


def test_an_answer_trickling_in_past_its_deadline_is_a_timeout(
    mock: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read arrives within the timeout, but the whole answer does not.
    mock.add(responses.POST, f"{BASE}/oauth/token", body=b"{" + b" " * 200_000 + b"}")
    clock = iter([0, 0, 0, *range(1_000, 10_000)])  # then every read comes a second later
    monkeypatch.setattr(api, "now", lambda: float(next(clock)))

    with pytest.raises(capsule_errors.CapsuleTimeout):
        refresh()


def test_an_answer_trickling_in_over_a_real_socket_stops_at_its_deadline() -> None:
    # Each byte comes 0.1 s after the last, far within the 1 s read timeout: only a total
    # deadline stops reading. Without one this answer takes 4 s.
    body = b'{"access_token": "a", "expires_in": 60}'
    with trickling_server(body, seconds_per_byte=0.1) as base_url:
        started = time.monotonic()
        with pytest.raises(capsule_errors.CapsuleTimeout):
            api.send("POST", f"{base_url}/oauth/token", 1.0)
        took = time.monotonic() - started

    assert took < 2.0


def test_an_answer_complete_in_hand_after_the_deadline_is_still_used(
    mock: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Capsule rotated and its whole answer is here, just late: it is the only copy of the
    # new tokens, so it is read, not thrown away (the fenced save decides if it still counts).
    token_reply(mock, 200, {"access_token": "a", "refresh_token": "r2", "expires_in": 60})
    clock = itertools.chain([0, 0], itertools.repeat(1_000))  # all of it, 1,000 s late
    monkeypatch.setattr(api, "now", lambda: float(next(clock)))

    answer = refresh()

    assert answer.refresh_token == "r2"


def test_oauth_error_messages_carry_no_secret(mock: responses.RequestsMock) -> None:
    token_reply(mock, 400, {"error": "invalid_grant", "error_description": "token r expired"})

    with pytest.raises(capsule_errors.InvalidGrant) as raised:
        token_endpoint.refresh(SETTINGS, refresh_token="r-secret-token")

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

    answer = api.api_request(
        BASE, "tok", "GET", "/parties", timeout=1, draw=None, params={"page": 2}
    )

    assert answer.body == {"parties": []}
    assert answer.rate_limit == api.RateLimit(4000, 12, 1_900_000_000)
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

    with pytest.raises(capsule_errors.CapsuleAPIError) as raised:
        api.api_request(BASE, "tok", "POST", "/parties", timeout=1, draw=None, json={})

    assert (raised.value.status, raised.value.errors) == (422, errors)


def test_api_path_must_stay_under_api_v2() -> None:
    with pytest.raises(ValueError, match="relative"):
        api.api_request(BASE, "tok", "GET", "https://evil.example/x", timeout=1, draw=None)


@pytest.mark.parametrize(
    ("url", "subdomain"),
    [
        ("https://exampleco.capsulecrm.com", "exampleco"),
        ("https://Example-Co.capsulecrm.com/", "example-co"),
        (" https://exampleco.capsulecrm.com:443/path ", "exampleco"),
        ("https://capsulecrm.com", None),
        ("https://127.0.0.1:8080", None),
        ("https://[::1]/", None),
        ("https://[::1/", None),
        ("https://-bad.capsulecrm.com", None),
        ("not a url", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_a_sites_url_names_its_subdomain_by_its_host(url: object, subdomain: str | None) -> None:
    assert api.subdomain_of(url) == subdomain


def test_client_secret_basic_sends_the_credentials_in_the_authorization_header(
    mock: responses.RequestsMock,
) -> None:
    token_reply(mock, 200, {"access_token": "a", "refresh_token": "r2", "expires_in": 60})
    basic = dataclasses.replace(SETTINGS, token_auth_method="client_secret_basic")

    token_endpoint.refresh(basic, refresh_token="r")

    sent = mock.calls[0].request
    expected = base64.b64encode(b"id:secret-value").decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert "client_secret" not in str(sent.body)


def test_an_unusable_exchange_answer_is_revoked_before_it_fails(
    mock: responses.RequestsMock,
) -> None:
    # The code was spent and Capsule issued a grant; without expires_in nobody can keep it.
    token_reply(mock, 200, {"access_token": "a-issued", "refresh_token": "r-issued"})
    mock.add(responses.POST, f"{BASE}/oauth/revoke", json={}, status=200)

    with pytest.raises(capsule_errors.CapsuleBadResponse):
        token_endpoint.exchange_code(
            SETTINGS, code="c", redirect_uri="https://x/cb", code_verifier=None
        )

    revoked = dict(parse_qsl(str(mock.calls[1].request.body)))
    assert revoked["token"] == "r-issued"


def test_every_token_of_an_unusable_exchange_answer_is_revoked_even_if_one_fails(
    mock: responses.RequestsMock,
) -> None:
    token_reply(mock, 200, {"access_token": "a-issued", "refresh_token": "r-issued"})
    mock.add(responses.POST, f"{BASE}/oauth/revoke", status=503)  # the first revoke fails
    mock.add(responses.POST, f"{BASE}/oauth/revoke", json={}, status=200)

    with pytest.raises(capsule_errors.CapsuleBadResponse):
        token_endpoint.exchange_code(
            SETTINGS, code="c", redirect_uri="https://x/cb", code_verifier=None
        )

    revoked = [dict(parse_qsl(str(call.request.body)))["token"] for call in mock.calls[1:]]
    assert revoked == ["r-issued", "a-issued"]


def test_revocation_errors_name_the_revocation_endpoint(mock: responses.RequestsMock) -> None:
    mock.add(responses.POST, f"{BASE}/oauth/revoke", json={"error": "invalid_request"}, status=400)

    with pytest.raises(capsule_errors.OAuthError, match="revocation endpoint"):
        token_endpoint.revoke(SETTINGS, token="t")
