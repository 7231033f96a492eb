"""get_access_token and CapsuleClient: what the rest of an integration calls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import time_machine

from capsule_oauth import (
    CapsuleClient,
    CapsuleRateLimited,
    ConnectionNotFound,
    ReauthorizationRequired,
    TokenUnavailable,
    get_access_token,
    tokens,
)
from capsule_oauth.config import Settings
from capsule_oauth.store import aws, connections
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, refresh_requests, seed, stored, stored_tokens

FRESH = T0 + 3600  # a week before expiry
NEAR_EXPIRY = T0 + EXPIRES_IN - 120  # inside the 5 minute margin


def aws_calls(settings: Settings) -> list[str]:
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    aws.dynamodb().meta.events.register("before-call.*.*", record)
    aws.kms().meta.events.register("before-call.*.*", record)
    return calls


def test_a_fresh_token_costs_one_read_and_one_decrypt_then_nothing(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)
    tokens.clear_cache()
    calls = aws_calls(settings)

    with time_machine.travel(FRESH, tick=False):
        first = get_access_token(CID)
        second = get_access_token(CID)

    assert first == second == grant["access_token"]
    assert calls == ["GetItem", "Decrypt"]
    assert fake_capsule.token_requests == []


def test_a_token_near_expiry_is_refreshed_on_demand(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)

    with time_machine.travel(NEAR_EXPIRY, tick=False):
        token = get_access_token(CID)

    assert token != grant["access_token"]
    assert token == stored_tokens(settings).access_token
    assert len(refresh_requests(fake_capsule)) == 1
    assert stored(settings).lease_owner is None


def test_the_cache_expires_with_the_token(settings: Settings, fake_capsule: FakeCapsule) -> None:
    grant = seed(settings, fake_capsule)
    with time_machine.travel(FRESH, tick=False):
        assert get_access_token(CID) == grant["access_token"]

    with time_machine.travel(NEAR_EXPIRY, tick=False):
        token = get_access_token(CID)

    assert token != grant["access_token"]


def test_an_unknown_connection_says_so(settings: Settings, fake_capsule: FakeCapsule) -> None:
    with pytest.raises(ConnectionNotFound, match="connect it first"):
        get_access_token("nobody:0")


def test_a_revoked_grant_asks_for_reauthorisation(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.revoke_all()

    with time_machine.travel(NEAR_EXPIRY, tick=False), pytest.raises(ReauthorizationRequired):
        get_access_token(CID)

    assert stored(settings).status == "needs_reauth"
    with time_machine.travel(NEAR_EXPIRY, tick=False), pytest.raises(ReauthorizationRequired):
        get_access_token(CID)  # and it does not try Capsule again
    assert len(fake_capsule.token_requests) == 1


def test_capsule_down_near_expiry_still_returns_the_valid_token(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)
    fake_capsule.token_faults.append((503, {}, "{}"))

    with time_machine.travel(NEAR_EXPIRY, tick=False):
        token = get_access_token(CID)

    assert token == grant["access_token"]  # two minutes left: still usable
    assert stored(settings).failure_count == 1


def test_capsule_down_after_expiry_is_token_unavailable(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.append((503, {}, "{}"))

    with time_machine.travel(T0 + EXPIRES_IN + 10, tick=False), pytest.raises(TokenUnavailable):
        get_access_token(CID)


def test_a_lease_held_too_long_elsewhere_is_token_unavailable_once_the_token_expired(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(settings, fake_capsule, expires_at=T0 + 60)
    connections.ConnectionStore(settings).acquire_lease(
        CID, owner="elsewhere", now=T0 + 61, lease_seconds=3600
    )
    monkeypatch.setattr(tokens, "_POLL_SECONDS", 0.0)

    with time_machine.travel(T0 + 61, tick=True), pytest.raises(TokenUnavailable):
        get_access_token(CID, settings=replace(settings, lease_wait_seconds=0.05))

    assert fake_capsule.token_requests == []


def test_a_lease_held_too_long_elsewhere_serves_the_stored_token_while_it_is_valid(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = seed(settings, fake_capsule, expires_at=T0 + 60)  # refreshed in its last 30 s
    connections.ConnectionStore(settings).acquire_lease(
        CID, owner="elsewhere", now=T0 + 40, lease_seconds=3600
    )
    monkeypatch.setattr(tokens, "_POLL_SECONDS", 0.0)

    with time_machine.travel(T0 + 40, tick=True):
        token = get_access_token(CID, settings=replace(settings, lease_wait_seconds=0.05))

    assert token == grant["access_token"]  # 20 s left: better than no token at all
    assert fake_capsule.token_requests == []


def _rate_limited(reset: int) -> tuple[int, dict[str, str], str]:
    return (429, {"X-RateLimit-Reset": str(reset)}, '{"error": "rate limit reached"}')


EXPIRED = T0 + EXPIRES_IN + 10


def test_after_a_429_no_caller_asks_capsule_again_before_its_reset(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.token_faults.extend([_rate_limited(EXPIRED + 45)] * 20)
    waits = []

    for second in range(0, 40, 4):  # ten callers in the 45 s before the reset
        tokens.clear_cache()  # each one a container of its own
        at = time_machine.travel(EXPIRED + second, tick=False)
        with at, pytest.raises(TokenUnavailable) as raised:
            get_access_token(CID)
        waits.append(raised.value.retry_after)

    assert len(refresh_requests(fake_capsule)) == 1
    assert waits == [45 - second for second in range(0, 40, 4)]  # the time to the reset
    assert stored(settings).failure_count == 0
    fake_capsule.token_faults.clear()
    with time_machine.travel(EXPIRED + 45, tick=False):
        assert get_access_token(CID) == stored_tokens(settings).access_token
    assert len(refresh_requests(fake_capsule)) == 2


def test_a_429_near_expiry_serves_the_stored_token_and_waits_for_the_reset(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)
    fake_capsule.token_faults.extend([_rate_limited(NEAR_EXPIRY + 30)] * 2)

    for second in (0, 10, 20):
        tokens.clear_cache()
        with time_machine.travel(NEAR_EXPIRY + second, tick=False):
            assert get_access_token(CID) == grant["access_token"]  # still valid: served

    assert len(refresh_requests(fake_capsule)) == 1


# --- CapsuleClient -----------------------------------------------------------------------


def test_client_calls_the_api_with_the_bearer_token_and_keeps_rate_limits(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)

    with time_machine.travel(FRESH, tick=False):
        client = CapsuleClient(CID)
        body = client.get("/parties", params={"perPage": 100})

    answered = fake_capsule.mock.calls[-1].response.json()  # type: ignore[union-attr]
    assert body == answered  # Capsule's JSON, as Capsule sent it
    assert body["parties"]
    assert fake_capsule.mock.calls[-1].request.headers["Authorization"] == (
        f"Bearer {grant['access_token']}"
    )
    assert client.rate_limit is not None
    assert client.rate_limit.remaining == 3999


def test_client_on_401_refreshes_once_and_retries_once(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.api_faults.append((401, {}, '{"message": "token expired"}'))

    with time_machine.travel(FRESH, tick=False):
        body = CapsuleClient(CID).get("/parties")

    assert body["parties"]
    assert len(refresh_requests(fake_capsule)) == 1
    assert fake_capsule.api_requests == [("GET", "/parties"), ("GET", "/parties")]


def test_client_gives_up_after_the_retry_also_gets_401(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.api_faults.extend([(401, {}, '{"message": "no"}')] * 2)

    with time_machine.travel(FRESH, tick=False), pytest.raises(Exception, match="401"):
        CapsuleClient(CID).get("/parties")

    assert len(refresh_requests(fake_capsule)) == 1
    assert len(fake_capsule.api_requests) == 2


def test_client_on_429_raises_with_the_reset_time(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.api_faults.append(
        (429, {"X-RateLimit-Reset": str(FRESH + 1800)}, '{"error": "rate limit reached"}')
    )

    with time_machine.travel(FRESH, tick=False), pytest.raises(CapsuleRateLimited) as raised:
        CapsuleClient(CID).get("/parties")

    assert raised.value.reset_at == FRESH + 1800
    assert len(fake_capsule.api_requests) == 1  # never hammered
