"""Capsule over HTTP: the pooled session, its failure classes, and API v2 calls.

Error messages never carry a token: they are built from status codes and Capsule's own
error names only.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from capsule_oauth.errors import (
    CapsuleAPIError,
    CapsuleBadResponse,
    CapsuleRateLimited,
    CapsuleTimeout,
    CapsuleUnauthorized,
    CapsuleUnavailable,
)

USER_AGENT = "capsule-connector/0.1"


@dataclass(frozen=True)
class RateLimit:
    limit: int | None
    remaining: int | None
    reset_at: float | None

    @classmethod
    def from_headers(cls, headers: Any) -> RateLimit | None:
        values = [
            _int_or_none(headers.get(name))
            for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
        ]
        if all(value is None for value in values):
            return None
        limit, remaining, reset = values
        return cls(limit, remaining, float(reset) if reset is not None else None)


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


@functools.cache
def session() -> requests.Session:
    """One pooled session per container: keep-alive to Capsule across invocations."""
    http = requests.Session()
    # One pooled connection per refresh worker (REFRESH_CONCURRENCY is at most 64): the
    # default pool of 10 would drop and reopen connections under a busy refresh run.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    http.headers["User-Agent"] = USER_AGENT
    http.headers["Accept"] = "application/json"
    return http


def send(method: str, url: str, timeout: float, **kwargs: Any) -> requests.Response:
    try:
        return session().request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise CapsuleTimeout(f"Capsule did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        # The exception text can quote the URL; ours never carries a secret, but keep it short.
        raise CapsuleUnavailable(f"could not reach Capsule ({type(exc).__name__})") from None


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CapsuleBadResponse(
            f"Capsule answered {response.status_code} with a body that is not JSON"
        ) from None


def raise_for_common(response: requests.Response) -> None:
    """The failures every Capsule endpoint shares: rate limited, or Capsule itself failing."""
    if response.status_code == 429:
        raise CapsuleRateLimited(_reset_at(response))
    if response.status_code >= 500:
        raise CapsuleUnavailable(f"Capsule answered {response.status_code}")


def _reset_at(response: requests.Response) -> float | None:
    limits = RateLimit.from_headers(response.headers)
    if limits and limits.reset_at:
        return limits.reset_at
    retry_after = _int_or_none(response.headers.get("Retry-After"))
    return time.time() + retry_after if retry_after is not None else None


@dataclass(frozen=True)
class APIResponse:
    status: int
    body: Any
    rate_limit: RateLimit | None
    headers: dict[str, str]


def api_request(
    base_url: str,
    access_token: str,
    method: str,
    path: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    json: Any = None,
) -> APIResponse:
    """Call ``<base>/api/v2<path>`` with the bearer token; raise a CapsuleError on failure."""
    if not path.startswith("/") or "://" in path:
        raise ValueError(f"path must be relative to /api/v2 and start with '/', got {path!r}")
    response = send(
        method.upper(),
        f"{base_url}/api/v2{path}",
        timeout,
        params=params,
        json=json,
        headers={"Authorization": f"Bearer {access_token}"},
    )
    raise_for_common(response)
    if response.status_code >= 400:
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = ""
        errors: list[Any] = []
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload.get("error") or "")
            listed = payload.get("errors")
            errors = listed if isinstance(listed, list) else []
        message = message or response.reason or "error"
        if response.status_code == 401:
            raise CapsuleUnauthorized(401, message)
        raise CapsuleAPIError(response.status_code, message, errors)
    body = None if response.status_code == 204 or not response.content else json_body(response)
    return APIResponse(
        status=response.status_code,
        body=body,
        rate_limit=RateLimit.from_headers(response.headers),
        headers=dict(response.headers),
    )
