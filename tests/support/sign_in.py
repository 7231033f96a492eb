"""A sign-in as the handlers see it: the start handler's answer, a code, the callback event.

``start`` runs StartFunction and lets the fake Capsule issue a code for the redirect it
asked for, as a person approving would; ``callback_event`` is the event the browser's
return to /auth/callback becomes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from capsule_oauth import owners
from capsule_oauth.flows.sessions import create_connect_session
from local.lambda_container import Invoke
from local.stack import load_event
from tests.support.capsule_fake import FakeCapsule


@dataclass
class Started:
    state: str
    cookie_name: str
    nonce: str
    challenge: str
    code: str


def new_session(
    owner: str = owners.ANONYMOUS,
    return_url: str | None = None,
    *,
    reconnect_connection_id: str | None = None,
) -> str:
    """A connect session's token, as the app's backend would get one (in its connect_url)."""
    created = create_connect_session(
        owner,
        return_url,
        reconnect_connection_id,
        start_url="https://abc123.execute-api.us-east-1.amazonaws.com/auth/start",
    )
    return parse_qs(urlsplit(created["connect_url"]).query)["session"][0]


def with_session(event: dict[str, Any], token: str) -> dict[str, Any]:
    event["queryStringParameters"] = {
        **(event.get("queryStringParameters") or {}),
        "session": token,
    }
    event["rawQueryString"] = urlencode(event["queryStringParameters"])
    return event


def start(
    invoke: Invoke,
    fake: FakeCapsule,
    event: str = "start.json",
    *,
    session: str | None = None,
) -> Started:
    """Run the start handler and let the fake Capsule issue a code, as approving would.

    Without ``session`` a connect session of the owner "anonymous" is created first, unless
    the event brings its own ``return_to`` (a sessionless start: REQUIRE_CONNECT_SESSION off).
    """
    start_event = load_event(event)
    if session is None and "return_to" not in (start_event.get("queryStringParameters") or {}):
        session = new_session()
    if session is not None:
        start_event = with_session(start_event, session)
    response = invoke("StartFunction", start_event)
    query = {k: v[0] for k, v in parse_qs(urlsplit(response["headers"]["Location"]).query).items()}
    name, nonce = response["cookies"][0].split(";")[0].split("=", 1)
    code = fake.issue_code(query["redirect_uri"], query.get("code_challenge"))
    return Started(query["state"], name, nonce, query.get("code_challenge", ""), code)


def confirm_event(result: str, owner: str) -> dict[str, Any]:
    """POST /connect-sessions/confirm as the app's return handler sends it."""
    event = load_event("confirm-connection.json")
    event["body"] = json.dumps({"result": result, "owner": owner})
    return event


def callback_event(started: Started, *, cookie: str | None = None) -> dict[str, Any]:
    """The callback's event for ``started``; ``cookie`` replaces the binding nonce."""
    event = load_event("callback.json")
    event["queryStringParameters"] = {"code": started.code, "state": started.state}
    event["rawQueryString"] = f"code={started.code}&state={started.state}"
    event["cookies"] = [f"{started.cookie_name}={cookie if cookie is not None else started.nonce}"]
    return event


def follow(invoke: Invoke, answer: dict[str, Any], started: Started) -> dict[str, Any]:
    """The browser following the callback's 303 to a page of the API's own (its
    ``/auth/callback?connected=`` or ``?retry=``), with the sign-in's binding cookie."""
    assert answer["statusCode"] in (302, 303), answer["statusCode"]
    location = urlsplit(answer["headers"]["Location"])
    event = load_event("callback.json")
    event["rawPath"] = location.path
    event["requestContext"]["http"]["path"] = location.path
    event["queryStringParameters"] = {k: v[0] for k, v in parse_qs(location.query).items()}
    event["rawQueryString"] = location.query
    event["cookies"] = [f"{started.cookie_name}={started.nonce}"]
    page: dict[str, Any] = invoke("CallbackFunction", event)
    return page
