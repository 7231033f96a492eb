"""A strict fake of Capsule's token endpoint and API on ``responses``, for unit tests.

It checks what a real Capsule would check (client credentials, redirect_uri equality,
single-use codes, PKCE, refresh-token rotation with the old token dead) and records every
token request so tests can assert on exactly what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import responses
from requests import PreparedRequest

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-7f3a"
EXPIRES_IN = 604799

Reply = tuple[int, Mapping[str, str], str] | Exception


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)


@dataclass
class Grant:
    subdomain: str
    user_id: int
    scope: str


@dataclass
class FakeCapsule:
    mock: responses.RequestsMock
    base_url: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    expires_in: int = EXPIRES_IN
    user: dict[str, Any] = field(
        default_factory=lambda: {"id": 1, "username": "scott", "name": "Scott Spacey"}
    )
    site: dict[str, Any] = field(
        default_factory=lambda: {
            "url": "https://exampleco.capsulecrm.com",
            "subdomain": "exampleco",
            "name": "Example Co.",
        }
    )
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_requests: list[tuple[str, str]] = field(default_factory=list)
    token_faults: list[Reply] = field(default_factory=list)
    revoke_requests: list[dict[str, str]] = field(default_factory=list)
    revoke_faults: list[Reply] = field(default_factory=list)
    # Runs on each token request before it is answered (e.g. to play another worker).
    before_token: Callable[[dict[str, str]], None] | None = None
    api_faults: list[Reply] = field(default_factory=list)
    codes: dict[str, dict[str, str | None]] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, Grant] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.mock.add_callback(responses.POST, f"{self.base_url}/oauth/token", self._token)
        self.mock.add_callback(responses.POST, f"{self.base_url}/oauth/revoke", self._revoke)
        for path in ("/users/current", "/site", "/parties"):
            for method in (responses.GET, responses.POST):
                self.mock.add_callback(method, f"{self.base_url}/api/v2{path}", self._api)

    # What a browser visit to Capsule's authorise page would produce.
    def issue_code(self, redirect_uri: str, code_challenge: str | None = None) -> str:
        code = f"code-{next(self._counter)}-{'c' * 24}"
        self.codes[code] = {"redirect_uri": redirect_uri, "challenge": code_challenge}
        return code

    def issue_grant(self, scope: str = "read write") -> dict[str, Any]:
        """Tokens for the default user, as a finished authorization would leave them."""
        with self._lock:
            return self._issue(Grant(self.site["subdomain"], int(self.user["id"]), scope))

    def revoke_all(self) -> None:
        """The person removed the app in Capsule."""
        self.refresh_tokens.clear()
        self.access_tokens.clear()

    def _issue(self, grant: Grant) -> dict[str, Any]:
        n = next(self._counter)
        access, refresh = f"access-{n}-{'a' * 32}", f"refresh-{n}-{'r' * 32}"
        self.access_tokens[access] = grant
        self.refresh_tokens[refresh] = grant
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": grant.scope,
            "subdomain": grant.subdomain,
        }

    def _token(self, request: PreparedRequest) -> Reply:
        body = request.body or ""
        form = dict(parse_qsl(body if isinstance(body, str) else body.decode()))
        if self.before_token is not None:
            self.before_token(form)
        with self._lock:
            self.token_requests.append(form)
            if self.token_faults:
                return self.token_faults.pop(0)
            if form.get("client_id") != self.client_id or (
                form.get("client_secret") != self.client_secret
            ):
                return _json(401, {"error": "invalid_client"})
            if form.get("grant_type") == "authorization_code":
                return self._exchange(form)
            if form.get("grant_type") == "refresh_token":
                grant = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
                if grant is None:
                    return _json(400, {"error": "invalid_grant"})
                self.access_tokens = {
                    token: kept for token, kept in self.access_tokens.items() if kept is not grant
                }
                return _json(200, self._issue(grant))
            return _json(400, {"error": "unsupported_grant_type"})

    def _revoke(self, request: PreparedRequest) -> Reply:
        body = request.body or ""
        form = dict(parse_qsl(body if isinstance(body, str) else body.decode()))
        with self._lock:
            self.revoke_requests.append(form)
            if self.revoke_faults:
                return self.revoke_faults.pop(0)
            if form.get("client_secret") != self.client_secret:
                return _json(401, {"error": "invalid_client"})
            grant = self.refresh_tokens.pop(form.get("token", ""), None)
            if grant is not None:  # RFC 7009: the whole grant goes
                self.access_tokens = {t: g for t, g in self.access_tokens.items() if g is not grant}
            return _json(200, {})

    def _exchange(self, form: dict[str, str]) -> Reply:
        issued = self.codes.pop(form.get("code", ""), None)
        if issued is None or issued["redirect_uri"] != form.get("redirect_uri"):
            return _json(400, {"error": "invalid_grant"})
        challenge = issued["challenge"]
        if challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                return _json(400, {"error": "invalid_grant"})
        return _json(
            200, self._issue(Grant(self.site["subdomain"], int(self.user["id"]), "read write"))
        )

    def _api(self, request: PreparedRequest) -> Reply:
        path = (request.path_url or "").split("?")[0].removeprefix("/api/v2")
        with self._lock:
            self.api_requests.append((request.method or "", path))
            if self.api_faults:
                return self.api_faults.pop(0)
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
                return _json(
                    401,
                    {"message": "Invalid token"},
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
        limits = {
            "X-RateLimit-Limit": "4000",
            "X-RateLimit-Remaining": "3999",
            "X-RateLimit-Reset": "1900000000",
        }
        if path == "/users/current":
            return _json(200, {"user": self.user}, limits)
        if path == "/site":
            return _json(200, {"site": self.site}, limits)
        return _json(200, {"parties": [{"id": 11, "type": "person"}]}, limits)
