"""Refresh: one connection under its lease, or every due connection in a bounded pool.

Per connection: take the lease (the write returns the item as it is now), decide whether it
still needs a refresh, POST grant_type=refresh_token, then one fenced write of the new
tokens. Failures keep the tokens: only an ``invalid_grant`` on the refresh token that is
still stored ends a connection (``needs_reauth``).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from capsule_oauth.capsule import api, token_endpoint
from capsule_oauth.config import LEASE_MARGIN_SECONDS, Settings
from capsule_oauth.errors import (
    CapsuleError,
    CapsuleRateLimited,
    InvalidGrant,
    LeaseNotAcquired,
    StaleWrite,
    TokenDecryptionError,
)
from capsule_oauth.observability import count, count_by, logger
from capsule_oauth.store.connections import ACTIVE, Connection, ConnectionStore, refresh_due_at
from capsule_oauth.store.crypto import TokenPair

# Transient failures wait 15 min, 30, 60 ... up to 6 h before the next try.
BACKOFF_BASE_SECONDS = 900
BACKOFF_MAX_SECONDS = 6 * 3600
# A 429 without a usable X-RateLimit-Reset: how long to leave Capsule's token endpoint alone.
RATE_LIMIT_WAIT_SECONDS = 60
RATE_LIMITED = CapsuleRateLimited.reason


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    NOT_NEEDED = "not_needed"  # someone else refreshed it first
    CONTENDED = "contended"  # another worker holds the lease
    FAILED = "failed"  # transient: tokens kept, retried later
    SKIPPED = "skipped"  # not tried (too little time, or a 429's reset not yet come), by reason
    REAUTH_REQUIRED = "reauth_required"
    INACTIVE = "inactive"
    MISSING = "missing"
    ERROR = "error"  # our own fault (AWS, bug): logged, retried next run


@dataclass(frozen=True)
class RefreshResult:
    connection_id: str
    outcome: Outcome
    error: str | None = None
    connection: Connection | None = None
    access_token: str | None = field(default=None, repr=False)


NeedsRefresh = Callable[[Connection, int], bool]


def backoff_seconds(failure_count: int) -> int:
    exponent = max(failure_count - 1, 0)
    return int(min(BACKOFF_BASE_SECONDS * 2 ** min(exponent, 16), BACKOFF_MAX_SECONDS))


def scheduled_due(connection: Connection, now: int) -> bool:
    return connection.refresh_due_at is not None and connection.refresh_due_at <= now


def forced(_connection: Connection, _now: int) -> bool:
    """Refresh whatever the expiry (an operator's "refresh now")."""
    return True


_MIN_CALL_SECONDS = 2.0  # less time than this left on the lease: do not start a call
_SAVE_ATTEMPTS = 3


def refresh_connection(
    settings: Settings,
    connection_id: str,
    *,
    owner: str,
    needs_refresh: NeedsRefresh = scheduled_due,
    deadline: float | None = None,
) -> RefreshResult:
    """Refresh one connection under its lease; ``deadline`` (api.now() clock) is when the
    caller must be done (the Lambda's time), the lease's own end comes first if earlier."""
    store = ConnectionStore(settings)
    now = int(time.time())
    leased_at = api.now()
    try:
        current = store.acquire_lease(connection_id, owner=owner, now=now)
    except LeaseNotAcquired:
        return RefreshResult(connection_id, Outcome.CONTENDED, "LeaseHeld")
    if current is None:
        return RefreshResult(connection_id, Outcome.MISSING)

    released = False
    try:
        if current.status != ACTIVE:
            return RefreshResult(connection_id, Outcome.INACTIVE, connection=current)
        if not needs_refresh(current, now):
            return RefreshResult(connection_id, Outcome.NOT_NEEDED, connection=current)
        lease_end = (
            leased_at
            + settings.lease_seconds
            - min(LEASE_MARGIN_SECONDS, settings.lease_seconds / 4)
        )
        call_deadline = min(lease_end, deadline or math.inf)
        if (wait := _reason_to_wait(current, now, call_deadline)) is not None:
            return _skipped(current, wait)
        result = _refresh_leased(
            settings, store, current, owner=owner, now=now, deadline=call_deadline
        )
        released = True  # every path of _refresh_leased ends in a fenced write or StaleWrite
        return result
    finally:
        if not released:
            store.release_lease(connection_id, owner=owner)


def _reason_to_wait(current: Connection, now: int, call_deadline: float) -> str | None:
    """Why Capsule is not called now: a 429's reset has not come yet (Capsule said when), or
    too little time is left for the call."""
    if (current.rate_limited_until or 0) > now:
        return RATE_LIMITED
    if call_deadline - api.now() < _MIN_CALL_SECONDS:
        return "NoTimeLeft"
    return None


def _skipped(current: Connection, reason: str) -> RefreshResult:
    """Not tried now; the lease is released and the connection stays as it was (due)."""
    logger.warning(
        "Refresh skipped; the connection stays due",
        extra={"connection_id": current.connection_id, "reason": reason},
    )
    return RefreshResult(current.connection_id, Outcome.SKIPPED, reason, connection=current)


def _refresh_leased(
    settings: Settings,
    store: ConnectionStore,
    current: Connection,
    *,
    owner: str,
    now: int,
    deadline: float,
) -> RefreshResult:
    cid = current.connection_id
    try:
        stored = store.tokens(current)
        answer = token_endpoint.refresh(
            settings, refresh_token=stored.refresh_token, deadline=deadline
        )
    except InvalidGrant as error:
        if current.lease_taken_over:
            # The worker whose lease lapsed may have rotated this token and still be saving
            # the new one: ask again once its lease period is over before declaring reauth.
            return _failed(
                settings, store, current, owner=owner, now=now,
                reason="InvalidGrantAfterTakeover", retry_at=now + settings.lease_seconds,
            )  # fmt: skip
        try:
            updated = store.mark_needs_reauth(current, owner=owner, error=error.reason, now=now)
        except StaleWrite:
            # Our refresh token is no longer the stored one: another worker won. Not a failure.
            return RefreshResult(cid, Outcome.NOT_NEEDED)
        logger.warning(
            "Capsule refused the refresh token: needs reauth", extra={"connection_id": cid}
        )
        return RefreshResult(cid, Outcome.REAUTH_REQUIRED, error.reason, connection=updated)
    except CapsuleRateLimited as error:
        return _rate_limited(store, current, owner=owner, now=now, reset_at=error.reset_at)
    except (CapsuleError, TokenDecryptionError) as error:
        retry_at = now + backoff_seconds(current.failure_count + 1)
        return _failed(
            settings, store, current, owner=owner, now=now, reason=error.reason, retry_at=retry_at
        )

    tokens = TokenPair(
        answer.access_token,
        # No refresh_token in the answer means the old one stays valid.
        answer.refresh_token or stored.refresh_token,
    )
    return _keep_rotated(
        settings, store, current, tokens, answer, owner=owner, now=now, deadline=deadline
    )


def _keep_rotated(
    settings: Settings,
    store: ConnectionStore,
    current: Connection,
    tokens: TokenPair,
    answer: token_endpoint.TokenResponse,
    *,
    owner: str,
    now: int,
    deadline: float,
) -> RefreshResult:
    """Save what Capsule rotated to; when that cannot be done, say why and back off."""
    cid = current.connection_id
    expires_at = int(time.time()) + answer.expires_in
    try:
        updated = _save_rotated(
            store,
            current,
            tokens,
            owner=owner,
            expires_at=expires_at,
            scope=answer.scope or current.scope,
            due=refresh_due_at(expires_at, answer.expires_in, settings.refresh_lead_seconds),
            lifetime=answer.expires_in,
            deadline=deadline + min(LEASE_MARGIN_SECONDS, settings.lease_seconds / 4),
        )
    except StaleWrite:
        # Only a reconnect (newer tokens) or a lease that ran out can get here.
        logger.error(
            "Refreshed tokens could not be stored: the connection changed meanwhile",
            extra={"connection_id": cid},
        )
        return RefreshResult(cid, Outcome.ERROR, "StaleWrite")
    except Exception as error:
        # KMS or DynamoDB kept failing: the rotated tokens are lost. Back off like any other
        # failure (the next try may still work where Capsule did not rotate the refresh token).
        logger.error(
            "Rotated tokens could not be saved",
            extra={"connection_id": cid, "error": type(error).__name__},
        )
        retry_at = now + backoff_seconds(current.failure_count + 1)
        return _failed(
            settings,
            store,
            current,
            owner=owner,
            now=now,
            reason="RotatedTokensUnsaved",
            retry_at=retry_at,
        )
    logger.info("Connection refreshed", extra={"connection_id": cid, "expires_at": expires_at})
    return RefreshResult(
        cid, Outcome.REFRESHED, connection=updated, access_token=tokens.access_token
    )


def _failed(
    settings: Settings,
    store: ConnectionStore,
    current: Connection,
    *,
    owner: str,
    now: int,
    reason: str,
    retry_at: int,
) -> RefreshResult:
    """Keep the tokens, note the failure and when to try again. The failure that makes the
    connection "refresh failing" gets a new version (a status event is derived from it)."""
    try:
        updated = store.record_failure(
            current,
            owner=owner,
            error=reason,
            retry_at=retry_at,
            now=now,
            new_version=current.failure_count + 1 == settings.refresh_failing_threshold,
        )
    except StaleWrite:
        updated = None
    logger.warning(
        "Refresh failed; tokens kept, will retry",
        extra={"connection_id": current.connection_id, "error_class": reason, "retry_at": retry_at},
    )
    return RefreshResult(current.connection_id, Outcome.FAILED, reason, connection=updated)


def _rate_limited(
    store: ConnectionStore, current: Connection, *, owner: str, now: int, reset_at: float | None
) -> RefreshResult:
    """Capsule's limit is reached: wait for its reset (a day at most, as api bounds it), not
    a backoff; this connection is not failing, so its failure count stays as it is."""
    until = max(math.ceil(reset_at), now + 1) if reset_at else now + RATE_LIMIT_WAIT_SECONDS
    try:
        updated = store.record_rate_limited(
            current,
            owner=owner,
            until=until,
            retry_at=max(current.refresh_due_at or 0, until),
            now=now,
        )
    except StaleWrite:
        updated = None
    logger.warning(
        "Capsule's rate limit reached; no refresh before its reset",
        extra={"connection_id": current.connection_id, "rate_limited_until": until},
    )
    return RefreshResult(current.connection_id, Outcome.FAILED, RATE_LIMITED, connection=updated)


def _save_rotated(
    store: ConnectionStore,
    current: Connection,
    tokens: TokenPair,
    *,
    owner: str,
    expires_at: int,
    scope: str,
    due: int,
    lifetime: int,
    deadline: float,
) -> Connection:
    """Save tokens Capsule has just rotated, retrying a KMS or DynamoDB fault while time
    allows: the old refresh token is dead, so these are the only ones that work."""
    for attempt in range(_SAVE_ATTEMPTS):
        try:
            return store.store_refreshed(
                current,
                tokens,
                owner=owner,
                expires_at=expires_at,
                scope=scope,
                refresh_due_at=due,
                now=int(time.time()),
                lifetime=lifetime,
            )
        except StaleWrite:
            raise
        except Exception as error:
            pause = 0.2 * 2**attempt
            if attempt + 1 == _SAVE_ATTEMPTS or api.now() + pause >= deadline:
                count_by("RotatedTokensUnsaved", "error_class", type(error).__name__)
                raise
            logger.warning(
                "Saving rotated tokens failed; trying again",
                extra={"connection_id": current.connection_id, "error": type(error).__name__},
            )
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


@dataclass
class RunReport:
    due: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    stopped_early: bool = False

    def add(self, result: RefreshResult) -> None:
        self.outcomes[result.outcome.value] += 1
        if result.outcome in _FAILURES:
            self.failures[result.error or result.outcome.value] += 1
        elif result.outcome is Outcome.SKIPPED:
            self.skipped[result.error or result.outcome.value] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "due": self.due,
            "outcomes": dict(self.outcomes),
            "failures": dict(self.failures),
            "skipped": dict(self.skipped),
            "stopped_early": self.stopped_early,
        }


def refresh_due(
    settings: Settings, *, remaining_ms: Callable[[], int], run_id: str | None = None
) -> RunReport:
    """Refresh every due connection, ``refresh_concurrency`` at a time, within the time budget.

    Stops taking new work when less than ``refresh_min_remaining_ms`` is left; connections
    not reached stay due and the next run picks them up.
    """
    owner = f"refresh:{run_id or uuid.uuid4().hex}"
    report = RunReport()
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(settings.refresh_concurrency)

    def work(connection_id: str) -> None:
        try:
            # Done well before the Lambda is: half the reserve stays for saving and reporting.
            left = (remaining_ms() - settings.refresh_min_remaining_ms / 2) / 1000
            result = refresh_connection(
                settings, connection_id, owner=owner, deadline=api.now() + left
            )
        except Exception:
            logger.exception("Refresh crashed", extra={"connection_id": connection_id})
            result = RefreshResult(connection_id, Outcome.ERROR, "Exception")
        finally:
            slots.release()
        with lock:
            report.add(result)

    now = int(time.time())
    with ThreadPoolExecutor(settings.refresh_concurrency, thread_name_prefix="refresh") as pool:
        for connection_id in ConnectionStore(settings).due_ids(now=now):
            slots.acquire()  # a worker first: waiting for one uses up time too
            if remaining_ms() < settings.refresh_min_remaining_ms:
                slots.release()
                report.stopped_early = True
                break
            report.due += 1
            pool.submit(work, connection_id)
    # Metrics are emitted here, on one thread, from the report the workers filled in.
    count("DueConnections", report.due)
    emit_metrics(report)
    logger.info("Refresh run finished", extra=report.as_dict())
    return report


# Another worker holding the lease is not a failure: that connection is being refreshed.
_FAILURES = (Outcome.FAILED, Outcome.ERROR)


def emit_metrics(report: RunReport) -> None:
    """A run's metrics, one call per name, from the report its workers filled in."""
    if refreshed := report.outcomes[Outcome.REFRESHED.value]:
        count("RefreshSucceeded", refreshed)
    if reauth := report.outcomes[Outcome.REAUTH_REQUIRED.value]:
        count("ReauthRequired", reauth)
    for error_class, failed in sorted(report.failures.items()):
        count_by("RefreshFailed", "error_class", error_class, failed)
    for reason, skipped in sorted(report.skipped.items()):
        count_by("RefreshSkipped", "reason", reason, skipped)


def count_result(result: RefreshResult) -> None:
    """The metrics of one refresh outside a run (an on-demand refresh)."""
    if result.outcome is Outcome.REFRESHED:
        count("RefreshSucceeded")
    elif result.outcome is Outcome.REAUTH_REQUIRED:
        count("ReauthRequired")
    elif result.outcome in _FAILURES:
        count_by("RefreshFailed", "error_class", result.error or result.outcome.value)
    elif result.outcome is Outcome.SKIPPED:
        count_by("RefreshSkipped", "reason", result.error or result.outcome.value)
