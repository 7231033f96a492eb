"""The hook intake: one Capsule REST hook delivery in, one EventBridge event per record out.

The URL's hook token is the credential (deliveries are unsigned): it is hashed at once and
never logged. Unknown or inactive → 410 (Capsule drops the hook); a malformed or oversize
body → 400; an event the connection did not subscribe → 200 with nothing published;
otherwise ``Capsule Record Changed`` events, 10 per PutEvents, and 500 if any entry failed
so that Capsule delivers again (``delivery_id`` is stable, so consumers dedupe on it).
This module imports neither ``requests`` nor the Capsule client: the intake stays light.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capsule_oauth.config import Settings
from capsule_oauth.flows.connections import iso
from capsule_oauth.observability import count_by, logger
from capsule_oauth.store import aws
from capsule_oauth.store.hooks import HookStore
from capsule_oauth.store.records import ACTIVE, Connection

if TYPE_CHECKING:
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

DETAIL_TYPE = "Capsule Record Changed"
MAX_BODY_BYTES = 1 << 20
PUT_EVENTS_MAX = 10  # entries per PutEvents call
MAX_ENTRY_BYTES = 256 * 1024  # EventBridge's limit for one entry, and for one call
_TIME_BYTES = 14  # EventBridge counts an entry's Time as 14 bytes, set or not
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,128}")

PUBLISHED = "published"
GONE = "gone"
IGNORED = "ignored"
INVALID = "invalid"
FAILED = "failed"
STATUS = {PUBLISHED: 200, IGNORED: 200, GONE: 410, INVALID: 400, FAILED: 500}


@dataclass(frozen=True)
class Delivery:
    event: str
    payload: list[dict[str, Any]]


def parse(body: bytes) -> Delivery | None:
    """``{"event": str, "payload": [object, ...]}`` within 1 MiB, or None."""
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    event, payload = data.get("event"), data.get("payload")
    if not isinstance(event, str) or not event or len(event) > 100:
        return None
    if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
        return None
    return Delivery(event, payload)


def delivery_id(connection_id: str, event: str, record: dict[str, Any]) -> str:
    """The same for the same change delivered twice: event, record id and ``updatedAt``
    (the whole record when it has no ``updatedAt``)."""
    stamp = record.get("updatedAt")
    version = str(stamp) if stamp is not None else json.dumps(record, sort_keys=True)
    key = "\n".join([connection_id, event, str(record.get("id", "")), version])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _record_id(record: dict[str, Any]) -> str | None:
    value = record.get("id")
    return None if value is None or isinstance(value, dict | list) else str(value)


def _entry_bytes(entry: PutEventsRequestEntryTypeDef) -> int:
    return (
        _TIME_BYTES
        + len(entry["Source"].encode("utf-8"))
        + len(entry["DetailType"].encode("utf-8"))
        + len(entry["Detail"].encode("utf-8"))
    )


def entries(
    settings: Settings, connection: Connection, delivery: Delivery, *, received_at: int
) -> list[PutEventsRequestEntryTypeDef]:
    """One entry per payload item; a record too large for an entry goes as ``null``."""
    made: list[PutEventsRequestEntryTypeDef] = []
    record_type = delivery.event.split("/", 1)[0]
    for record in delivery.payload:
        detail: dict[str, Any] = {
            "connection_id": connection.connection_id,
            "owner": connection.owner,
            "site": {"subdomain": connection.subdomain, "name": connection.site_name},
            "event": delivery.event,
            "record_type": record_type,
            "record_id": _record_id(record),
            "record": record,
            "truncated": False,
            "delivery_id": delivery_id(connection.connection_id, delivery.event, record),
            "received_at": iso(received_at),
        }
        entry: PutEventsRequestEntryTypeDef = {
            "EventBusName": settings.event_bus_name,
            "Source": settings.event_source,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(detail, separators=(",", ":")),
        }
        if _entry_bytes(entry) > MAX_ENTRY_BYTES:
            detail.update(record=None, truncated=True)
            entry["Detail"] = json.dumps(detail, separators=(",", ":"))
        made.append(entry)
    return made


def batches(
    made: Sequence[PutEventsRequestEntryTypeDef],
) -> Iterator[list[PutEventsRequestEntryTypeDef]]:
    """At most 10 entries and 256 KiB per PutEvents call."""
    batch: list[PutEventsRequestEntryTypeDef] = []
    size = 0
    for entry in made:
        bytes_ = _entry_bytes(entry)
        if batch and (len(batch) == PUT_EVENTS_MAX or size + bytes_ > MAX_ENTRY_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += bytes_
    if batch:
        yield batch


def _publish(made: Sequence[PutEventsRequestEntryTypeDef]) -> int:
    """Put every entry; the number that failed (all of a call that raised)."""
    failed = 0
    client = aws.events()
    for batch in batches(made):
        try:
            answer = client.put_events(Entries=batch)
        except Exception as error:
            logger.warning("PutEvents failed", extra={"error": type(error).__name__})
            failed += len(batch)
            continue
        failed += int(answer.get("FailedEntryCount", 0))
    return failed


def receive(settings: Settings, hook_token: str | None, body: bytes) -> int:
    """Handle one delivery; the HTTP status to answer (nothing else is answered)."""
    outcome, extra = _receive(settings, hook_token, body)
    count_by("CapsuleHookDeliveries", "outcome", outcome)
    logger.info("Capsule REST hook delivery", extra={"outcome": outcome, **extra})
    return STATUS[outcome]


def _connection(settings: Settings, hook_token: str | None) -> Connection | None:
    """The connection the token belongs to (one Query on its hash), or None."""
    if hook_token is None or not _TOKEN.fullmatch(hook_token):
        return None
    hashed = hashlib.sha256(hook_token.encode("ascii")).hexdigest()
    return HookStore(settings).find_by_token_hash(hashed)


def _receive(settings: Settings, hook_token: str | None, body: bytes) -> tuple[str, dict[str, Any]]:
    connection = _connection(settings, hook_token)
    if connection is None:
        return GONE, {}
    about: dict[str, Any] = {"connection_id": connection.connection_id}
    if connection.status != ACTIVE:
        return GONE, about
    delivery = parse(body)
    if delivery is None:
        return INVALID, about
    about.update(event=delivery.event, records=len(delivery.payload))
    if delivery.event not in connection.hook_events:
        return IGNORED, about
    made = entries(settings, connection, delivery, received_at=int(time.time()))
    failed = _publish(made)
    if failed:
        return FAILED, {**about, "failed": failed}
    return PUBLISHED, about
