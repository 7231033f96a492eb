"""A slice of Capsule's API v2: bearer tokens, the hourly rate limit, three resources."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from local.capsule_emulator.store import Account, CapsuleStore, window_end_after
from local.capsule_emulator.wire import API_PREFIX

MAX_PER_PAGE: Final = 100
_PARTY_COUNT: Final = 12
_FIRST_NAMES: Final = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
_LAST_NAMES: Final = ("Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")

Answer = tuple[dict[str, object], dict[str, str]]  # JSON body, extra headers


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, object] = (
            {"error": "rate limit reached"} if status == 429 else {"message": message}
        )
        self.headers: Mapping[str, str] = headers or {}


@dataclass(frozen=True)
class Principal:
    """Who a valid access token speaks for."""

    account: Account
    scope: frozenset[str]
    client_id: str = ""  # the app the token was issued to (it sees only its own hooks)


def rate_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(reset),
    }


def authorise(
    store: CapsuleStore, authorization: str | None, query: Mapping[str, list[str]]
) -> tuple[Principal, dict[str, str]]:
    """The bearer token's principal and the rate-limit headers, or ApiError (401, 429)."""
    limit = store.rate_limit
    anonymous_headers = rate_headers(limit, limit, window_end_after(store.now()))

    def unauthorised(message: str, error: str | None) -> ApiError:
        challenge = 'Bearer realm="Capsule"'
        if error is not None:
            challenge += f', error="{error}", error_description="{message}"'
        return ApiError(401, message, {"WWW-Authenticate": challenge, **anonymous_headers})

    if "access_token" in query:
        raise unauthorised("Send the access token in the Authorization header", "invalid_request")
    if not authorization:
        raise unauthorised("Authentication is required", None)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorised("Expected an Authorization: Bearer access token", "invalid_request")
    with store.lock:
        grant = store.grant_by_access(token.strip())
        if grant is None:
            raise unauthorised("The access token is invalid or has been revoked", "invalid_token")
        if store.now() >= grant.access_expires_at:
            raise unauthorised("The access token has expired", "invalid_token")
        allowed, limit, remaining, window_end = store.count_api_call(grant)
        principal = Principal(
            store.account(grant.subdomain), frozenset(grant.scope.split()), grant.client_id
        )
    if not allowed:
        raise ApiError(429, "rate limit reached", rate_headers(limit, 0, window_end))
    return principal, rate_headers(limit, remaining, window_end)


def resource(
    method: str,
    path: str,
    principal: Principal,
    query: Mapping[str, list[str]],
    base_url: str,
) -> Answer:
    """GET one resource for the principal, or ApiError (403, 404, 405, 400)."""
    account = principal.account
    resources: dict[str, Callable[[], Answer]] = {
        "/users/current": lambda: ({"user": current_user(account)}, {}),
        "/site": lambda: ({"site": site(account)}, {}),
        "/parties": lambda: _parties(account, query, base_url),
    }
    found = resources.get(path.removeprefix(API_PREFIX))
    if not path.startswith(API_PREFIX + "/") or found is None:
        raise ApiError(404, "Could not find resource")
    if method != "GET":
        raise ApiError(405, f"{method} is not allowed here", {"Allow": "GET"})
    if "read" not in principal.scope:
        challenge = 'Bearer realm="Capsule", error="insufficient_scope", scope="read"'
        raise ApiError(
            403, "The access token does not have the read scope", {"WWW-Authenticate": challenge}
        )
    return found()


def current_user(account: Account) -> dict[str, object]:
    first, _, last = account.user_name.partition(" ")
    return {
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


def site(account: Account) -> dict[str, object]:
    return {
        "url": f"https://{account.subdomain}.capsulecrm.com",
        "subdomain": account.subdomain,
        "name": account.site_name,
    }


def _parties(account: Account, query: Mapping[str, list[str]], base_url: str) -> Answer:
    page = _positive_int(next(iter(query.get("page", [])), None), "page", 1, 10**6)
    per_page = _positive_int(
        next(iter(query.get("perPage", [])), None), "perPage", 50, MAX_PER_PAGE
    )
    parties = _fake_parties(account)
    start = (page - 1) * per_page
    has_more = start + per_page < len(parties)
    headers = {"X-Pagination-Has-More": "true" if has_more else "false"}
    if has_more:
        next_url = f"{base_url}{API_PREFIX}/parties?page={page + 1}&perPage={per_page}"
        headers["Link"] = f'<{next_url}>; rel="next"'
    return {"parties": parties[start : start + per_page]}, headers


def _fake_parties(account: Account) -> list[dict[str, object]]:
    parties: list[dict[str, object]] = []
    for index in range(_PARTY_COUNT):
        first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
        last = _LAST_NAMES[index % len(_LAST_NAMES)]
        party_id = account.user_id * 1000 + index + 1
        stamp = f"2024-01-{index + 1:02d}T09:30:00Z"
        address = f"{first}.{last}@{account.subdomain}.example".lower()
        parties.append(
            {
                "id": party_id,
                "type": "person",
                "firstName": first,
                "lastName": last,
                "jobTitle": "Engineer",
                "createdAt": stamp,
                "updatedAt": stamp,
                "emailAddresses": [{"id": party_id * 10, "type": "Work", "address": address}],
            }
        )
    return parties


def _positive_int(raw: str | None, name: str, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"{name} must be a whole number between 1 and {maximum}")
    return int(raw)
