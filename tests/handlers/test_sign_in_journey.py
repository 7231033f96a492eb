"""A sign-in with no dead ends: every page says what happened and offers a way that works.

Given / when / then for each page a person can meet around the callback: after success,
coming back to it, and each failure, with the links those pages offer followed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine

from capsule_oauth import config
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import FakeCapsule
from tests.support.sign_in import Started, callback_event, follow, new_session, start, with_session

APP = "https://app.example.com"
T0 = 1_900_000_000


@pytest.fixture(autouse=True)
def _app_origin(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_RETURN_ORIGINS", APP)
    config.settings.cache_clear()


def begin(invoke: Invoke, fake: FakeCapsule, return_url: str = f"{APP}/crm") -> Started:
    return start(invoke, fake, session=new_session("user-42", return_url))


def callback(invoke: Invoke, started: Started, *, cookie: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = invoke("CallbackFunction", callback_event(started, cookie=cookie))
    return answer


def links(page: dict[str, Any]) -> list[str]:
    body: str = page["body"]
    return [part.split('"', 1)[0].replace("&amp;", "&") for part in body.split('href="')[1:]]


def connections(stack: Stack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=stack.connections_table)[
        "Items"
    ]
    return found


# --- coming back to a completed sign-in ------------------------------------------------------


def test_a_reload_after_success_says_already_connected_with_the_same_way_back(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = begin(invoke, fake_capsule)
    first = callback(invoke, started)
    before = connections(stack)

    reloaded = callback(invoke, started)

    assert reloaded["statusCode"] == 200
    assert "Already connected to Example Co. as Scott Spacey" in reloaded["body"]
    (back,) = links(reloaded)
    assert back == first["headers"]["Location"]  # the same capsule_* query, result included
    assert "capsule_result=" in back
    assert "Back to app.example.com" in reloaded["body"]
    assert len(fake_capsule.token_requests) == 1  # Capsule was called for nothing
    assert connections(stack) == before


def test_back_and_approving_again_finds_the_sign_in_already_connected(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = begin(invoke, fake_capsule)
    callback(invoke, started)
    live = dict(fake_capsule.refresh_tokens)
    # Back to Capsule's consent, approved again: a new code with the same state.
    started.code = fake_capsule.issue_code(
        "https://abc123.execute-api.us-east-1.amazonaws.com/auth/callback", started.challenge
    )

    again = callback(invoke, started)

    assert again["statusCode"] == 200
    assert "Already connected" in again["body"]
    assert len(fake_capsule.token_requests) == 1  # the new code was never exchanged
    assert fake_capsule.refresh_tokens == live


def test_another_browser_presenting_a_completed_callback_is_refused_and_changes_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = begin(invoke, fake_capsule)
    callback(invoke, started)
    before = connections(stack)

    other = callback(invoke, started, cookie="")

    assert other["statusCode"] == 400
    assert "This sign-in was already completed" in other["body"]
    assert "capsule_result" not in other["body"]
    assert links(other) == []
    assert connections(stack) == before
    assert len(fake_capsule.token_requests) == 1


def test_without_a_return_url_the_connected_page_survives_a_reload_in_its_browser_only(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIRM_CONNECTIONS", "false")
    config.settings.cache_clear()
    with time_machine.travel(T0, tick=False):
        started = start(invoke, fake_capsule, session=new_session("user-42"))
        answer = callback(invoke, started)

        pages = [follow(invoke, answer, started) for _ in range(2)]

    assert [page["statusCode"] for page in pages] == [200, 200]
    assert pages[0]["body"] == pages[1]["body"]
    assert "Connected to Example Co. as Scott Spacey" in pages[1]["body"]
    with time_machine.travel(T0 + 700, tick=False):  # after StateTtlSeconds
        expired = follow(invoke, answer, started)
    assert expired["statusCode"] == 410
    assert "Go back to the app" in expired["body"]
    started.nonce = "N" * 43  # another browser
    with time_machine.travel(T0 + 1, tick=False):
        assert follow(invoke, answer, started)["statusCode"] == 400


# --- failures that say what happened -----------------------------------------------------------


def test_a_missing_cookie_says_so_and_offers_the_way_back_to_the_app(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = begin(invoke, fake_capsule)

    page = callback(invoke, started, cookie="")

    assert page["statusCode"] == 400
    assert "sign-in cookie is missing" in page["body"]
    assert "cookies are blocked" in page["body"]
    assert links(page) == [f"{APP}/crm?capsule_status=error&capsule_error=BindingMismatch"]
    assert fake_capsule.token_requests == []


def test_an_expired_state_says_it_took_too_long(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(T0, tick=False):
        started = begin(invoke, fake_capsule)
    with time_machine.travel(T0 + 601, tick=False):
        page = callback(invoke, started)

    assert "This sign-in took too long" in page["body"]
    assert links(page) == [f"{APP}/crm?capsule_status=error&capsule_error=StateExpired"]


def test_a_connect_link_opened_again_after_success_says_it_was_used_with_the_way_back(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", f"{APP}/crm")
    callback(invoke, start(invoke, fake_capsule, session=token))

    page = invoke("StartFunction", with_session(load_event("start.json"), token))

    assert page["statusCode"] == 400
    assert "This connect link was already used" in page["body"]
    assert links(page) == [f"{APP}/crm?capsule_status=error&capsule_error=SessionFinished"]


def test_try_again_re_opens_the_same_connect_session_while_it_lives(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = begin(invoke, fake_capsule)
    fake_capsule.token_faults.append((503, {}, "{}"))
    failed = callback(invoke, started)
    assert "Capsule is unavailable" in failed["body"]
    retry, back = links(failed)
    assert retry.startswith("/auth/callback?retry=")
    assert back == f"{APP}/crm?capsule_status=error&capsule_error=Unavailable"

    again = follow(invoke, {"statusCode": 303, "headers": {"Location": retry}}, started)

    assert again["statusCode"] == 302  # a new sign-in, on to Capsule
    assert urlsplit(again["headers"]["Location"]).path == "/oauth/authorise"
    query = parse_qs(urlsplit(again["headers"]["Location"]).query)
    assert query["state"] != [started.state]
    assert again["cookies"][0].startswith("__Secure-capsule_oauth_binding_")


def test_try_again_once_the_session_is_finished_says_to_start_in_the_app(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", f"{APP}/crm")
    first, second = (start(invoke, fake_capsule, session=token) for _ in "12")
    fake_capsule.token_faults.append((503, {}, "{}"))
    failed = callback(invoke, first)
    retry = links(failed)[0]
    callback(invoke, second)  # the other tab finished the session

    page = follow(invoke, {"statusCode": 303, "headers": {"Location": retry}}, first)

    assert page["statusCode"] == 400
    assert "already used" in page["body"]
    assert links(page) == [f"{APP}/crm?capsule_status=error&capsule_error=SessionFinished"]
    # ... and the failure page itself no longer offers it.
    assert [link for link in links(callback(invoke, first)) if "retry" in link] == []


def test_a_completed_sign_in_opened_after_its_time_says_completed_and_changes_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(T0, tick=False):
        started = begin(invoke, fake_capsule)
        callback(invoke, started)
    before = connections(stack)

    with time_machine.travel(T0 + 700, tick=False):  # past StateTtlSeconds
        late = callback(invoke, started)

    assert late["statusCode"] == 400
    assert "This sign-in was already completed" in late["body"]
    assert connections(stack) == before
    assert len(fake_capsule.token_requests) == 1
