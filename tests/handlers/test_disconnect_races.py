"""A disconnect that a reconnect overtakes: the reconnect's grant stays, and the caller is
told the connection changed (409 connection_changed; ConnectionChanged in Python)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import time_machine

from capsule_oauth import ConnectionChanged, disconnect
from capsule_oauth.config import Settings
from capsule_oauth.flows import disconnect as disconnect_flow
from capsule_oauth.store import connections, crypto
from capsule_oauth.store.connections import ConnectionStore
from local.lambda_container import Invoke
from local.stack import load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import T0, seed_owned, stored

LATER = T0 + 3600


@pytest.fixture
def reconnect_during_revocation(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], dict[str, Any]]:
    """While disconnect revokes at Capsule, the person reconnects (the callback's save)."""

    def arrange(cid: str) -> dict[str, Any]:
        new = fake_capsule.issue_grant()
        revoke_both = disconnect_flow._revoke_both  # the moment to race

        def revoke_then_reconnect(settings: Settings, tokens: crypto.TokenPair) -> None:
            revoke_both(settings, tokens)
            current = stored(settings, cid)
            ConnectionStore(settings).save_authorized(
                connections.Identity(
                    current.subdomain, current.site_name, current.site_url, current.user_id,
                    current.user_name, current.username, owner=current.owner,
                ),
                crypto.TokenPair(new["access_token"], new["refresh_token"]),
                expires_at=LATER + EXPIRES_IN,
                scope="read write",
                refresh_due_at=LATER + EXPIRES_IN - 86_400,
                now=LATER,
            )  # fmt: skip

        monkeypatch.setattr(disconnect_flow, "_revoke_both", revoke_then_reconnect)
        return new

    return arrange


def test_python_disconnect_raced_by_a_reconnect_raises_connection_changed(
    settings: Settings,
    fake_capsule: FakeCapsule,
    reconnect_during_revocation: Callable[[str], dict[str, Any]],
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    new = reconnect_during_revocation(cid)

    with time_machine.travel(LATER, tick=False), pytest.raises(ConnectionChanged):
        disconnect(cid)

    after = stored(settings, cid)
    assert (after.status, after.lease_owner) == ("active", None)
    assert ConnectionStore(settings).tokens(after).access_token == new["access_token"]


def test_delete_raced_by_a_reconnect_is_a_409_connection_changed(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    reconnect_during_revocation: Callable[[str], dict[str, Any]],
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    reconnect_during_revocation(cid)
    event = load_event("disconnect.json")
    event["pathParameters"] = {"connection_id": cid}

    with time_machine.travel(LATER, tick=False):
        answer = invoke("DisconnectFunction", event)

    assert answer["statusCode"] == 409
    body = json.loads(answer["body"])
    assert body["error"] == "connection_changed"
    assert body["message"].endswith(".")
    assert stored(settings, cid).status == "active"
