"""Connections from before owners existed, and grants a reconnect replaces."""

from __future__ import annotations

import boto3
import pytest
import time_machine

from capsule_oauth import owners
from capsule_oauth.config import Settings
from capsule_oauth.store.connections import ConnectionStore
from local.lambda_container import Invoke
from local.stack import Stack
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, run_refresh, seed, stored
from tests.support.sign_in import callback_event, start

# The sign-in's own mechanics: confirming new connections is tested in test_confirm.py.
pytestmark = pytest.mark.usefixtures("applied_at_once")


def test_a_connection_saved_before_owners_reads_as_anonymous_and_joins_the_index_on_refresh(
    settings: Settings, fake_capsule: FakeCapsule, stack: Stack
) -> None:
    seed(settings, fake_capsule)
    boto3.client("dynamodb").update_item(  # as an item written before this version
        TableName=stack.connections_table,
        Key={"connection_id": {"S": CID}},
        UpdateExpression="REMOVE #o",
        ExpressionAttributeNames={"#o": "owner"},
    )
    store = ConnectionStore(settings)
    assert stored(settings).owner == owners.ANONYMOUS
    assert store.list_for_owner(owners.ANONYMOUS) == []

    with time_machine.travel(T0 + EXPIRES_IN - 3600, tick=False):
        run_refresh(settings)

    assert [c.connection_id for c in store.list_for_owner(owners.ANONYMOUS)] == [CID]


def test_reconnecting_without_a_session_revokes_the_grant_it_replaced(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")
    first = start(invoke, fake_capsule, "start-return-to.json")  # sessionless
    invoke("CallbackFunction", callback_event(first))
    store = ConnectionStore(Settings.from_env())
    old = store.tokens(stored(Settings.from_env()))

    again = start(invoke, fake_capsule, "start-return-to.json")
    invoke("CallbackFunction", callback_event(again))

    assert old.refresh_token not in fake_capsule.refresh_tokens
    assert store.tokens(stored(Settings.from_env())).refresh_token in fake_capsule.refresh_tokens
