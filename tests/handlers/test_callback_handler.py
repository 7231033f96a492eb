"""GET /auth/callback, through the handler template.yaml names for CallbackFunction."""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest
import requests
import time_machine

from capsule_oauth.capsule import api
from capsule_oauth.errors import TokenDecryptionError
from capsule_oauth.store import crypto
from local.capsule_emulator import api as emulator_api
from local.capsule_emulator.store import CapsuleStore
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import CLIENT_ID, CLIENT_SECRET, FakeCapsule, Reply
from tests.support.sign_in import callback_event, follow, start

CALLBACK = "https://abc123.execute-api.us-east-1.amazonaws.com/auth/callback"

# The sign-in's own mechanics: confirming new connections is tested in test_confirm.py.
pytestmark = pytest.mark.usefixtures("applied_at_once")


def connection_items(stack: Stack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=stack.connections_table)[
        "Items"
    ]
    return items


def state_count(stack: Stack) -> int:
    """Authorization states in the state table (connect sessions live there too)."""
    items = boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"]
    return sum(item["state"]["S"].startswith("state#") for item in items)


def denial(invoke: Invoke, fake: FakeCapsule, **params: str) -> dict[str, Any]:
    """Capsule's redirect back with ``error=`` for a sign-in this browser started."""
    event = callback_event(start(invoke, fake))
    event["queryStringParameters"] = {**params, "state": event["queryStringParameters"]["state"]}
    return event


def connect(invoke: Invoke, fake: FakeCapsule) -> dict[str, Any]:
    started = start(invoke, fake)
    response: dict[str, Any] = invoke("CallbackFunction", callback_event(started))
    return response


def connect_and_follow(invoke: Invoke, fake: FakeCapsule) -> dict[str, Any]:
    """Connect, then follow the 303 to the page the browser lands on."""
    started = start(invoke, fake)
    response: dict[str, Any] = invoke("CallbackFunction", callback_event(started))
    return follow(invoke, response, started)


# --- the happy path -------------------------------------------------------------------


def test_callback_connects_and_says_where_and_as_whom(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)
    response = invoke("CallbackFunction", callback_event(started))

    assert response["statusCode"] == 303  # never resting on a URL with the code and state
    assert response["headers"]["Location"].startswith("/auth/callback?connected=")
    assert "code=" not in response["headers"]["Location"]
    page = follow(invoke, response, started)
    assert page["statusCode"] == 200
    assert "Connected to Example Co. as Scott Spacey" in page["body"]
    again = follow(invoke, response, started)  # reloaded
    assert again["body"] == page["body"]
    assert page["headers"]["Content-Type"] == "text/html; charset=utf-8"


def test_token_request_sends_exactly_the_authorization_code_fields(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)
    items = boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"]
    (state,) = [item for item in items if not item["state"]["S"].startswith("session#")]
    verifier = state["code_verifier"]["S"]

    invoke("CallbackFunction", callback_event(started))

    (sent,) = fake_capsule.token_requests
    assert sent == {
        "grant_type": "authorization_code",
        "code": started.code,
        "redirect_uri": CALLBACK,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code_verifier": verifier,
    }


def test_saved_connection_holds_identity_expiry_and_status(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        connect(invoke, fake_capsule)

    (item,) = connection_items(stack)
    assert item["connection_id"]["S"] == "exampleco:1"
    assert item["status"]["S"] == "active"
    assert item["subdomain"]["S"] == "exampleco"
    assert item["site_name"]["S"] == "Example Co."
    assert item["user_id"]["S"] == "1"
    assert item["user_name"]["S"] == "Scott Spacey"
    assert item["scope"]["S"] == "read write"
    assert item["expires_at"]["N"] == str(1_900_000_000 + 604799)
    assert item["refresh_due_at"]["N"] == str(1_900_000_000 + 604799 - 86400)
    assert item["refresh_queue"]["S"] == "active"
    assert item["version"]["N"] == "1"


def _unnamed_site(monkeypatch: pytest.MonkeyPatch, *, url: bool) -> None:
    """Capsule names the account neither in the token response nor in /site's field."""
    token_json = CapsuleStore.token_json
    site = emulator_api.site

    def without_subdomain(store: CapsuleStore, grant: Any) -> dict[str, Any]:
        return {k: v for k, v in token_json(store, grant).items() if k != "subdomain"}

    def unnamed(account: Any) -> dict[str, object]:
        kept = ("name", "url") if url else ("name",)
        return {k: v for k, v in site(account).items() if k in kept}

    monkeypatch.setattr(CapsuleStore, "token_json", without_subdomain)
    monkeypatch.setattr(emulator_api, "site", unnamed)


def test_the_subdomain_comes_from_the_sites_url_when_nothing_else_names_it(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unnamed_site(monkeypatch, url=True)

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 303
    (item,) = connection_items(stack)
    assert item["connection_id"]["S"] == "exampleco:1"
    assert item["subdomain"]["S"] == "exampleco"
    assert item["site_url"]["S"] == "https://exampleco.capsulecrm.com"


def test_a_site_nothing_names_is_refused_and_its_grant_given_back(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unnamed_site(monkeypatch, url=False)

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 502
    assert connection_items(stack) == []
    assert fake_capsule.refresh_tokens == {}


def test_stored_tokens_are_encrypted_and_bound_to_the_connection_id(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    connect(invoke, fake_capsule)

    (item,) = connection_items(stack)
    blob = item["tokens"]["B"]
    access_token, refresh_token = (
        json.loads(fake_capsule.mock.calls[0].response.text)[k]  # type: ignore[union-attr]
        for k in ("access_token", "refresh_token")
    )
    assert access_token.encode() not in blob
    assert refresh_token.encode() not in blob
    opened = crypto.unseal(stack.token_key_id, "exampleco:1", blob)
    assert (opened.access_token, opened.refresh_token) == (access_token, refresh_token)
    with pytest.raises(TokenDecryptionError):
        crypto.unseal(stack.token_key_id, "exampleco:2", blob)


def test_reconnecting_updates_the_same_connection(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    connect(invoke, fake_capsule)

    response = connect_and_follow(invoke, fake_capsule)

    (item,) = connection_items(stack)
    assert item["version"]["N"] == "2"
    assert "connected again" in response["body"]
    exchanges = [c for c in fake_capsule.mock.calls if str(c.request.url).endswith("/oauth/token")]
    latest = exchanges[-1].response  # the second token exchange
    opened = crypto.unseal(stack.token_key_id, "exampleco:1", item["tokens"]["B"])
    assert opened.access_token == json.loads(latest.text)["access_token"]  # type: ignore[union-attr]


def test_success_keeps_the_binding_cookie_and_leaves_a_used_state_without_its_verifier(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)

    response = invoke("CallbackFunction", callback_event(started))

    # Kept for StateTtlSeconds: this browser is recognised if it comes back.
    assert response["cookies"] == [
        f"{started.cookie_name}={started.nonce}; Max-Age=600; Path=/auth/callback; HttpOnly;"
        " Secure; SameSite=Lax"
    ]
    items = boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"]
    (used,) = [item for item in items if item["state"]["S"].startswith("state#")]
    assert "used_at" in used
    assert "completed_at" in used
    assert "code_verifier" not in used
    assert started.state not in json.dumps(items)  # stored by its hash only


def test_two_sign_ins_started_in_one_browser_both_finish(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    first = start(invoke, fake_capsule)
    second = start(invoke, fake_capsule)  # e.g. a second tab, or a double click
    both_cookies = [f"{s.cookie_name}={s.nonce}" for s in (first, second)]

    answers = []
    for started in (first, second):
        event = callback_event(started)
        event["cookies"] = both_cookies  # the browser sends every cookie it holds
        answers.append(invoke("CallbackFunction", event)["statusCode"])

    assert answers == [303, 303]


def test_a_cookie_of_another_sign_in_does_not_fit(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    first = start(invoke, fake_capsule)
    second = start(invoke, fake_capsule)
    event = callback_event(first)
    event["cookies"] = [f"{first.cookie_name}={second.nonce}"]

    response = invoke("CallbackFunction", event)

    assert response["statusCode"] == 400
    assert fake_capsule.token_requests == []


def test_return_to_is_offered_after_connecting(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")  # return_to is for sessionless starts
    started = start(invoke, fake_capsule, "start-return-to.json")

    response = invoke("CallbackFunction", callback_event(started))

    assert 'href="/settings/integrations"' in follow(invoke, response, started)["body"]


def test_without_pkce_no_verifier_is_sent(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKCE_ENABLED", "false")

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 303
    assert "code_verifier" not in fake_capsule.token_requests[0]


# --- the person said no, or the link is bad ------------------------------------------


def test_denied_access_shows_a_friendly_page_and_exchanges_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    response = invoke("CallbackFunction", denial(invoke, fake_capsule, error="access_denied"))

    assert response["statusCode"] == 403
    assert "You chose not to allow access" in response["body"]
    assert 'href="/auth/callback?retry=' in response["body"]  # the same connect session
    assert fake_capsule.token_requests == []
    assert connection_items(stack) == []


def test_capsule_error_description_is_escaped(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    event = denial(
        invoke, fake_capsule, error="server_error", error_description="<script>alert(1)</script>"
    )

    response = invoke("CallbackFunction", event)

    assert response["statusCode"] == 400
    assert "<script>" not in response["body"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response["body"]


def test_missing_state_is_refused_without_a_token_request(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    response = invoke("CallbackFunction", load_event("callback-missing-state.json"))

    assert response["statusCode"] == 400
    assert fake_capsule.token_requests == []


def test_example_callback_event_with_unknown_state_is_refused(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    response = invoke("CallbackFunction", load_event("callback.json"))

    assert response["statusCode"] == 400
    assert "unknown or was already used" in response["body"]
    assert fake_capsule.token_requests == []


@pytest.mark.parametrize(
    "query",
    [
        {"state": "short"},
        {"state": "x" * 43 + "!"},
        {"state": "x" * 200},
    ],
)
def test_malformed_state_is_refused(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, query: dict[str, str]
) -> None:
    started = start(invoke, fake_capsule)
    event = callback_event(started)
    event["queryStringParameters"].update(query)

    response = invoke("CallbackFunction", event)

    assert response["statusCode"] == 400
    assert fake_capsule.token_requests == []
    assert state_count(stack) == 1


def test_missing_code_is_refused_and_keeps_the_state(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)
    event = callback_event(started)
    del event["queryStringParameters"]["code"]

    response = invoke("CallbackFunction", event)

    assert response["statusCode"] == 400
    assert fake_capsule.token_requests == []
    assert state_count(stack) == 1


def test_a_used_state_cannot_be_replayed(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)
    invoke("CallbackFunction", callback_event(started))

    reloaded = invoke("CallbackFunction", callback_event(started))
    elsewhere = invoke("CallbackFunction", callback_event(started, cookie=""))

    assert reloaded["statusCode"] == 200  # the same browser: already connected
    assert "Already connected to Example Co. as Scott Spacey" in reloaded["body"]
    assert elsewhere["statusCode"] == 400  # another browser: refused
    assert "already completed" in elsewhere["body"]
    assert len(fake_capsule.token_requests) == 1
    assert connection_items(stack)[0]["version"]["N"] == "1"


def test_an_expired_state_is_refused_even_before_dynamodb_ttl_deletes_it(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        started = start(invoke, fake_capsule)
    with time_machine.travel(1_900_000_000 + 601, tick=False):
        response = invoke("CallbackFunction", callback_event(started))

    assert response["statusCode"] == 400
    assert "expired" in response["body"]
    assert fake_capsule.token_requests == []
    assert connection_items(stack) == []


def test_a_state_just_inside_its_lifetime_still_works(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        started = start(invoke, fake_capsule)
    with time_machine.travel(1_900_000_000 + 599, tick=False):
        response = invoke("CallbackFunction", callback_event(started))

    assert response["statusCode"] == 303


@pytest.mark.parametrize("cookie", ["N" * 43, ""])
def test_a_callback_in_another_browser_is_refused_and_changes_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, cookie: str
) -> None:
    started = start(invoke, fake_capsule)

    response = invoke("CallbackFunction", callback_event(started, cookie=cookie))

    assert response["statusCode"] == 400
    assert "another browser" in response["body"]
    assert fake_capsule.token_requests == []
    assert state_count(stack) == 1  # the real browser can still finish
    assert "cookies" not in response


# --- Capsule fails --------------------------------------------------------------------


def _json(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)


CAPSULE_FAILURES: dict[str, tuple[Reply, int]] = {
    "timeout": (requests.ReadTimeout("read timed out"), 504),
    "connection error": (requests.ConnectionError("refused"), 502),
    "5xx": (_json(503, {"message": "maintenance"}), 502),
    "429": (_json(429, {"error": "rate limit reached"}, {"X-RateLimit-Reset": "1900000300"}), 503),
    "not json": ((200, {"Content-Type": "application/json"}, "<html>oops"), 502),
    "incomplete json": (_json(200, {"token_type": "bearer", "expires_in": 10}), 502),
    "no refresh token": (_json(200, {"access_token": "a" * 20, "expires_in": 10}), 502),
    "invalid_grant": (_json(400, {"error": "invalid_grant"}), 400),
    "invalid_client": (_json(401, {"error": "invalid_client"}), 502),
    "error in message": (_json(400, {"message": "invalid_grant: code expired"}), 400),
    "4xx not json": ((400, {"Content-Type": "text/html"}, "<h1>Bad</h1>"), 502),
}


@pytest.mark.parametrize("failure", list(CAPSULE_FAILURES))
def test_token_endpoint_failures_give_a_clear_page_and_save_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, failure: str
) -> None:
    reply, status = CAPSULE_FAILURES[failure]
    fake_capsule.token_faults.append(reply)

    with time_machine.travel(1_900_000_000, tick=False):
        response = connect(invoke, fake_capsule)

    assert response["statusCode"] == status
    assert 'href="/auth/callback?retry=' in response["body"]  # "Try again": the same session
    assert response["headers"]["Cache-Control"] == "no-store"
    assert connection_items(stack) == []
    assert len(fake_capsule.token_requests) == 1  # never retried blindly


def test_rate_limited_page_says_when_to_come_back(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    fake_capsule.token_faults.append(CAPSULE_FAILURES["429"][0])

    with time_machine.travel(1_900_000_000, tick=False):
        response = connect(invoke, fake_capsule)

    assert response["headers"]["Retry-After"] == "300"


@pytest.mark.parametrize(
    "reply",
    [_json(500, {"message": "boom"}), _json(200, {"nope": 1}), _json(401, {"message": "no"})],
    ids=["5xx", "no user object", "401"],
)
def test_identity_lookup_failure_saves_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, reply: Any
) -> None:
    fake_capsule.api_faults.append(reply)

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 502
    assert connection_items(stack) == []
    (given_back,) = fake_capsule.revoke_requests  # no live grant left that nobody holds
    assert given_back["token_type_hint"] == "refresh_token"
    assert fake_capsule.refresh_tokens == {}


def test_rotated_client_secret_is_read_again_once_on_invalid_client(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)  # caches the old secret
    fake_capsule.client_secret = "rotated-secret"
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.secret_id,
        SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": "rotated-secret"}),
    )

    response = invoke("CallbackFunction", callback_event(started))

    assert response["statusCode"] == 303
    assert [r["client_secret"] for r in fake_capsule.token_requests] == [
        CLIENT_SECRET,
        "rotated-secret",
    ]


def test_invalid_client_with_an_unchanged_secret_is_not_sent_twice(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    fake_capsule.client_secret = "something-else"

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 502
    assert len(fake_capsule.token_requests) == 1


def test_dynamodb_failure_while_saving_gives_a_page_not_a_crash(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule)
    boto3.client("dynamodb").delete_table(TableName=stack.connections_table)

    response = invoke("CallbackFunction", callback_event(started))

    assert response["statusCode"] == 503  # an AWS fault: try again shortly
    assert int(response["headers"]["Retry-After"]) > 0
    assert "nothing was saved" in response["body"]
    assert len(fake_capsule.revoke_requests) == 1
    assert fake_capsule.refresh_tokens == {}


def test_a_failed_give_back_does_not_hide_the_first_error(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    fake_capsule.api_faults.append(_json(500, {"message": "boom"}))
    fake_capsule.revoke_faults.append(requests.ConnectionError("down"))

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 502
    assert "Capsule is unavailable" in response["body"]


# --- races ----------------------------------------------------------------------------


def test_two_simultaneous_callbacks_with_one_state_make_one_token_request(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, atomic_moto: None
) -> None:
    started = start(invoke, fake_capsule)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def race() -> None:
        barrier.wait()
        statuses.append(invoke("CallbackFunction", callback_event(started))["statusCode"])

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [303, 409]  # the other one: "still being completed"
    assert len(fake_capsule.token_requests) == 1


def test_the_two_identity_lookups_are_in_flight_at_the_same_time(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each lookup waits at a barrier for the other: one after the other, the barrier breaks.
    both_sent = threading.Barrier(2, timeout=5)
    send = api.api_request

    def meeting(*args: Any, **kwargs: Any) -> api.APIResponse:
        if args[3] in ("/users/current", "/site"):
            both_sent.wait()
        return send(*args, **kwargs)

    monkeypatch.setattr(api, "api_request", meeting)

    response = connect(invoke, fake_capsule)

    assert response["statusCode"] == 303
    assert not both_sent.broken


def test_the_binding_cookie_is_kept_on_the_path_it_was_set_with(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A custom RedirectUri whose path differs from the route's: the cookie was set there.
    monkeypatch.setenv(
        "REDIRECT_URI", "https://abc123.execute-api.us-east-1.amazonaws.com/capsule/callback"
    )
    started = start(invoke, fake_capsule)

    response = invoke("CallbackFunction", callback_event(started))

    assert response["cookies"][0].startswith(f"{started.cookie_name}={started.nonce}; Max-Age=")
    assert "Path=/capsule/callback;" in response["cookies"][0]
    assert response["headers"]["Location"].startswith("/capsule/callback?connected=")
