"""Capsule over HTTP: the token endpoint and API v2, with one error class per failure kind.

Error messages never carry a token, code, verifier or client secret: they are built from
status codes and Capsule's error names only.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from capsule_oauth.credentials import ClientCredentials

USER_AGENT = "capsule-connector/0.1"


class CapsuleError(Exception):
    """Capsule could not do what was asked. ``kind`` names the class of failure for metrics."""

    kind = "CapsuleError"


class CapsuleUnavailable(CapsuleError):
    """Connection error or a 5xx: try again later."""

    kind = "Unavailable"


class CapsuleTimeout(CapsuleUnavailable):
    kind = "Timeout"


class CapsuleBadResponse(CapsuleError):
    """Capsule answered with something that is not what the protocol promises."""

    kind = "BadResponse"


class CapsuleRateLimited(CapsuleError):
    """429: wait until ``reset_at`` (epoch seconds) before calling again."""

    kind = "RateLimited"

    def __init__(self, reset_at: float | None) -> None:
        when = (
            f"after {time.strftime('%H:%M:%S', time.gmtime(reset_at))} UTC" if reset_at else "later"
        )
        super().__init__(f"Capsule rate limit reached; try again {when}")
        self.reset_at = reset_at


class OAuthError(CapsuleError):
    """The token endpoint refused the request (RFC 6749 section 5.2)."""

    kind = "OAuthError"

    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"Capsule token endpoint answered {status} {error}")
        self.error = error
        self.status = status


class InvalidGrant(OAuthError):
    """The code or refresh token is expired, used, revoked or was issued to someone else."""

    kind = "InvalidGrant"


class InvalidClient(OAuthError):
    """Capsule does not accept our client id / secret."""

    kind = "InvalidClient"


class CapsuleAPIError(CapsuleError):
    """An API v2 call failed with a 4xx that retrying will not fix."""

    kind = "APIError"

    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(f"Capsule API answered {status}: {message}")
        self.status = status
        self.message = message
        self.errors = errors or []


class CapsuleUnauthorized(CapsuleAPIError):
    """401: the access token is invalid, expired or revoked."""

    kind = "Unauthorized"


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int
    scope: str | None
    subdomain: str | None


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


def _send(method: str, url: str, timeout: float, **kwargs: Any) -> requests.Response:
    try:
        return session().request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise CapsuleTimeout(f"Capsule did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        # The exception text can quote the URL; ours never carries a secret, but keep it short.
        raise CapsuleUnavailable(f"could not reach Capsule ({type(exc).__name__})") from None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CapsuleBadResponse(
            f"Capsule answered {response.status_code} with a body that is not JSON"
        ) from None


def _raise_for_common(response: requests.Response) -> None:
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


def _token_request(
    base_url: str, form: dict[str, str], credentials: ClientCredentials, timeout: float
) -> TokenResponse:
    body = {**form, "client_id": credentials.client_id, "client_secret": credentials.client_secret}
    response = _send("POST", f"{base_url}/oauth/token", timeout, data=body)
    _raise_for_common(response)
    if response.status_code != 200:
        _raise_oauth_error(response)
    return _parse_token_response(_json(response))


def _raise_oauth_error(response: requests.Response) -> None:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = ""
    if isinstance(payload, dict):
        error = str(payload.get("error") or "").strip()
        message = str(payload.get("message") or payload.get("error_description") or "").lower()
        # Capsule's own error bodies are not documented: recognise the RFC name anywhere.
        if not error and "invalid_grant" in message:
            error = "invalid_grant"
    if error == "invalid_grant":
        raise InvalidGrant(error, response.status_code)
    if error == "invalid_client" or (response.status_code == 401 and not error):
        raise InvalidClient(error or "invalid_client", response.status_code)
    if response.status_code >= 400 and response.status_code < 500 and error:
        raise OAuthError(error[:64], response.status_code)
    raise CapsuleBadResponse(f"Capsule token endpoint answered {response.status_code}")


def _parse_token_response(payload: Any) -> TokenResponse:
    if not isinstance(payload, dict):
        raise CapsuleBadResponse("Capsule token response is not a JSON object")
    access_token = payload.get("access_token")
    refresh_token = payload.get("refresh_token")
    expires_in = payload.get("expires_in")
    if not isinstance(access_token, str) or not access_token:
        raise CapsuleBadResponse("Capsule token response has no access_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise CapsuleBadResponse("Capsule token response has an empty refresh_token")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        raise CapsuleBadResponse("Capsule token response has no valid expires_in")
    token_type = str(payload.get("token_type") or "bearer").lower()
    if token_type != "bearer":  # noqa: S105 - a token type name, not a secret
        raise CapsuleBadResponse(f"Capsule issued an unsupported token type {token_type[:16]!r}")
    scope = payload.get("scope")
    subdomain = payload.get("subdomain")
    return TokenResponse(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=expires_in,
        scope=scope if isinstance(scope, str) else None,
        subdomain=subdomain if isinstance(subdomain, str) else None,
    )


def exchange_code(
    base_url: str,
    credentials: ClientCredentials,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    timeout: float,
) -> TokenResponse:
    """POST grant_type=authorization_code. Called once per code: a retry would be invalid_grant."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return _token_request(base_url, form, credentials, timeout)


def refresh(
    base_url: str, credentials: ClientCredentials, *, refresh_token: str, timeout: float
) -> TokenResponse:
    """POST grant_type=refresh_token. The answer's refresh token (if any) replaces ours."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _token_request(base_url, form, credentials, timeout)


# Capsule's discovery document lists /oauth/revoke; its docs page reportedly says
# /oauth/token/revoke. Neither is confirmed, so try both, in that order.
REVOKE_PATHS = ("/oauth/revoke", "/oauth/token/revoke")


def revoke(
    base_url: str,
    credentials: ClientCredentials,
    *,
    token: str,
    token_type_hint: str = "refresh_token",  # noqa: S107 - an RFC 7009 hint name
    timeout: float,
) -> None:
    """RFC 7009: revoke the grant behind ``token``. An unknown token counts as done."""
    body = {
        "token": token,
        "token_type_hint": token_type_hint,
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
    }
    for path in REVOKE_PATHS:
        response = _send("POST", f"{base_url}{path}", timeout, data=body)
        if response.status_code in (404, 405):
            continue  # not this path: try the other one
        _raise_for_common(response)
        if response.status_code == 200:
            return
        try:
            _raise_oauth_error(response)
        except InvalidGrant:
            return  # already dead: revoked is what we wanted
    raise CapsuleBadResponse("Capsule has no token revocation endpoint at either known path")


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
    response = _send(
        method.upper(),
        f"{base_url}/api/v2{path}",
        timeout,
        params=params,
        json=json,
        headers={"Authorization": f"Bearer {access_token}"},
    )
    _raise_for_common(response)
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
    body = None if response.status_code == 204 or not response.content else _json(response)
    return APIResponse(
        status=response.status_code,
        body=body,
        rate_limit=RateLimit.from_headers(response.headers),
        headers=dict(response.headers),
    )
