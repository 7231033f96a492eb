"""The access-token route never serves a token the connection no longer holds: once a
disconnect or a reconnect has answered (in any container), the next call knows."""

from __future__ import annotations

import json
from typing import Any

import pytest
import time_machine

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.flows import disconnect as disconnect_flow
from capsule_oauth.store import connections, crypto
from capsule_oauth.store.connections import ConnectionStore
from capsule_oauth.tokens import get_access_token
from local.lambda_container import Invoke
from local.stack import load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import T0, seed_owned

LATER = T0 + 3600


def access_token(invoke: Invoke, cid: str) -> tuple[int, dict[str, Any]]:
    event = load_event("access-token.json")
    event["pathParameters"] = {"connection_id": cid}
    with time_machine.travel(LATER, tick=False):
        answer = invoke("AccessTokenFunction", event)
    return answer["statusCode"], json.loads(answer["body"])


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """What another container does cannot empty this container's token cache."""
    monkeypatch.setattr(disconnect_flow, "forget", lambda _: None)


@pytest.mark.parametrize("event_file", ["disconnect.json", "disconnect-force.json"])
def test_after_a_disconnect_elsewhere_the_route_answers_409_not_the_cached_token(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    elsewhere: None,
    event_file: str,
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")
    assert access_token(invoke, cid)[1]["access_token"] == grant["access_token"]  # now cached
    if event_file == "disconnect-force.json":  # Capsule cannot revoke: forgotten here only
        fake_capsule.revoke_faults.extend([(404, {}, "{}"), (404, {}, "{}")])
    event = load_event(event_file)
    event["pathParameters"] = {"connection_id": cid}
    with time_machine.travel(LATER, tick=False):
        assert invoke("DisconnectFunction", event)["statusCode"] in {200, 204}

    status, body = access_token(invoke, cid)

    assert (status, body["error"]) == (409, "reauthorization_required")
    assert grant["access_token"] not in json.dumps(body)


def test_after_a_reconnect_elsewhere_the_route_answers_the_new_token(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")
    assert access_token(invoke, cid)[1]["access_token"] == grant["access_token"]
    current = ConnectionStore(settings).get(cid)
    assert current is not None
    new = fake_capsule.issue_grant()
    ConnectionStore(settings).save_authorized(  # what the callback of a reconnect writes
        connections.Identity(
            current.subdomain, current.site_name, current.site_url, current.user_id,
            current.user_name, current.username, owner="user-42",
        ),
        crypto.TokenPair(new["access_token"], new["refresh_token"]),
        expires_at=LATER + EXPIRES_IN,
        scope="read write",
        refresh_due_at=LATER + EXPIRES_IN - 86_400,
        now=LATER,
    )  # fmt: skip

    status, body = access_token(invoke, cid)

    assert (status, body["access_token"]) == (200, new["access_token"])


def test_python_get_access_token_keeps_its_token_cache_seconds_trust(
    settings: Settings, fake_capsule: FakeCapsule, elsewhere: None
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")
    with time_machine.travel(LATER, tick=False):
        assert get_access_token(cid) == grant["access_token"]
        current = ConnectionStore(settings).acquire_lease(cid, owner="other", now=LATER)
        assert current is not None
        ConnectionStore(settings).mark_disconnected(
            current, owner="other", now=LATER, reason="revoked"
        )

        assert get_access_token(cid) == grant["access_token"]  # documented: up to 60 s


def test_when_the_lease_wait_ends_a_still_valid_stored_token_is_served(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 30 s left: inside the refresh margin, so the route wants a refresh, but still valid.
    cid, grant = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN + 30)
    ConnectionStore(settings).acquire_lease(cid, owner="stuck", now=LATER, lease_seconds=60)
    monkeypatch.setenv("LEASE_WAIT_SECONDS", "0.3")
    config.settings.cache_clear()

    status, body = access_token(invoke, cid)

    assert (status, body["access_token"]) == (200, grant["access_token"])
    assert body["expires_at"] == LATER + 30
    assert fake_capsule.token_requests == []  # the lease holder's refresh was not doubled


def test_when_the_lease_wait_ends_on_an_expired_token_it_is_a_503(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN - 1)
    ConnectionStore(settings).acquire_lease(cid, owner="stuck", now=LATER, lease_seconds=60)
    monkeypatch.setenv("LEASE_WAIT_SECONDS", "0.3")
    config.settings.cache_clear()

    status, body = access_token(invoke, cid)

    assert (status, body["error"]) == (503, "token_unavailable")
