"""capsule_connector_client on a stubbed HTTP layer: each route's request, signed as API
Gateway checks it, its typed answer, and one exception per error code of the API (the
confirm and proxy routes' too)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from botocore.session import get_session

from capsule_connector_client import (
    AccessDenied,
    CallerNotAllowed,
    CapsuleTimeout,
    CapsuleUnavailable,
    ConfirmationRequired,
    ConnectionBusy,
    ConnectionChanged,
    Connector,
    ConnectorError,
    Disconnected,
    Forbidden,
    InternalError,
    InvalidJson,
    InvalidOwner,
    InvalidPath,
    InvalidRequest,
    InvalidReturnUrl,
    MethodNotAllowed,
    NotConfigured,
    NotFound,
    OwnerMismatch,
    RateLimited,
    ReauthorizationRequired,
    RequestTooLarge,
    ResultNotFound,
    ReturnUrlRequired,
    RevocationFailed,
    TokenUnavailable,
    Unavailable,
    UnsupportedMediaType,
)
from capsule_connector_client.errors import ERRORS
from local import sigv4

API = "https://abc123.execute-api.eu-west-2.amazonaws.com"
CONNECTION = {
    "connection_id": "cc_0123",
    "owner": "user-42",
    "status": "active",
    "site": {
        "subdomain": "exampleco",
        "name": "Example Co.",
        "url": "https://exampleco.capsulecrm.com",
    },
    "user": {"id": "1", "name": "Scott Spacey"},
    "scope": "read write",
    "access_token_expires_at": "2026-12-10T10:00:00Z",
    "last_refreshed_at": None,
    "connected_at": "2026-12-03T10:00:00Z",
    "last_error": None,
    "refresh_failures": 0,
}
TOKEN = "capsule-access-token-0123456789"


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def connector(slept: list[float]) -> Connector:
    return Connector(API, sleep=slept.append)


def sent(call: Any) -> Any:
    """The JSON body a stubbed call received."""
    body = call.request.body
    assert body is not None
    return json.loads(body)


def verified(call: Any) -> sigv4.Caller:
    """The request as the local gateway (API Gateway's AWS_IAM check) verifies it."""
    parts = urlsplit(call.request.url)
    body = call.request.body or b""
    return sigv4.verify(
        method=call.request.method,
        path=parts.path,
        raw_query=parts.query,
        headers={"Host": parts.netloc, **dict(call.request.headers)},
        body=body if isinstance(body, bytes) else body.encode(),
        known=sigv4.KnownCredentials("testing", "testing"),
        region="eu-west-2",
    )


def test_the_region_comes_from_an_execute_api_url_or_must_be_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    session = get_session()

    assert Connector(API, session=session).region == "eu-west-2"
    assert Connector("http://localhost:3000", session=session, region="us-east-1").region == (
        "us-east-1"
    )
    with pytest.raises(ValueError, match="no AWS region"):
        Connector("http://localhost:3000", session=session)


def test_create_connect_session_posts_the_owner_signed(
    connector: Connector, http: responses.RequestsMock
) -> None:
    http.post(
        f"{API}/connect-sessions",
        json={"connect_url": f"{API}/auth/start?session=secret-session", "expires_at": 1796000000},
        status=201,
    )

    link = connector.create_connect_session(
        "user-42", return_url="https://app.example.com/x", reconnect_connection_id="cc_0123"
    )

    (call,) = http.calls
    assert sent(call) == {
        "owner": "user-42",
        "return_url": "https://app.example.com/x",
        "reconnect_connection_id": "cc_0123",
    }
    assert verified(call).access_key == "testing"
    assert link.expires_at == 1796000000
    assert link.connect_url.endswith("session=secret-session")
    assert "secret-session" not in repr(link)


def test_list_get_token_and_disconnect_answer_typed_results(
    connector: Connector, http: responses.RequestsMock
) -> None:
    http.get(f"{API}/connections?owner=user%2F42", json={"connections": [CONNECTION]})
    http.get(
        f"{API}/connections/exampleco%3A1",
        json=CONNECTION | {"last_error": {"reason": "Timeout", "at": None}},
    )
    http.post(
        f"{API}/connections/cc_0123/access-token",
        json={
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": 1796000000,
            "api_base_url": "https://api.capsulecrm.com",
        },
    )
    http.delete(f"{API}/connections/cc_0123", status=204)
    http.delete(f"{API}/connections/cc_0124?force=true", json={"revoked": False, "forgotten": True})

    (listed,) = connector.list_connections("user/42")
    one = connector.get_connection("exampleco:1")
    token = connector.access_token("cc_0123")
    gone = connector.disconnect("cc_0123")
    forced = connector.disconnect("cc_0124", force=True)

    assert listed.site.name == "Example Co."
    assert listed.user.id == "1"
    assert listed.last_error is None
    assert one.last_error is not None
    assert one.last_error.reason == "Timeout"
    assert (token.access_token, token.token_type) == (TOKEN, "Bearer")
    assert TOKEN not in repr(token)
    assert gone == Disconnected(revoked=True, forgotten=True)
    assert forced == Disconnected(revoked=False, forgotten=True)
    for call in http.calls:
        verified(call)  # every call signed, query and encoded path included


def test_confirm_posts_the_result_and_answers_the_connection(
    connector: Connector, http: responses.RequestsMock
) -> None:
    http.post(f"{API}/connect-sessions/confirm", json=CONNECTION)

    confirmed = connector.confirm("confirmation-result-secret", "user-42")

    (call,) = http.calls
    assert sent(call) == {
        "result": "confirmation-result-secret",
        "owner": "user-42",
    }
    verified(call)
    assert confirmed.connection_id == "cc_0123"


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [
        (400, "invalid_request", InvalidRequest),
        (400, "invalid_owner", InvalidOwner),
        (400, "invalid_return_url", InvalidReturnUrl),
        (400, "return_url_required", ReturnUrlRequired),
        (400, "invalid_json", InvalidJson),
        (400, "invalid_path", InvalidPath),
        (405, "method_not_allowed", MethodNotAllowed),
        (413, "request_too_large", RequestTooLarge),
        (415, "unsupported_media_type", UnsupportedMediaType),
        (403, "forbidden", Forbidden),
        (403, "owner_mismatch", OwnerMismatch),
        (403, "caller_not_allowed", CallerNotAllowed),
        (404, "not_found", NotFound),
        (404, "result_not_found", ResultNotFound),
        (409, "reauthorization_required", ReauthorizationRequired),
        (409, "confirmation_required", ConfirmationRequired),
        (409, "connection_changed", ConnectionChanged),
        (429, "rate_limited", RateLimited),
        (502, "revocation_failed", RevocationFailed),
        (502, "capsule_unavailable", CapsuleUnavailable),
        (503, "token_unavailable", TokenUnavailable),
        (503, "connection_busy", ConnectionBusy),
        (503, "unavailable", Unavailable),
        (503, "not_configured", NotConfigured),
        (504, "capsule_timeout", CapsuleTimeout),
        (500, "internal_error", InternalError),
    ],
)
def test_each_error_code_is_its_own_exception_with_the_apis_message(
    connector: Connector, http: responses.RequestsMock, status: int, code: str, raised: type
) -> None:
    headers = {"Retry-After": "7"} if status in {429, 503} else {}
    http.post(
        f"{API}/connections/cc_0123/access-token",
        json={"error": code, "message": f"The sentence for {code}."},
        status=status,
        headers=headers,
    )

    with pytest.raises(raised) as error:
        connector.access_token("cc_0123")

    assert isinstance(error.value, ConnectorError)
    assert (error.value.status, error.value.code) == (status, code)
    assert error.value.message == f"The sentence for {code}."
    assert str(error.value) == f"The sentence for {code}."
    assert error.value.retry_after == (7 if headers else None)


ROOT = Path(__file__).resolve().parents[2]
# A code as the API answers it: json_api.error(status, "code", ...), or a refusal raised
# with its code first (BadRequest("code", ...), InvalidConnectSessionRequest("code", ...)).
_CODE = re.compile(r"(?:\berror|Request|BadRequest)\(\s*(?:\d{3},\s*)?\"([a-z_]+)\"")


def test_every_error_code_the_api_answers_has_its_exception() -> None:
    sources = [*ROOT.glob("functions/**/*.py"), *ROOT.glob("layers/**/*.py")]
    answered = {code for path in sources for code in _CODE.findall(path.read_text())}

    assert answered >= {"owner_mismatch", "invalid_json", "request_too_large", "rate_limited"}
    assert answered - set(ERRORS) == set()
    assert all(ERRORS[code].code == code for code in ERRORS)


def test_api_gateways_own_refusal_is_access_denied(
    connector: Connector, http: responses.RequestsMock
) -> None:
    http.get(f"{API}/connections/cc_0123", json={"message": "Forbidden"}, status=403)
    http.get(f"{API}/connections/cc_0124", body="Internal Server Error", status=500)

    with pytest.raises(AccessDenied, match="Forbidden"):
        connector.get_connection("cc_0123")
    with pytest.raises(ConnectorError) as crashed:
        connector.get_connection("cc_0124")
    assert crashed.value.status == 500


def test_retries_are_off_unless_asked_for(
    connector: Connector, http: responses.RequestsMock, slept: list[float]
) -> None:
    http.post(
        f"{API}/connections/cc_0123/access-token",
        json={"error": "token_unavailable", "message": "Try again shortly."},
        status=503,
        headers={"Retry-After": "2"},
    )

    with pytest.raises(TokenUnavailable):
        connector.access_token("cc_0123")

    assert slept == []
    assert len(http.calls) == 1


def test_a_retry_waits_what_retry_after_says_and_is_bounded(
    http: responses.RequestsMock, slept: list[float]
) -> None:
    connector = Connector(API, retries=2, sleep=slept.append)
    busy = {"error": "connection_busy", "message": "A refresh holds it."}
    url = f"{API}/connections/cc_0123"
    http.delete(url, json=busy, status=503, headers={"Retry-After": "3"})
    http.delete(url, json=busy, status=503)  # no Retry-After: one second
    http.delete(url, status=204)

    assert connector.disconnect("cc_0123") == Disconnected(revoked=True, forgotten=True)
    assert slept == [3, 1]

    for _ in range(3):
        http.delete(url, json=busy, status=503, headers={"Retry-After": "1"})
    slept.clear()
    with pytest.raises(ConnectionBusy):
        connector.disconnect("cc_0123")
    assert slept == [1, 1]  # two retries, then the error


def test_a_retry_after_longer_than_the_bound_is_not_waited_for(
    http: responses.RequestsMock, slept: list[float]
) -> None:
    connector = Connector(API, retries=3, max_retry_wait=10, sleep=slept.append)
    http.get(
        f"{API}/connections/cc_0123/capsule/parties",
        json={"error": "rate_limited", "message": "Capsule's rate limit."},
        status=429,
        headers={"Retry-After": "60"},
    )

    with pytest.raises(RateLimited) as limited:
        connector.capsule("cc_0123").get("/parties")

    assert limited.value.retry_after == 60
    assert slept == []


def test_capsule_goes_through_the_proxy_route_for_every_method(
    connector: Connector, http: responses.RequestsMock
) -> None:
    base = f"{API}/connections/cc_0123/capsule"
    http.get(f"{base}/parties?perPage=5", json={"parties": []})
    http.post(f"{base}/parties", json={"party": {"id": 1}}, status=201)
    http.put(f"{base}/parties/1", json={"party": {"id": 1}})
    http.patch(f"{base}/parties/1", json={"party": {"id": 1}})
    http.delete(f"{base}/parties/1", status=204)
    capsule = connector.capsule("cc_0123")

    assert capsule.get("/parties", params={"perPage": "5"}) == {"parties": []}
    assert capsule.post("/parties", json={"party": {"type": "person"}}) == {"party": {"id": 1}}
    assert capsule.put("parties/1", json={"party": {}}) == {"party": {"id": 1}}
    assert capsule.patch("/parties/1", json={"party": {}}) == {"party": {"id": 1}}
    assert capsule.delete("/parties/1") is None
    assert sent(http.calls[1]) == {"party": {"type": "person"}}
    for call in http.calls:
        verified(call)


def test_no_token_or_confirmation_result_reaches_an_error_or_repr(
    connector: Connector, http: responses.RequestsMock
) -> None:
    http.post(
        f"{API}/connect-sessions/confirm",
        json={"error": "result_not_found", "message": "No such result."},
        status=404,
    )

    with pytest.raises(ResultNotFound) as error:
        connector.confirm("confirmation-result-secret", "user-42")

    shown = f"{error.value!s} {error.value!r} {connector!r} {connector.capsule('cc_0123')!r}"
    assert "confirmation-result-secret" not in shown
    assert "testing" not in shown  # no credential either
