"""What travels: Capsule's paths, a request as the emulator reads it, the reply it gives.

The HTTP server and the unit tests' ``responses`` fake both turn their requests into a
``Request`` and send back the ``Reply``, so the two cannot answer differently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

AUTHORISE_PATH: Final = "/oauth/authorise"
ACCOUNT_PATH: Final = "/oauth/authorise/account"
LOGIN_PATH: Final = "/oauth/authorise/login"
DECISION_PATH: Final = "/oauth/authorise/decision"
STEP_PATH: Final = "/oauth/authorise/step"  # GET: the request's current page (post/redirect/get)
TOKEN_PATH: Final = "/oauth/token"
REVOKE_PATHS: Final = ("/oauth/revoke", "/oauth/token/revoke")
DISCOVERY_PATH: Final = "/.well-known/oauth-authorization-server"
API_PREFIX: Final = "/api/v2"
FAULTS_PATH: Final = "/_emulator/faults"
STATE_PATH: Final = "/_emulator/state"
SETTINGS_PATH: Final = "/_emulator/settings"
CHANGES_PATH: Final = "/_emulator/changes"  # a record changed by hand (the home page's button)

JSON: Final = "application/json"
HTML: Final = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    body: bytes = b""
    authorization: str | None = None
    content_type: str = ""
    base_url: str = ""  # where the emulator is reached, for absolute links


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode("utf-8"), JSON, dict(headers or {}))


def html_reply(status: int, page: str, headers: Mapping[str, str] | None = None) -> Reply:
    sent = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", **(headers or {})}
    return Reply(status, page.encode("utf-8"), HTML, sent)


def endpoint_of(path: str) -> str | None:
    """Which fault target a path is: token, revoke, api or other; None for the control
    plane (faults never hit it)."""
    if path.startswith("/_emulator/") or path == "/favicon.ico":
        return None
    if path == TOKEN_PATH:
        return "token"
    if path in REVOKE_PATHS:
        return "revoke"
    if path == "/api" or path.startswith("/api/"):
        return "api"
    return "other"
