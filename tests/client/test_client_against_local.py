"""capsule_connector_client against ``make local``'s stack, with the credentials it prints:
every route this stack has, the answers checked against openapi.yaml on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator

from capsule_connector_client import (
    AccessDenied,
    ConfirmationRequired,
    Connector,
    Disconnected,
    InvalidOwner,
    InvalidReturnUrl,
    NotFound,
    OwnerMismatch,
    ReauthorizationRequired,
    ResultNotFound,
)
from local.consent import approve
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())


def fits(method: str, path: str, status: int, body: Any) -> None:
    """Raise unless ``body`` is what openapi.yaml says that route answers with ``status``."""
    described = SPEC["paths"][path][method]["responses"][str(status)]
    described = SPEC["components"]["responses"].get(
        described.get("$ref", "").rsplit("/", 1)[-1], described
    )
    schema = described["content"]["application/json"]["schema"]
    OAS30Validator({**SPEC, **schema}).validate(body)


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch, local_deployment: RunningDeployment) -> Connector:
    # What make local prints under its URL, pasted into the shell.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return Connector(local_deployment.url)


def connect_through_capsule(connect_url: str) -> tuple[str, str]:
    """A person opens the link and allows at the emulator; the connection id and the
    confirmation result that came back on the return URL."""
    with requests.Session() as http:
        started = http.get(connect_url, allow_redirects=False, timeout=10)
        back = approve(http, started.headers["Location"], subdomain="acme", username="ada")
        cookie = started.headers["Set-Cookie"].split(";")[0]
        done = http.get(back, headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    return query["capsule_connection_id"][0], query["capsule_result"][0]


def connected(connector: Connector, owner: str) -> str:
    """A connection of ``owner``, made and confirmed as an app does; its id."""
    link = connector.create_connect_session(owner, return_url="/")
    connection_id, result = connect_through_capsule(link.connect_url)
    connector.confirm(result, owner)
    return connection_id


def test_a_connection_made_and_run_from_the_client(connector: Connector) -> None:
    link = connector.create_connect_session("client-owner-1", return_url="/")
    connection_id, result = connect_through_capsule(link.connect_url)
    with pytest.raises(ConfirmationRequired):  # pending until the app confirms it
        connector.access_token(connection_id)
    confirmed = connector.confirm(result, "client-owner-1")

    (listed,) = connector.list_connections("client-owner-1")
    one = connector.get_connection(connection_id)
    token = connector.access_token(connection_id)
    gone = connector.disconnect(connection_id)
    after = connector.get_connection(connection_id)

    assert listed == one == confirmed
    assert (one.connection_id, one.owner, one.status) == (connection_id, "client-owner-1", "active")
    assert one.site.subdomain == "acme"
    assert token.token_type == "Bearer"
    assert token.access_token not in repr(token)
    assert gone == Disconnected(revoked=True, forgotten=True)
    assert after.status == "disconnected"
    with pytest.raises(ReauthorizationRequired) as refused:
        connector.access_token(connection_id)
    assert refused.value.status == 409
    assert refused.value.message


def test_the_answers_the_client_reads_are_those_openapi_yaml_describes(
    connector: Connector,
) -> None:
    made = connector.call(
        "POST", "/connect-sessions", body={"owner": "client-owner-2", "return_url": "/"}
    )
    fits("post", "/connect-sessions", 201, made.json())
    connection_id, result = connect_through_capsule(made.json()["connect_url"])
    confirmed = connector.call(
        "POST", "/connect-sessions/confirm", body={"result": result, "owner": "client-owner-2"}
    )
    fits("post", "/connect-sessions/confirm", 200, confirmed.json())
    path = f"/connections/{connection_id}"

    listed = connector.call("GET", "/connections", params={"owner": "client-owner-2"})
    one = connector.call("GET", path)
    token = connector.call("POST", f"{path}/access-token")

    fits("get", "/connections", 200, listed.json())
    fits("get", "/connections/{connection_id}", 200, one.json())
    fits("post", "/connections/{connection_id}/access-token", 200, token.json())
    with pytest.raises(NotFound) as missing:
        connector.call("GET", "/connections/cc_nothing")
    fits(
        "get",
        "/connections/{connection_id}",
        404,
        {"error": "not_found", "message": missing.value.message},
    )


def test_the_apis_refusals_arrive_as_their_exceptions(
    connector: Connector, local_deployment: RunningDeployment
) -> None:
    with pytest.raises(InvalidReturnUrl, match="AllowedReturnOrigins"):
        connector.create_connect_session("client-owner-3", return_url="https://elsewhere.example")
    with pytest.raises(InvalidOwner):
        connector.list_connections("not an owner!")
    with pytest.raises(NotFound):
        connector.disconnect("cc_nothing")
    strangers = Connector(local_deployment.url, region="eu-west-1")
    with pytest.raises(AccessDenied) as denied:
        strangers.list_connections("client-owner-3")
    assert denied.value.status == 403


def test_confirm_activates_for_the_right_owner_and_refuses_another(connector: Connector) -> None:
    link = connector.create_connect_session("client-owner-4", return_url="/")
    connection_id, result = connect_through_capsule(link.connect_url)
    forwarded = connector.create_connect_session("client-owner-5", return_url="/")
    forwarded_id, forwarded_result = connect_through_capsule(forwarded.connect_url)

    answer = connector.call(
        "POST", "/connect-sessions/confirm", body={"result": result, "owner": "client-owner-4"}
    )
    with pytest.raises(OwnerMismatch) as refused:  # a link forwarded to someone else
        connector.confirm(forwarded_result, "client-owner-4")

    assert answer.status_code == 200
    fits("post", "/connect-sessions/confirm", 200, answer.json())
    assert (answer.json()["connection_id"], answer.json()["status"]) == (connection_id, "active")
    assert connector.get_connection(connection_id).status == "active"
    assert refused.value.status == 403
    assert refused.value.message
    fits(
        "post",
        "/connect-sessions/confirm",
        403,
        {"error": refused.value.code, "message": refused.value.message},
    )
    assert forwarded_result not in repr(refused.value)
    with pytest.raises(ResultNotFound):  # the forwarded sign-in was discarded, its result dead
        connector.confirm(forwarded_result, "client-owner-5")
    assert connector.list_connections("client-owner-5") == []
    assert forwarded_id != connection_id


def test_capsule_through_the_proxy_answers_capsules_json(connector: Connector) -> None:
    connection_id = connected(connector, "client-owner-6")
    capsule = connector.capsule(connection_id)

    parties = capsule.get("parties", params={"perPage": "2"})
    raw = connector.call(
        "GET", f"/connections/{connection_id}/capsule/parties", params={"perPage": "2"}
    )

    assert isinstance(parties["parties"], list)
    assert len(parties["parties"]) <= 2
    assert parties == raw.json()
    fits("get", "/connections/{connection_id}/capsule/{path+}", 200, raw.json())
    assert raw.headers.get("X-RateLimit-Remaining")  # Capsule's own headers, passed back
    with pytest.raises(NotFound) as missing:
        connector.capsule("cc_nothing").get("parties")
    fits(
        "get",
        "/connections/{connection_id}/capsule/{path+}",
        404,
        {"error": missing.value.code, "message": missing.value.message},
    )
