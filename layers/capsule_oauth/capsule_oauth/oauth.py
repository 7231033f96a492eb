"""Capsule's OAuth endpoints as this deployment calls them.

Each call takes the client credentials from Secrets Manager (cached) and, when Capsule
answers invalid_client, reads the secret again and retries once if it changed (rotation).
"""

from __future__ import annotations

from capsule_oauth import capsule
from capsule_oauth.config import Settings
from capsule_oauth.credentials import with_client_credentials


def exchange_code(
    settings: Settings, *, code: str, redirect_uri: str, code_verifier: str | None
) -> capsule.TokenResponse:
    return with_client_credentials(
        settings,
        lambda credentials: capsule.exchange_code(
            settings.capsule_base_url,
            credentials,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            timeout=settings.http_timeout_seconds,
        ),
        rejected=capsule.InvalidClient,
    )


def refresh(settings: Settings, *, refresh_token: str) -> capsule.TokenResponse:
    return with_client_credentials(
        settings,
        lambda credentials: capsule.refresh(
            settings.capsule_base_url,
            credentials,
            refresh_token=refresh_token,
            timeout=settings.http_timeout_seconds,
        ),
        rejected=capsule.InvalidClient,
    )


def revoke(
    settings: Settings,
    *,
    token: str,
    token_type_hint: str = "refresh_token",  # noqa: S107 - an RFC 7009 hint name
) -> None:
    with_client_credentials(
        settings,
        lambda credentials: capsule.revoke(
            settings.capsule_base_url,
            credentials,
            token=token,
            token_type_hint=token_type_hint,
            timeout=settings.http_timeout_seconds,
        ),
        rejected=capsule.InvalidClient,
    )
