"""A sign-in as the handlers see it: the start handler's answer, a code, the callback event.

``start`` runs StartFunction and lets the fake Capsule issue a code for the redirect it
asked for, as a person approving would; ``callback_event`` is the event the browser's
return to /auth/callback becomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


def start(invoke: Invoke, fake: FakeCapsule, event: str = "start.json") -> Started:
    """Run the start handler and let the fake Capsule issue a code, as approving would."""
    response = invoke("StartFunction", load_event(event))
    query = {k: v[0] for k, v in parse_qs(urlsplit(response["headers"]["Location"]).query).items()}
    name, nonce = response["cookies"][0].split(";")[0].split("=", 1)
    code = fake.issue_code(query["redirect_uri"], query.get("code_challenge"))
    return Started(query["state"], name, nonce, query.get("code_challenge", ""), code)


def callback_event(started: Started, *, cookie: str | None = None) -> dict[str, Any]:
    """The callback's event for ``started``; ``cookie`` replaces the binding nonce."""
    event = load_event("callback.json")
    event["queryStringParameters"] = {"code": started.code, "state": started.state}
    event["rawQueryString"] = f"code={started.code}&state={started.state}"
    event["cookies"] = [f"{started.cookie_name}={cookie if cookie is not None else started.nonce}"]
    return event
