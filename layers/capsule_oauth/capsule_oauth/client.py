"""``CapsuleClient``: Capsule API v2 calls for one connection, tokens handled for you."""

from __future__ import annotations

from typing import Any

from capsule_oauth import config, tokens
from capsule_oauth.capsule import api, budget
from capsule_oauth.capsule.api import APIResponse, RateLimit
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleUnauthorized


class CapsuleClient:
    """Call ``<base>/api/v2`` as the person who connected ``connection_id``.

    Every call draws from the Capsule user's budget (capsule/budget.py), shared with every
    connection of that user and every container. A 401 refreshes the token once and retries
    once; a spent budget or a 429 raises ``CapsuleRateLimited`` with ``reset_at`` (nothing
    is sent before it); other failures raise ``CapsuleAPIError`` or ``CapsuleUnavailable``.
    ``rate_limit`` holds Capsule's limits from its last answer that carried them.
    """

    def __init__(self, connection_id: str, *, settings: Settings | None = None) -> None:
        self.connection_id = connection_id
        self.settings = settings or config.settings()
        self.rate_limit: RateLimit | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send the request and return the decoded JSON body (None for an empty answer)."""
        token = tokens.current_token(self.connection_id, settings=self.settings)
        try:
            answer = self._send(token, method, path, params, json)
        except CapsuleUnauthorized:
            token = tokens.renew(
                self.connection_id, settings=self.settings, rejected_version=token.version
            )
            answer = self._send(token, method, path, params, json)
        return answer.body

    def _send(
        self,
        token: tokens.AccessToken,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json: Any,
    ) -> APIResponse:
        answer = api.api_request(
            self.settings.capsule_base_url,
            token.value,
            method,
            path,
            timeout=self.settings.http_timeout_seconds,
            draw=api.Draw(token.site, token.user_id, "client", budget.shared(self.settings)),
            params=params,
            json=json,
        )
        self.rate_limit = answer.rate_limit or self.rate_limit
        return answer

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, params=params, json=json)

    def put(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, params=params, json=json)

    def patch(self, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("PATCH", path, params=params, json=json)

    def delete(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)
