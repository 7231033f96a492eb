"""Confirming new connections: a connect link forwarded to someone else hands nothing over.

A new connection is saved pending; only the app's confirm of its ``capsule_result`` for the
owner whose link started the sign-in makes it usable. Given / when / then for each rule.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine
from botocore.client import BaseClient

from capsule_oauth import (
    ConnectionNotFound,
    OwnerMismatch,
    ReauthorizationRequired,
    config,
    confirm_connection,
    create_connect_session,
    get_access_token,
    get_connection,
    list_connections,
)
from capsule_oauth.errors import InvalidConnectSessionRequest
from capsule_oauth.status_events import transition
from capsule_oauth.store.connections import Connection, ConnectionStore
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule
from tests.support.connections import refresh_requests, run_refresh
from tests.support.sign_in import callback_event, confirm_event, new_session, start
from tests.support.status_events import StatusEvents

T0 = 1_900_000_000
OWNER = "user-42"


def sign_in(
    invoke: Invoke,
    fake: FakeCapsule,
    owner: str = OWNER,
    *,
    reconnect: str | None = None,
    return_url: str | None = "/welcome",
) -> dict[str, list[str]]:
    """A person follows ``owner``'s connect link and approves: the return URL's query."""
    token = new_session(owner, return_url, reconnect_connection_id=reconnect)
    answer = invoke("CallbackFunction", callback_event(start(invoke, fake, session=token)))
    assert answer["statusCode"] == 303
    return parse_qs(urlsplit(answer["headers"]["Location"]).query)


def confirm(invoke: Invoke, result: str, owner: str) -> tuple[int, dict[str, Any]]:
    answer = invoke("ConfirmConnectionFunction", confirm_event(result, owner))
    return answer["statusCode"], json.loads(answer["body"])


def items(stack: Stack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = boto3.client("dynamodb").scan(TableName=stack.connections_table)[
        "Items"
    ]
    return found


def access_token(invoke: Invoke, connection_id: str) -> dict[str, Any]:
    event = load_event("access-token.json")
    event["pathParameters"] = {"connection_id": connection_id}
    answer: dict[str, Any] = invoke("AccessTokenFunction", event)
    return answer


# --- the forwarded link ----------------------------------------------------------------------


def test_a_forwarded_link_confirmed_for_another_owner_is_refused_and_discarded(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    # user-42 forwards their link; the victim signs in to their own Capsule in their browser.
    back = sign_in(invoke, fake_capsule, OWNER)
    assert len(fake_capsule.refresh_tokens) == 1  # the victim's grant, live at Capsule

    # The victim lands in the app, signed in as themselves (user-7): the app confirms for them.
    status, body = confirm(invoke, back["capsule_result"][0], "user-7")

    assert (status, body["error"]) == (403, "owner_mismatch")
    assert fake_capsule.refresh_tokens == {}  # the grant was revoked at Capsule
    assert len(fake_capsule.revoke_requests) == 2  # both tokens
    assert items(stack) == []
    assert status_events.published() == []
    # The code is dead, even for the owner whose link it was.
    assert confirm(invoke, back["capsule_result"][0], OWNER)[0] == 404


def test_confirmed_for_its_owner_the_connection_becomes_active_and_created_once(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    with time_machine.travel(T0, tick=False):
        back = sign_in(invoke, fake_capsule, OWNER)
        (connection_id,) = back["capsule_connection_id"]
        assert back["capsule_status"] == ["connected"]
        assert status_events.published() == []  # pending: nothing to tell yet

        status, body = confirm(invoke, back["capsule_result"][0], OWNER)

    assert status == 200
    assert body["connection_id"] == connection_id
    assert body["status"] == "active"
    (event,) = status_events.published()
    assert event["detail-type"] == "Connection Created"
    assert event["detail"]["previous_status"] is None
    connection = ConnectionStore(config.settings()).get(connection_id)
    assert connection is not None
    assert connection.refresh_due_at == T0 + EXPIRES_IN - 86_400  # scheduled as any new one
    assert access_token(invoke, connection_id)["statusCode"] == 200


def test_an_app_retrying_its_confirm_gets_the_same_answer_and_changes_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    back = sign_in(invoke, fake_capsule, OWNER)
    result = back["capsule_result"][0]
    first = confirm(invoke, result, OWNER)
    status_events.published()
    before = items(stack)

    again = confirm(invoke, result, OWNER)

    assert again == first
    assert items(stack) == before
    assert status_events.published() == []


def test_the_result_is_256_random_bits_stored_only_as_its_hash(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    result = sign_in(invoke, fake_capsule)["capsule_result"][0]

    assert len(result) >= 43
    dumped = json.dumps(boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"])
    dumped += json.dumps(items(stack), default=str)
    assert result not in dumped


# --- pending is never used -------------------------------------------------------------------


def test_a_pending_connection_is_never_served_refreshed_or_evented(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    with time_machine.travel(T0, tick=False):
        (connection_id,) = sign_in(invoke, fake_capsule)["capsule_connection_id"]

        answer = access_token(invoke, connection_id)
        assert answer["statusCode"] == 409
        assert json.loads(answer["body"])["error"] == "confirmation_required"
        with pytest.raises(ReauthorizationRequired) as raised:
            get_access_token(connection_id)
        assert raised.value.status == "pending"
        assert get_connection(connection_id)["status"] == "pending"
        assert [c["status"] for c in list_connections(OWNER)] == ["pending"]
    # Due for refresh by its token's expiry, but never refreshed (nor discarded: the run is
    # within its confirm window only in the first check).
    with time_machine.travel(T0 + 60, tick=False):
        run_refresh(config.settings())
    assert refresh_requests(fake_capsule) == []
    assert status_events.published() == []


# --- the confirm window ----------------------------------------------------------------------


def test_an_unconfirmed_connection_is_discarded_by_the_scheduled_run_after_its_window(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    window = config.settings().connect_confirm_seconds
    with time_machine.travel(T0, tick=False):
        back = sign_in(invoke, fake_capsule)
    with time_machine.travel(T0 + window - 1, tick=False):
        invoke("RefreshFunction", load_event("scheduled.json"))
    assert len(items(stack)) == 1  # still inside its window

    with time_machine.travel(T0 + window + 1, tick=False):
        report = invoke("RefreshFunction", load_event("scheduled.json"))
        assert confirm(invoke, back["capsule_result"][0], OWNER)[0] == 404

    assert report["pending_discarded"] == 1
    assert items(stack) == []
    assert fake_capsule.refresh_tokens == {}  # revoked at Capsule
    assert status_events.published() == []


def test_finding_unconfirmed_connections_is_one_query_of_the_pending_queue(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    with time_machine.travel(T0, tick=False):
        sign_in(invoke, fake_capsule)
    reads: list[tuple[str, dict[str, Any]]] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation in {"Query", "Scan"}:
            reads.append((operation, params))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    with time_machine.travel(T0 + 3600, tick=False):
        invoke("RefreshFunction", load_event("scheduled.json"))

    # The pending queue, then the refresh queue, then the REST hooks due a check: one Query
    # each, whatever the table holds.
    assert [op for op, _ in reads] == ["Query", "Query", "Query"]
    assert reads[0][1]["ExpressionAttributeValues"][":queue"] == {"S": "pending"}
    assert reads[0][1]["IndexName"] == "DueForRefresh"
    assert reads[2][1]["IndexName"] == "HooksDue"


def test_when_capsule_cannot_revoke_the_connection_stays_unusable_and_is_retried(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    with time_machine.travel(T0, tick=False):
        back = sign_in(invoke, fake_capsule)
        fake_capsule.revoke_faults.extend([(503, {}, "{}")] * 4)

        assert confirm(invoke, back["capsule_result"][0], "user-7")[0] == 403

    (item,) = items(stack)  # kept: its grant is still live at Capsule
    assert item["status"]["S"] == "pending"
    fake_capsule.revoke_faults.clear()  # Capsule is back
    assert confirm(invoke, back["capsule_result"][0], OWNER)[0] == 404
    with time_machine.travel(T0 + 60, tick=False):
        run_discard = invoke("RefreshFunction", load_event("scheduled.json"))
    assert run_discard["pending_discarded"] == 1
    assert items(stack) == []
    assert fake_capsule.refresh_tokens == {}


# --- reconnects and the switch ---------------------------------------------------------------


def test_a_reconnect_applies_at_once_and_its_result_confirms_it(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, status_events: StatusEvents
) -> None:
    with time_machine.travel(T0, tick=False):
        first = sign_in(invoke, fake_capsule)
        confirm(invoke, first["capsule_result"][0], OWNER)
        status_events.published()

    with time_machine.travel(T0 + 3600, tick=False):
        again = sign_in(invoke, fake_capsule)

    assert again["capsule_status"] == ["reconnected"]
    (connection_id,) = again["capsule_connection_id"]
    assert get_connection(connection_id)["status"] == "active"
    assert access_token(invoke, connection_id)["statusCode"] == 200
    assert [e["detail-type"] for e in status_events.published()] == ["Connection Reconnected"]
    status, body = confirm(invoke, again["capsule_result"][0], OWNER)
    assert (status, body["status"]) == (200, "active")


def test_reconnecting_a_pending_connection_does_not_confirm_it(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    (connection_id,) = sign_in(invoke, fake_capsule)["capsule_connection_id"]

    again = sign_in(invoke, fake_capsule, reconnect=connection_id)

    assert get_connection(connection_id)["status"] == "pending"
    assert confirm(invoke, again["capsule_result"][0], OWNER)[1]["status"] == "active"


def test_without_confirming_connections_apply_at_once_and_confirm_still_answers(
    stack: Stack,
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONFIRM_CONNECTIONS", "false")
    config.settings.cache_clear()
    new_session(OWNER)  # return_url is optional again

    back = sign_in(invoke, fake_capsule)

    (connection_id,) = back["capsule_connection_id"]
    assert get_connection(connection_id)["status"] == "active"
    status, body = confirm(invoke, back["capsule_result"][0], OWNER)
    assert (status, body["connection_id"]) == (200, connection_id)


# --- the contract's refusals -----------------------------------------------------------------


def test_a_connect_session_without_a_return_url_is_refused_and_writes_nothing(
    stack: Stack, invoke: Invoke
) -> None:
    event = load_event("connect-session.json")
    event["body"] = json.dumps({"owner": OWNER})

    answer = invoke("ConnectSessionsFunction", event)

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "return_url_required"
    assert boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"] == []
    with pytest.raises(InvalidConnectSessionRequest) as raised:
        create_connect_session(OWNER)
    assert raised.value.reason == "return_url_required"


@pytest.mark.parametrize(
    "body",
    ["", "[]", '{"result": "x"}', '{"owner": "user-42"}', '{"result": 1, "owner": "user-42"}',
     '{"result": "x", "owner": "not an owner!"}', '{"result": "x", "owner": "u", "more": 1}'],
)  # fmt: skip
def test_a_malformed_confirm_is_a_400(stack: Stack, invoke: Invoke, body: str) -> None:
    event = load_event("confirm-connection.json")
    event["body"] = body

    answer = invoke("ConfirmConnectionFunction", event)

    assert answer["statusCode"] == 400


def test_an_unknown_or_expired_result_is_a_404(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    window = config.settings().connect_confirm_seconds
    with time_machine.travel(T0, tick=False):
        back = sign_in(invoke, fake_capsule)

    assert confirm(invoke, "A" * 43, OWNER) == (
        404,
        {
            "error": "result_not_found",
            "message": "No connection waits for this result: it is unknown, expired or was"
            " discarded.",
        },
    )
    with time_machine.travel(T0 + window, tick=False):
        assert confirm(invoke, back["capsule_result"][0], OWNER)[0] == 404
        with pytest.raises(ConnectionNotFound):
            confirm_connection(back["capsule_result"][0], OWNER)


def test_python_confirm_raises_owner_mismatch(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    back = sign_in(invoke, fake_capsule)

    with pytest.raises(OwnerMismatch):
        confirm_connection(back["capsule_result"][0], "user-7")
    assert items(stack) == []


def test_only_confirming_makes_a_status_event_of_a_pending_connection() -> None:
    def made(status: str, version: int) -> Connection:
        return Connection("cc_1", status, version, 0, b"", owner=OWNER)

    pending, again = made("pending", 1), made("pending", 2)
    confirmed = made("active", 3)

    assert transition(None, pending, 3) is None
    assert transition(pending, again, 3) is None  # a new sign-in before the confirm
    assert transition(pending, None, 3) is None  # discarded
    assert transition(pending, made("disconnected", 3), 3) is None
    created = transition(again, confirmed, 3)
    assert created is not None
    assert (created.detail_type, created.detail["previous_status"]) == ("Connection Created", None)
