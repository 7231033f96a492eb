"""The Capsule client id and secret, from Secrets Manager only, cached for a few minutes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from capsule_oauth.config import Settings
from capsule_oauth.errors import CredentialsNotConfigured


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str = field(repr=False)


def get_client_credentials(settings: Settings, *, force_fetch: bool = False) -> ClientCredentials:
    secret_id = settings.client_credentials_secret_id
    how_to_fix = (
        f'put JSON {{"client_id": ..., "client_secret": ...}} into secret {secret_id} '
        "(README: Deploy)"
    )
    try:
        raw = parameters.get_secret(
            secret_id, max_age=settings.credentials_max_age_seconds, force_fetch=force_fetch
        )
    except GetParameterError as error:
        # No value yet, no such secret, or no permission: the cause's class says which.
        origin = error.__cause__ or error.__context__
        cause = type(origin).__name__ if origin else "unknown cause"
        raise CredentialsNotConfigured(f"cannot read the secret ({cause}); {how_to_fix}") from None
    try:
        value = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
    except ValueError:
        raise CredentialsNotConfigured(f"secret is not JSON; {how_to_fix}") from None
    client_id = value.get("client_id") if isinstance(value, dict) else None
    client_secret = value.get("client_secret") if isinstance(value, dict) else None
    if not isinstance(client_id, str) or not client_id.strip():
        raise CredentialsNotConfigured(f"secret has no client_id; {how_to_fix}")
    if not isinstance(client_secret, str) or not client_secret.strip():
        raise CredentialsNotConfigured(f"secret has no client_secret; {how_to_fix}")
    return ClientCredentials(client_id.strip(), client_secret.strip())
