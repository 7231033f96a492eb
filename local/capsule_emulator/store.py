"""What the emulated Capsule remembers: the registered app, accounts, sign-ins, codes, grants.

One lock guards it all. Every method takes it; hold ``store.lock`` yourself (it is
re-entrant) only to make several calls one atomic step, as the token endpoint does.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from local.capsule_emulator.hooks import HookRegistry

DEFAULT_CLIENT_ID: Final = "emulator-client-id"
DEFAULT_CLIENT_SECRET: Final = "emulator-client-secret"
DEFAULT_PASSWORD: Final = "capsule"
DEFAULT_ACCESS_TOKEN_LIFETIME: Final = 604799
DEFAULT_RATE_LIMIT: Final = 4000
APP_NAME: Final = "Capsule Connector"
CODE_LIFETIME: Final = 60  # seconds an authorisation code stays redeemable
PENDING_LIFETIME: Final = 1800  # seconds an unfinished authorisation request stays usable
RATE_WINDOW: Final = 3600

SCOPES: Final = ("read", "write", "user_preference")
DEFAULT_SCOPE: Final = "read write"
SETTINGS: Final = ("access_token_lifetime", "rate_limit")


@dataclass(frozen=True)
class Account:
    """A Capsule account (site) with its one user."""

    subdomain: str
    site_name: str
    user_id: int
    username: str
    user_name: str
    password: str = DEFAULT_PASSWORD
    admin: bool = True  # only an administrator may manage REST hooks


DEFAULT_ACCOUNTS: Final = (
    Account("exampleco", "Example Co.", 1, "scott", "Scott Spacey"),
    Account("acme", "Acme Ltd", 7, "ada", "Ada Lovelace"),
    Account("northwind", "Northwind Traders", 12, "grace", "Grace Hopper", admin=False),
)


@dataclass
class Pending:
    """An authorisation request somewhere between the account picker and the decision."""

    request_id: str
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float
    subdomain: str | None = None
    authenticated: bool = False
    error: str | None = None  # what the next page of the request shows once


@dataclass
class Code:
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
class Grant:
    """One authorisation: its current token pair (refreshing replaces both)."""

    grant_id: str
    client_id: str
    subdomain: str
    user_id: int
    scope: str
    access_token: str = ""
    refresh_token: str = ""
    access_expires_at: float = 0.0

    def __repr__(self) -> str:  # the tokens stay out of any output
        return f"Grant({self.grant_id!r}, {self.subdomain!r}, {self.user_id}, {self.scope!r})"


def parse_scope(raw: str | None) -> str:
    """The canonical scope string for a requested scope, or ValueError."""
    requested = (raw or DEFAULT_SCOPE).split() or DEFAULT_SCOPE.split()
    unknown = [scope for scope in requested if scope not in SCOPES]
    if unknown:
        raise ValueError(f"Unknown scope: {' '.join(unknown)}")
    return " ".join(scope for scope in SCOPES if scope in requested)


def check_setting(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number")
    return value


def _wall_clock() -> float:
    return time.time()  # looked up on each call, so tests may move time.time


class CapsuleStore:
    """The registered client, the accounts and every sign-in, code and grant."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        accounts: Iterable[Account] | None = None,
        allowed_redirect_uris: Iterable[str] | None = None,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        rate_limit: int = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = _wall_clock,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret must not be empty")
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_name = APP_NAME
        self.allowed_redirect_uris: frozenset[str] | None = (
            None if allowed_redirect_uris is None else frozenset(allowed_redirect_uris)
        )
        account_list = list(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self._accounts = {account.subdomain: account for account in account_list}
        if not self._accounts or len(self._accounts) != len(account_list):
            raise ValueError("accounts must be non-empty with distinct subdomains")
        self.now = clock
        self.lock = threading.RLock()
        self.token_requests: list[dict[str, str]] = []
        self._settings = {
            "access_token_lifetime": check_setting("access_token_lifetime", access_token_lifetime),
            "rate_limit": check_setting("rate_limit", rate_limit),
        }
        self._pending: dict[str, Pending] = {}
        self._codes: dict[str, Code] = {}
        self._grants: dict[str, Grant] = {}
        self._by_access: dict[str, str] = {}
        self._by_refresh: dict[str, str] = {}
        self._rate: dict[tuple[str, int], tuple[int, int]] = {}
        self.hooks = HookRegistry(clock=lambda: self.now())  # noqa: PLW0108 - now is replaceable
        self._party_ids = 50_000

    # ----------------------------------------------------------------- accounts, settings

    @property
    def accounts(self) -> tuple[Account, ...]:
        return tuple(self._accounts.values())

    def find_account(self, subdomain: str) -> Account | None:
        return self._accounts.get(subdomain)

    def account(self, subdomain: str) -> Account:
        account = self._accounts.get(subdomain)
        if account is None:
            raise ValueError(f"no account with subdomain {subdomain!r}")
        return account

    @property
    def access_token_lifetime(self) -> int:
        with self.lock:
            return self._settings["access_token_lifetime"]

    @property
    def rate_limit(self) -> int:
        with self.lock:
            return self._settings["rate_limit"]

    def settings(self) -> dict[str, int]:
        with self.lock:
            return dict(self._settings)

    def update_settings(self, changes: Mapping[str, object]) -> dict[str, int]:
        unknown = set(changes) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        checked = {name: check_setting(name, value) for name, value in changes.items()}
        with self.lock:
            self._settings.update(checked)
            return dict(self._settings)

    def record_token_request(self, form: Mapping[str, str]) -> None:
        with self.lock:
            self.token_requests.append(dict(form))

    # ----------------------------------------------------------------- sign-in requests

    def add_pending(self, pending: Pending) -> None:
        with self.lock:
            now = self.now()
            for key in [k for k, p in self._pending.items() if _expired(p, now)]:
                del self._pending[key]
            self._pending[pending.request_id] = pending

    def pending(self, request_id: str | None) -> Pending | None:
        """The live request with that id, if any."""
        with self.lock:
            pending = self._pending.get(request_id or "")
            return None if pending is None or _expired(pending, self.now()) else pending

    def pop_pending(self, request_id: str) -> Pending | None:
        with self.lock:
            return self._pending.pop(request_id, None)

    # ----------------------------------------------------------------- codes

    def issue_code(
        self,
        account: Account,
        redirect_uri: str,
        scope: str = DEFAULT_SCOPE,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> str:
        """A fresh authorisation code, as Allow on the consent page creates one."""
        code = secrets.token_urlsafe(32)
        with self.lock:
            self._codes[code] = Code(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                scope=scope,
                subdomain=account.subdomain,
                user_id=account.user_id,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
                expires_at=self.now() + CODE_LIFETIME,
            )
        return code

    def code(self, code: str) -> Code | None:
        with self.lock:
            return self._codes.get(code)

    # ----------------------------------------------------------------- grants

    def new_grant(self, client_id: str, account: Account, scope: str) -> Grant:
        grant = Grant(
            secrets.token_urlsafe(12), client_id, account.subdomain, account.user_id, scope
        )
        with self.lock:
            self._grants[grant.grant_id] = grant
            self.rotate(grant)
        return grant

    def rotate(self, grant: Grant) -> None:
        """Give the grant a new token pair; the old pair stops working."""
        with self.lock:
            self._by_access.pop(grant.access_token, None)
            self._by_refresh.pop(grant.refresh_token, None)
            grant.access_token = secrets.token_urlsafe(32)
            grant.refresh_token = secrets.token_urlsafe(32)
            grant.access_expires_at = self.now() + self._settings["access_token_lifetime"]
            self._by_access[grant.access_token] = grant.grant_id
            self._by_refresh[grant.refresh_token] = grant.grant_id

    def grant_by_access(self, token: str) -> Grant | None:
        with self.lock:
            return self._grants.get(self._by_access.get(token, ""))

    def grant_by_refresh(self, token: str) -> Grant | None:
        with self.lock:
            return self._grants.get(self._by_refresh.get(token, ""))

    def drop_grant(self, grant_id: str) -> bool:
        """Revoke a grant (both its tokens); False when it was not live."""
        with self.lock:
            grant = self._grants.pop(grant_id, None)
            if grant is None:
                return False
            self._by_access.pop(grant.access_token, None)
            self._by_refresh.pop(grant.refresh_token, None)
            return True

    def token_json(self, grant: Grant) -> dict[str, Any]:
        """Capsule's token response for the grant's current pair."""
        with self.lock:
            return {
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "token_type": "bearer",
                "expires_in": self._settings["access_token_lifetime"],
                "scope": grant.scope,
                "subdomain": grant.subdomain,
            }

    def issue_tokens_for(
        self, subdomain: str, user_id: int, scope: str = DEFAULT_SCOPE
    ) -> dict[str, Any]:
        """Create a grant as if the user had gone through the pages; returns the token JSON."""
        account = self.account(subdomain)
        if account.user_id != user_id:
            raise ValueError(f"user {user_id} is not a user of {subdomain}")
        with self.lock:
            return self.token_json(self.new_grant(self.client_id, account, parse_scope(scope)))

    def revoke(self, token: str) -> bool:
        """Revoke the grant an access or refresh token belongs to (as a person would, in
        Capsule). Returns whether a live grant was found."""
        with self.lock:
            grant = self.grant_by_access(token) or self.grant_by_refresh(token)
            return grant is not None and self.drop_grant(grant.grant_id)

    def revoke_account_grants(self, subdomain: str | None = None) -> int:
        """The person removed the app in Capsule: every grant and unused code of the
        account (of every account when None) dies. Returns the grants revoked."""
        if subdomain is not None:
            self.account(subdomain)
        with self.lock:
            for code in self._codes.values():
                if subdomain in (None, code.subdomain):
                    code.used = True
            doomed = [g.grant_id for g in self._grants.values() if subdomain in (None, g.subdomain)]
            for grant_id in doomed:
                self.drop_grant(grant_id)
        return len(doomed)

    def live_refresh_tokens(self) -> dict[str, str]:
        """Every refresh token that still works, with its grant's subdomain."""
        with self.lock:
            return {
                token: self._grants[grant_id].subdomain
                for token, grant_id in self._by_refresh.items()
            }

    # ----------------------------------------------------------------- rate limit

    def count_api_call(self, grant: Grant) -> tuple[bool, int, int, int]:
        """Count one call against the user's hourly budget: (allowed, limit, calls left,
        window end). A call over the limit is refused and not counted."""
        with self.lock:
            key = (grant.subdomain, grant.user_id)
            window_end = window_end_after(self.now())
            seen_window, count = self._rate.get(key, (window_end, 0))
            if seen_window != window_end:
                count = 0
            limit = self._settings["rate_limit"]
            if count >= limit:
                self._rate[key] = (window_end, count)
                return False, limit, 0, window_end
            self._rate[key] = (window_end, count + 1)
            return True, limit, limit - count - 1, window_end

    # ----------------------------------------------------------------- records

    def create_party(self, subdomain: str, fields: Mapping[str, object]) -> dict[str, object]:
        """A new person on the site; its REST hooks on party/created hear of it."""
        self.account(subdomain)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now()))
        with self.lock:
            self._party_ids += 1
            party: dict[str, object] = {
                "id": self._party_ids,
                "type": "person",
                "firstName": str(fields.get("firstName") or "New"),
                "lastName": str(fields.get("lastName") or "Person"),
                "createdAt": stamp,
                "updatedAt": stamp,
            }
        self.hooks.record_changed(subdomain, "party/created", [party])
        return party

    # ----------------------------------------------------------------- summary

    def summary(self) -> dict[str, object]:
        """Counts only: no token, code or secret (what GET /_emulator/state shows)."""
        with self.lock:
            now = self.now()
            accounts = {
                sub: {
                    "site_name": account.site_name,
                    "user_id": account.user_id,
                    "live_grants": sum(1 for g in self._grants.values() if g.subdomain == sub),
                }
                for sub, account in self._accounts.items()
            }
            return {
                "accounts": accounts,
                "live_grants": len(self._grants),
                "token_requests": len(self.token_requests),
                "pending_authorisations": sum(
                    1 for p in self._pending.values() if not _expired(p, now)
                ),
                "unused_codes": sum(
                    1 for c in self._codes.values() if not c.used and c.expires_at > now
                ),
                "settings": dict(self._settings),
                "rest_hooks": self.hooks.summary(),
            }


def window_end_after(now: float) -> int:
    return (int(now) // RATE_WINDOW + 1) * RATE_WINDOW


def _expired(pending: Pending, now: float) -> bool:
    return pending.created_at + PENDING_LIFETIME <= now
