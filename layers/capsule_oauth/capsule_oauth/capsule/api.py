"""Capsule over HTTP: the pooled session, its failure classes, and API v2 calls.

Error messages never carry a token: they are built from status codes and Capsule's own
error names only.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from capsule_oauth.capsule import budget
from capsule_oauth.errors import (
    CapsuleAPIError,
    CapsuleBadResponse,
    CapsuleRateLimited,
    CapsuleTimeout,
    CapsuleUnauthorized,
    CapsuleUnavailable,
)
from capsule_oauth.observability import count_by

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


_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: int() also takes other digits and "1_0"
MAX_BODY_BYTES = 1 << 20  # no answer of Capsule's is near 1 MiB
RESET_HORIZON_SECONDS = 86_400  # Capsule's limits reset hourly; a reset days away is malformed


def bounded_int(value: object, *, low: int, high: int) -> int | None:
    """``value`` as an int when it is ASCII digits (or an int) within [low, high], else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return number if low <= number <= high else None


def _int_or_none(value: object) -> int | None:
    return None if value is None else bounded_int(value, low=0, high=10**11)


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


def now() -> float:
    """The clock deadlines are measured on (time.monotonic)."""
    return time.monotonic()


def send(
    method: str, url: str, timeout: float, *, deadline: float | None = None, **kwargs: Any
) -> requests.Response:
    """One request whose whole answer arrives by ``deadline`` (time.monotonic(); default
    ``timeout`` from now) and stays under MAX_BODY_BYTES. The timeout alone bounds each read,
    so an answer trickling in could otherwise take any time."""
    deadline = min(deadline or math.inf, now() + timeout)
    left = deadline - now()
    if left <= 0:
        raise CapsuleTimeout("no time left to call Capsule")
    try:
        response = session().request(
            method, url, timeout=left, allow_redirects=False, stream=True, **kwargs
        )
        try:
            response._content = _read_body(response, deadline, timeout)  # what .json() reads
        finally:
            response.close()
        return response
    except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        raise CapsuleTimeout(f"Capsule did not answer within {timeout:g} s") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # The exception text can quote the URL; ours never carries a secret, but keep it short.
        raise CapsuleUnavailable(f"could not reach Capsule ({type(exc).__name__})") from None


# Past the deadline, what has already arrived is still read (a late but whole answer may
# hold the only copy of rotated tokens), but nothing is waited for any longer.
_DRAIN_READ_SECONDS = 0.05
_DRAIN_SECONDS = 0.5


def _read_body(response: requests.Response, deadline: float, timeout: float) -> bytes:
    """The body, one socket read at a time, each given only the time left: a buffered read
    would wait for 64 KiB (or the whole Content-Length), however slowly it trickles in."""
    raw = response.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    body = bytearray()
    drain_until: float | None = None
    while True:
        left = deadline - now()
        if left <= 0:
            drain_until = drain_until or now() + _DRAIN_SECONDS
            if now() > drain_until:
                raise CapsuleTimeout(f"Capsule's answer did not arrive within {timeout:g} s")
        if sock is not None:
            sock.settimeout(max(left, _DRAIN_READ_SECONDS))
        chunk = raw.read1(65_536, decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise CapsuleBadResponse(f"Capsule's answer is over {MAX_BODY_BYTES} bytes")


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
    """When a 429 says to come back; a reset that is not a sane epoch second is malformed."""
    now = int(time.time())
    raw_reset = response.headers.get("X-RateLimit-Reset")
    if raw_reset is not None:
        reset = bounded_int(raw_reset, low=now - 3600, high=now + RESET_HORIZON_SECONDS)
        if reset is None:
            raise CapsuleBadResponse("Capsule's X-RateLimit-Reset is not a time within a day")
        return float(reset)
    raw_retry = response.headers.get("Retry-After")
    if raw_retry is not None:
        retry_after = bounded_int(raw_retry, low=0, high=RESET_HORIZON_SECONDS)
        if retry_after is None:
            raise CapsuleBadResponse("Capsule's Retry-After is not a number of seconds")
        return float(now + retry_after)
    return None


_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def subdomain_of(site_url: object) -> str | None:
    """The Capsule account a site's ``url`` names (``https://<subdomain>.capsulecrm.com``),
    or None when it names none."""
    if not isinstance(site_url, str):
        return None
    try:
        host = urlsplit(site_url.strip()).hostname or ""
    except ValueError:
        return None
    label, _, domain = host.partition(".")
    if "." not in domain or not _SUBDOMAIN.fullmatch(label) or host.replace(".", "").isdigit():
        return None  # a bare domain, an address, or no host at all
    return label


@dataclass(frozen=True)
class APIResponse:
    status: int
    body: Any
    rate_limit: RateLimit | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Draw:
    """Whose budget an API v2 call draws from (see capsule/budget.py), and for what."""

    site: str
    user_id: str
    source: str  # proxy | client | callback | hooks (the metrics' dimension)
    budget: budget.Budget | None = None  # None: this process's shared budgets


def api_call(
    base_url: str,
    access_token: str,
    method: str,
    path: str,
    *,
    timeout: float,
    draw: Draw | None,
    params: Any = None,
    json: Any = None,
    data: bytes | None = None,
    deadline: float | None = None,
) -> requests.Response:
    """Send one API v2 call, drawn from the Capsule user's budget first, and tell the budget
    what Capsule answered. Every API v2 call goes through here.

    Raises CapsuleRateLimited (budget spent: nothing sent), CapsuleTimeout or
    CapsuleUnavailable (no answer); any answer Capsule gave is returned as it is.
    ``draw`` is None only where the Capsule user is not known yet (the callback counts its
    identity lookups once it knows whose they were).
    """
    if not path.startswith("/") or "://" in path:
        raise ValueError(f"path must be relative to /api/v2 and start with '/', got {path!r}")
    spender, ticket = None, None
    if draw is not None:
        spender = draw.budget or budget.shared()
        ticket = spender.spend(draw.site, draw.user_id, draw.source)
    headers = {"Authorization": f"Bearer {access_token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    response = send(
        method.upper(),
        f"{base_url}/api/v2{path}",
        timeout,
        params=params,
        json=json,
        data=data,
        headers=headers,
        deadline=deadline,
    )
    if spender is not None and draw is not None:
        observe(spender, draw, response, ticket)
    return response


def observe(
    spender: budget.Budget,
    draw: Draw,
    response: requests.Response,
    ticket: budget.Ticket | None = None,
) -> None:
    """What Capsule's answer says about the user's budget."""
    limits = RateLimit.from_headers(response.headers)
    reset_at = limits.reset_at if limits else None
    if response.status_code == 429:
        count_by("CapsuleRateLimited", "source", draw.source)
        try:
            reset_at = _reset_at(response)
        except CapsuleBadResponse:
            reset_at = None
    spender.observe(
        draw.site,
        draw.user_id,
        status=response.status_code,
        limit=limits.limit if limits else None,
        remaining=limits.remaining if limits else None,
        reset_at=reset_at,
        ticket=ticket,
    )


def api_request(
    base_url: str,
    access_token: str,
    method: str,
    path: str,
    *,
    timeout: float,
    draw: Draw | None,
    params: dict[str, Any] | None = None,
    json: Any = None,
    deadline: float | None = None,
) -> APIResponse:
    """Call ``<base>/api/v2<path>`` with the bearer token; raise a CapsuleError on failure."""
    response = api_call(
        base_url,
        access_token,
        method,
        path,
        timeout=timeout,
        draw=draw,
        params=params,
        json=json,
        deadline=deadline,
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
