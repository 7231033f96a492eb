"""Every setting, read from the environment in one place (template.yaml declares them)."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from capsule_oauth.errors import ConfigError
from capsule_oauth.web.return_urls import Origin, parse_allowed_origins


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set; declare it in template.yaml")
    return value


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"true", "1", "yes", "on"}:
        return True
    if raw in {"false", "0", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# A refresh's answer from Capsule must be in this long before its lease ends, to be saved
# under it (flows/refresh.py): a lease shorter than one call plus this skips every refresh.
LEASE_MARGIN_SECONDS = 10


def _lease_seconds(env: Mapping[str, str], default: int, http_timeout_seconds: float) -> int:
    minimum = math.ceil(http_timeout_seconds + LEASE_MARGIN_SECONDS)
    lease_seconds = int(_number(env, "LEASE_SECONDS", default, 1))
    if lease_seconds < minimum:
        raise ConfigError(
            f"LEASE_SECONDS must be at least {minimum} (one call to Capsule,"
            f" HTTP_TIMEOUT_SECONDS {http_timeout_seconds:g}, plus {LEASE_MARGIN_SECONDS} s"
            f" to save its answer), got {lease_seconds}"
        )
    return lease_seconds


TOKEN_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    """An absolute https URL; plain http only on this machine (the emulator, the gateway)."""
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in {"https", "http"} or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute https URL, got {value!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(f"{name} must be https:// (http only for localhost), got {value!r}")
    return value.rstrip("/")


# An IAM user or role (or an STS session) of any partition: what requestContext.authorizer.iam
# names as userArn.
_CALLER_ARN = re.compile(r"^arn:aws(-[a-z]+)*:(iam|sts)::\d{12}:[A-Za-z0-9+=,.@_/-]+$")


def _caller_arns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    arns = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    for arn in arns:
        if not _CALLER_ARN.fullmatch(arn):
            raise ConfigError(
                f"{name}: {arn!r} is not an IAM ARN such as arn:aws:iam::123456789012:role/app"
            )
    return arns


# Capsule's REST hook events ("Avoid polling with REST hooks", the REST_Hook model).
HOOK_EVENTS = (
    "party/created",
    "party/updated",
    "party/deleted",
    "kase/created",
    "kase/updated",
    "kase/deleted",
    "kase/closed",
    "kase/moved",
    "opportunity/created",
    "opportunity/updated",
    "opportunity/deleted",
    "opportunity/closed",
    "opportunity/moved",
    "task/created",
    "task/updated",
    "task/completed",
    "user/created",
    "user/updated",
    "user/deleted",
)


def _hook_events(env: Mapping[str, str]) -> tuple[str, ...]:
    """CAPSULE_HOOK_EVENTS: comma-separated event names, each once, each one Capsule offers."""
    names = [name.strip() for name in env.get("CAPSULE_HOOK_EVENTS", "").split(",")]
    chosen = tuple(dict.fromkeys(name for name in names if name))
    unknown = [name for name in chosen if name not in HOOK_EVENTS]
    if unknown:
        raise ConfigError(
            f"CAPSULE_HOOK_EVENTS names events Capsule does not offer: {', '.join(unknown)};"
            f" choose from {', '.join(HOOK_EVENTS)}"
        )
    return chosen


@dataclass(frozen=True)
class Settings:
    state_table: str
    connections_table: str
    token_key_id: str
    client_credentials_secret_id: str
    capsule_base_url: str = "https://api.capsulecrm.com"
    scope: str = "read write"
    state_ttl_seconds: int = 600
    pkce_enabled: bool = True
    redirect_uri: str | None = None
    http_timeout_seconds: float = 8.0
    credentials_max_age_seconds: int = 300
    refresh_lead_seconds: int = 86_400
    refresh_concurrency: int = 8
    token_margin_seconds: int = 300
    lease_seconds: int = 60
    lease_wait_seconds: float = 5.0
    refresh_min_remaining_ms: int = 20_000
    allowed_return_origins: tuple[Origin, ...] = ()
    require_connect_session: bool = True
    connect_session_ttl_seconds: int = 1800
    connect_start_url: str | None = None
    token_auth_method: str = "client_secret_post"  # noqa: S105 - a method's name
    token_cache_seconds: int = 60
    refresh_failing_threshold: int = 3  # failures in a row that make "Refresh Failing"
    event_bus_name: str = "default"  # where status events go (EventsFunction)
    event_source: str = "capsule-connector"
    confirm_connections: bool = True  # a new connection waits for the app's confirm
    connect_confirm_seconds: int = 600  # how long a capsule_result can confirm it
    management_caller_arns: tuple[str, ...] = ()  # empty: any caller IAM lets through
    capsule_hourly_budget: int = 3600  # API v2 calls per Capsule user per hour (of 4,000)
    budgets_table: str = ""  # one item per Capsule user; required once Capsule is called
    hook_events: tuple[str, ...] = ()  # Capsule REST hook events subscribed; () = hooks off

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redirect_uri = env.get("REDIRECT_URI", "").strip() or None
        if redirect_uri is not None:
            redirect_uri = _url(env, "REDIRECT_URI", redirect_uri)
        connect_start_url = env.get("CONNECT_START_URL", "").strip() or None
        if connect_start_url is not None:
            connect_start_url = _url(env, "CONNECT_START_URL", connect_start_url)
        try:
            allowed_return_origins = parse_allowed_origins(env.get("ALLOWED_RETURN_ORIGINS", ""))
        except ValueError as error:
            raise ConfigError(f"ALLOWED_RETURN_ORIGINS: {error}") from None
        http_timeout_seconds = _number(env, "HTTP_TIMEOUT_SECONDS", cls.http_timeout_seconds, 0.1)
        return cls(
            state_table=_required(env, "STATE_TABLE_NAME"),
            connections_table=_required(env, "CONNECTIONS_TABLE_NAME"),
            token_key_id=_required(env, "TOKEN_KEY_ID"),
            client_credentials_secret_id=_required(env, "CLIENT_CREDENTIALS_SECRET_ID"),
            capsule_base_url=_url(env, "CAPSULE_BASE_URL", cls.capsule_base_url),
            scope=" ".join(env.get("CAPSULE_SCOPE", "").split()) or cls.scope,
            state_ttl_seconds=int(_number(env, "STATE_TTL_SECONDS", cls.state_ttl_seconds, 1)),
            pkce_enabled=_flag(env, "PKCE_ENABLED", cls.pkce_enabled),
            redirect_uri=redirect_uri,
            http_timeout_seconds=http_timeout_seconds,
            credentials_max_age_seconds=int(
                _number(env, "CREDENTIALS_MAX_AGE_SECONDS", cls.credentials_max_age_seconds)
            ),
            refresh_lead_seconds=int(
                _number(env, "REFRESH_LEAD_SECONDS", cls.refresh_lead_seconds)
            ),
            refresh_concurrency=int(
                _number(env, "REFRESH_CONCURRENCY", cls.refresh_concurrency, 1)
            ),
            token_margin_seconds=int(
                _number(env, "TOKEN_MARGIN_SECONDS", cls.token_margin_seconds)
            ),
            lease_seconds=_lease_seconds(env, cls.lease_seconds, http_timeout_seconds),
            lease_wait_seconds=_number(env, "LEASE_WAIT_SECONDS", cls.lease_wait_seconds),
            refresh_min_remaining_ms=int(
                _number(env, "REFRESH_MIN_REMAINING_MS", cls.refresh_min_remaining_ms)
            ),
            allowed_return_origins=allowed_return_origins,
            require_connect_session=_flag(
                env, "REQUIRE_CONNECT_SESSION", cls.require_connect_session
            ),
            connect_session_ttl_seconds=int(
                _number(env, "CONNECT_SESSION_TTL_SECONDS", cls.connect_session_ttl_seconds, 60)
            ),
            connect_start_url=connect_start_url,
            token_auth_method=_choice(
                env, "CAPSULE_TOKEN_AUTH_METHOD", cls.token_auth_method, TOKEN_AUTH_METHODS
            ),
            token_cache_seconds=int(_number(env, "TOKEN_CACHE_SECONDS", cls.token_cache_seconds)),
            refresh_failing_threshold=int(
                _number(env, "REFRESH_FAILING_THRESHOLD", cls.refresh_failing_threshold, 1)
            ),
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or cls.event_bus_name,
            event_source=env.get("EVENT_SOURCE", "").strip() or cls.event_source,
            confirm_connections=_flag(env, "CONFIRM_CONNECTIONS", cls.confirm_connections),
            connect_confirm_seconds=int(
                _number(env, "CONNECT_CONFIRM_SECONDS", cls.connect_confirm_seconds, 60)
            ),
            management_caller_arns=_caller_arns(env, "MANAGEMENT_CALLER_ARNS"),
            capsule_hourly_budget=int(
                _number(env, "CAPSULE_HOURLY_BUDGET", cls.capsule_hourly_budget, 1)
            ),
            budgets_table=env.get("CAPSULE_BUDGETS_TABLE_NAME", "").strip(),
            hook_events=_hook_events(env),
        )


@functools.cache
def settings() -> Settings:
    """The settings of this process, read once (tests call ``settings.cache_clear()``)."""
    return Settings.from_env()
