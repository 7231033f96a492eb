"""``ANY /connections/{connection_id}/capsule/{path+}``: one Capsule API v2 call for the app,
in any language, with the connection's token and within the Capsule user's budget.

The caller's method, query string and JSON body go to ``<base>/api/v2/<path>`` with the
bearer token and nothing else of the caller's; Capsule's status, JSON body and its rate-limit
and paging headers come back. A 401 refreshes the token once and retries once.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, unquote

from requests import Response

from capsule_oauth import tokens
from capsule_oauth.capsule import api
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleBadResponse, ReauthorizationRequired

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_BODY_BYTES: Final = 1 << 20
# API Gateway gives up at 30 s: a refresh, a call, a second refresh and a retry all end by
# then, so a slow Capsule is a 504 of ours, not API Gateway's bare 503.
DEADLINE_SECONDS: Final = 26.0
PASSED_BACK: Final = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Pagination-Has-More",
    "Link",
)
_SEGMENT: Final = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2})+")
_MAX_PATH: Final = 1024


class InvalidCapsulePath(ValueError):
    """The path does not name a resource under /api/v2/."""


class CapsuleRefusedToken(ReauthorizationRequired):
    """Capsule answered 401 to a freshly refreshed token: the person must connect again."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(connection_id, "refused by Capsule")


@dataclass(frozen=True)
class ProxyAnswer:
    status: int
    body: bytes = field(repr=False)  # Capsule's JSON, passed on as it came
    headers: dict[str, str]


def capsule_path(raw: str) -> str:
    """``raw`` (the ``{path+}`` as sent, percent-encoded) as a path under /api/v2, with every
    segment decoded once and encoded again; InvalidCapsulePath when it could leave /api/v2/
    (``..``, ``.``, an absolute URL, an encoded slash or backslash, empty segments)."""
    if not raw or len(raw) > _MAX_PATH:
        raise InvalidCapsulePath("The Capsule path is empty or too long.")
    segments = []
    for segment in raw.split("/"):
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise InvalidCapsulePath("The Capsule path is not valid UTF-8.") from None
        if (
            decoded in {"", ".", ".."}
            or any(c in decoded for c in "/\\?#%")
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded)
        ):
            raise InvalidCapsulePath(
                "The Capsule path must name a resource under /api/v2/: no empty, '.' or '..'"
                " segments and no encoded slashes."
            )
        encoded = quote(decoded, safe="!$&'()*+,;=:@~-._")
        if not _SEGMENT.fullmatch(encoded):
            raise InvalidCapsulePath("The Capsule path holds characters a URL path cannot.")
        segments.append(encoded)
    return "/" + "/".join(segments)


def forward(
    settings: Settings,
    connection_id: str,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | None = None,
) -> ProxyAnswer:
    """Send the call as the connection's Capsule user and return Capsule's answer.

    Raises ConnectionNotFound, ReauthorizationRequired (CapsuleRefusedToken after a second
    401), TokenUnavailable, CapsuleRateLimited (budget spent or Capsule's 429: nothing more
    is sent before ``reset_at``), CapsuleTimeout, CapsuleUnavailable (unreachable, 5xx, or
    an answer that is not JSON).
    """
    deadline = time.monotonic() + DEADLINE_SECONDS
    token = tokens.current_token(connection_id, settings=settings)
    call = _Call(method, path, query, body, deadline)
    response = call.send(settings, token)
    if response.status_code == 401:
        token = tokens.renew(connection_id, settings=settings, rejected_version=token.version)
        response = call.send(settings, token)
        if response.status_code == 401:
            raise CapsuleRefusedToken(connection_id)
    api.raise_for_common(response)  # 429 and 5xx
    content = response.content or b""
    if content:
        try:
            json.loads(content)
        except ValueError:
            raise CapsuleBadResponse(
                f"Capsule answered {response.status_code} with a body that is not JSON"
            ) from None
    headers = {name: response.headers[name] for name in PASSED_BACK if name in response.headers}
    return ProxyAnswer(response.status_code, content, headers)


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    query: str = field(repr=False)
    body: bytes | None = field(repr=False)
    deadline: float

    def send(self, settings: Settings, token: tokens.AccessToken) -> Response:
        return api.api_call(
            settings.capsule_base_url,
            token.value,
            self.method,
            self.path,
            timeout=settings.http_timeout_seconds,
            draw=api.Draw(token.site, token.user_id, "proxy"),
            params=self.query or None,
            data=self.body,
            deadline=self.deadline,
        )
