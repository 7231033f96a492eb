"""One budget of Capsule API v2 calls per Capsule user (site + user id), shared by every
connection of that user and every container at once.

Capsule allows 4,000 calls an hour per user, across every app the user authorised. Each
call the connector makes for a user is drawn here first (``spend``) and Capsule's answer is
fed back (``observe``). A call the budget cannot cover raises ``CapsuleRateLimited`` and
never reaches Capsule.

The shared half is one DynamoDB item per user (store/budgets.py); each container takes
calls from it in blocks and spends them from memory, so the table sees one write per block.

Why the ceiling from ``Remaining`` is safe: a block is spendable for BLOCK_SECONDS and a call
takes at most the HTTP timeout, so calls handed out longer ago than that have reached Capsule
or never will. Calls after an answer with ``Remaining: R`` are then at most
``ceiling - old - known`` (``known``: recent calls seen answered before it was sent), and
the ceiling is set to ``old + known + R - kept back`` from the latest answer.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleRateLimited, ConfigError
from capsule_oauth.observability import count_by, logger
from capsule_oauth.store import budgets
from capsule_oauth.store.budgets import BudgetStore, Grant, Snapshot, plan

BLOCK: Final = 20  # calls leased per write: at most 0.05 writes per call in steady state
BLOCK_SECONDS: Final = 10  # a block not spent within this is dropped
CLOCK_SKEW_SECONDS: Final = 2
BLOCKED_FALLBACK_SECONDS: Final = 60  # a 429 without a reset: wait a minute
CAPSULE_LIMIT_FALLBACK: Final = 4000  # Capsule's documented limit when X-RateLimit-Limit is absent
_ATTEMPTS: Final = 12
REREAD_SECONDS: Final = 2  # a container holding a block looks at the item this often


@dataclass
class _Local:
    """This container's view of one user: its block and the item as last seen."""

    snapshot: Snapshot = field(default_factory=Snapshot)
    seen_at: float = 0.0
    left: int = 0
    block_until: float = 0.0
    refused_until: float = 0.0
    block_slot: int = 0  # the slot the block was leased in
    unreported: dict[int, int] = field(default_factory=dict)  # lease slot -> answers seen
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Ticket:
    """One call drawn: the slot of its lease, and the calls known to have reached Capsule
    before it was sent (answered, by lease slot: reported by every container, and this
    container's own not reported yet)."""

    slot: int
    answered_before: Mapping[int, int]


class Budget:
    """The budgets of this container (one instance per process; tests build one per
    simulated container)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not settings.budgets_table:
            raise ConfigError("CAPSULE_BUDGETS_TABLE_NAME is not set; declare it in template.yaml")
        self.store = BudgetStore(settings.budgets_table, settings.capsule_hourly_budget)
        self.hourly = settings.capsule_hourly_budget
        # Calls handed out longer ago than this have reached Capsule or never will.
        self.horizon = (
            BLOCK_SECONDS
            + settings.http_timeout_seconds
            + CLOCK_SKEW_SECONDS
            + budgets.SLOT_SECONDS
        )
        self._users: dict[str, _Local] = {}
        self._lock = threading.Lock()

    @property
    def writes(self) -> int:
        """DynamoDB writes made (what the bench reports per Capsule call)."""
        return self.store.writes

    def _local(self, key: str) -> _Local:
        with self._lock:
            return self._users.setdefault(key, _Local())

    # --- drawing ----------------------------------------------------------------------------

    def spend(self, site: str, user_id: str, source: str) -> Ticket:
        """Draw one call for this Capsule user, or raise CapsuleRateLimited (nothing sent).
        Hand the ticket to ``observe`` with Capsule's answer."""
        key = budgets.key(site, user_id)
        local = self._local(key)
        with local.lock:
            now = time.time()
            if local.refused_until > now:
                self._refused(source, local.refused_until)
            if local.left > 0 and now - local.seen_at > REREAD_SECONDS:
                # A 429 seen by another container stops this one within seconds too.
                snapshot = self._read(key, local)
                if snapshot.overcommitted(now):
                    local.left = 0
            if not (local.left > 0 and local.block_until > now):
                grant = self._lease(key, local, now)
                if grant.calls == 0:
                    local.refused_until = grant.reset_at
                    self._refused(source, grant.reset_at)
                local.left = grant.calls
                local.block_until = now + BLOCK_SECONDS
                local.block_slot = budgets.slot_of(now)
                oldest = budgets.slot_of(now - self.horizon)
                local.unreported = {s: n for s, n in local.unreported.items() if s >= oldest}
            local.left -= 1
            known = dict(local.snapshot.answered)
            for slot, count in local.unreported.items():
                known[slot] = known.get(slot, 0) + count
            ticket = Ticket(local.block_slot, known)
        count_by("CapsuleRequests", "source", source)
        return ticket

    def _refused(self, source: str, reset_at: float) -> None:
        count_by("CapsuleRateLimited", "source", source)
        raise CapsuleRateLimited(reset_at)

    def _lease(self, key: str, local: _Local, now: float) -> Grant:
        snapshot = local.snapshot if local.seen_at else self._read(key, local)
        for _ in range(_ATTEMPTS):
            grant = plan(snapshot, now, self.hourly, _block_size(snapshot, now, self.hourly))
            if grant.calls == 0:
                if time.time() - local.seen_at < 1:
                    return grant
                snapshot = self._read(key, local)  # maybe stale: look once more
                grant = plan(snapshot, now, self.hourly, _block_size(snapshot, now, self.hourly))
                if grant.calls == 0:
                    return grant
            written = self.store.lease(
                key,
                snapshot,
                grant.calls,
                now,
                forget_before=now - 2 * self.horizon,
                answered=local.unreported,
            )
            if written is not None:
                local.unreported = {}  # in the item now
                self._seen(local, written)
                return grant
            snapshot = self._read(key, local)
            time.sleep(random.uniform(0, 0.01))  # noqa: S311 - jitter, not a secret
            now = time.time()
        logger.warning("Capsule budget contended", extra={"attempts": _ATTEMPTS})
        return Grant(0, now + 1)

    def _read(self, key: str, local: _Local) -> Snapshot:
        snapshot = self.store.read(key)
        self._seen(local, snapshot)
        return snapshot

    @staticmethod
    def _seen(local: _Local, snapshot: Snapshot) -> None:
        local.snapshot = snapshot
        local.seen_at = time.time()

    # --- what Capsule said ------------------------------------------------------------------

    def observe(
        self,
        site: str,
        user_id: str,
        *,
        status: int,
        limit: int | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        """Take Capsule's answer (status and X-RateLimit-* headers) to the call ``ticket``
        drew into the budget: a 429 stops every container until ``reset_at``; ``remaining``
        sets the ceiling when it is stricter than the budget.

        An AWS fault here is logged, never raised: Capsule's answer (maybe to a write) must
        reach the caller; this container still stops after a 429.
        """
        try:
            self._observe(site, user_id, status, limit, remaining, reset_at, ticket)
        except (ClientError, BotoCoreError) as fault:
            logger.warning("Capsule budget not updated", extra={"error": type(fault).__name__})

    def _observe(  # noqa: PLR0917 - observe's arguments, passed on
        self,
        site: str,
        user_id: str,
        status: int,
        limit: int | None,
        remaining: int | None,
        reset_at: float | None,
        ticket: Ticket | None,
    ) -> None:
        key = budgets.key(site, user_id)
        local = self._local(key)
        now = time.time()
        # Known to be counted by Capsule: an answer for the user that says what is left (a
        # 401 is nobody's, a 429 or a 5xx may not count).
        if ticket is not None and status < 500 and status not in {401, 429} and remaining:
            with local.lock:
                local.unreported[ticket.slot] = local.unreported.get(ticket.slot, 0) + 1
        if status == 429:
            until = int(reset_at or now + BLOCKED_FALLBACK_SECONDS)
            with local.lock:
                local.left = 0
                local.refused_until = max(local.refused_until, until)
                self._update(
                    key,
                    local,
                    lambda s: s.blocked_until < until,
                    lambda _: {"blocked_until": until},
                )
            return
        if remaining is None or reset_at is None or reset_at <= now:
            return
        reset = int(reset_at)
        keep = max(0, (limit or CAPSULE_LIMIT_FALLBACK) - self.hourly)

        # Within what is kept back for other apps, the ceiling may lag Capsule by a block:
        # one write per block of calls, not per call, and still never past Remaining.
        slack = min(BLOCK, keep)

        oldest = budgets.slot_of(now - self.horizon)
        # Recent calls seen answered before this call was sent reached Capsule
        # before this answer: counted in Remaining, so they are not outstanding.
        known = sum(n for s, n in (ticket.answered_before if ticket else {}).items() if s >= oldest)

        def ceiling(snapshot: Snapshot) -> int:
            old = snapshot.leased - snapshot.recent(now, self.horizon)
            return old + known + remaining - keep

        def newer(snapshot: Snapshot) -> bool:
            """Whether this answer replaces the cap: the latest answer (the smallest
            Remaining before a reset) alone bounds what may still go out, whatever earlier
            ones said."""
            if snapshot.cap_until > reset:
                return False  # an answer from Capsule's previous hour, arriving late
            if snapshot.cap_until == reset:
                if remaining > snapshot.cap_remaining:
                    return False  # an earlier answer, arriving late
                moved = ceiling(snapshot) - snapshot.cap_ceiling
                return moved < -slack or moved > BLOCK
            return ceiling(snapshot) < snapshot.own(now, self.hourly) - slack

        with local.lock:
            self._update(
                key,
                local,
                newer,
                lambda s: {
                    "cap_until": reset,
                    "cap_ceiling": ceiling(s),
                    "cap_remaining": remaining,
                },
            )

            if local.snapshot.overcommitted(now):
                local.left = 0  # what this container holds may be more than Capsule allows

    def _update(
        self,
        key: str,
        local: _Local,
        needed: Callable[[Snapshot], bool],
        changes: Callable[[Snapshot], Mapping[str, int]],
    ) -> None:
        """Write ``changes`` (limits, never ``leased``) while ``needed`` holds."""
        snapshot = local.snapshot if local.seen_at else self._read(key, local)
        for _ in range(_ATTEMPTS):
            if not needed(snapshot):
                return
            if not snapshot.exists:  # the item starts with a lease of nothing
                self.store.lease(key, snapshot, 0, time.time(), forget_before=0)
                snapshot = self._read(key, local)
                continue
            written = self.store.tighten(key, snapshot, changes(snapshot))
            if written is not None:
                self._seen(local, written)
                return
            snapshot = self._read(key, local)
        logger.warning("Capsule budget limit not updated", extra={"attempts": _ATTEMPTS})

    def record(self, site: str, user_id: str, source: str, calls: int) -> None:
        """Count calls made before the user was known (the callback's identity lookups):
        they were sent, so they are spent whatever the budget says. One write, no read: an
        item from an earlier hour counts them there, and the next lease starts the new hour."""
        if not calls:
            return
        user = budgets.key(site, user_id)
        snapshot = self.store.count(user, calls, time.time())
        local = self._local(user)
        with local.lock:
            self._seen(local, snapshot)
        count_by("CapsuleRequests", "source", source, calls)


def _block_size(snapshot: Snapshot, now: float, hourly: int) -> int:
    """BLOCK calls, fewer near the end of the budget, so busy containers share what is left."""
    headroom = plan(snapshot, now, hourly, hourly).calls
    return max(1, min(BLOCK, headroom // 16))


@functools.cache
def _shared(settings: Settings) -> Budget:
    return Budget(settings)


def shared(settings: Settings | None = None) -> Budget:
    """This process's budgets (every client, the proxy and the callback share them)."""
    return _shared(settings or config.settings())


def reset() -> None:
    """Forget this process's blocks (tests)."""
    _shared.cache_clear()


def spend(site: str, user_id: str, source: str, settings: Settings | None = None) -> Ticket:
    """Draw one call for this Capsule user, or raise CapsuleRateLimited (nothing sent)."""
    return shared(settings).spend(site, user_id, source)


def observe(
    site: str,
    user_id: str,
    *,
    status: int,
    limit: int | None = None,
    remaining: int | None = None,
    reset_at: float | None = None,
    ticket: Ticket | None = None,
    settings: Settings | None = None,
) -> None:
    """Take Capsule's answer into this process's budgets (see Budget.observe)."""
    shared(settings).observe(
        site,
        user_id,
        status=status,
        limit=limit,
        remaining=remaining,
        reset_at=reset_at,
        ticket=ticket,
    )
