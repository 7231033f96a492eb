"""REST hooks kept per connection: subscribed when it becomes active, rotated on reconnect,
checked daily, deleted on disconnect; the hook state the app reads."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine

from capsule_oauth import config, disconnect, get_connection
from capsule_oauth.errors import CapsuleError, ConfigError
from capsule_oauth.flows import hooks as hook_flow
from local.lambda_container import Invoke
from local.stack import Stack
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import CID, T0, seed, stored
from tests.support.hooks import (
    API,
    EVENTS,
    deliver,
    hooks_on,
    subscribe,
    subscribed,
    token_of,
)
from tests.support.sign_in import callback_event, confirm_event, new_session, start

DELIVERY = {"event": "party/created", "payload": [{"id": 1, "updatedAt": "2026-01-01T00:00:00Z"}]}


@pytest.fixture
def hooks_enabled(monkeypatch: pytest.MonkeyPatch, stack: Stack) -> None:
    hooks_on(monkeypatch)


def _item(stack: Stack, connection_id: str = CID) -> str:
    """The connection's whole stored item, as text."""
    item = boto3.client("dynamodb").get_item(
        TableName=stack.connections_table, Key={"connection_id": {"S": connection_id}}
    )["Item"]
    return json.dumps(item, default=str)


def test_hook_events_are_validated_against_capsules_list() -> None:
    settings = config.Settings.from_env(
        {
            "STATE_TABLE_NAME": "s",
            "CONNECTIONS_TABLE_NAME": "c",
            "TOKEN_KEY_ID": "k",
            "CLIENT_CREDENTIALS_SECRET_ID": "x",
            "CAPSULE_HOOK_EVENTS": " party/created, kase/closed ,party/created",
        }
    )
    assert settings.hook_events == ("party/created", "kase/closed")

    with pytest.raises(ConfigError, match=r"party/exploded, parties/created"):
        config.Settings.from_env(
            {
                "STATE_TABLE_NAME": "s",
                "CONNECTIONS_TABLE_NAME": "c",
                "TOKEN_KEY_ID": "k",
                "CLIENT_CREDENTIALS_SECRET_ID": "x",
                "CAPSULE_HOOK_EVENTS": "party/created,party/exploded,parties/created",
            }
        )


def test_no_events_configured_means_hooks_off(stack: Stack, fake_capsule: FakeCapsule) -> None:
    seed(config.settings(), fake_capsule)

    assert subscribe() == "off"
    assert subscribed(fake_capsule) == []
    assert get_connection(CID)["hooks"] == {"status": "off", "events": [], "checked_at": None}


def _connect(invoke: Invoke, fake_capsule: FakeCapsule) -> tuple[dict[str, Any], str]:
    """A new connection's sign-in: the callback's answer and the capsule_result it carries."""
    started = start(invoke, fake_capsule, session=new_session(return_url="/welcome"))
    answer = invoke("CallbackFunction", callback_event(started))
    return answer, parse_qs(urlsplit(answer["headers"]["Location"]).query)["capsule_result"][0]


def test_confirming_subscribes_each_event_with_the_token_in_the_url_and_stores_its_hash(
    hooks_enabled: None, stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    _, result = _connect(invoke, fake_capsule)
    assert subscribed(fake_capsule) == []  # pending: not usable, so no hooks yet

    invoke("ConfirmConnectionFunction", confirm_event(result, "anonymous"))

    hooks = subscribed(fake_capsule)
    assert sorted(h.event for h in hooks) == sorted(EVENTS)
    token = token_of(fake_capsule)
    assert len(token) >= 43  # 256 bits, base64url
    assert {h.target_url for h in hooks} == {f"{API}/capsule-hooks/{token}"}
    assert {h.description for h in hooks} == {f"capsule-connector {CID}"}
    assert stored(config.settings()).hook_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in _item(stack)
    info = get_connection(CID)["hooks"]
    assert info["status"] == "active"
    assert info["events"] == list(EVENTS)
    assert info["checked_at"] is not None


def test_a_user_who_is_not_an_admin_gets_not_admin_and_the_sign_in_still_succeeds(
    hooks_enabled: None, stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    fake_capsule.account = fake_capsule.store.account("northwind")  # Grace is no admin
    page, result = _connect(invoke, fake_capsule)

    confirmed = invoke("ConfirmConnectionFunction", confirm_event(result, "anonymous"))

    assert page["statusCode"] == 303
    assert confirmed["statusCode"] == 200
    assert subscribed(fake_capsule, "northwind") == []
    assert get_connection("northwind:12")["hooks"]["status"] == "not_admin"
    assert get_connection("northwind:12")["hooks"]["events"] == []


def test_a_full_account_gets_limit_reached(hooks_enabled: None, fake_capsule: FakeCapsule) -> None:
    for number in range(20):  # another app holds all 20
        fake_capsule.store.hooks.create(
            "exampleco", "other-app", "party/deleted", f"https://other.test/{number}", ""
        )
    seed(config.settings(), fake_capsule)

    assert subscribe() == "limit_reached"
    assert get_connection(CID)["hooks"]["status"] == "limit_reached"


def test_capsule_failing_leaves_failing_and_never_raises(
    hooks_enabled: None, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)
    fake_capsule.api_faults.append((503, {}, "{}"))

    assert subscribe() == "failing"
    assert get_connection(CID)["hooks"]["status"] == "failing"


def test_a_reconnect_rotates_the_token_deletes_the_old_hooks_and_the_old_url_is_gone(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)
    subscribe()
    old_token = token_of(fake_capsule)
    old_ids = {h.hook_id for h in subscribed(fake_capsule)}

    subscribe()  # what the callback does on a reconnect

    new_token = token_of(fake_capsule)
    assert new_token != old_token
    assert old_ids.isdisjoint(h.hook_id for h in subscribed(fake_capsule))
    assert len(subscribed(fake_capsule)) == len(EVENTS)
    assert deliver(invoke, old_token, DELIVERY) == 410
    assert deliver(invoke, new_token, DELIVERY) == 200


def test_disconnect_deletes_the_hooks_at_capsule_first(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)
    subscribe()
    token = token_of(fake_capsule)

    disconnect(CID)

    assert subscribed(fake_capsule) == []
    deletes = [p for m, p in fake_capsule.api_requests if m == "DELETE"]
    assert len(deletes) == len(EVENTS)
    assert deliver(invoke, token, DELIVERY) == 410
    assert get_connection(CID)["hooks"]["status"] == "off"


def test_a_failure_to_delete_hooks_does_not_block_the_disconnect(
    hooks_enabled: None, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)
    subscribe()
    fake_capsule.api_faults.extend([(503, {}, "{}")] * len(EVENTS))

    assert disconnect(CID).status == "disconnected"


def test_needs_reauth_keeps_the_hooks_but_the_intake_answers_410(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)
    subscribe()
    token = token_of(fake_capsule)
    fake_capsule.revoke_all()  # the person removed the app in Capsule

    with time_machine.travel(T0 + 604799 - 3600, tick=False):
        invoke("RefreshFunction", {"source": "aws.events"})

    assert stored(config.settings()).status == "needs_reauth"
    assert len(subscribed(fake_capsule)) == len(EVENTS)
    assert deliver(invoke, token, DELIVERY) == 410


def _check_run(invoke: Invoke, at: float) -> dict[str, int]:
    with time_machine.travel(at, tick=False):
        report = invoke("RefreshFunction", {"source": "aws.events"})
    hooks: dict[str, int] = report["hooks"]
    return hooks


def test_the_daily_check_recreates_a_hook_capsule_dropped_with_the_same_token(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule, expires_at=int(time.time()) + 10 * 86_400)
    subscribe()
    token = token_of(fake_capsule)
    dropped = next(h for h in subscribed(fake_capsule) if h.event == "party/updated")
    fake_capsule.store.hooks.drop(dropped.hook_id)
    checked = get_connection(CID)["hooks"]["checked_at"]

    assert _check_run(invoke, time.time() + 3600) == {}  # not due yet
    assert _check_run(invoke, time.time() + 86_401) == {"active": 1}

    assert sorted(h.event for h in subscribed(fake_capsule)) == sorted(EVENTS)
    assert token_of(fake_capsule) == token
    assert get_connection(CID)["hooks"]["checked_at"] != checked


def test_the_check_subscribes_afresh_when_every_hook_is_gone_and_deletes_stale_ones(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule, expires_at=int(time.time()) + 10 * 86_400)
    subscribe()
    old = token_of(fake_capsule)
    for hook in subscribed(fake_capsule):
        fake_capsule.store.hooks.drop(hook.hook_id)
    # A hook of ours whose token no connection holds (a subscribe cut short).
    fake_capsule.store.hooks.create(
        "exampleco",
        fake_capsule.store.client_id,
        "party/created",
        f"{API}/capsule-hooks/{'x' * 43}",
        "",
    )

    assert _check_run(invoke, time.time() + 86_401) == {"active": 1}

    assert sorted(h.event for h in subscribed(fake_capsule)) == sorted(EVENTS)
    assert token_of(fake_capsule) != old
    assert deliver(invoke, old, DELIVERY) == 410


def test_a_failing_subscription_is_checked_in_the_next_run(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule, expires_at=int(time.time()) + 10 * 86_400)
    fake_capsule.api_faults.append((503, {}, "{}"))
    assert subscribe() == "failing"

    assert _check_run(invoke, time.time() + 60) == {"active": 1}
    assert get_connection(CID)["hooks"]["status"] == "active"


def test_the_check_reads_only_the_connections_due(
    hooks_enabled: None, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.settings()
    for user in range(1, 4):
        seed(settings, fake_capsule, connection_id=f"exampleco:{user}")
        hook_flow.subscribe_hooks(f"exampleco:{user}", api_base_url=API)
    checked: list[str] = []

    def check(_settings: object, connection_id: str, **_kwargs: object) -> str:
        checked.append(connection_id)
        return "active"

    monkeypatch.setattr(hook_flow, "check_connection_hooks", check)

    assert hook_flow.check_due(settings, remaining_ms=lambda: 300_000) == {}
    assert checked == []


def test_without_a_base_url_the_fixed_redirect_uri_names_the_api(
    hooks_enabled: None, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIRECT_URI", "https://connect.example.com/auth/callback")
    config.settings.cache_clear()
    seed(config.settings(), fake_capsule)

    assert hook_flow.subscribe_hooks(CID) == "active"  # the confirm step has no callback URL

    token = token_of(fake_capsule)
    assert {h.target_url for h in subscribed(fake_capsule)} == {
        f"https://connect.example.com/capsule-hooks/{token}"
    }


def test_the_api_base_is_the_callback_url_without_its_path() -> None:
    assert (
        hook_flow.api_base_from_callback("https://abc.execute-api.x.amazonaws.com/auth/callback")
        == "https://abc.execute-api.x.amazonaws.com"
    )
    assert hook_flow.api_base_from_callback("http://localhost:3000/auth/callback") == (
        "http://localhost:3000"
    )
    assert hook_flow.api_base_from_callback("https://x.test/oauth/back") == "https://x.test"


def test_a_disconnect_that_fails_after_deleting_the_hooks_has_them_subscribed_in_the_next_run(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule, expires_at=int(time.time()) + 10 * 86_400)
    subscribe()
    fake_capsule.revoke_faults.extend([(503, {}, "{}")] * 4)

    with pytest.raises(CapsuleError):
        disconnect(CID)

    assert stored(config.settings()).status == "active"
    assert subscribed(fake_capsule) == []
    assert get_connection(CID)["hooks"]["status"] == "failing"
    assert _check_run(invoke, time.time() + 60) == {"active": 1}
    assert sorted(h.event for h in subscribed(fake_capsule)) == sorted(EVENTS)


def test_turning_hooks_off_deletes_them_in_the_next_check_and_the_url_is_gone(
    hooks_enabled: None, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(config.settings(), fake_capsule, expires_at=int(time.time()) + 10 * 86_400)
    subscribe()
    token = token_of(fake_capsule)
    monkeypatch.setenv("CAPSULE_HOOK_EVENTS", "")
    config.settings.cache_clear()

    assert _check_run(invoke, time.time() + 86_401) == {"off": 1}

    assert subscribed(fake_capsule) == []
    assert get_connection(CID)["hooks"]["status"] == "off"
    assert deliver(invoke, token, DELIVERY) == 410
    with time_machine.travel(time.time() + 2 * 86_401, tick=False):
        assert "hooks" not in invoke("RefreshFunction", {"source": "aws.events"})
