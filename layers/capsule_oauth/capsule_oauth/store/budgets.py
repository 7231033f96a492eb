"""CapsuleBudgetsTable: one item per Capsule user, the shared half of capsule/budget.py.

``BudgetStore`` owns the table: it reads the item into a ``Snapshot`` and makes the three
writes the budget needs (take a block of calls, tighten a limit, count calls already sent),
each conditional on what the caller planned with, never a lock.

The item (key ``<site>#<user id>``):

- ``leased``: calls ever handed out, in blocks (a container spends its block from memory).
- ``window`` / ``own_ceiling``: the clock hour being counted and the ``leased`` value at
  which CAPSULE_HOURLY_BUDGET calls have been handed out in it.
- ``cap_until`` / ``cap_ceiling`` / ``cap_remaining``: Capsule's latest
  ``X-RateLimit-Remaining`` as a ceiling on ``leased`` until its ``X-RateLimit-Reset``.
- ``blocked_until``: after a 429 nothing is handed out before Capsule's reset.
- ``s<slot>``: calls handed out per SLOT_SECONDS, to tell calls Capsule may not have seen.
- ``a<slot>``: of those, calls containers have seen answered (reported with their next
  lease): Capsule has counted them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from capsule_oauth.store import aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

KEY: Final = "capsule_user"
SLOT_SECONDS: Final = 5
WINDOW_SECONDS: Final = 3600
ITEM_TTL_SECONDS: Final = 2 * 86_400
_LIMITS: Final = (
    "window",
    "own_ceiling",
    "cap_until",
    "cap_ceiling",
    "cap_remaining",
    "blocked_until",
)


def key(site: str, user_id: str) -> str:
    return f"{site}#{user_id}"


def slot_of(now: float) -> int:
    return int(now // SLOT_SECONDS)


@dataclass(frozen=True)
class Snapshot:
    """The budget item as last read or written."""

    leased: int = 0
    window: int = 0
    own_ceiling: int = 0
    cap_until: int = 0
    cap_ceiling: int = 0
    cap_remaining: int = 0  # the Remaining the cap was taken from (the latest answer's)
    blocked_until: int = 0
    slots: Mapping[int, int] = field(default_factory=dict)
    answered: Mapping[int, int] = field(default_factory=dict)  # a<slot>, by lease slot
    exists: bool = False

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> Snapshot:
        if not item:
            return cls()

        def n(name: str) -> int:
            value = item.get(name)
            return int(value["N"]) if value and "N" in value else 0

        def per_slot(prefix: str) -> dict[int, int]:
            return {
                int(name[1:]): int(value["N"])
                for name, value in item.items()
                if name[:1] == prefix and name[1:].isdigit() and "N" in value
            }

        limits = {name: n(name) for name in _LIMITS}
        return cls(
            leased=n("leased"),
            slots=per_slot("s"),
            answered=per_slot("a"),
            exists=True,
            **limits,
        )

    def recent(self, now: float, horizon: float) -> int:
        """Calls handed out in slots that may end within ``horizon`` seconds of ``now``."""
        oldest = math.floor((now - horizon) / SLOT_SECONDS)
        return sum(count for slot, count in self.slots.items() if slot >= oldest)

    def own(self, now: float, hourly: int) -> int:
        """The ceiling the hourly budget sets on ``leased`` in the hour of ``now``."""
        if self.window == int(now // WINDOW_SECONDS):
            return self.own_ceiling
        return self.leased + hourly  # a new hour counts from what has been leased until now

    def overcommitted(self, now: float) -> bool:
        """Blocks already handed out may exceed what Capsule allows: none is to be spent."""
        return self.blocked_until > now or (self.cap_until > now and self.cap_ceiling < self.leased)


@dataclass(frozen=True)
class Grant:
    calls: int  # 0: refused until reset_at
    reset_at: float


def plan(snapshot: Snapshot, now: float, hourly: int, want: int) -> Grant:
    """How many of ``want`` calls the item allows now, and when more are allowed if none."""
    window_end = float((int(now // WINDOW_SECONDS) + 1) * WINDOW_SECONDS)
    if snapshot.blocked_until > now:
        return Grant(0, float(snapshot.blocked_until))
    ceiling, reset_at = snapshot.own(now, hourly), window_end
    if snapshot.cap_until > now and snapshot.cap_ceiling < ceiling:
        ceiling, reset_at = snapshot.cap_ceiling, float(snapshot.cap_until)
    return Grant(max(0, min(want, ceiling - snapshot.leased)), reset_at)


def _n(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


class BudgetStore:
    def __init__(self, table: str, hourly: int) -> None:
        self.table = table
        self.hourly = hourly
        self.writes = 0  # DynamoDB writes made (what the bench reports per Capsule call)

    def read(self, user: str) -> Snapshot:
        answer = aws.dynamodb().get_item(
            TableName=self.table, Key={KEY: {"S": user}}, ConsistentRead=True
        )
        return Snapshot.from_item(answer.get("Item"))

    def lease(
        self,
        user: str,
        snapshot: Snapshot,
        calls: int,
        now: float,
        *,
        forget_before: float,
        answered: Mapping[int, int] | None = None,
    ) -> Snapshot | None:
        """Take ``calls`` more, provided the limits still are what ``snapshot`` says and the
        ceiling is not passed; None when they are not. Other containers' leases do not fail
        it, only a ceiling they may have reached. ``answered`` (lease slot -> calls) is what
        this container saw answered since its last lease. Slots before ``forget_before`` go."""
        window = int(now // WINDOW_SECONDS)
        stale = [
            f"{prefix}{s}"
            for prefix, slots in (("s", snapshot.slots), ("a", snapshot.answered))
            for s in slots
            if s * SLOT_SECONDS < forget_before
        ][:20]
        reported = {s: n for s, n in (answered or {}).items() if s * SLOT_SECONDS >= forget_before}
        names = {"#slot": f"s{slot_of(now)}", "#window": "window"}
        names |= {f"#old{i}": name for i, name in enumerate(stale)}
        names |= {f"#a{i}": f"a{s}" for i, s in enumerate(reported)}
        values: dict[str, AttributeValueTypeDef] = {
            ":zero": _n(0),
            ":n": _n(calls),
            ":ttl": _n(int(now) + ITEM_TTL_SECONDS),
        }
        values |= {f":a{i}": _n(n) for i, n in enumerate(reported.values())}
        expression = (
            "SET leased = if_not_exists(leased, :zero) + :n,"
            " #slot = if_not_exists(#slot, :zero) + :n, expires_at = :ttl"
        )
        expression += "".join(
            f", #a{i} = if_not_exists(#a{i}, :zero) + :a{i}" for i in range(len(reported))
        )
        if not snapshot.exists:
            expression += (
                ", #window = :window, own_ceiling = :own, cap_until = :zero,"
                " cap_ceiling = :zero, cap_remaining = :zero, blocked_until = :zero"
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
            if snapshot.window == window:
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
        return self._update(user, expression, condition, names, values)

    def tighten(self, user: str, snapshot: Snapshot, limits: Mapping[str, int]) -> Snapshot | None:
        """Set ``limits`` (of _LIMITS) if they still are what ``snapshot`` says; else None."""
        names = {f"#f{i}": name for i, name in enumerate(limits)}
        expression = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(limits)))
        condition = " AND ".join(  # a limit never set reads as 0
            f"(#f{i} = :was{i} OR attribute_not_exists(#f{i}))"
            if getattr(snapshot, name) == 0
            else f"#f{i} = :was{i}"
            for i, name in enumerate(limits)
        )
        values = {f":f{i}": _n(value) for i, value in enumerate(limits.values())}
        values |= {f":was{i}": _n(getattr(snapshot, name)) for i, name in enumerate(limits)}
        return self._update(user, expression, condition, names, values)

    def count(self, user: str, calls: int, now: float) -> Snapshot:
        """Count ``calls`` already sent, whatever the limits say: one write, no read. An
        item from an earlier hour counts them there; the next lease starts the new hour."""
        answer = aws.dynamodb().update_item(
            TableName=self.table,
            Key={KEY: {"S": user}},
            UpdateExpression=(
                "SET leased = if_not_exists(leased, :zero) + :n,"
                " #slot = if_not_exists(#slot, :zero) + :n, expires_at = :ttl,"
                " #window = if_not_exists(#window, :window),"
                " own_ceiling = if_not_exists(own_ceiling, :own),"
                " cap_until = if_not_exists(cap_until, :zero),"
                " cap_ceiling = if_not_exists(cap_ceiling, :zero),"
                " cap_remaining = if_not_exists(cap_remaining, :zero),"
                " blocked_until = if_not_exists(blocked_until, :zero)"
            ),
            ExpressionAttributeNames={"#slot": f"s{slot_of(now)}", "#window": "window"},
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
        return Snapshot.from_item(answer.get("Attributes"))

    def _update(
        self,
        user: str,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, AttributeValueTypeDef],
    ) -> Snapshot | None:
        """The item after the update, or None when the condition failed."""
        try:
            answer = aws.dynamodb().update_item(
                TableName=self.table,
                Key={KEY: {"S": user}},
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
