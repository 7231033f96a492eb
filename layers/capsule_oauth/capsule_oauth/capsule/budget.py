"""One budget of Capsule API v2 calls per Capsule user (site + user id), shared by every
connection of that user and every container at once.

Capsule allows 4,000 calls an hour per user, across every app the user authorised. Each
call the connector makes for a user is drawn here first (``spend``) and Capsule's answer is
fed back (``observe``). A call the budget cannot cover raises ``CapsuleRateLimited`` and
never reaches Capsule.

Bookkeeping: one item per user in CapsuleBudgetsTable (key ``<site>#<user id>``):

- ``leased``: calls ever handed out, in blocks; a container spends its block from memory,
  so the table sees one write per block, not per call.
- ``window`` / ``own_ceiling``: the hour this budget counts and the ``leased`` value at which
  CAPSULE_HOURLY_BUDGET calls have been handed out in it.
- ``cap_until`` / ``cap_ceiling``: Capsule's own ``X-RateLimit-Remaining`` as a ceiling on
  ``leased`` until its ``X-RateLimit-Reset``, when it is stricter than the budget.
- ``blocked_until``: after a 429 nothing is handed out before Capsule's reset.
- ``s<slot>``: calls handed out per 10 s slot, to tell calls Capsule may not have seen yet.
- Every write is conditional on the limits it was planned with (optimistic, no lock);
  other containers' leases fail it only when they reach the ceiling.

Why the ceiling from ``Remaining`` is safe: a block is spendable for BLOCK_SECONDS and a call
takes at most the HTTP timeout, so calls handed out longer ago than that have reached Capsule
or never will. Calls after an answer with ``Remaining: R`` are then at most
``ceiling - old``, and the ceiling is set to ``old + R - kept back``.
"""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.errors import CapsuleRateLimited, ConfigError
from capsule_oauth.observability import count_by, logger
from capsule_oauth.store import aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

KEY: Final = "capsule_user"
SOURCES: Final = ("proxy", "client", "callback")
BLOCK: Final = 20  # calls leased per write: at most 0.05 writes per call in steady state
BLOCK_SECONDS: Final = 10  # a block not spent within this is dropped
SLOT_SECONDS: Final = 5
WINDOW_SECONDS: Final = 3600
CLOCK_SKEW_SECONDS: Final = 2
BLOCKED_FALLBACK_SECONDS: Final = 60  # a 429 without a reset: wait a minute
CAPSULE_LIMIT_FALLBACK: Final = 4000  # Capsule's documented limit when X-RateLimit-Limit is absent
ITEM_TTL_SECONDS: Final = 2 * 86_400
_ATTEMPTS: Final = 12
REREAD_SECONDS: Final = 2  # a container holding a block looks at the item this often


@dataclass(frozen=True)
class Snapshot:
    """The budget item as last read or written."""

    leased: int = 0
    window: int = 0
    own_ceiling: int = 0
    cap_until: int = 0
    cap_ceiling: int = 0
    blocked_until: int = 0
    slots: Mapping[int, int] = field(default_factory=dict)
    exists: bool = False

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> Snapshot:
        if not item:
            return cls()

        def n(name: str) -> int:
            value = item.get(name)
            return int(value["N"]) if value and "N" in value else 0

        slots = {
            int(name[1:]): int(value["N"])
            for name, value in item.items()
            if name[:1] == "s" and name[1:].isdigit() and "N" in value
        }
        return cls(
            leased=n("leased"),
            window=n("window"),
            own_ceiling=n("own_ceiling"),
            cap_until=n("cap_until"),
            cap_ceiling=n("cap_ceiling"),
            blocked_until=n("blocked_until"),
            slots=slots,
            exists=True,
        )

    def recent(self, now: float, horizon: float) -> int:
        """Calls handed out in slots that may end within ``horizon`` seconds of ``now``."""
        oldest = math.floor((now - horizon) / SLOT_SECONDS)
        return sum(count for slot, count in self.slots.items() if slot >= oldest)


@dataclass(frozen=True)
class Grant:
    calls: int  # 0: refused until reset_at
    reset_at: float


def plan(snapshot: Snapshot, now: float, budget: int, want: int) -> Grant:
    """How many of ``want`` calls the item allows now, and when more are allowed if none."""
    window = int(now // WINDOW_SECONDS)
    window_end = float((window + 1) * WINDOW_SECONDS)
    if snapshot.blocked_until > now:
        return Grant(0, float(snapshot.blocked_until))
    own = snapshot.own_ceiling if snapshot.window == window else snapshot.leased + budget
    ceiling, reset_at = own, window_end
    if snapshot.cap_until > now and snapshot.cap_ceiling < ceiling:
        ceiling, reset_at = snapshot.cap_ceiling, float(snapshot.cap_until)
    calls = max(0, min(want, ceiling - snapshot.leased))
    return Grant(calls, reset_at)


@dataclass
class _Local:
    """This container's view of one user: its block and the item as last seen."""

    snapshot: Snapshot = field(default_factory=Snapshot)
    seen_at: float = 0.0
    left: int = 0
    block_until: float = 0.0
    refused_until: float = 0.0
    block_slot: int = 0  # the slot the block was leased in
    answered: dict[int, int] = field(default_factory=dict)  # slot -> this container's answers
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Ticket:
    """One call drawn: the slot of its lease, and what this container knew had reached
    Capsule before the call was sent (its answered calls, by lease slot)."""

    slot: int
    answered_before: Mapping[int, int]


def _key(site: str, user_id: str) -> str:
    return f"{site}#{user_id}"


def _n(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


class Budget:
    """The budgets of this container (one instance per process; tests build one per
    simulated container)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not settings.budgets_table:
            raise ConfigError("CAPSULE_BUDGETS_TABLE_NAME is not set; declare it in template.yaml")
        self.table = settings.budgets_table
        self.hourly = settings.capsule_hourly_budget
        # Calls handed out longer ago than this have reached Capsule or never will.
        self.horizon = (
            BLOCK_SECONDS + settings.http_timeout_seconds + CLOCK_SKEW_SECONDS + SLOT_SECONDS
        )
        self._users: dict[str, _Local] = {}
        self._lock = threading.Lock()
        self.writes = 0  # DynamoDB writes made (what the bench reports per Capsule call)

    def _local(self, key: str) -> _Local:
        with self._lock:
            return self._users.setdefault(key, _Local())

    # --- drawing ----------------------------------------------------------------------------

    def spend(self, site: str, user_id: str, source: str) -> Ticket:
        """Draw one call for this Capsule user, or raise CapsuleRateLimited (nothing sent).
        Hand the ticket to ``observe`` with Capsule's answer."""
        key = _key(site, user_id)
        local = self._local(key)
        with local.lock:
            now = time.time()
            if local.refused_until > now:
                self._refused(source, local.refused_until)
            if local.left > 0 and now - local.seen_at > REREAD_SECONDS:
                # A 429 seen by another container stops this one within seconds too.
                snapshot = self._read(key, local)
                if snapshot.blocked_until > now or _overcommitted(snapshot, now):
                    local.left = 0
            if not (local.left > 0 and local.block_until > now):
                grant = self._lease(key, local, now)
                if grant.calls == 0:
                    local.refused_until = grant.reset_at
                    self._refused(source, grant.reset_at)
                local.left = grant.calls
                local.block_until = now + BLOCK_SECONDS
                local.block_slot = int(now // SLOT_SECONDS)
                oldest = math.floor((now - self.horizon) / SLOT_SECONDS)
                local.answered = {s: n for s, n in local.answered.items() if s >= oldest}
            local.left -= 1
            ticket = Ticket(local.block_slot, dict(local.answered))
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
                grant = plan(snapshot, now, self.hourly, BLOCK)
                if grant.calls == 0:
                    return grant
            written = self._write_lease(key, snapshot, grant.calls, now)
            if written is not None:
                self._seen(local, written)
                return grant
            snapshot = self._read(key, local)
            time.sleep(random.uniform(0, 0.01))  # noqa: S311 - jitter, not a secret
            now = time.time()
        logger.warning("Capsule budget contended", extra={"attempts": _ATTEMPTS})
        return Grant(0, now + 1)

    def _write_lease(
        self, key: str, snapshot: Snapshot, calls: int, now: float, *, force: bool = False
    ) -> Snapshot | None:
        """Take ``calls`` more, provided the limits still are what ``snapshot`` says (and,
        unless ``force``, the ceiling is not passed). Other containers' leases do not fail
        it, only a ceiling they may have reached."""
        window = int(now // WINDOW_SECONDS)
        slot = int(now // SLOT_SECONDS)
        stale = [s for s in snapshot.slots if s * SLOT_SECONDS < now - 2 * self.horizon][:20]
        names = {"#slot": f"s{slot}", "#window": "window"}
        names |= {f"#old{i}": f"s{s}" for i, s in enumerate(stale)}
        values: dict[str, AttributeValueTypeDef] = {
            ":zero": _n(0),
            ":n": _n(calls),
            ":ttl": _n(int(now) + ITEM_TTL_SECONDS),
        }
        expression = (
            "SET leased = if_not_exists(leased, :zero) + :n,"
            " #slot = if_not_exists(#slot, :zero) + :n, expires_at = :ttl"
        )
        if not snapshot.exists:
            expression += (
                ", #window = :window, own_ceiling = :own, cap_until = :zero,"
                " cap_ceiling = :zero, blocked_until = :zero"
            )
            values |= {":window": _n(window), ":own": _n(self.hourly)}
            condition = "attribute_not_exists(#key)"
            names["#key"] = KEY
        else:
            condition = (
                "#window = :was_window AND own_ceiling = :was_own AND cap_until = :was_cap_until"
                " AND cap_ceiling = :was_cap AND blocked_until = :was_blocked"
            )
            values |= {
                ":was_window": _n(snapshot.window),
                ":was_own": _n(snapshot.own_ceiling),
                ":was_cap_until": _n(snapshot.cap_until),
                ":was_cap": _n(snapshot.cap_ceiling),
                ":was_blocked": _n(snapshot.blocked_until),
            }
            if snapshot.window == window and force:
                pass  # calls already sent: counted whatever the budget says
            elif snapshot.window == window:
                condition += " AND leased <= :most"
                headroom = plan(snapshot, now, self.hourly, 10**9).calls
                values[":most"] = _n(snapshot.leased + headroom - calls)
            else:  # a new hour: its budget counts from what has been leased until now
                expression += ", #window = :window, own_ceiling = :own"
                values |= {":window": _n(window), ":own": _n(snapshot.leased + self.hourly)}
                condition += " AND leased = :was_leased"
                values[":was_leased"] = _n(snapshot.leased)
        if stale:
            expression += " REMOVE " + ", ".join(f"#old{i}" for i in range(len(stale)))
        return self._conditional_update(key, expression, condition, names, values)

    def _conditional_update(
        self,
        key: str,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, AttributeValueTypeDef],
    ) -> Snapshot | None:
        """The item after the update, or None when the condition failed."""
        try:
            answer = aws.dynamodb().update_item(
                TableName=self.table,
                Key={KEY: {"S": key}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        finally:
            self.writes += 1
        return Snapshot.from_item(answer.get("Attributes"))

    def _read(self, key: str, local: _Local) -> Snapshot:
        answer = aws.dynamodb().get_item(
            TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True
        )
        snapshot = Snapshot.from_item(answer.get("Item"))
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
        lowers the ceiling when it is stricter than the budget.

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
        key = _key(site, user_id)
        local = self._local(key)
        now = time.time()
        if ticket is not None and status != 429:
            with local.lock:
                local.answered[ticket.slot] = local.answered.get(ticket.slot, 0) + 1
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

        oldest = math.floor((now - self.horizon) / SLOT_SECONDS)
        # Recent calls of this container answered before this call was sent reached Capsule
        # before this answer: counted in Remaining, so they are not outstanding.
        known = sum(n for s, n in (ticket.answered_before if ticket else {}).items() if s >= oldest)

        def ceiling(snapshot: Snapshot) -> int:
            old = snapshot.leased - snapshot.recent(now, self.horizon)
            return old + known + remaining - keep

        def stricter(snapshot: Snapshot) -> bool:
            if snapshot.cap_until > reset:
                return False  # an answer from Capsule's previous hour, arriving late
            if snapshot.cap_until == reset:
                return ceiling(snapshot) < snapshot.cap_ceiling - slack
            return ceiling(snapshot) < _own(snapshot, now, self.hourly) - slack

        with local.lock:
            self._update(
                key, local, stricter, lambda s: {"cap_until": reset, "cap_ceiling": ceiling(s)}
            )
            if _overcommitted(local.snapshot, now):
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
                self._write_lease(key, snapshot, 0, time.time())
                snapshot = self._read(key, local)
                continue
            fields = changes(snapshot)
            names = {f"#f{i}": name for i, name in enumerate(fields)}
            expression = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
            condition = " AND ".join(f"#f{i} = :was{i}" for i in range(len(fields)))
            values = {f":f{i}": _n(value) for i, value in enumerate(fields.values())}
            values |= {f":was{i}": _n(getattr(snapshot, name)) for i, name in enumerate(fields)}
            written = self._conditional_update(key, expression, condition, names, values)
            if written is not None:
                self._seen(local, written)
                return
            snapshot = self._read(key, local)

    def record(self, site: str, user_id: str, source: str, calls: int) -> None:
        """Count calls made before the user was known (the callback's identity lookups):
        they were sent, so they are spent whatever the budget says. One write, no read: an
        item from an earlier hour counts them there, and the next lease starts the new hour."""
        if not calls:
            return
        now = time.time()
        answer = aws.dynamodb().update_item(
            TableName=self.table,
            Key={KEY: {"S": _key(site, user_id)}},
            UpdateExpression=(
                "SET leased = if_not_exists(leased, :zero) + :n,"
                " #slot = if_not_exists(#slot, :zero) + :n, expires_at = :ttl,"
                " #window = if_not_exists(#window, :window),"
                " own_ceiling = if_not_exists(own_ceiling, :own),"
                " cap_until = if_not_exists(cap_until, :zero),"
                " cap_ceiling = if_not_exists(cap_ceiling, :zero),"
                " blocked_until = if_not_exists(blocked_until, :zero)"
            ),
            ExpressionAttributeNames={"#slot": f"s{int(now // SLOT_SECONDS)}", "#window": "window"},
            ExpressionAttributeValues={
                ":zero": _n(0),
                ":n": _n(calls),
                ":ttl": _n(int(now) + ITEM_TTL_SECONDS),
                ":window": _n(int(now // WINDOW_SECONDS)),
                ":own": _n(self.hourly),
            },
            ReturnValues="ALL_NEW",
        )
        self.writes += 1
        local = self._local(_key(site, user_id))
        with local.lock:
            self._seen(local, Snapshot.from_item(answer.get("Attributes")))
        count_by("CapsuleRequests", "source", source, calls)


def _overcommitted(snapshot: Snapshot, now: float) -> bool:
    """Blocks already handed out may exceed what Capsule allows: none of them is spent."""
    return snapshot.blocked_until > now or (
        snapshot.cap_until > now and snapshot.cap_ceiling < snapshot.leased
    )


def _block_size(snapshot: Snapshot, now: float, hourly: int) -> int:
    """BLOCK calls, fewer near the end of the budget, so busy containers share what is left."""
    headroom = plan(snapshot, now, hourly, hourly).calls
    return max(1, min(BLOCK, headroom // 16))


def _own(snapshot: Snapshot, now: float, hourly: int) -> int:
    window = int(now // WINDOW_SECONDS)
    return snapshot.own_ceiling if snapshot.window == window else snapshot.leased + hourly


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
