"""Connect sessions: the app says who connects; the person lands back in the app.

Given / when / then for each rule of the contract: the route, the Python API, start with a
session, the callback's way back to the app, reconnects and owners.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine
from botocore.client import BaseClient

from capsule_oauth import config, confirm_connection, create_connect_session, owners
from capsule_oauth.errors import ConfigError
from capsule_oauth.store.connections import ConnectionStore
from local import deployable
from local.lambda_container import Invoke, reset_caches
from local.stack import Stack, Template, load_event
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import CID, seed
from tests.support.sign_in import Started, callback_event, new_session, start, with_session

APP = "https://app.example.com"


@pytest.fixture(autouse=True)
def _app_origin(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_RETURN_ORIGINS", f"{APP}, https://admin.example.com:8443")


def create(invoke: Invoke, **body: Any) -> dict[str, Any]:
    event = load_event("connect-session.json")
    event["body"] = json.dumps(body)
    answer: dict[str, Any] = invoke("ConnectSessionsFunction", event)
    return answer


def token_of(answer: dict[str, Any]) -> str:
    url = str(json.loads(answer["body"])["connect_url"])
    return parse_qs(urlsplit(url).query)["session"][0]


def sessions(stack: Stack) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"]
    return [item for item in items if item["state"]["S"].startswith("session#")]


def start_with(invoke: Invoke, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = invoke("StartFunction", with_session(load_event("start.json"), token))
    return answer


def finish(invoke: Invoke, started: Started) -> dict[str, Any]:
    answer: dict[str, Any] = invoke("CallbackFunction", callback_event(started))
    return answer


def back_query(answer: dict[str, Any]) -> dict[str, list[str]]:
    assert answer["statusCode"] == 303
    return parse_qs(urlsplit(answer["headers"]["Location"]).query)


# --- creating a session --------------------------------------------------------------------


def test_the_route_answers_201_with_a_connect_url_on_its_own_domain(
    stack: Stack, invoke: Invoke
) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        answer = create(invoke, owner="user-42", return_url=f"{APP}/settings?tab=crm")

    assert answer["statusCode"] == 201
    assert answer["headers"]["Cache-Control"] == "no-store"
    body = json.loads(answer["body"])
    assert set(body) == {"connect_url", "expires_at"}
    assert body["connect_url"].startswith(
        "https://abc123.execute-api.us-east-1.amazonaws.com/auth/start?session="
    )
    assert body["expires_at"] == 1_900_000_000 + 1800
    assert len(token_of(answer)) >= 43  # 256 bits, URL-safe base64


def test_only_a_hash_of_the_session_token_is_stored(stack: Stack, invoke: Invoke) -> None:
    token = token_of(create(invoke, owner="user-42", return_url="/done"))

    (item,) = sessions(stack)
    assert token not in json.dumps(item)


@pytest.mark.parametrize("owner", ["", "-x", "a b", "x" * 129, "ü"])
def test_a_malformed_owner_is_refused_and_nothing_is_written(
    stack: Stack, invoke: Invoke, owner: str
) -> None:
    answer = create(invoke, owner=owner, return_url="/done")

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "invalid_owner"
    assert sessions(stack) == []


@pytest.mark.parametrize(
    "return_url",
    [
        "https://app.example.com.evil.test/",
        "https://app.example.com@evil.test/",
        "http://app.example.com/",
        "https://app.example.com:444/",
        "https://app.example.com/#fragment",
        "//evil.test/",
    ],
)
def test_a_return_url_off_the_allowed_origins_is_refused_at_creation(
    stack: Stack, invoke: Invoke, return_url: str
) -> None:
    answer = create(invoke, owner="user-42", return_url=return_url)

    assert answer["statusCode"] == 400
    body = json.loads(answer["body"])
    assert body["error"] == "invalid_return_url"
    assert body["message"]
    assert sessions(stack) == []


@pytest.mark.parametrize(
    "return_url",
    [f"{APP}/back", "https://APP.example.com:443/x", "https://admin.example.com:8443/", "/here"],
)
def test_allowed_origins_and_paths_on_the_api_are_accepted(
    stack: Stack, invoke: Invoke, return_url: str
) -> None:
    assert create(invoke, owner="user-42", return_url=return_url)["statusCode"] == 201


@pytest.mark.parametrize("body", ["not json", "[1]", '{"owner": 42}', '{"owner": "a", "x": 1}'])
def test_a_body_that_is_not_the_documented_object_is_a_400(
    stack: Stack, invoke: Invoke, body: str
) -> None:
    event = load_event("connect-session.json")
    event["body"] = body

    answer = invoke("ConnectSessionsFunction", event)

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"] == "invalid_request"


def test_reconnecting_a_connection_that_does_not_exist_is_a_404(
    stack: Stack, invoke: Invoke
) -> None:
    answer = create(invoke, owner="user-42", return_url="/done", reconnect_connection_id="cc_nope")

    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["error"] == "not_found"


def test_reconnecting_another_owners_connection_is_a_403(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    seed(config.settings(), fake_capsule)  # owned by "anonymous"

    answer = create(invoke, owner="user-42", return_url="/done", reconnect_connection_id=CID)

    assert answer["statusCode"] == 403
    assert json.loads(answer["body"])["error"] == "forbidden"


def test_the_iam_authorizer_guards_the_route_in_the_deployed_template(template: Template) -> None:
    paths = deployable.transformed(template)["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]

    assert paths["/connect-sessions"]["post"]["security"] == [{"AWS_IAM": []}]
    assert "security" not in paths["/auth/start"]["get"]
    assert "security" not in paths["/auth/callback"]["get"]


# --- the Python API --------------------------------------------------------------------------


def test_python_builds_the_link_from_connect_start_url(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECT_START_URL", "https://api.example.com/auth/start")
    reset_caches()

    made = create_connect_session("user-42", "/done")

    assert made["connect_url"].startswith("https://api.example.com/auth/start?session=")


def test_python_falls_back_to_the_redirect_uris_origin(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIRECT_URI", "https://connect.example.com/capsule/callback")
    reset_caches()

    made = create_connect_session("user-42", "/done")

    assert made["connect_url"].startswith("https://connect.example.com/auth/start?session=")


def test_python_without_a_start_url_says_what_to_set(stack: Stack) -> None:
    with pytest.raises(ConfigError, match="CONNECT_START_URL"):
        create_connect_session("user-42", "/done")


# --- start ------------------------------------------------------------------------------------


def test_a_session_may_start_sign_in_more_than_once_while_it_lives(
    stack: Stack, invoke: Invoke
) -> None:
    token = token_of(create(invoke, owner="user-42", return_url="/done"))

    assert start_with(invoke, token)["statusCode"] == 302
    assert start_with(invoke, token)["statusCode"] == 302


def test_a_session_expires_after_its_ttl(stack: Stack, invoke: Invoke) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        token = token_of(create(invoke, owner="user-42", return_url="/done"))
    with time_machine.travel(1_900_000_000 + 1800, tick=False):
        answer = start_with(invoke, token)

    assert answer["statusCode"] == 400
    assert "expired" in answer["body"]


@pytest.mark.parametrize("token", ["", "x" * 43, "nonsense"])
def test_an_unknown_session_gets_a_400_page_and_writes_nothing(
    stack: Stack, invoke: Invoke, token: str
) -> None:
    answer = start_with(invoke, token)

    assert answer["statusCode"] == 400
    assert "cookies" not in answer
    assert boto3.client("dynamodb").scan(TableName=stack.state_table)["Count"] == 0


def test_without_a_session_start_says_to_begin_in_the_app(stack: Stack, invoke: Invoke) -> None:
    answer = invoke("StartFunction", load_event("start.json"))

    assert answer["statusCode"] == 400
    assert "starts in the app" in answer["body"]
    assert boto3.client("dynamodb").scan(TableName=stack.state_table)["Count"] == 0


def test_with_sessions_optional_a_sessionless_start_connects_anonymous(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUIRE_CONNECT_SESSION", "false")
    started = start(invoke, fake_capsule, "start-return-to.json")  # no session

    assert finish(invoke, started)["statusCode"] == 303
    connection = ConnectionStore(config.settings()).get(CID)
    assert connection is not None
    assert connection.owner == owners.ANONYMOUS


# --- back to the app ----------------------------------------------------------------------------


def test_success_sends_the_person_back_with_the_connection_and_the_apps_own_query(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", return_url=f"{APP}/settings?tab=crm")
    started = start(invoke, fake_capsule, session=token)

    answer = finish(invoke, started)

    query = back_query(answer)
    assert answer["headers"]["Location"].startswith(f"{APP}/settings?tab=crm&")
    assert query["capsule_status"] == ["connected"]
    expected = owners.connection_id_for("user-42", "exampleco", "1")
    assert query["capsule_connection_id"] == [expected]
    assert "capsule_result" in query  # what the app confirms
    assert answer["cookies"][0].startswith(f"{started.cookie_name}={started.nonce}; Max-Age=")


def test_a_finished_session_is_refused(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", return_url="/done")
    first = start(invoke, fake_capsule, session=token)
    second = start(invoke, fake_capsule, session=token)  # a second tab of the same link
    finish(invoke, first)

    assert start_with(invoke, token)["statusCode"] == 400
    late = finish(invoke, second)
    assert late["statusCode"] == 400
    assert "already used" in late["body"]
    assert len(fake_capsule.token_requests) == 1  # the second code was never exchanged


def test_a_failed_exchange_gives_the_session_back_for_a_retry(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", return_url=f"{APP}/back")
    started = start(invoke, fake_capsule, session=token)
    fake_capsule.token_faults.append((503, {}, ""))

    failed = finish(invoke, started)

    assert failed["statusCode"] == 502
    assert "Back to app.example.com" in failed["body"]
    assert "capsule_status=error&amp;capsule_error=Unavailable" in failed["body"]
    retried = finish(invoke, start(invoke, fake_capsule, session=token))
    assert back_query(retried)["capsule_status"] == ["connected"]


def test_a_denial_goes_back_to_the_app_as_denied(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    started = start(invoke, fake_capsule, session=new_session("user-42", return_url="/done"))
    event = callback_event(started)
    event["queryStringParameters"] = {"error": "access_denied", "state": started.state}

    answer = invoke("CallbackFunction", event)

    assert back_query(answer)["capsule_status"] == ["denied"]
    assert fake_capsule.token_requests == []


def test_an_error_with_a_state_that_does_not_check_out_shows_no_capsule_text(
    stack: Stack, invoke: Invoke
) -> None:
    answer = invoke("CallbackFunction", load_event("callback-denied.json"))

    assert answer["statusCode"] == 400
    assert "denied access" not in answer["body"]
    assert "chose not to allow" not in answer["body"]


# --- owners and reconnects -----------------------------------------------------------------------


def test_two_owners_connecting_the_same_capsule_user_get_two_connections(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    for owner in ("user-42", "user-43"):
        finish(invoke, start(invoke, fake_capsule, session=new_session(owner, return_url="/d")))

    store = ConnectionStore(config.settings())
    (mine,) = store.list_for_owner("user-42")
    (theirs,) = store.list_for_owner("user-43")
    assert mine.connection_id != theirs.connection_id
    assert store.tokens(mine) != store.tokens(theirs)


def test_listing_an_owner_is_one_query_on_the_owner_index(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    for owner in ("user-42", "user-43", "user-42"):
        finish(invoke, start(invoke, fake_capsule, session=new_session(owner, return_url="/d")))
    calls: list[tuple[str, Any]] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        calls.append((operation, params.get("IndexName")))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)

    listed = ConnectionStore(config.settings()).list_for_owner("user-42")

    assert [c.owner for c in listed] == ["user-42"]
    assert calls == [("Query", "ByOwner")]


def test_reconnecting_replaces_the_grant_and_revokes_the_old_one(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    first = finish(
        invoke, start(invoke, fake_capsule, session=new_session("user-42", return_url="/d"))
    )
    connection_id = back_query(first)["capsule_connection_id"][0]
    confirm_connection(back_query(first)["capsule_result"][0], "user-42")
    store = ConnectionStore(config.settings())
    connection = store.get(connection_id)
    assert connection is not None
    old = store.tokens(connection)
    token = new_session("user-42", return_url="/d", reconnect_connection_id=connection_id)

    again = finish(invoke, start(invoke, fake_capsule, session=token))

    assert back_query(again)["capsule_status"] == ["reconnected"]
    assert back_query(again)["capsule_connection_id"] == [connection_id]
    assert old.refresh_token not in fake_capsule.refresh_tokens  # revoked at Capsule
    revoked = {(r["token"], r.get("token_type_hint")) for r in fake_capsule.revoke_requests}
    assert (old.access_token, "access_token") in revoked  # both replaced tokens, as disconnect


def test_reconnecting_as_another_capsule_account_is_refused_and_changes_nothing(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    first = finish(
        invoke, start(invoke, fake_capsule, session=new_session("user-42", return_url="/d"))
    )
    connection_id = back_query(first)["capsule_connection_id"][0]
    store = ConnectionStore(config.settings())
    before = store.get(connection_id)
    live_before = len(fake_capsule.refresh_tokens)
    token = new_session("user-42", return_url="/d", reconnect_connection_id=connection_id)
    fake_capsule.account = fake_capsule.store.accounts[1]  # signs in as someone else
    started = start(invoke, fake_capsule, session=token)

    answer = finish(invoke, started)

    assert answer["statusCode"] == 409
    assert "Ada Lovelace on Acme Ltd" in answer["body"]
    assert "Scott Spacey on Example Co." in answer["body"]
    assert store.get(connection_id) == before
    assert len(fake_capsule.refresh_tokens) == live_before  # the new grant was revoked


def test_python_prefers_connect_start_url_to_the_redirect_uri(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECT_START_URL", "https://api.example.com/auth/start")
    monkeypatch.setenv("REDIRECT_URI", "https://connect.example.com/capsule/callback")
    reset_caches()

    made = create_connect_session("user-42", "/done")

    assert made["connect_url"].startswith("https://api.example.com/auth/start?session=")


def test_a_session_deleted_by_its_ttl_cannot_be_claimed_again(
    stack: Stack, invoke: Invoke, fake_capsule: FakeCapsule
) -> None:
    token = new_session("user-42", "/done")
    first, second = (start(invoke, fake_capsule, session=token) for _ in range(2))
    assert finish(invoke, first)["statusCode"] == 303
    for item in sessions(stack):  # DynamoDB's TTL removes the finished session
        boto3.client("dynamodb").delete_item(
            TableName=stack.state_table, Key={"state": item["state"]}
        )

    late = finish(invoke, second)

    assert late["statusCode"] == 400
    assert len(fake_capsule.token_requests) == 1


def test_the_session_item_outlives_the_session_by_a_sign_ins_lifetime(
    stack: Stack, invoke: Invoke
) -> None:
    with time_machine.travel(1_900_000_000, tick=False):
        create(invoke, owner="user-42", return_url="/done")

    (item,) = sessions(stack)
    assert int(item["session_expires_at"]["N"]) == 1_900_000_000 + 1800
    assert int(item["expires_at"]["N"]) == 1_900_000_000 + 1800 + 600  # the TTL attribute
