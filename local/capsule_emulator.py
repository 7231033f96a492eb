"""A strict, in-process emulator of Capsule CRM's OAuth 2.0 server and a slice of API v2.

Standard library only. Start it on a free port and point a client at ``emulator.url``::

    from local.capsule_emulator import CapsuleEmulator

    with CapsuleEmulator(client_id="id", client_secret="secret", port=0) as emulator:
        print(emulator.url)  # http://127.0.0.1:<port>

or from a shell: ``python -m local.capsule_emulator --port 8901 --client-id X --client-secret Y``.

Endpoints (all paths relative to ``emulator.url``)
-------------------------------------------------
``GET  /oauth/authorise``            start: ``response_type=code``, ``client_id``, ``redirect_uri``,
                                     ``state``, ``scope`` (space separated; ``read``, ``write``,
                                     ``user_preference``; default ``read write``), optional
                                     ``code_challenge`` + ``code_challenge_method`` (S256|plain).
``POST /oauth/authorise/account``    form ``request_id``, ``subdomain`` (``exampleco``, also
                                     ``exampleco.capsulecrm.com`` or its https URL).
``POST /oauth/authorise/login``      form ``request_id``, ``username``, ``password``.
``POST /oauth/authorise/decision``   form ``request_id``, ``decision`` = ``allow`` | ``deny``
                                     (only after a successful login). Answers 302 to
                                     ``redirect_uri?code=...&state=...`` or
                                     ``redirect_uri?error=access_denied&...&state=...``.
``POST /oauth/token``                ``authorization_code`` and ``refresh_token`` grants.
``POST /oauth/revoke``, ``POST /oauth/token/revoke``   RFC 7009; revokes the whole grant.
``GET  /api/v2/users/current``, ``GET /api/v2/site``, ``GET /api/v2/parties?page=&perPage=``
``GET  /.well-known/oauth-authorization-server``        discovery document.
``GET|POST|DELETE /_emulator/faults``, ``GET /_emulator/state``,
``GET|POST /_emulator/settings``     control plane for tests and demos (no secrets in answers).

Driving the pages from a script: every page carries the pending request's opaque id in a
hidden ``request_id`` field. ``GET /oauth/authorise?...`` answers the account picker (text input
``id="subdomain"``, button ``id="continue"``, one button ``id="account-<subdomain>"`` per
known account); POSTing ``request_id`` + ``subdomain`` answers the login page (inputs
``id="username"``, ``id="password"``, button ``id="login"`` "Log in"; a wrong password answers
the same page with ``id="error"``); POSTing ``request_id`` + ``username`` + ``password`` answers
the consent page (buttons ``id="allow"`` / ``id="deny"``, named ``decision``); POSTing
``request_id`` + ``decision`` answers the 302. Don't follow that redirect: read ``Location``.

Strictness worth knowing: token and revoke requests must be form encoded, in the body (no
query string), with each parameter once and client credentials sent in exactly one way (body
or HTTP Basic). Codes are single use and expire (``code_lifetime``); a second use revokes the
tokens issued from the code. ``redirect_uri`` must be resent and equal. Refreshing rotates
both tokens and kills the old pair. The API wants ``Authorization: Bearer``; a token in the
query string is refused. Faults are consumed in the order they were added, one per request;
``/oauth/token`` requests are recorded in ``token_requests`` before any fault applies.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import html
import json
import re
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

__all__ = [
    "DEFAULT_ACCOUNTS",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "Account",
    "CapsuleEmulator",
    "Fault",
    "Faults",
    "main",
]

DEFAULT_CLIENT_ID: Final = "emulator-client-id"
DEFAULT_CLIENT_SECRET: Final = "emulator-client-secret"
DEFAULT_PASSWORD: Final = "capsule"
DEFAULT_ACCESS_TOKEN_LIFETIME: Final = 604799
DEFAULT_CODE_LIFETIME: Final = 60
DEFAULT_RATE_LIMIT: Final = 4000
DEFAULT_APP_NAME: Final = "Capsule Connector"

SCOPES: Final = ("read", "write", "user_preference")
DEFAULT_SCOPE: Final = "read write"
PENDING_LIFETIME: Final = 1800  # seconds an unfinished authorisation request stays usable
RATE_WINDOW: Final = 3600
MAX_BODY: Final = 1 << 20
MAX_PER_PAGE: Final = 100

AUTHORISE_PATH: Final = "/oauth/authorise"
ACCOUNT_PATH: Final = "/oauth/authorise/account"
LOGIN_PATH: Final = "/oauth/authorise/login"
DECISION_PATH: Final = "/oauth/authorise/decision"
TOKEN_PATH: Final = "/oauth/token"
REVOKE_PATHS: Final = ("/oauth/revoke", "/oauth/token/revoke")
DISCOVERY_PATH: Final = "/.well-known/oauth-authorization-server"
API_PREFIX: Final = "/api/v2"

FAULT_KINDS: Final = ("latency", "status", "rate_limit", "malformed", "invalid_grant", "drop")
FAULT_TARGETS: Final = ("token", "revoke", "api", "any")
_FAULT_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "latency": frozenset({"seconds"}),
    "status": frozenset({"status"}),
    "rate_limit": frozenset({"reset_in"}),
    "malformed": frozenset(),
    "invalid_grant": frozenset(),
    "drop": frozenset(),
}

# RFC 7636 section 4.1: 43 to 128 unreserved characters.
_PKCE_RE: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_JSON: Final = "application/json"
_NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Account:
    """A Capsule account (site) with its one user."""

    subdomain: str
    site_name: str
    user_id: int
    username: str
    user_name: str
    password: str = DEFAULT_PASSWORD


DEFAULT_ACCOUNTS: Final = (
    Account("exampleco", "Example Co.", 1, "scott", "Scott Spacey"),
    Account("acme", "Acme Ltd", 7, "ada", "Ada Lovelace"),
)


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """One queued fault. ``times`` is how many more requests it hits; None = until cleared."""

    kind: str
    target: str
    times: int | None
    seconds: float = 1.0
    status: int = 503
    reset_in: int = 60

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "target": self.target, "times": self.times}
        if self.kind == "latency":
            data["seconds"] = self.seconds
        elif self.kind == "status":
            data["status"] = self.status
        elif self.kind == "rate_limit":
            data["reset_in"] = self.reset_in
        return data


class Faults:
    """A thread-safe queue of faults to inject.

    Targets: ``token`` (/oauth/token), ``revoke`` (the revocation endpoints), ``api``
    (/api/...), ``any`` (every request but /_emulator/* and /favicon.ico). A request takes the
    first queued fault that applies to it; ``invalid_grant`` applies to /oauth/token only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def add(
        self, kind: str, target: str = "token", times: int | None = 1, **params: float
    ) -> Fault:
        """Queue a fault. Params: ``seconds`` (latency), ``status`` (status), ``reset_in``
        (rate_limit). Raises ValueError on anything it does not understand."""
        fault = _make_fault(kind, target, times, params)
        with self._lock:
            self._queue.append(fault)
        return fault

    def clear(self) -> int:
        """Drop every queued fault; returns how many there were."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
        return count

    def pending(self) -> list[dict[str, object]]:
        with self._lock:
            return [fault.as_dict() for fault in self._queue]

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the first fault that applies to a request on ``endpoint``
        (``token``, ``revoke``, ``api`` or ``other``)."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.target not in (endpoint, "any"):
                    continue
                if fault.kind == "invalid_grant" and endpoint != "token":
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._queue[index]
                return Fault(fault.kind, fault.target, fault.times, **_fault_params(fault))
        return None


def _fault_params(fault: Fault) -> dict[str, Any]:
    return {"seconds": fault.seconds, "status": fault.status, "reset_in": fault.reset_in}


def _make_fault(kind: str, target: str, times: int | None, params: Mapping[str, float]) -> Fault:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    if target not in FAULT_TARGETS:
        raise ValueError(f"unknown fault target {target!r}; expected one of {FAULT_TARGETS}")
    if kind == "invalid_grant" and target not in ("token", "any"):
        raise ValueError("invalid_grant faults only apply to the token endpoint")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer or None (= until cleared)")
    unknown = set(params) - _FAULT_PARAMS[kind]
    if unknown:
        raise ValueError(f"{kind} faults take no {', '.join(sorted(unknown))}")
    fault = Fault(kind, target, times)
    _set_fault_params(fault, params)
    return fault


def _set_fault_params(fault: Fault, params: Mapping[str, float]) -> None:
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
    if "seconds" in params:
        fault.seconds = float(params["seconds"])
        if not 0 <= fault.seconds <= 600:
            raise ValueError("seconds must be between 0 and 600")
    if "status" in params:
        if int(params["status"]) != params["status"] or not 400 <= params["status"] <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        fault.status = int(params["status"])
    if "reset_in" in params:
        if int(params["reset_in"]) != params["reset_in"] or params["reset_in"] < 0:
            raise ValueError("reset_in must be a non-negative whole number of seconds")
        fault.reset_in = int(params["reset_in"])


# --------------------------------------------------------------------------- errors


class _OAuthError(Exception):
    """An RFC 6749 section 5.2 error from the token or revocation endpoint."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers: Mapping[str, str] = headers or {}


def _invalid_request(description: str) -> _OAuthError:
    return _OAuthError(400, "invalid_request", description)


def _invalid_grant(description: str) -> _OAuthError:
    return _OAuthError(400, "invalid_grant", description)


class _PageError(Exception):
    """An error shown to the user as an HTML page (never redirected)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _RedirectError(Exception):
    """An RFC 6749 section 4.1.2.1 error sent back to the (verified) redirect_uri."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, object] = {"message": message}
        self.headers: Mapping[str, str] = headers or {}


# --------------------------------------------------------------------------- store records


@dataclass
class _Pending:
    request_id: str
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float
    subdomain: str | None = None
    authenticated: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    subdomain: str
    user_id: int
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class _Grant:
    grant_id: str
    client_id: str
    subdomain: str
    user_id: int
    scope: str
    access_token: str
    refresh_token: str
    access_expires_at: float


@dataclass(frozen=True)
class _Principal:
    subdomain: str
    user_id: int
    scope: frozenset[str]


# --------------------------------------------------------------------------- helpers


def _with_params(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({key: value for key, value in params.items() if value is not None})
    separator = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return f"{uri}{separator}{query}"


def _parse_scope(raw: str | None) -> str:
    """Canonical scope string, or ValueError."""
    requested = (raw or DEFAULT_SCOPE).split()
    if not requested:
        requested = DEFAULT_SCOPE.split()
    unknown = [scope for scope in requested if scope not in SCOPES]
    if unknown:
        raise ValueError(f"Unknown scope: {' '.join(unknown)}")
    return " ".join(scope for scope in SCOPES if scope in requested)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(left: str, right: str) -> bool:
    return secrets.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


def _single_values(multi: Mapping[str, list[str]]) -> dict[str, str]:
    """Parameters that appear once with a non-empty value (RFC 6749 section 3.1)."""
    repeated = sorted(key for key, values in multi.items() if len(values) > 1)
    if repeated:
        raise _invalid_request(f"Parameter sent more than once: {repeated[0]}")
    return {key: values[0] for key, values in multi.items() if values and values[0] != ""}


def _normalise_subdomain(raw: str) -> str:
    value = raw.strip().lower()
    for prefix in ("https://", "http://"):
        value = value.removeprefix(prefix)
    value = value.split("/", 1)[0]
    return value.removesuffix(".capsulecrm.com")


def _rate_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(reset),
    }


def _window_end(now: float) -> int:
    return (int(now) // RATE_WINDOW + 1) * RATE_WINDOW


_FIRST_NAMES: Final = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
_LAST_NAMES: Final = ("Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_PARTY_COUNT: Final = 12


def _fake_parties(account: Account) -> list[dict[str, object]]:
    parties: list[dict[str, object]] = []
    for index in range(_PARTY_COUNT):
        first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
        last = _LAST_NAMES[index % len(_LAST_NAMES)]
        party_id = account.user_id * 1000 + index + 1
        stamp = f"2024-01-{index + 1:02d}T09:30:00Z"
        parties.append(
            {
                "id": party_id,
                "type": "person",
                "firstName": first,
                "lastName": last,
                "jobTitle": "Engineer",
                "createdAt": stamp,
                "updatedAt": stamp,
                "emailAddresses": [
                    {
                        "id": party_id * 10,
                        "type": "Work",
                        "address": f"{first}.{last}@{account.subdomain}.example".lower(),
                    }
                ],
            }
        )
    return parties


def _positive_int(raw: str | None, name: str, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise _ApiError(400, f"{name} must be a whole number between 1 and {maximum}")
    return int(raw)


# --------------------------------------------------------------------------- HTML


_CSS: Final = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#eef1f5;"
    "color:#1f2933;margin:0}"
    "main{max-width:30rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;"
    "border-radius:10px;box-shadow:0 2px 8px rgba(0,0,0,.12)}"
    "h1{font-size:1.4rem;margin-top:0}h2{font-size:1.1rem;margin-top:1.6rem}"
    "button,input{font:inherit}"
    ".address{display:flex;align-items:center;gap:.4rem}.address input{flex:1}"
    "label{display:block;margin:.8rem 0 .3rem;font-weight:600}"
    "input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;"
    "border:1px solid #9aa5b1;border-radius:5px;font-size:1rem}"
    "button{margin-top:1rem;padding:.55rem 1.2rem;border:0;border-radius:5px;font-size:1rem;"
    "cursor:pointer;background:#2e6bd1;color:#fff}"
    "button.secondary{background:#e4e7eb;color:#1f2933}"
    ".accounts button{display:block;width:100%;text-align:left;background:#f5f7fa;"
    "color:#1f2933;border:1px solid #cbd2d9}"
    ".error{background:#fde8e8;color:#9b1c1c;padding:.6rem .8rem;border-radius:5px}"
    ".brand{color:#2e6bd1;font-weight:700;letter-spacing:.02em}"
    ".row{display:flex;gap:.8rem}"
)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<p class="brand">Capsule (emulator)</p>{body}</main></body></html>'
    )


def _hidden(request_id: str) -> str:
    return f'<input type="hidden" name="request_id" value="{_esc(request_id)}">'


def _error_block(error: str | None) -> str:
    if not error:
        return ""
    return f'<p class="error" id="error" role="alert">{_esc(error)}</p>'


def _account_page(request_id: str, accounts: Iterable[Account], error: str | None = None) -> str:
    buttons = "".join(
        f'<form method="post" action="{ACCOUNT_PATH}">{_hidden(request_id)}'
        f'<input type="hidden" name="subdomain" value="{_esc(account.subdomain)}">'
        f'<button type="submit" id="account-{_esc(account.subdomain)}">'
        f"{_esc(account.site_name)} ({_esc(account.subdomain)}.capsulecrm.com)</button></form>"
        for account in accounts
    )
    body = (
        "<h1>Choose your Capsule account</h1>"
        f"{_error_block(error)}"
        f'<form method="post" action="{ACCOUNT_PATH}" id="account-form">{_hidden(request_id)}'
        '<label for="subdomain">Your Capsule account address</label>'
        '<div class="address"><input type="text" id="subdomain" name="subdomain" '
        'placeholder="yourcompany" autocomplete="off" required><span>.capsulecrm.com</span></div>'
        '<button type="submit" id="continue">Continue</button></form>'
        f'<h2>Known accounts</h2><div class="accounts">{buttons}</div>'
    )
    return _page("Choose your Capsule account", body)


def _login_page(request_id: str, account: Account, error: str | None = None) -> str:
    body = (
        f"<h1>Log in to {_esc(account.site_name)}</h1>"
        f"<p>{_esc(account.subdomain)}.capsulecrm.com</p>"
        f"{_error_block(error)}"
        f'<form method="post" action="{LOGIN_PATH}" id="login-form">{_hidden(request_id)}'
        '<label for="username">Username</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required>'
        '<button type="submit" id="login">Log in</button></form>'
    )
    return _page(f"Log in to {account.site_name}", body)


_SCOPE_TEXT: Final[Mapping[str, str]] = {
    "read": "Read your Capsule data",
    "write": "Create, change and delete your Capsule data",
    "user_preference": "Read and change your user preferences",
}


def _consent_page(request_id: str, app_name: str, account: Account, scope: str) -> str:
    items = "".join(f"<li>{_esc(_SCOPE_TEXT[name])}</li>" for name in scope.split())
    body = (
        f'<h1 id="consent-title">Allow {_esc(app_name)} to access {_esc(account.site_name)}?</h1>'
        f"<p>Signed in as {_esc(account.user_name)} ({_esc(account.username)}).</p>"
        f'<p>It will be able to:</p><ul id="scopes">{items}</ul>'
        f'<form method="post" action="{DECISION_PATH}" id="decision-form">{_hidden(request_id)}'
        '<div class="row"><button type="submit" name="decision" value="allow" id="allow">'
        "Allow</button>"
        '<button type="submit" name="decision" value="deny" id="deny" class="secondary">'
        "Deny</button></div></form>"
    )
    return _page("Authorise application", body)


def _error_page(message: str) -> str:
    return _page(
        "Authorisation error",
        f'<h1>Something went wrong</h1><p class="error" id="error">{_esc(message)}</p>',
    )


def _home_page(url: str) -> str:
    body = (
        "<h1>Capsule CRM emulator</h1>"
        "<p>This is a local emulator of Capsule CRM's OAuth 2.0 server and API v2, "
        "for development and tests. It is not Capsule.</p>"
        f'<p>Discovery: <a href="{_esc(url)}{DISCOVERY_PATH}">{DISCOVERY_PATH}</a><br>'
        f'State: <a href="{_esc(url)}/_emulator/state">/_emulator/state</a></p>'
    )
    return _page("Capsule CRM emulator", body)


# --------------------------------------------------------------------------- the emulator


class CapsuleEmulator:
    """Capsule's OAuth 2.0 server and API v2, served from a daemon thread."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        code_lifetime: int = DEFAULT_CODE_LIFETIME,
        accounts: Iterable[Account] | None = None,
        allowed_redirect_uris: Iterable[str] | None = None,
        rate_limit: int = DEFAULT_RATE_LIMIT,
        app_name: str = DEFAULT_APP_NAME,
        log_requests: bool = False,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret must not be empty")
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.port = port
        self.app_name = app_name
        self.log_requests = log_requests
        self.allowed_redirect_uris: frozenset[str] | None = (
            None if allowed_redirect_uris is None else frozenset(allowed_redirect_uris)
        )
        account_list = list(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self._accounts: dict[str, Account] = {
            account.subdomain: account for account in account_list
        }
        if not self._accounts or len(self._accounts) != len(account_list):
            raise ValueError("accounts must be non-empty with distinct subdomains")

        self.faults = Faults()
        self.token_requests: list[dict[str, str]] = []

        self._lock = threading.Lock()
        self._access_token_lifetime = _check_setting("access_token_lifetime", access_token_lifetime)
        self._code_lifetime = _check_setting("code_lifetime", code_lifetime)
        self._rate_limit = _check_setting("rate_limit", rate_limit)
        self._pending: dict[str, _Pending] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        self._by_access: dict[str, str] = {}
        self._by_refresh: dict[str, str] = {}
        self._rate: dict[tuple[str, int], tuple[int, int]] = {}

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> CapsuleEmulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping = threading.Event()
        server = _Server((self.host, self.port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="capsule-emulator",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CapsuleEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        server = self._server
        if server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        host, port = server.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        return f"http://{shown}:{port}"

    @property
    def accounts(self) -> tuple[Account, ...]:
        return tuple(self._accounts.values())

    # ----------------------------------------------------------------- settings

    @property
    def access_token_lifetime(self) -> int:
        with self._lock:
            return self._access_token_lifetime

    @access_token_lifetime.setter
    def access_token_lifetime(self, value: int) -> None:
        checked = _check_setting("access_token_lifetime", value)
        with self._lock:
            self._access_token_lifetime = checked

    @property
    def code_lifetime(self) -> int:
        with self._lock:
            return self._code_lifetime

    @code_lifetime.setter
    def code_lifetime(self, value: int) -> None:
        checked = _check_setting("code_lifetime", value)
        with self._lock:
            self._code_lifetime = checked

    @property
    def rate_limit(self) -> int:
        with self._lock:
            return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: int) -> None:
        checked = _check_setting("rate_limit", value)
        with self._lock:
            self._rate_limit = checked

    def settings(self) -> dict[str, int]:
        with self._lock:
            return {
                "access_token_lifetime": self._access_token_lifetime,
                "code_lifetime": self._code_lifetime,
                "rate_limit": self._rate_limit,
            }

    def update_settings(self, changes: Mapping[str, object]) -> dict[str, int]:
        unknown = set(changes) - {"access_token_lifetime", "code_lifetime", "rate_limit"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        checked = {name: _check_setting(name, value) for name, value in changes.items()}
        with self._lock:
            self._access_token_lifetime = checked.get(
                "access_token_lifetime", self._access_token_lifetime
            )
            self._code_lifetime = checked.get("code_lifetime", self._code_lifetime)
            self._rate_limit = checked.get("rate_limit", self._rate_limit)
        return self.settings()

    # ----------------------------------------------------------------- test helpers

    def issue_tokens_for(
        self, subdomain: str, user_id: int, scope: str = DEFAULT_SCOPE
    ) -> dict[str, Any]:
        """Create a grant as if the user had gone through the pages; returns the token JSON."""
        account = self._account(subdomain)
        if account.user_id != user_id:
            raise ValueError(f"user {user_id} is not a user of {subdomain}")
        canonical = _parse_scope(scope)
        with self._lock:
            grant = self._new_grant_locked(self.client_id, account, canonical)
            return self._token_json_locked(grant)

    def revoke(self, token: str) -> bool:
        """Revoke the grant an access or refresh token belongs to (as a user would, in
        Capsule). Returns whether a live grant was found."""
        with self._lock:
            grant_id = self._by_access.get(token) or self._by_refresh.get(token)
            return grant_id is not None and self._drop_grant_locked(grant_id)

    def revoke_account_grants(self, subdomain: str) -> int:
        """Revoke every grant and unused code for an account; returns the grants revoked."""
        self._account(subdomain)
        with self._lock:
            for code in self._codes.values():
                if code.subdomain == subdomain:
                    code.used = True
            doomed = [g.grant_id for g in self._grants.values() if g.subdomain == subdomain]
            for grant_id in doomed:
                self._drop_grant_locked(grant_id)
        return len(doomed)

    def live_grants(self, subdomain: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for g in self._grants.values() if subdomain is None or g.subdomain == subdomain
            )

    def state(self) -> dict[str, object]:
        """A summary with no secrets in it (what GET /_emulator/state answers)."""
        now = time.time()
        with self._lock:
            accounts = {
                sub: {
                    "site_name": account.site_name,
                    "user_id": account.user_id,
                    "live_grants": sum(1 for g in self._grants.values() if g.subdomain == sub),
                }
                for sub, account in self._accounts.items()
            }
            unused_codes = sum(1 for c in self._codes.values() if not c.used and c.expires_at > now)
            pending = sum(
                1 for p in self._pending.values() if p.created_at + PENDING_LIFETIME > now
            )
            requests = len(self.token_requests)
        return {
            "accounts": accounts,
            "live_grants": sum(cast(int, a["live_grants"]) for a in accounts.values()),
            "token_requests": requests,
            "pending_authorisations": pending,
            "unused_codes": unused_codes,
            "faults": self.faults.pending(),
            "settings": self.settings(),
        }

    def discovery(self) -> dict[str, object]:
        base = self.url
        return {
            "issuer": base,
            "authorization_endpoint": base + AUTHORISE_PATH,
            "token_endpoint": base + TOKEN_PATH,
            "revocation_endpoint": base + REVOKE_PATHS[0],
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
        }

    # ----------------------------------------------------------------- authorisation pages

    def _account(self, subdomain: str) -> Account:
        account = self._accounts.get(subdomain)
        if account is None:
            raise ValueError(f"no account with subdomain {subdomain!r}")
        return account

    def _begin_authorisation(self, multi: Mapping[str, list[str]]) -> _Pending:
        client_ids = multi.get("client_id", [])
        if len(client_ids) != 1 or not client_ids[0]:
            raise _PageError(400, "The request has no client_id, or more than one.")
        if not _same(client_ids[0], self.client_id):
            raise _PageError(400, "The client_id is not a registered application.")
        redirects = multi.get("redirect_uri", [])
        if len(redirects) != 1 or not self._redirect_uri_ok(redirects[0]):
            raise _PageError(
                400, "The redirect_uri is missing or is not registered for this application."
            )
        redirect_uri = redirects[0]
        state = next((value for value in multi.get("state", []) if value), None)

        def fail(error: str, description: str) -> _RedirectError:
            params = {"error": error, "error_description": description, "state": state}
            return _RedirectError(_with_params(redirect_uri, params))

        try:
            params = _single_values(multi)
        except _OAuthError as exc:
            raise fail("invalid_request", exc.description) from None
        response_type = params.get("response_type")
        if response_type is None:
            raise fail("invalid_request", "response_type is required")
        if response_type != "code":
            raise fail("unsupported_response_type", "Only response_type=code is supported")
        try:
            scope = _parse_scope(params.get("scope"))
        except ValueError as exc:
            raise fail("invalid_scope", str(exc)) from None
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None and method is not None:
            raise fail("invalid_request", "code_challenge_method sent without code_challenge")
        if challenge is not None:
            method = method or "plain"
            if method not in ("S256", "plain"):
                raise fail("invalid_request", "code_challenge_method must be S256 or plain")
            if not _PKCE_RE.fullmatch(challenge):
                raise fail("invalid_request", "code_challenge must be 43-128 URL-safe characters")
        now = time.time()
        pending = _Pending(
            request_id=secrets.token_urlsafe(18),
            redirect_uri=redirect_uri,
            state=params.get("state"),
            scope=scope,
            code_challenge=challenge,
            code_challenge_method=method,
            created_at=now,
        )
        with self._lock:
            expired = [
                key for key, p in self._pending.items() if p.created_at + PENDING_LIFETIME <= now
            ]
            for key in expired:
                del self._pending[key]
            self._pending[pending.request_id] = pending
        return pending

    def _redirect_uri_ok(self, uri: str) -> bool:
        if self.allowed_redirect_uris is not None:
            return uri in self.allowed_redirect_uris
        try:
            parts = urlsplit(uri)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment

    def _pending_request(self, request_id: str | None) -> _Pending:
        with self._lock:
            pending = self._pending.get(request_id or "")
            if pending is None or pending.created_at + PENDING_LIFETIME <= time.time():
                raise _PageError(
                    400,
                    "This authorisation request is unknown, has expired or was already "
                    "answered. Start again from the application.",
                )
            return pending

    def _choose_account(self, request_id: str | None, raw_subdomain: str | None) -> str:
        """Answer the login page, or the account picker again with an error."""
        pending = self._pending_request(request_id)
        subdomain = _normalise_subdomain(raw_subdomain or "")
        account = self._accounts.get(subdomain)
        if account is None:
            shown = raw_subdomain or ""
            error = f"There is no Capsule account at {shown!r}." if shown else "Enter an account."
            return _account_page(pending.request_id, self.accounts, error)
        with self._lock:
            pending.subdomain = account.subdomain
            pending.authenticated = False
        return _login_page(pending.request_id, account)

    def _login(self, request_id: str | None, username: str | None, password: str | None) -> str:
        pending = self._pending_request(request_id)
        if pending.subdomain is None:
            raise _PageError(400, "Choose your Capsule account first.")
        account = self._accounts[pending.subdomain]
        valid = _same((username or "").strip().lower(), account.username.lower()) & _same(
            password or "", account.password
        )
        if not valid:
            return _login_page(pending.request_id, account, "Incorrect username or password.")
        with self._lock:
            pending.authenticated = True
        return _consent_page(pending.request_id, self.app_name, account, pending.scope)

    def _decide(self, request_id: str | None, decision: str | None) -> str:
        """Returns the Location to redirect to."""
        pending = self._pending_request(request_id)
        if not pending.authenticated or pending.subdomain is None:
            raise _PageError(400, "Log in before allowing or denying access.")
        if decision not in ("allow", "deny"):
            raise _PageError(400, "decision must be allow or deny.")
        account = self._accounts[pending.subdomain]
        with self._lock:
            if self._pending.pop(pending.request_id, None) is None:
                raise _PageError(400, "This authorisation request was already answered.")
            if decision == "deny":
                params: dict[str, str | None] = {
                    "error": "access_denied",
                    "error_description": "The user denied access to their Capsule account",
                    "state": pending.state,
                }
                return _with_params(pending.redirect_uri, params)
            code = secrets.token_urlsafe(32)
            self._codes[code] = _Code(
                client_id=self.client_id,
                redirect_uri=pending.redirect_uri,
                scope=pending.scope,
                subdomain=account.subdomain,
                user_id=account.user_id,
                code_challenge=pending.code_challenge,
                code_challenge_method=pending.code_challenge_method,
                expires_at=time.time() + self._code_lifetime,
            )
        return _with_params(pending.redirect_uri, {"code": code, "state": pending.state})

    # ----------------------------------------------------------------- token endpoint

    def _authenticate_client(self, form: Mapping[str, str], authorization: str | None) -> str:
        if authorization is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
            if client_id is None or secret is None:
                raise _OAuthError(
                    401,
                    "invalid_client",
                    "Client authentication failed: send client_id and client_secret",
                )
            basic = False
        else:
            basic = True
            client_id, secret = _basic_credentials(authorization)
            if "client_secret" in form:
                raise _invalid_request("Use one client authentication method, not two")
            if form.get("client_id", client_id) != client_id:
                raise _invalid_request("client_id in the body differs from the Basic credentials")
        if not (_same(client_id, self.client_id) & _same(secret, self.client_secret)):
            headers = {"WWW-Authenticate": 'Basic realm="Capsule"'} if basic else None
            raise _OAuthError(401, "invalid_client", "Client authentication failed", headers)
        return client_id

    def _token(self, form: Mapping[str, str], authorization: str | None) -> dict[str, object]:
        client_id = self._authenticate_client(form, authorization)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise _invalid_request("grant_type is required")
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, form)
        if grant_type == "refresh_token":
            return self._refresh(client_id, form)
        raise _OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def _exchange_code(self, client_id: str, form: Mapping[str, str]) -> dict[str, object]:
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        if code is None:
            raise _invalid_request("code is required")
        if redirect_uri is None:
            raise _invalid_request("redirect_uri is required")
        verifier = form.get("code_verifier")
        with self._lock:
            record = self._codes.get(code)
            if record is None or record.client_id != client_id:
                raise _invalid_grant("The authorisation code is invalid")
            if record.used:
                if record.grant_id is not None:
                    self._drop_grant_locked(record.grant_id)
                raise _invalid_grant(
                    "The authorisation code was already used; tokens issued from it are revoked"
                )
            if time.time() >= record.expires_at:
                raise _invalid_grant("The authorisation code has expired")
            if redirect_uri != record.redirect_uri:
                raise _invalid_grant("redirect_uri does not match the authorisation request")
            _check_pkce(record.code_challenge, record.code_challenge_method, verifier)
            record.used = True
            grant = self._new_grant_locked(
                client_id, self._accounts[record.subdomain], record.scope
            )
            record.grant_id = grant.grant_id
            return self._token_json_locked(grant)

    def _refresh(self, client_id: str, form: Mapping[str, str]) -> dict[str, object]:
        token = form.get("refresh_token")
        if token is None:
            raise _invalid_request("refresh_token is required")
        requested = form.get("scope")
        with self._lock:
            grant = self._grants.get(self._by_refresh.get(token, ""))
            if grant is None or grant.client_id != client_id:
                raise _invalid_grant("The refresh token is invalid, expired or revoked")
            scope = grant.scope
            if requested is not None:
                try:
                    scope = _parse_scope(requested)
                except ValueError as exc:
                    raise _OAuthError(400, "invalid_scope", str(exc)) from None
                if not set(scope.split()) <= set(grant.scope.split()):
                    raise _OAuthError(400, "invalid_scope", "scope exceeds the original grant")
            del self._by_access[grant.access_token]
            del self._by_refresh[grant.refresh_token]
            grant.scope = scope
            self._issue_pair_locked(grant)
            return self._token_json_locked(grant)

    def _revoke_request(self, form: Mapping[str, str], authorization: str | None) -> None:
        client_id = self._authenticate_client(form, authorization)
        token = form.get("token")
        if token is None:
            raise _invalid_request("token is required")
        with self._lock:
            grant_id = self._by_access.get(token) or self._by_refresh.get(token)
            grant = self._grants.get(grant_id or "")
            if grant is not None and grant.client_id == client_id:
                self._drop_grant_locked(grant.grant_id)

    # ----------------------------------------------------------------- store (lock held)

    def _new_grant_locked(self, client_id: str, account: Account, scope: str) -> _Grant:
        grant = _Grant(
            grant_id=secrets.token_urlsafe(12),
            client_id=client_id,
            subdomain=account.subdomain,
            user_id=account.user_id,
            scope=scope,
            access_token="",
            refresh_token="",
            access_expires_at=0.0,
        )
        self._grants[grant.grant_id] = grant
        self._issue_pair_locked(grant)
        return grant

    def _issue_pair_locked(self, grant: _Grant) -> None:
        grant.access_token = secrets.token_urlsafe(32)
        grant.refresh_token = secrets.token_urlsafe(32)
        grant.access_expires_at = time.time() + self._access_token_lifetime
        self._by_access[grant.access_token] = grant.grant_id
        self._by_refresh[grant.refresh_token] = grant.grant_id

    def _token_json_locked(self, grant: _Grant) -> dict[str, Any]:
        return {
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "token_type": "bearer",
            "expires_in": self._access_token_lifetime,
            "scope": grant.scope,
            "subdomain": grant.subdomain,
        }

    def _drop_grant_locked(self, grant_id: str) -> bool:
        grant = self._grants.pop(grant_id, None)
        if grant is None:
            return False
        self._by_access.pop(grant.access_token, None)
        self._by_refresh.pop(grant.refresh_token, None)
        return True

    # ----------------------------------------------------------------- API

    def _unauthenticated_rate_headers(self) -> dict[str, str]:
        limit = self.rate_limit
        return _rate_headers(limit, limit, _window_end(time.time()))

    def _api_authorise(
        self, authorization: str | None, query: Mapping[str, list[str]]
    ) -> tuple[_Principal, dict[str, str]]:
        anonymous_headers = self._unauthenticated_rate_headers()  # takes the lock: not inside

        def unauthorised(message: str, error: str | None) -> _ApiError:
            challenge = 'Bearer realm="Capsule"'
            if error is not None:
                challenge += f', error="{error}", error_description="{message}"'
            return _ApiError(401, message, {"WWW-Authenticate": challenge, **anonymous_headers})

        if "access_token" in query:
            raise unauthorised(
                "Send the access token in the Authorization header", "invalid_request"
            )
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise unauthorised("Authentication is required", None)
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorised("Expected an Authorization: Bearer access token", "invalid_request")
        now = time.time()
        with self._lock:
            grant = self._grants.get(self._by_access.get(token.strip(), ""))
            if grant is None:
                raise unauthorised(
                    "The access token is invalid or has been revoked", "invalid_token"
                )
            if now >= grant.access_expires_at:
                raise unauthorised("The access token has expired", "invalid_token")
            principal = _Principal(grant.subdomain, grant.user_id, frozenset(grant.scope.split()))
            key = (grant.subdomain, grant.user_id)
            window_end = _window_end(now)
            seen_window, count = self._rate.get(key, (window_end, 0))
            if seen_window != window_end:
                count = 0
            limit = self._rate_limit
            if count >= limit:
                self._rate[key] = (window_end, count)
                raise _ApiError(429, "rate limit reached", _rate_headers(limit, 0, window_end))
            count += 1
            self._rate[key] = (window_end, count)
        return principal, _rate_headers(limit, limit - count, window_end)

    def _api_resource(
        self, method: str, path: str, principal: _Principal, query: Mapping[str, list[str]]
    ) -> tuple[dict[str, object], dict[str, str]]:
        resources: dict[str, Callable[[], tuple[dict[str, object], dict[str, str]]]] = {
            "/users/current": lambda: (self._current_user(principal), {}),
            "/site": lambda: (self._site(principal), {}),
            "/parties": lambda: self._parties(principal, query),
        }
        resource = resources.get(path.removeprefix(API_PREFIX))
        if not path.startswith(API_PREFIX + "/") or resource is None:
            raise _ApiError(404, "Could not find resource")
        if method != "GET":
            raise _ApiError(405, f"{method} is not allowed here", {"Allow": "GET"})
        if "read" not in principal.scope:
            raise _ApiError(
                403,
                "The access token does not have the read scope",
                {
                    "WWW-Authenticate": 'Bearer realm="Capsule", error="insufficient_scope", '
                    'scope="read"'
                },
            )
        return resource()

    def _current_user(self, principal: _Principal) -> dict[str, object]:
        account = self._accounts[principal.subdomain]
        first, _, last = account.user_name.partition(" ")
        return {
            "user": {
                "id": account.user_id,
                "username": account.username,
                "name": account.user_name,
                "locale": "en_GB",
                "timezone": "Europe/London",
                "currency": "GBP",
                "status": "ACTIVE",
                "party": {
                    "id": account.user_id * 1000,
                    "type": "person",
                    "firstName": first,
                    "lastName": last,
                },
            }
        }

    def _site(self, principal: _Principal) -> dict[str, object]:
        account = self._accounts[principal.subdomain]
        return {
            "site": {
                "url": f"https://{account.subdomain}.capsulecrm.com",
                "subdomain": account.subdomain,
                "name": account.site_name,
            }
        }

    def _parties(
        self, principal: _Principal, query: Mapping[str, list[str]]
    ) -> tuple[dict[str, object], dict[str, str]]:
        page = _positive_int(next(iter(query.get("page", [])), None), "page", 1, 10**6)
        per_page = _positive_int(
            next(iter(query.get("perPage", [])), None), "perPage", 50, MAX_PER_PAGE
        )
        parties = _fake_parties(self._accounts[principal.subdomain])
        start = (page - 1) * per_page
        has_more = start + per_page < len(parties)
        headers = {"X-Pagination-Has-More": "true" if has_more else "false"}
        if has_more:
            next_url = f"{self.url}{API_PREFIX}/parties?page={page + 1}&perPage={per_page}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return {"parties": parties[start : start + per_page]}, headers


def _check_setting(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number")
    return value


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    failure = _OAuthError(
        401,
        "invalid_client",
        "Client authentication failed: malformed Authorization header",
        {"WWW-Authenticate": 'Basic realm="Capsule"'},
    )
    if scheme.lower() != "basic":
        raise failure
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise failure from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise failure
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


def _check_pkce(challenge: str | None, method: str | None, verifier: str | None) -> None:
    if challenge is None:
        if verifier is not None:
            raise _invalid_grant("code_verifier sent, but the authorisation had no code_challenge")
        return
    if verifier is None:
        raise _invalid_grant("code_verifier is required: the authorisation had a code_challenge")
    if not _PKCE_RE.fullmatch(verifier):
        raise _invalid_grant("code_verifier must be 43-128 URL-safe characters")
    computed = _s256(verifier) if method == "S256" else verifier
    if not _same(computed, challenge):
        raise _invalid_grant("code_verifier does not match the code_challenge")


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: CapsuleEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fault_endpoint(path: str) -> str | None:
    if path.startswith("/_emulator/") or path == "/favicon.ico":
        return None
    if path == TOKEN_PATH:
        return "token"
    if path in REVOKE_PATHS:
        return "revoke"
    if path == "/api" or path.startswith("/api/"):
        return "api"
    return "other"


class _Handler(BaseHTTPRequestHandler):
    server_version = "CapsuleEmulator/1.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30

    path_only = "/"
    query = ""
    body = b""

    @property
    def emulator(self) -> CapsuleEmulator:
        return cast(_Server, self.server).emulator

    # Never log the request line: it can carry codes, state and tokens.
    def log_message(self, *_args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", _size: int | str = "-") -> None:
        if self.emulator.log_requests:
            status = getattr(code, "value", code)
            print(f"{self.command} {self.path_only} {status}", file=sys.stderr, flush=True)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ----------------------------------------------------------------- plumbing

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self.path_only, self.query = parts.path or "/", parts.query
        try:
            self.body = self._read_body()
        except _BodyError as exc:
            self._send_json(exc.status, {"message": str(exc)})
            return
        endpoint = _fault_endpoint(self.path_only)
        if endpoint == "token" and self.command == "POST":
            self._record_token_request()
        try:
            if endpoint is not None:
                fault = self.emulator.faults.take(endpoint)
                if fault is not None and self._apply_fault(fault, endpoint):
                    return
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._send_json(500, {"error": "server_error", "message": "Emulator bug"})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise _BodyError(411, "Send a Content-Length; chunked bodies are not supported")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            raise _BodyError(400, "Bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            raise _BodyError(413, "Request body too large")
        return self.rfile.read(length)

    def _record_token_request(self) -> None:
        try:
            multi = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            multi = {}
        record = {key: values[0] for key, values in multi.items()}
        emulator = self.emulator
        with emulator._lock:
            emulator.token_requests.append(record)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def _send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), _JSON, headers)

    def _send_html(self, status: int, page: str) -> None:
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8", headers)

    def _redirect(self, location: str) -> None:
        page = _page(
            "Redirecting", f'<p>Redirecting to <a href="{_esc(location)}">the app</a>.</p>'
        )
        self._send(302, page.encode("utf-8"), "text/html; charset=utf-8", {"Location": location})

    def _send_oauth_error(self, exc: _OAuthError) -> None:
        payload = {"error": exc.error, "error_description": exc.description}
        self._send_json(exc.status, payload, {**_NO_STORE, **exc.headers})

    def _apply_fault(self, fault: Fault, endpoint: str) -> bool:
        """Answer with the fault; False when the request should go on (latency)."""
        if fault.kind == "latency":
            stopping = self.emulator._stopping.wait(fault.seconds)
            self.close_connection = stopping
            return stopping
        if fault.kind == "drop":
            self.close_connection = True
        elif fault.kind == "malformed":
            self._send(200, b"<html>oops", _JSON)
        elif fault.kind == "rate_limit":
            reset = int(time.time()) + fault.reset_in
            headers = _rate_headers(self.emulator.rate_limit, 0, reset)
            self._send_json(429, {"error": "rate limit reached"}, headers)
        elif fault.kind == "invalid_grant":
            self._send_oauth_error(_invalid_grant("The grant is invalid (injected fault)"))
        else:
            message = f"Injected fault: HTTP {fault.status}"
            payload: dict[str, object] = (
                {"error": "server_error", "error_description": message}
                if endpoint in ("token", "revoke")
                else {"message": message}
            )
            self._send_json(fault.status, payload)
        return True

    # ----------------------------------------------------------------- routing

    def _route(self) -> None:
        path = self.path_only
        if path == API_PREFIX or path.startswith(API_PREFIX + "/") or path.startswith("/api/"):
            self._api()
            return
        routes: dict[str, dict[str, Callable[[], None]]] = {
            "/": {"GET": self._home},
            DISCOVERY_PATH: {"GET": self._discovery},
            AUTHORISE_PATH: {"GET": self._authorise},
            ACCOUNT_PATH: {"POST": self._account},
            LOGIN_PATH: {"POST": self._login},
            DECISION_PATH: {"POST": self._decision},
            TOKEN_PATH: {"POST": self._token},
            REVOKE_PATHS[0]: {"POST": self._revoke},
            REVOKE_PATHS[1]: {"POST": self._revoke},
            "/_emulator/faults": {
                "GET": self._faults_list,
                "POST": self._faults_add,
                "DELETE": self._faults_clear,
            },
            "/_emulator/state": {"GET": self._state},
            "/_emulator/settings": {"GET": self._settings, "POST": self._settings_update},
        }
        methods = routes.get(path)
        if methods is None:
            self._send_json(404, {"message": "Not found"})
            return
        handler = methods.get(self.command)
        if handler is None:
            allow = ", ".join(sorted(methods))
            self._send_json(405, {"message": f"Use {allow}"}, {"Allow": allow})
            return
        handler()

    def _form(self) -> dict[str, list[str]]:
        try:
            return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return {}

    def _oauth_form(self) -> dict[str, str]:
        if self.query:
            raise _invalid_request("Send parameters in the request body, not the query string")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise _invalid_request("Content-Type must be application/x-www-form-urlencoded")
        try:
            multi = parse_qs(
                self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
            )
        except (UnicodeDecodeError, ValueError):
            raise _invalid_request("The body is not valid form data") from None
        return _single_values(multi)

    def _json_body(self) -> dict[str, object]:
        try:
            data = json.loads(self.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise ValueError("the body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return cast(dict[str, object], data)

    # ----------------------------------------------------------------- pages

    def _home(self) -> None:
        self._send_html(200, _home_page(self.emulator.url))

    def _discovery(self) -> None:
        self._send_json(200, self.emulator.discovery())

    def _authorise(self) -> None:
        multi = parse_qs(self.query, keep_blank_values=True)
        try:
            pending = self.emulator._begin_authorisation(multi)
        except _PageError as exc:
            self._send_html(exc.status, _error_page(exc.message))
            return
        except _RedirectError as exc:
            self._redirect(exc.location)
            return
        self._send_html(200, _account_page(pending.request_id, self.emulator.accounts))

    def _page_step(self, step: Callable[[dict[str, str | None]], str]) -> None:
        form = self._form()
        values: dict[str, str | None] = {key: vals[-1] for key, vals in form.items()}
        try:
            page = step(values)
        except _PageError as exc:
            self._send_html(exc.status, _error_page(exc.message))
            return
        self._send_html(200, page)

    def _account(self) -> None:
        self._page_step(
            lambda f: self.emulator._choose_account(f.get("request_id"), f.get("subdomain"))
        )

    def _login(self) -> None:
        self._page_step(
            lambda f: self.emulator._login(
                f.get("request_id"), f.get("username"), f.get("password")
            )
        )

    def _decision(self) -> None:
        form = {key: vals[-1] for key, vals in self._form().items()}
        try:
            location = self.emulator._decide(form.get("request_id"), form.get("decision"))
        except _PageError as exc:
            self._send_html(exc.status, _error_page(exc.message))
            return
        self._redirect(location)

    # ----------------------------------------------------------------- OAuth

    def _token(self) -> None:
        try:
            form = self._oauth_form()
            payload = self.emulator._token(form, self.headers.get("Authorization"))
        except _OAuthError as exc:
            self._send_oauth_error(exc)
            return
        self._send_json(200, payload, _NO_STORE)

    def _revoke(self) -> None:
        try:
            form = self._oauth_form()
            self.emulator._revoke_request(form, self.headers.get("Authorization"))
        except _OAuthError as exc:
            self._send_oauth_error(exc)
            return
        self._send(200, b"", _JSON, _NO_STORE)

    # ----------------------------------------------------------------- API

    def _api(self) -> None:
        emulator = self.emulator
        query = parse_qs(self.query, keep_blank_values=True)
        try:
            principal, rate_headers = emulator._api_authorise(
                self.headers.get("Authorization"), query
            )
        except _ApiError as exc:
            body: dict[str, object] = (
                {"error": "rate limit reached"} if exc.status == 429 else exc.body
            )
            self._send_json(exc.status, body, exc.headers)
            return
        try:
            payload, headers = emulator._api_resource(
                self.command, self.path_only, principal, query
            )
        except _ApiError as exc:
            self._send_json(exc.status, exc.body, {**rate_headers, **exc.headers})
            return
        self._send_json(200, payload, {**rate_headers, **headers})

    # ----------------------------------------------------------------- control plane

    def _faults_list(self) -> None:
        self._send_json(200, {"faults": self.emulator.faults.pending()})

    def _faults_add(self) -> None:
        try:
            data = self._json_body()
            kind = data.get("kind")
            target = data.get("target", "token")
            times = data.get("times", 1)
            if not isinstance(kind, str) or not isinstance(target, str):
                raise ValueError("kind and target must be strings")
            if times is not None and not isinstance(times, int):
                raise ValueError("times must be a positive integer or null")
            params: dict[str, float] = {}
            for name in ("seconds", "status", "reset_in"):
                value = data.get(name)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name} must be a number")
                params[name] = value
            unknown = set(data) - {"kind", "target", "times", "seconds", "status", "reset_in"}
            if unknown:
                raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
            fault = self.emulator.faults.add(kind, target, times, **params)
        except ValueError as exc:
            self._send_json(400, {"message": str(exc)})
            return
        self._send_json(201, {"fault": fault.as_dict()})

    def _faults_clear(self) -> None:
        self._send_json(200, {"cleared": self.emulator.faults.clear()})

    def _state(self) -> None:
        self._send_json(200, self.emulator.state())

    def _settings(self) -> None:
        self._send_json(200, {"settings": self.emulator.settings()})

    def _settings_update(self) -> None:
        try:
            settings = self.emulator.update_settings(self._json_body())
        except ValueError as exc:
            self._send_json(400, {"message": str(exc)})
            return
        self._send_json(200, {"settings": settings})


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.capsule_emulator",
        description="Serve a local emulator of Capsule CRM's OAuth 2.0 server and API v2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901, help="0 picks a free port")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument(
        "--expires-in", type=int, default=DEFAULT_ACCESS_TOKEN_LIFETIME, help="access token life"
    )
    parser.add_argument("--code-lifetime", type=int, default=DEFAULT_CODE_LIFETIME)
    parser.add_argument("--rate-limit", type=int, default=DEFAULT_RATE_LIMIT)
    parser.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        help="accept only these redirect URIs (repeatable); default: any http(s) URI",
    )
    parser.add_argument("--app-name", default=DEFAULT_APP_NAME)
    parser.add_argument("--quiet", action="store_true", help="don't log method, path, status")
    args = parser.parse_args(argv)
    try:
        emulator = CapsuleEmulator(
            client_id=args.client_id,
            client_secret=args.client_secret,
            host=args.host,
            port=args.port,
            access_token_lifetime=args.expires_in,
            code_lifetime=args.code_lifetime,
            allowed_redirect_uris=args.redirect_uris,
            rate_limit=args.rate_limit,
            app_name=args.app_name,
            log_requests=not args.quiet,
        )
    except ValueError as exc:
        parser.error(str(exc))
    emulator.start()
    print(f"Capsule emulator listening on {emulator.url}", flush=True)
    print(f"  client_id: {emulator.client_id}", flush=True)
    print(
        "  accounts: " + ", ".join(f"{a.subdomain} ({a.username})" for a in emulator.accounts),
        flush=True,
    )
    print("Press Ctrl-C to stop.", flush=True)
    forever = threading.Event()
    try:
        while not forever.wait(1.0):
            pass
    except KeyboardInterrupt:
        print("\nStopping.", flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
