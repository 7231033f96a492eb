"""``get_access_token``: a valid access token for a connection, refreshed on demand.

Near expiry it refreshes under the same lease the scheduled refresh uses; if another worker
holds the lease it waits briefly and re-reads. Decrypted tokens are kept in memory (never on
disk or in logs) for TOKEN_CACHE_SECONDS, so a warm caller makes no AWS call and a
disconnect elsewhere reaches every container within that time. The access-token route asks
for ``current_token(..., recheck=True)``: each call reads the connection's status and
version first, so once a disconnect or a reconnect has answered, no container serves the
old token again (the decrypted token stays cached, keyed by version).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.errors import ConnectionNotFound, ReauthorizationRequired, TokenUnavailable
from capsule_oauth.flows import refresh
from capsule_oauth.flows.refresh import Outcome
from capsule_oauth.store.connections import ACTIVE, Connection, ConnectionStore

_POLL_SECONDS = 0.2


def _not_found(connection_id: str) -> ConnectionNotFound:
    return ConnectionNotFound(f"no Capsule connection {connection_id!r}; connect it first")


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    version: int
    expires_at: int
    lifetime: int = 0  # seconds the token was issued for (0: not known)
    read_at: float = field(default_factory=time.time)  # when this container read it
    site: str = ""  # the Capsule user it speaks for: whose budget its calls draw from
    user_id: str = ""


def margin(settings: Settings, lifetime: int) -> int:
    """How long before expiry a token is refreshed on demand: TokenMarginSeconds, but at most
    half its lifetime (tokens shorter-lived than the margin would refresh on every call)."""
    if lifetime <= 0:
        return settings.token_margin_seconds
    return min(settings.token_margin_seconds, lifetime // 2)


_cache: dict[str, AccessToken] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _remember(connection_id: str, token: AccessToken) -> AccessToken:
    with _cache_lock:
        known = _cache.get(connection_id)
        if known is None or known.version <= token.version or not _fresh_read(known):
            _cache[connection_id] = token
    return token


def _fresh_read(token: AccessToken) -> bool:
    return time.time() - token.read_at < config.settings().token_cache_seconds


def _forget(connection_id: str, version: int) -> None:
    with _cache_lock:
        known = _cache.get(connection_id)
        if known is not None and known.version <= version:
            del _cache[connection_id]


def forget(connection_id: str) -> None:
    """Drop this container's cached token of a connection (it was disconnected)."""
    with _cache_lock:
        _cache.pop(connection_id, None)


def _usable(token: AccessToken | None, settings: Settings, now: float) -> bool:
    """Fresh enough, and read recently enough: after TOKEN_CACHE_SECONDS the connection is
    read again, so a disconnect or a reauth elsewhere shows in every container."""
    return (
        token is not None
        and token.expires_at - margin(settings, token.lifetime) > now
        and now - token.read_at < settings.token_cache_seconds
    )


def _from_connection(settings: Settings, connection: Connection) -> AccessToken:
    pair = ConnectionStore(settings).tokens(connection)
    return AccessToken(
        pair.access_token,
        connection.version,
        connection.expires_at,
        connection.token_lifetime,
        site=connection.subdomain,
        user_id=connection.user_id,
    )


def _check_active(connection_id: str, connection: Connection | None) -> Connection:
    if connection is None:
        raise _not_found(connection_id)
    if connection.status != ACTIVE:
        raise ReauthorizationRequired(connection_id, connection.status)
    return connection


def _still_stored(connection_id: str, cached: AccessToken, settings: Settings, now: float) -> bool:
    """Whether ``cached`` is the stored token of an active connection and fresh enough, read
    from the connection's status and version (raises as ``current_token`` does)."""
    stored = ConnectionStore(settings).status_of(connection_id)
    if stored is None:
        forget(connection_id)
        raise _not_found(connection_id)
    status, version = stored
    if status != ACTIVE:
        forget(connection_id)
        raise ReauthorizationRequired(connection_id, status)
    return version == cached.version and cached.expires_at - margin(settings, cached.lifetime) > now


def current_token(
    connection_id: str, *, settings: Settings | None = None, recheck: bool = False
) -> AccessToken:
    """The access token with its version; refreshed first when it is within the margin.

    ``recheck``: trust a cached token only while the stored status and version say it is
    still the connection's (one small read per call) instead of for TOKEN_CACHE_SECONDS.
    """
    settings = settings or config.settings()
    now = time.time()
    with _cache_lock:
        cached = _cache.get(connection_id)
    if cached is not None:
        if recheck and _still_stored(connection_id, cached, settings, now):
            return cached
        if not recheck and _usable(cached, settings, now):
            return cached
    connection = _check_active(connection_id, ConnectionStore(settings).get(connection_id))
    if connection.expires_at - margin(settings, connection.token_lifetime) > now:
        return _remember(connection_id, _from_connection(settings, connection))
    return renew(connection_id, settings=settings)


def get_access_token(connection_id: str, *, settings: Settings | None = None) -> str:
    """A valid access token for ``connection_id``.

    Raises ConnectionNotFound, ReauthorizationRequired or TokenUnavailable.
    """
    return current_token(connection_id, settings=settings).value


_RETRY_AFTER_SECONDS = 5  # Capsule failed: on-demand callers may try again soon
_RETRY_AFTER_MAX_SECONDS = 3600


def _retry_after(result: refresh.RefreshResult, connection: Connection) -> int:
    """How long a caller should wait: until Capsule's rate limit resets, else a few seconds."""
    if result.error == refresh.RATE_LIMITED and connection.rate_limited_until:
        wait = connection.rate_limited_until - int(time.time())
        return max(1, min(wait, _RETRY_AFTER_MAX_SECONDS))
    return _RETRY_AFTER_SECONDS


def _stored_while_contended(
    settings: Settings, connection_id: str, rejected_version: int | None
) -> AccessToken:
    """The wait for another refresher ended: the stored token if it is still valid (inside
    the margin is no reason to fail a caller), else TokenUnavailable."""
    connection = _check_active(connection_id, ConnectionStore(settings).get(connection_id))
    if connection.expires_at > time.time() and connection.version != rejected_version:
        return _remember(connection_id, _from_connection(settings, connection))
    raise TokenUnavailable(
        f"connection {connection_id} is being refreshed elsewhere; try again shortly",
        retry_after=1,
    )


def renew(
    connection_id: str, *, settings: Settings | None = None, rejected_version: int | None = None
) -> AccessToken:
    """Refresh under the lease unless someone already did; ``rejected_version`` forces it.

    ``rejected_version`` is the version of a token Capsule answered 401 to: refresh only if
    it is still the stored one, otherwise the newer stored token is the answer.
    """
    settings = settings or config.settings()
    if rejected_version is not None:
        _forget(connection_id, rejected_version)

    def needs_refresh(connection: Connection, now: int) -> bool:
        near = connection.expires_at - margin(settings, connection.token_lifetime) <= now
        return near or connection.version == rejected_version

    owner = f"token:{uuid.uuid4().hex}"
    deadline = time.monotonic() + settings.lease_wait_seconds
    while True:
        result = refresh.refresh_connection(
            settings, connection_id, owner=owner, needs_refresh=needs_refresh
        )
        if result.outcome is not Outcome.CONTENDED:  # waiting for another holder is no failure
            refresh.count_result(result)
        if result.outcome is Outcome.REFRESHED and result.connection and result.access_token:
            token = AccessToken(
                result.access_token,
                result.connection.version,
                result.connection.expires_at,
                result.connection.token_lifetime,
                site=result.connection.subdomain,
                user_id=result.connection.user_id,
            )
            return _remember(connection_id, token)
        if result.outcome is Outcome.MISSING:
            raise _not_found(connection_id)
        if result.outcome in (Outcome.REAUTH_REQUIRED, Outcome.INACTIVE):
            raise ReauthorizationRequired(
                connection_id, result.connection.status if result.connection else "needs_reauth"
            )
        if result.outcome is not Outcome.CONTENDED:
            break  # NOT_NEEDED, FAILED or ERROR: what is stored now is the best there is
        if time.monotonic() >= deadline:
            return _stored_while_contended(settings, connection_id, rejected_version)
        time.sleep(_POLL_SECONDS)

    connection = _check_active(connection_id, ConnectionStore(settings).get(connection_id))
    token = _from_connection(settings, connection)
    if token.expires_at <= time.time() or token.version == rejected_version:
        raise TokenUnavailable(
            f"could not refresh connection {connection_id} ({result.error or 'unknown'});"
            " try again later",
            retry_after=_retry_after(result, connection),
        )
    return _remember(connection_id, token)
