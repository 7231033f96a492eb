"""Capsule REST hooks kept per connection: subscribe when a connection becomes active, check
them daily in the scheduled run, delete them on disconnect.

A hook's target is ``<api>/capsule-hooks/<hook token>``: 256 random bits per connection, kept
only as its SHA-256 (store/hooks.py) and replaced on every subscribe, which turns the hooks
of the old token stale (deleted at Capsule). Since only the hash is kept, a check that finds
every hook of the current token gone subscribes afresh with a new token; when some are left,
the token is read back from their target URL. Nothing here raises into a sign-in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from capsule_oauth import config
from capsule_oauth.capsule import api, hooks
from capsule_oauth.capsule.hooks import HookCaller, RestHook
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleError, HookLimitReached, HooksNotAllowed, StaleWrite
from capsule_oauth.observability import count_by, logger
from capsule_oauth.store.connections import ACTIVE, Connection, ConnectionStore
from capsule_oauth.store.hooks import HookStore
from capsule_oauth.store.records import HOOKS_OFF

HOOK_PATH = "/capsule-hooks/"
CALLBACK_PATH = "/auth/callback"
ACTIVE_HOOKS = "active"
NOT_ADMIN = "not_admin"
LIMIT_REACHED = "limit_reached"
FAILING = "failing"
CHECK_INTERVAL_SECONDS = 86_400  # a hook that works is checked once a day
SUBSCRIBE_SECONDS = 3.0  # what a sign-in waits for subscribing at most; the check does the rest
CHECK_MIN_REMAINING_MS = 15_000  # the scheduled run stops checking with less time than this left
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43,128}")


def new_token() -> tuple[str, str]:
    """A fresh hook token (256 random bits, URL safe) and the hash that is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def api_base_from_callback(redirect_uri: str) -> str:
    """The API's base URL, from the callback URL it serves (``<base>/auth/callback``)."""
    url = redirect_uri.split("?", 1)[0].rstrip("/")
    if url.endswith(CALLBACK_PATH):
        return url.removesuffix(CALLBACK_PATH)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _configured_base(settings: Settings) -> str | None:
    """The API's base URL from a fixed ``RedirectUri`` (a custom domain), if one is set."""
    return api_base_from_callback(settings.redirect_uri) if settings.redirect_uri else None


def target_url(base_url: str, token: str) -> str:
    return f"{base_url}{HOOK_PATH}{token}"


def _token_in(url: str, base_url: str | None) -> str | None:
    """The hook token in one of our target URLs; None for any other URL."""
    if not base_url or not url.startswith(base_url + HOOK_PATH):
        return None
    token = url[len(base_url + HOOK_PATH) :]
    return token if TOKEN_PATTERN.fullmatch(token) else None


def _description(connection_id: str) -> str:
    return f"capsule-connector {connection_id}"


@dataclass(frozen=True)
class Synced:
    status: str
    events: tuple[str, ...]
    hook_ids: tuple[str, ...]
    stale_ids: tuple[str, ...]
    created: tuple[str, ...]


def _draw(connection: Connection) -> api.Draw:
    """Hook calls draw from the Capsule user's budget, as every API v2 call does."""
    return api.Draw(connection.subdomain, connection.user_id, "hooks")


def _caller(settings: Settings, connection: Connection) -> HookCaller:
    access_token = ConnectionStore(settings).tokens(connection).access_token
    return HookCaller(access_token, _draw(connection))


def _sync(
    settings: Settings,
    caller: HookCaller,
    connection_id: str,
    *,
    target: str,
    keep: Sequence[RestHook],
    stale_ids: Sequence[str],
    deadline: float,
) -> Synced:
    """Delete the stale hooks, then subscribe each configured event not in ``keep``.

    Deleting first leaves room under the account's limit. A stale hook that could not be
    deleted stays listed for the next check.
    """
    left: list[str] = []
    for hook_id in dict.fromkeys(stale_ids):
        try:
            hooks.delete_hook(settings, caller, hook_id, deadline=deadline)
        except (CapsuleError, ValueError):
            left.append(hook_id)
    present = {hook.event: hook.hook_id for hook in keep if hook.event in settings.hook_events}
    created: list[str] = []
    status = ACTIVE_HOOKS
    for event in settings.hook_events:
        if event in present:
            continue
        try:
            hook = hooks.create_hook(
                settings,
                caller,
                event=event,
                target_url=target,
                description=_description(connection_id),
                deadline=deadline,
            )
        except HooksNotAllowed:
            status = NOT_ADMIN
            break
        except HookLimitReached:
            status = LIMIT_REACHED
            break
        except CapsuleError as error:
            logger.warning(
                "Could not subscribe a Capsule REST hook",
                extra={"connection_id": connection_id, "event": event, "reason": error.reason},
            )
            status = FAILING
            break
        present[event] = hook.hook_id
        created.append(hook.hook_id)
    events = tuple(event for event in settings.hook_events if event in present)
    return Synced(status, events, tuple(present[e] for e in events), tuple(left), tuple(created))


def _next_check(status: str, now: int) -> int:
    # A failing subscription is tried again in the next scheduled run.
    return now if status == FAILING else now + CHECK_INTERVAL_SECONDS


def _record(
    settings: Settings,
    caller: HookCaller,
    *,
    connection_id: str,
    hashed: str,
    synced: Synced,
    now: int,
) -> str:
    """Save what was synced; if the hook token changed meanwhile, undo what we created."""
    try:
        HookStore(settings).record(
            connection_id,
            token_hash=hashed,
            status=synced.status,
            events=synced.events,
            hook_ids=synced.hook_ids,
            stale_ids=synced.stale_ids,
            checked_at=now,
            next_check_at=_next_check(synced.status, now),
        )
    except StaleWrite:
        for hook_id in synced.created:
            try:
                hooks.delete_hook(settings, caller, hook_id)
            except (CapsuleError, ValueError):
                count_by("CapsuleHookSubscriptions", "outcome", "orphaned")
        return "superseded"
    count_by("CapsuleHookSubscriptions", "outcome", synced.status)
    return synced.status


def subscribe_hooks(
    connection_id: str,
    *,
    settings: Settings | None = None,
    api_base_url: str | None = None,
    deadline_seconds: float = SUBSCRIBE_SECONDS,
) -> str | None:
    """Subscribe every configured event for a connection that just became active, with a
    new hook token; the old token's hooks are deleted at Capsule. Never raises.

    ``api_base_url``: where the intake is (``https://<api>``); without it, the one the
    connection was subscribed with before, else the one ``RedirectUri`` names. Returns the
    hook status (``active``, ``not_admin``, ``limit_reached``, ``failing``), ``off`` when
    no events are configured, or None when the connection is not active. Whatever is not
    done in ``deadline_seconds`` is left ``failing`` for the scheduled check.
    """
    settings = settings or config.settings()
    if not settings.hook_events:
        return HOOKS_OFF
    deadline = api.now() + deadline_seconds
    token, hashed = new_token()
    now = int(time.time())
    try:
        connection = HookStore(settings).begin(
            connection_id,
            token_hash=hashed,
            events=settings.hook_events,
            base_url=api_base_url,
            now=now,
        )
    except StaleWrite:
        return None
    except Exception as error:  # never fail the sign-in; the check cannot see it either
        logger.warning(
            "Could not start subscribing Capsule REST hooks",
            extra={"connection_id": connection_id, "error": type(error).__name__},
        )
        count_by("CapsuleHookSubscriptions", "outcome", FAILING)
        return FAILING
    try:
        return _subscribe(
            settings, connection, token=token, hashed=hashed, deadline=deadline, now=now
        )
    except Exception as error:  # stays "failing": the scheduled check tries again
        logger.warning(
            "Could not subscribe Capsule REST hooks",
            extra={
                "connection_id": connection_id,
                "error": getattr(error, "reason", type(error).__name__),
            },
        )
        count_by("CapsuleHookSubscriptions", "outcome", FAILING)
        return FAILING


def _subscribe(
    settings: Settings,
    connection: Connection,
    *,
    token: str,
    hashed: str,
    deadline: float,
    now: int,
) -> str:
    base = connection.hook_base_url or _configured_base(settings)
    if not base:
        raise CapsuleError("no API base URL to subscribe hooks to")
    caller = _caller(settings, connection)
    synced = _sync(
        settings,
        caller,
        connection.connection_id,
        target=target_url(base, token),
        keep=(),
        stale_ids=connection.hook_stale_ids,
        deadline=deadline,
    )
    return _record(
        settings,
        caller,
        connection_id=connection.connection_id,
        hashed=hashed,
        synced=synced,
        now=now,
    )


def unsubscribe_hooks(settings: Settings, connection: Connection, access_token: str) -> bool:
    """Delete a connection's hooks at Capsule (disconnect). Never raises; False when some
    could not be deleted (the intake answers 410 to them, and Capsule drops them)."""
    caller = HookCaller(access_token, _draw(connection))
    ids = dict.fromkeys([*connection.hook_ids, *connection.hook_stale_ids])
    if not ids:
        return True
    deadline = api.now() + SUBSCRIBE_SECONDS
    failed = 0
    for hook_id in ids:
        try:
            hooks.delete_hook(settings, caller, hook_id, deadline=deadline)
        except Exception:  # a disconnect never waits on this
            failed += 1
    count_by("CapsuleHookSubscriptions", "outcome", "deleted" if not failed else "delete_failed")
    if failed:
        logger.warning(
            "Could not delete every Capsule REST hook of the connection",
            extra={"connection_id": connection.connection_id, "failed": failed},
        )
    return not failed


def resubscribe_soon(settings: Settings, connection: Connection) -> None:
    """A disconnect deleted the hooks, then failed: the connection stays, so its hooks are
    left ``failing`` for the next scheduled run to subscribe again. Never raises."""
    if not connection.hook_token_hash:
        return
    try:
        HookStore(settings).record(
            connection.connection_id,
            token_hash=connection.hook_token_hash,
            status=FAILING,
            events=connection.hook_events,
            hook_ids=(),
            stale_ids=(),
            checked_at=connection.hooks_checked_at or int(time.time()),
            next_check_at=int(time.time()),
        )
    except Exception as error:  # the daily check still finds them gone
        logger.warning(
            "Could not mark the hooks for the next run",
            extra={"connection_id": connection.connection_id, "error": type(error).__name__},
        )


# --- the daily check ---------------------------------------------------------------------------


def check_connection_hooks(
    settings: Settings, connection_id: str, *, deadline_seconds: float = 20.0
) -> str:
    """Compare Capsule's list of this app's hooks with what the connection should have:
    re-create missing ones, delete the connector's stale ones, record ``checked_at``."""
    hook_store = HookStore(settings)
    connection = ConnectionStore(settings).get(connection_id)
    if connection is None or connection.status != ACTIVE:
        if connection is not None:
            hook_store.leave_queue(connection_id)
        return "inactive"
    deadline = api.now() + deadline_seconds
    now = int(time.time())
    caller = _caller(settings, connection)
    try:
        listed = hooks.list_hooks(settings, caller, deadline=deadline)
    except HooksNotAllowed:
        if not settings.hook_events:  # it could not have subscribed any: nothing to delete
            return _turn_off(settings, connection, [], caller, now=now, deadline=deadline)
        return _keep_as(settings, connection, NOT_ADMIN, now)
    except CapsuleError:
        _keep_as(settings, connection, FAILING, now)
        raise
    base = connection.hook_base_url or _configured_base(settings)
    if not settings.hook_events:
        ours = [
            hook.hook_id
            for hook in listed
            if hook.hook_id in {*connection.hook_ids, *connection.hook_stale_ids}
            or ((token := _token_in(hook.target_url, base)) is not None
                and token_hash(token) == connection.hook_token_hash)
        ]  # fmt: skip
        return _turn_off(settings, connection, ours, caller, now=now, deadline=deadline)
    current = [
        hook
        for hook in listed
        if (token := _token_in(hook.target_url, base)) is not None
        and token_hash(token) == connection.hook_token_hash
    ]
    token = _token_in(current[0].target_url, base) if current else None
    hashed = connection.hook_token_hash or ""
    if token is None:
        # Nothing at Capsule holds the current token, and only its hash is kept: start over.
        token, hashed = new_token()
        connection = hook_store.begin(
            connection_id, token_hash=hashed, events=settings.hook_events, base_url=None, now=now
        )
        if not base:
            raise CapsuleError("no API base URL to subscribe hooks to")
    keep: dict[str, RestHook] = {}
    for hook in current:
        if hook.event in settings.hook_events and hook.event not in keep:
            keep[hook.event] = hook
    kept_ids = {hook.hook_id for hook in keep.values()}
    listed_ids = {hook.hook_id for hook in listed}
    known = {*connection.hook_ids, *connection.hook_stale_ids}
    stale = [hook.hook_id for hook in current if hook.hook_id not in kept_ids]
    stale += [hook_id for hook_id in known if hook_id in listed_ids and hook_id not in kept_ids]
    stale += _orphans(hook_store, listed, connection, known, base)
    synced = _sync(
        settings,
        caller,
        connection_id,
        target=target_url(base or "", token),
        keep=list(keep.values()),
        stale_ids=stale,
        deadline=deadline,
    )
    return _record(
        settings, caller, connection_id=connection_id, hashed=hashed, synced=synced, now=now
    )


def _turn_off(
    settings: Settings,
    connection: Connection,
    hook_ids: Sequence[str],
    caller: HookCaller,
    *,
    now: int,
    deadline: float,
) -> str:
    """No events are configured any more: delete the connection's hooks at Capsule, then
    forget its hook token (the intake answers 410). What could not be deleted is tried again
    in the next run."""
    left = _sync(
        settings,
        caller,
        connection.connection_id,
        target="",
        keep=(),
        stale_ids=hook_ids,
        deadline=deadline,
    ).stale_ids
    if left:
        synced = Synced(FAILING, (), (), left, ())
        return _record(
            settings,
            caller,
            connection_id=connection.connection_id,
            hashed=connection.hook_token_hash or "",
            synced=synced,
            now=now,
        )
    HookStore(settings).turn_off(
        connection.connection_id, token_hash=connection.hook_token_hash or "", now=now
    )
    count_by("CapsuleHookSubscriptions", "outcome", HOOKS_OFF)
    return HOOKS_OFF


def _keep_as(settings: Settings, connection: Connection, status: str, now: int) -> str:
    """Record a check that could not read Capsule's list: what is stored stays, the status
    says why, and the next check is scheduled by it."""
    synced = Synced(
        status, connection.hook_events, connection.hook_ids, connection.hook_stale_ids, ()
    )
    nobody = HookCaller("", _draw(connection))  # nothing was created, so nothing to undo
    return _record(
        settings,
        nobody,
        connection_id=connection.connection_id,
        hashed=connection.hook_token_hash or "",
        synced=synced,
        now=now,
    )


def _orphans(
    hook_store: HookStore,
    listed: Sequence[RestHook],
    connection: Connection,
    known: set[str],
    base: str | None,
) -> list[str]:
    """Our intake's hooks whose token no connection holds (a subscribe cut short)."""
    found: list[str] = []
    for hook in listed:
        token = _token_in(hook.target_url, base)
        if token is None or hook.hook_id in known:
            continue
        hashed = token_hash(token)
        if hashed != connection.hook_token_hash and hook_store.find_by_token_hash(hashed) is None:
            found.append(hook.hook_id)
    return found


def check_due(
    settings: Settings, *, remaining_ms: Callable[[], int], now: int | None = None
) -> dict[str, int]:
    """The scheduled run's hook check: every connection due one (a sparse index: reads follow
    the connections due, not the table), while time is left. Returns outcome counts.

    With no events configured, each connection due is turned off: its hooks deleted at
    Capsule and its hook token forgotten."""
    outcomes: Counter[str] = Counter()
    # With no events configured, what is still due is turned off (its hooks deleted).
    for connection_id in HookStore(settings).due_ids(now=now or int(time.time())):
        if remaining_ms() < CHECK_MIN_REMAINING_MS:
            break
        try:
            outcome = check_connection_hooks(
                settings,
                connection_id,
                deadline_seconds=min(20.0, (remaining_ms() - CHECK_MIN_REMAINING_MS / 2) / 1000),
            )
        except Exception as error:  # one connection's fault never ends the run
            outcome = FAILING
            logger.warning(
                "Could not check a connection's Capsule REST hooks",
                extra={
                    "connection_id": connection_id,
                    "error": getattr(error, "reason", type(error).__name__),
                },
            )
        outcomes[outcome] += 1
    return dict(outcomes)
