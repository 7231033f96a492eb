"""disconnect: revoke at Capsule first, then forget the tokens; a Capsule fault changes nothing."""

from __future__ import annotations

import dataclasses
import io

import boto3
import pytest
import responses
import time_machine

from capsule_oauth import (
    CapsuleUnavailable,
    ConnectionNotFound,
    ReauthorizationRequired,
    TokenUnavailable,
    disconnect,
    get_access_token,
)
from capsule_oauth.config import Settings
from capsule_oauth.errors import RevocationUnsupported
from capsule_oauth.store import connections
from local.stack import Stack
from tests.support.capsule_fake import CLIENT_ID, EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, run_refresh, seed, stored

LATER = T0 + 3600


def test_disconnect_revokes_the_grant_at_capsule(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)

    with time_machine.travel(LATER, tick=False):
        disconnect(CID)

    # Both tokens: the grant first, then the access token it issued.
    sent, then = fake_capsule.revoke_requests
    assert sent["token"] == grant["refresh_token"]
    assert sent["token_type_hint"] == "refresh_token"
    assert sent["client_id"] == CLIENT_ID
    assert then["token"] == grant["access_token"]
    assert then["token_type_hint"] == "access_token"
    assert grant["refresh_token"] not in fake_capsule.refresh_tokens


def test_disconnect_forgets_the_tokens_and_leaves_the_schedule(
    settings: Settings, fake_capsule: FakeCapsule, stack: Stack
) -> None:
    seed(settings, fake_capsule)

    with time_machine.travel(LATER, tick=False):
        result = disconnect(CID)

    assert result.status == "disconnected"
    item = boto3.client("dynamodb").get_item(
        TableName=stack.connections_table, Key={"connection_id": {"S": CID}}
    )["Item"]
    assert "tokens" not in item
    assert "refresh_queue" not in item
    assert item["site_name"]["S"] == "Example Co."  # the record stays
    with time_machine.travel(T0 + 604799, tick=False):
        assert run_refresh(settings).due == 0


def test_a_disconnected_connection_asks_for_reauthorisation(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    with time_machine.travel(LATER, tick=False):
        get_access_token(CID)  # warm this container's cache
        disconnect(CID)

        with pytest.raises(ReauthorizationRequired, match="disconnected"):
            get_access_token(CID)


def test_capsule_failing_to_revoke_changes_nothing(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    before = stored(settings)
    fake_capsule.revoke_faults.append((503, {}, "{}"))

    with time_machine.travel(LATER, tick=False), pytest.raises(CapsuleUnavailable):
        disconnect(CID)

    after = stored(settings)
    assert (after.status, after.tokens, after.version) == ("active", before.tokens, before.version)
    assert after.lease_owner is None


def test_an_already_dead_grant_still_disconnects(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.revoke_faults.append((400, {}, '{"error": "invalid_grant"}'))

    with time_machine.travel(LATER, tick=False):
        assert disconnect(CID).status == "disconnected"


def test_the_other_revocation_path_is_tried_when_the_first_is_missing(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.revoke_faults.append((404, {}, "{}"))
    fake_capsule.mock.add(
        responses.POST, f"{fake_capsule.base_url}/oauth/token/revoke", json={}, status=200
    )

    with time_machine.travel(LATER, tick=False):
        assert disconnect(CID).status == "disconnected"

    paths = [call.request.path_url for call in fake_capsule.mock.calls]
    assert paths[:2] == ["/oauth/revoke", "/oauth/token/revoke"]


def test_without_any_revocation_endpoint_nothing_changes_unless_forced(
    settings: Settings, fake_capsule: FakeCapsule, log_output: io.StringIO
) -> None:
    seed(settings, fake_capsule)
    before = stored(settings)
    fake_capsule.revoke_faults.extend([(404, {}, "{}"), (404, {}, "{}")])

    with time_machine.travel(LATER, tick=False), pytest.raises(RevocationUnsupported):
        disconnect(CID)

    after = stored(settings)
    assert (after.status, after.tokens, after.version) == ("active", before.tokens, before.version)
    assert after.lease_owner is None


def test_forced_disconnect_forgets_the_tokens_when_capsule_cannot_revoke(
    settings: Settings, fake_capsule: FakeCapsule, log_output: io.StringIO
) -> None:
    seed(settings, fake_capsule)
    fake_capsule.revoke_faults.append((503, {}, "{}"))

    with time_machine.travel(LATER, tick=False):
        result = disconnect(CID, force=True)

    assert (result.status, result.revoked, result.forgotten) == ("disconnected", False, True)
    after = stored(settings)
    assert (after.status, after.tokens, after.disconnect_reason) == (
        "disconnected",
        b"",
        "forgotten",
    )
    assert "forgetting the tokens here anyway (forced)" in log_output.getvalue()
    with time_machine.travel(LATER, tick=False), pytest.raises(ReauthorizationRequired):
        get_access_token(CID)


def test_forced_disconnect_still_revokes_when_capsule_can(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    grant = seed(settings, fake_capsule)

    with time_machine.travel(LATER, tick=False):
        result = disconnect(CID, force=True)

    assert (result.revoked, result.forgotten) == (True, True)
    assert grant["refresh_token"] not in fake_capsule.refresh_tokens
    assert stored(settings).disconnect_reason == "revoked"


def test_client_secret_basic_works_against_capsule_for_refresh_and_revoke(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    basic = dataclasses.replace(settings, token_auth_method="client_secret_basic")

    with time_machine.travel(T0 + EXPIRES_IN - 3600, tick=False):
        assert run_refresh(basic).outcomes == {"refreshed": 1}
        disconnect(CID, settings=basic)

    assert fake_capsule.refresh_tokens == {}  # the rotated grant is revoked at Capsule
    sent = [call.request for call in fake_capsule.mock.calls]
    assert len(sent) == 3  # one refresh, two revocations
    assert all(str(request.headers["Authorization"]).startswith("Basic ") for request in sent)
    assert all("client_secret" not in str(request.body) for request in sent)


def test_disconnect_waits_for_a_refresh_in_progress(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    connections.ConnectionStore(settings).acquire_lease(
        CID, owner="refresher", now=LATER, lease_seconds=60
    )

    with time_machine.travel(LATER, tick=False), pytest.raises(TokenUnavailable):
        disconnect(CID)

    assert fake_capsule.revoke_requests == []


def test_disconnecting_an_unknown_connection_says_so(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    with pytest.raises(ConnectionNotFound):
        disconnect("nobody:0")


def test_disconnecting_twice_is_harmless(settings: Settings, fake_capsule: FakeCapsule) -> None:
    seed(settings, fake_capsule)
    with time_machine.travel(LATER, tick=False):
        disconnect(CID)
        again = disconnect(CID)

    assert (again.status, again.revoked, again.forgotten) == ("disconnected", False, False)
    assert len(fake_capsule.revoke_requests) == 2  # once: the refresh and the access token
    assert stored(settings).lease_owner is None


def test_connecting_again_after_disconnecting_makes_it_active(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    seed(settings, fake_capsule)
    with time_machine.travel(LATER, tick=False):
        disconnect(CID)

    grant = seed(settings, fake_capsule, now=LATER)

    with time_machine.travel(LATER, tick=False):
        assert get_access_token(CID) == grant["access_token"]
    assert stored(settings).status == "active"
