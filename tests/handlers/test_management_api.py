"""The management routes (AWS_IAM): each happy path and each error, JSON with no-store, a
token only in the access-token answer, and owners kept apart."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import time_machine

from capsule_oauth.config import Settings
from capsule_oauth.store.connections import ConnectionStore
from local.lambda_container import Invoke
from local.stack import load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule, Reply
from tests.support.connections import T0, seed_owned, stored

LATER = T0 + 3600
UNAVAILABLE: Reply = (503, {}, "{}")


def call(
    invoke: Invoke,
    function: str,
    event_file: str,
    *,
    connection_id: str | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    event = load_event(event_file)
    if connection_id is not None:
        event["pathParameters"] = {"connection_id": connection_id}
    if query is not None:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
        if not query:
            del event["queryStringParameters"]
    with time_machine.travel(LATER, tick=False):
        answer = invoke(function, event)
    headers = answer["headers"]
    assert headers["Cache-Control"] == "no-store"
    body = json.loads(answer["body"]) if answer["body"] else None
    if answer["statusCode"] >= 400:  # every error alike
        assert isinstance(body, dict)
        assert set(body) == {"error", "message"}
        assert body["message"].endswith(".")
    return answer["statusCode"], headers, body


# --- GET /connections?owner= -------------------------------------------------------------


def test_list_answers_that_owners_connections_only(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    mine, _ = seed_owned(settings, fake_capsule, "user-42", subdomain="acme")
    also_mine, _ = seed_owned(settings, fake_capsule, "user-42", subdomain="beta")
    seed_owned(settings, fake_capsule, "user-7", subdomain="acme")  # the same Capsule user

    status, _, body = call(
        invoke, "ConnectionsFunction", "list-connections.json", query={"owner": "user-42"}
    )

    assert status == 200
    assert sorted(c["connection_id"] for c in body["connections"]) == sorted([mine, also_mine])
    assert {c["owner"] for c in body["connections"]} == {"user-42"}
    _, _, theirs = call(
        invoke, "ConnectionsFunction", "list-connections.json", query={"owner": "user-7"}
    )
    assert [c["owner"] for c in theirs["connections"]] == ["user-7"]
    _, _, nobody = call(
        invoke, "ConnectionsFunction", "list-connections.json", query={"owner": "user-1"}
    )
    assert nobody == {"connections": []}


@pytest.mark.parametrize(
    "query", [{}, {"owner": ""}, {"owner": "-bad owner"}, {"owner": "x" * 200}]
)
def test_list_without_a_valid_owner_is_a_400(
    settings: Settings, invoke: Invoke, query: dict[str, str]
) -> None:
    status, _, body = call(invoke, "ConnectionsFunction", "list-connections.json", query=query)

    assert (status, body["error"]) == (400, "invalid_owner")


# --- GET /connections/{connection_id} -----------------------------------------------------


def test_get_answers_the_connection_without_a_token(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")

    status, _, body = call(invoke, "ConnectionsFunction", "get-connection.json", connection_id=cid)

    assert status == 200
    assert body == {
        "connection_id": cid,
        "owner": "user-42",
        "status": "active",
        "site": {
            "subdomain": "exampleco",
            "name": "Example Co.",
            "url": "https://exampleco.capsulecrm.com",
        },
        "user": {"id": "1", "name": "Scott Spacey"},
        "scope": "read write",
        "access_token_expires_at": "2030-03-24T17:46:39Z",
        "last_refreshed_at": None,
        "connected_at": "2030-03-17T17:46:40Z",
        "last_error": None,
        "refresh_failures": 0,
        "hooks": {"status": "off", "events": [], "checked_at": None},
    }
    assert T0 + EXPIRES_IN == 1_900_604_799  # the expiry above
    assert grant["access_token"] not in json.dumps(body)


def test_get_shows_the_last_error_of_a_connection_that_needs_the_person(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    store = ConnectionStore(settings)
    current = store.acquire_lease(cid, owner="test", now=T0 + 10)
    assert current is not None
    store.mark_needs_reauth(current, owner="test", error="InvalidGrant", now=T0 + 10)

    _, _, body = call(invoke, "ConnectionsFunction", "get-connection.json", connection_id=cid)

    assert body["status"] == "needs_reauth"
    assert body["last_error"] == {"reason": "InvalidGrant", "at": "2030-03-17T17:46:50Z"}


def test_get_an_unknown_connection_is_a_404(settings: Settings, invoke: Invoke) -> None:
    status, _, body = call(
        invoke, "ConnectionsFunction", "get-connection.json", connection_id="cc_nothing"
    )

    assert (status, body["error"]) == (404, "not_found")


@pytest.mark.parametrize(("function", "event_file"), [
    ("ConnectionsFunction", "get-connection.json"),
    ("AccessTokenFunction", "access-token.json"),
    ("DisconnectFunction", "disconnect.json"),
])  # fmt: skip
def test_a_path_that_is_no_connection_id_is_a_400(
    settings: Settings, invoke: Invoke, function: str, event_file: str
) -> None:
    status, _, body = call(invoke, function, event_file, connection_id="a b/../c")

    assert (status, body["error"]) == (400, "invalid_request")


# --- POST /connections/{connection_id}/access-token ---------------------------------------


def test_access_token_answers_a_valid_token(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")

    status, _, body = call(invoke, "AccessTokenFunction", "access-token.json", connection_id=cid)

    assert status == 200
    assert body == {
        "access_token": grant["access_token"],
        "token_type": "Bearer",
        "expires_at": T0 + EXPIRES_IN,
        "api_base_url": f"{settings.capsule_base_url}/api/v2",
    }


def test_access_token_near_expiry_is_refreshed_first(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN + 60)

    status, _, body = call(invoke, "AccessTokenFunction", "access-token.json", connection_id=cid)

    assert status == 200
    assert body["access_token"] != grant["access_token"]
    assert body["expires_at"] == LATER + EXPIRES_IN
    assert stored(settings, cid).version == 2


@pytest.mark.parametrize("status_now", ["needs_reauth", "disconnected"])
def test_access_token_of_a_connection_the_person_must_renew_is_a_409(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, status_now: str
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    store = ConnectionStore(settings)
    current = store.acquire_lease(cid, owner="test", now=T0 + 10)
    assert current is not None
    if status_now == "needs_reauth":
        store.mark_needs_reauth(current, owner="test", error="InvalidGrant", now=T0 + 10)
    else:
        store.mark_disconnected(current, owner="test", now=T0 + 10, reason="revoked")

    status, _, body = call(invoke, "AccessTokenFunction", "access-token.json", connection_id=cid)

    assert (status, body["error"]) == (409, "reauthorization_required")


def test_access_token_when_capsule_cannot_be_reached_is_a_503_with_retry_after(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN - 60)
    fake_capsule.token_faults.append(UNAVAILABLE)

    status, headers, body = call(
        invoke, "AccessTokenFunction", "access-token.json", connection_id=cid
    )

    assert (status, body["error"]) == (503, "token_unavailable")
    assert int(headers["Retry-After"]) > 0
    assert stored(settings, cid).status == "active"  # nothing lost: tried again later


def test_access_token_while_capsule_is_rate_limited_says_when_it_resets(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN - 60)
    fake_capsule.token_faults.extend(
        [(429, {"X-RateLimit-Reset": str(LATER + 45)}, '{"error": "rate limit reached"}')] * 2
    )

    answers = [
        call(invoke, "AccessTokenFunction", "access-token.json", connection_id=cid)
        for _ in range(2)
    ]

    assert [(status, body["error"]) for status, _, body in answers] == [
        (503, "token_unavailable")
    ] * 2
    assert [headers["Retry-After"] for _, headers, _ in answers] == ["45", "45"]
    assert len(fake_capsule.token_requests) == 1  # the second learnt it from the record
    assert stored(settings, cid).failure_count == 0


def test_access_token_of_an_unknown_connection_is_a_404(settings: Settings, invoke: Invoke) -> None:
    status, _, body = call(
        invoke, "AccessTokenFunction", "access-token.json", connection_id="cc_nothing"
    )

    assert (status, body["error"]) == (404, "not_found")


# --- DELETE /connections/{connection_id} --------------------------------------------------


def test_delete_revokes_and_answers_204_also_when_already_disconnected(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42")

    first = call(invoke, "DisconnectFunction", "disconnect.json", connection_id=cid)
    again = call(invoke, "DisconnectFunction", "disconnect.json", connection_id=cid)

    assert (first[0], first[2], again[0], again[2]) == (204, None, 204, None)
    assert grant["refresh_token"] not in fake_capsule.refresh_tokens
    assert len(fake_capsule.revoke_requests) == 2  # both tokens, once
    assert stored(settings, cid).status == "disconnected"


def test_delete_when_capsule_cannot_revoke_is_a_502_and_changes_nothing(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    before = stored(settings, cid)
    fake_capsule.revoke_faults.append(UNAVAILABLE)

    status, _, body = call(invoke, "DisconnectFunction", "disconnect.json", connection_id=cid)

    assert (status, body["error"]) == (502, "revocation_failed")
    assert "force=true" in body["message"]
    after = stored(settings, cid)
    assert (after.status, after.tokens, after.version) == ("active", before.tokens, before.version)


def test_forced_delete_forgets_the_tokens_and_says_they_were_not_revoked(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    fake_capsule.revoke_faults.extend([(404, {}, "{}"), (404, {}, "{}")])  # no endpoint at all

    status, _, body = call(invoke, "DisconnectFunction", "disconnect-force.json", connection_id=cid)

    assert (status, body) == (200, {"revoked": False, "forgotten": True})
    after = stored(settings, cid)
    assert (after.status, after.tokens) == ("disconnected", b"")


def test_forced_delete_that_could_revoke_is_a_plain_204(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")

    status, _, body = call(invoke, "DisconnectFunction", "disconnect-force.json", connection_id=cid)

    assert (status, body) == (204, None)


def test_delete_with_a_force_that_is_not_true_or_false_is_a_400(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")

    status, _, body = call(
        invoke, "DisconnectFunction", "disconnect.json", connection_id=cid, query={"force": "yes!"}
    )

    assert (status, body["error"]) == (400, "invalid_request")
    assert stored(settings, cid).status == "active"


def test_delete_during_a_refresh_is_a_503_to_try_again(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    ConnectionStore(settings).acquire_lease(cid, owner="refresher", now=LATER, lease_seconds=60)

    status, headers, body = call(invoke, "DisconnectFunction", "disconnect.json", connection_id=cid)

    assert (status, body["error"]) == (503, "connection_busy")
    assert headers["Retry-After"] == "1"


def test_delete_an_unknown_connection_is_a_404(settings: Settings, invoke: Invoke) -> None:
    status, _, body = call(
        invoke, "DisconnectFunction", "disconnect.json", connection_id="cc_nothing"
    )

    assert (status, body["error"]) == (404, "not_found")


# --- every route -------------------------------------------------------------------------


def test_every_call_logs_the_caller_and_the_connection_never_the_token(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, log_output: io.StringIO
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "user-42", now=LATER - EXPIRES_IN + 60)

    call(invoke, "ConnectionsFunction", "get-connection.json", connection_id=cid)
    _, _, token = call(invoke, "AccessTokenFunction", "access-token.json", connection_id=cid)
    call(invoke, "DisconnectFunction", "disconnect.json", connection_id=cid)

    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line.strip()]
    calls = [line for line in lines if line.get("message") == "Management call"]
    assert [line["route"] for line in calls] == [
        "GET /connections/{connection_id}",
        "POST /connections/{connection_id}/access-token",
        "DELETE /connections/{connection_id}",
    ]
    assert {line["caller"] for line in calls} == {"arn:aws:iam::123456789012:user/app-backend"}
    assert {line["connection_id"] for line in calls} == {cid}
    logged = log_output.getvalue()
    for secret in (grant["access_token"], grant["refresh_token"], token["access_token"]):
        assert secret not in logged


def test_a_malformed_event_is_a_400_on_every_management_route(
    settings: Settings, invoke: Invoke
) -> None:
    for function in ("ConnectionsFunction", "AccessTokenFunction", "DisconnectFunction"):
        answer = invoke(function, {"requestContext": "nonsense"})
        assert answer["statusCode"] == 400
        assert json.loads(answer["body"])["error"] == "invalid_request"
