"""Capsule for unit tests: the emulator's own store and routes, served through ``responses``.

The token endpoint, both revocation paths and the API answer exactly as the emulator does
over HTTP (client credentials, redirect_uri equality, single-use codes, PKCE, refresh-token
rotation with the old pair dead, bearer checks), because it is the same code. What the fake
adds is for tests: it records what was sent, takes canned replies (``*_faults``) ahead of
the emulator's answer, and can run a hook before and after each token request.

Capsule keeps the real time here: tests move the connector's clock with time-machine, not
Capsule's, so tokens issued during a test stay valid on Capsule's side.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import responses
from requests import PreparedRequest
from time_machine import escape_hatch

from local.capsule_emulator import Faults, api, routes
from local.capsule_emulator.oauth import form_fields
from local.capsule_emulator.store import CapsuleStore
from local.capsule_emulator.wire import REVOKE_PATHS, TOKEN_PATH, Request

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-7f3a"
EXPIRES_IN = 604799

# A canned answer: (status, headers, body), or an exception the request raises.
Reply = tuple[int, Mapping[str, str], str] | Exception


class FakeCapsule:
    def __init__(self, mock: responses.RequestsMock, base_url: str) -> None:
        self.mock = mock
        self.base_url = base_url
        self.store = CapsuleStore(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            access_token_lifetime=EXPIRES_IN,
            clock=_real_time,
        )
        self.account = self.store.accounts[0]  # exampleco, user 1 (scott)
        self.token_faults: list[Reply] = []
        self.revoke_faults: list[Reply] = []
        self.api_faults: list[Reply] = []
        self.revoke_requests: list[dict[str, str]] = []
        self.api_requests: list[tuple[str, str]] = []
        self.api_sent: list[Request] = []  # the whole requests, for what the proxy passes on
        self.api_headers: list[dict[str, str]] = []
        # Runs on each token request before it is answered (e.g. to play another worker).
        self.before_token: Callable[[dict[str, str]], None] | None = None
        # Runs once Capsule has answered (rotated), before the answer leaves: a slow answer.
        self.after_token: Callable[[dict[str, str]], None] | None = None
        self._lock = threading.Lock()
        self._no_faults = Faults()  # the canned replies above stand in for them
        mock.add_callback(responses.POST, base_url + TOKEN_PATH, self._token)
        for path in REVOKE_PATHS:
            mock.add_callback(responses.POST, base_url + path, self._revoke)
        api_urls = re.compile(re.escape(base_url) + r"/api/")
        for method in (
            responses.GET, responses.POST, responses.PUT, responses.PATCH, responses.DELETE
        ):  # fmt: skip
            mock.add_callback(method, api_urls, self._api)

    # What tests read and set -----------------------------------------------------------

    @property
    def client_secret(self) -> str:
        return self.store.client_secret

    @client_secret.setter
    def client_secret(self, value: str) -> None:  # the secret rotated in Capsule
        self.store.client_secret = value

    @property
    def token_requests(self) -> list[dict[str, str]]:
        return self.store.token_requests

    @property
    def refresh_tokens(self) -> dict[str, str]:
        """The refresh tokens Capsule would still accept (with their account)."""
        return self.store.live_refresh_tokens()

    @property
    def user(self) -> dict[str, object]:
        return api.current_user(self.account)

    @property
    def site(self) -> dict[str, object]:
        return api.site(self.account)

    # What happens in Capsule outside the connector's requests ---------------------------

    def issue_code(self, redirect_uri: str, code_challenge: str | None = None) -> str:
        """The code approving in Capsule's pages would send back (S256 when challenged)."""
        method = None if code_challenge is None else "S256"
        return self.store.issue_code(
            self.account, redirect_uri, code_challenge=code_challenge, code_challenge_method=method
        )

    def issue_grant(self, scope: str = "read write") -> dict[str, Any]:
        """Tokens for the default user, as a finished authorization would leave them."""
        return self.store.issue_tokens_for(self.account.subdomain, self.account.user_id, scope)

    def revoke_all(self) -> None:
        """The person removed the app in Capsule."""
        self.store.revoke_account_grants()

    # The endpoints ----------------------------------------------------------------------

    def _token(self, request: PreparedRequest) -> Reply:
        sent = _request(request, self.base_url)
        if self.before_token is not None:
            self.before_token(_form(sent))
        routes.record(self.store, sent)
        reply = self._answer(sent, self.token_faults)
        if self.after_token is not None:
            self.after_token(_form(sent))
        return reply

    def _revoke(self, request: PreparedRequest) -> Reply:
        sent = _request(request, self.base_url)
        with self._lock:
            self.revoke_requests.append(_form(sent))
        return self._answer(sent, self.revoke_faults)

    def _api(self, request: PreparedRequest) -> Reply:
        sent = _request(request, self.base_url)
        with self._lock:
            self.api_requests.append((sent.method, sent.path.removeprefix("/api/v2")))
            self.api_sent.append(sent)
            self.api_headers.append(dict(request.headers))
        return self._answer(sent, self.api_faults)

    def _answer(self, sent: Request, faults: list[Reply]) -> Reply:
        with self._lock:
            if faults:
                return faults.pop(0)
        reply = routes.handle(self.store, self._no_faults, sent)
        headers = {"Content-Type": reply.content_type, **reply.headers}
        return reply.status, headers, reply.body.decode("utf-8")


def _real_time() -> float:
    return escape_hatch.time.time() if escape_hatch.is_travelling() else time.time()


def _request(request: PreparedRequest, base_url: str) -> Request:
    body = request.body or b""
    path, _, query = (request.path_url or "/").partition("?")
    return Request(
        method=request.method or "GET",
        path=path,
        query=query,
        body=body.encode("utf-8") if isinstance(body, str) else body,
        authorization=request.headers.get("Authorization"),
        content_type=request.headers.get("Content-Type", ""),
        base_url=base_url,
    )


def _form(sent: Request) -> dict[str, str]:
    return {key: values[0] for key, values in form_fields(sent.body).items()}
